//! The ports: what the domain needs from the outside world, implemented by adapters.
//!
//! Every port is object-safe and `Send + Sync`, so services hold them as
//! `Arc<dyn Port>`. With the `mocks` feature (or in this crate's tests) each has a
//! mockall mock, `MockReleaseRepository` and so on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::actor::Actor;
use crate::release::{Release, ReleaseId, ReleaseQuery, ReleaseSummary, ServiceName, Version};

/// A failure of the storage behind a port that the caller cannot correct: the
/// database is down, a query failed. The cause chain is kept for the log.
#[derive(Debug, thiserror::Error)]
#[error("the repository failed: {message}")]
pub struct RepositoryError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RepositoryError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub fn caused_by(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Why [`ReleaseRepository::insert`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum InsertReleaseError {
    /// An active (not deleted) release with the same service and version exists.
    #[error("an active release of this service and version exists")]
    Duplicate,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// What [`ReleaseRepository::soft_delete`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftDeleteOutcome {
    /// The release was active and is now marked deleted.
    Deleted,
    /// The release had been deleted before; nothing changed.
    AlreadyDeleted,
    /// No release has this id.
    NotFound,
}

/// Where releases are kept.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ReleaseRepository: Send + Sync + 'static {
    /// Stores a new release.
    ///
    /// # Errors
    /// MUST return [`InsertReleaseError::Duplicate`], storing nothing, when an active
    /// release with the same service and version exists (deleted ones do not count);
    /// this MUST hold under concurrent inserts.
    async fn insert(&self, release: &Release) -> Result<(), InsertReleaseError>;

    /// The release with this id, if it exists and is not deleted.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails; absence is `Ok(None)`.
    async fn find_active(&self, id: ReleaseId) -> Result<Option<Release>, RepositoryError>;

    /// The active release of `service` at `version`, if any.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn find_active_by_version(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<Option<Release>, RepositoryError>;

    /// Active releases matching `query`, newest first (by `created_at`, then `id`, both
    /// descending), starting strictly after `query.after`, at most `limit` of them.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn list_active(
        &self,
        query: &ReleaseQuery,
        limit: usize,
    ) -> Result<Vec<ReleaseSummary>, RepositoryError>;

    /// Marks the release deleted by `actor` at `at`, unless it already is.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn soft_delete(
        &self,
        id: ReleaseId,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<SoftDeleteOutcome, RepositoryError>;

    /// Whether the storage answers, for readiness probes.
    ///
    /// # Errors
    /// [`RepositoryError`] when it does not.
    async fn ping(&self) -> Result<(), RepositoryError>;
}
