//! The release use cases: register, read, list and retire releases.

use std::sync::Arc;

use chrono::{SubsecRound as _, Utc};

use crate::actor::Actor;
use crate::pagination::Page;
use crate::ports::{InsertReleaseError, ReleaseRepository, RepositoryError, SoftDeleteOutcome};
use crate::release::{NewRelease, Release, ReleaseId, ReleaseQuery, ReleaseSummary};

/// The outcome of a successful [`ReleaseService::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatedRelease {
    /// A new release was stored.
    Created(Release),
    /// The same service and version with identical content was registered before (a
    /// CI retry): nothing changed and this is the existing release.
    AlreadyExists(Release),
}

impl CreatedRelease {
    pub fn release(&self) -> &Release {
        match self {
            Self::Created(release) | Self::AlreadyExists(release) => release,
        }
    }

    pub fn into_release(self) -> Release {
        match self {
            Self::Created(release) | Self::AlreadyExists(release) => release,
        }
    }
}

/// Why [`ReleaseService::create`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateReleaseError {
    /// An active release of this service and version has other content.
    #[error("release {existing} already registers this service and version with other content")]
    Conflict { existing: ReleaseId },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why [`ReleaseService::get`] returned no release.
#[derive(Debug, thiserror::Error)]
pub enum GetReleaseError {
    #[error("no active release has this id")]
    NotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why [`ReleaseService::delete`] did not delete.
#[derive(Debug, thiserror::Error)]
pub enum DeleteReleaseError {
    #[error("no release has this id")]
    NotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why [`ReleaseService::list`] returned no page.
#[derive(Debug, thiserror::Error)]
pub enum ListReleasesError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The release registry's use cases over a [`ReleaseRepository`].
#[derive(Clone)]
pub struct ReleaseService {
    repository: Arc<dyn ReleaseRepository>,
}

impl std::fmt::Debug for ReleaseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseService").finish_non_exhaustive()
    }
}

impl ReleaseService {
    pub fn new(repository: Arc<dyn ReleaseRepository>) -> Self {
        Self { repository }
    }

    /// Registers `new` on behalf of `actor`. Idempotent for retries: registering the
    /// same service and version again with identical content (image, template,
    /// attributes) returns the existing release and changes nothing.
    ///
    /// # Errors
    /// [`CreateReleaseError::Conflict`] naming the existing release when the same
    /// service and version is active with other content.
    pub async fn create(
        &self,
        new: NewRelease,
        actor: Actor,
    ) -> Result<CreatedRelease, CreateReleaseError> {
        let release = Release::register(new, actor);
        match self.repository.insert(&release).await {
            Ok(()) => Ok(CreatedRelease::Created(release)),
            Err(InsertReleaseError::Repository(error)) => Err(error.into()),
            Err(InsertReleaseError::Duplicate) => {
                let existing = self
                    .repository
                    .find_active_by_version(&release.service, &release.version)
                    .await?
                    .ok_or_else(|| {
                        // Deleted between our insert and this read: a retry will succeed.
                        RepositoryError::new(
                            "the conflicting release was deleted while it was being read",
                        )
                    })?;
                if existing.content == release.content {
                    Ok(CreatedRelease::AlreadyExists(existing))
                } else {
                    Err(CreateReleaseError::Conflict {
                        existing: existing.id,
                    })
                }
            }
        }
    }

    /// The active release with this id.
    ///
    /// # Errors
    /// [`GetReleaseError::NotFound`] for unknown and deleted ids.
    pub async fn get(&self, id: ReleaseId) -> Result<Release, GetReleaseError> {
        self.repository
            .find_active(id)
            .await?
            .ok_or(GetReleaseError::NotFound)
    }

    /// A page of active releases matching `query`, newest first, with the cursor of the
    /// next page when there is one.
    ///
    /// # Errors
    /// [`ListReleasesError::Repository`] when the storage fails.
    pub async fn list(
        &self,
        query: &ReleaseQuery,
    ) -> Result<Page<ReleaseSummary>, ListReleasesError> {
        let limit = usize::from(query.limit.get());
        // One more than asked tells whether another page follows without a count.
        let mut items = self.repository.list_active(query, limit + 1).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(ReleaseSummary::cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Soft-deletes the release: it disappears from reads and listings, its service
    /// and version can be registered again, and its row stays for history.
    /// Deleting a deleted release succeeds and changes nothing.
    ///
    /// # Errors
    /// [`DeleteReleaseError::NotFound`] when no release ever had this id.
    pub async fn delete(&self, id: ReleaseId, actor: &Actor) -> Result<(), DeleteReleaseError> {
        let now = Utc::now().trunc_subsecs(6);
        match self.repository.soft_delete(id, actor, now).await? {
            SoftDeleteOutcome::Deleted | SoftDeleteOutcome::AlreadyDeleted => Ok(()),
            SoftDeleteOutcome::NotFound => Err(DeleteReleaseError::NotFound),
        }
    }

    /// Whether the release storage answers.
    ///
    /// # Errors
    /// [`RepositoryError`] when it does not.
    pub async fn ready(&self) -> Result<(), RepositoryError> {
        self.repository.ping().await
    }
}
