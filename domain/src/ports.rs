//! The ports: what the domain needs from the outside world, implemented by adapters.
//!
//! Every port is object-safe and `Send + Sync`, so services hold them as
//! `Arc<dyn Port>`. With the `mocks` feature (or in this crate's tests) each has a
//! mockall mock, `MockReleaseRepository` and so on.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::access::{Account, AccountName, Grant};
use crate::actor::Actor;
use crate::audit::{AuditEntry, AuditQuery};
use crate::cluster::{
    AppliedResource, ClusterStatus, KindRef, KindScope, RolloutOutcome, RolloutProgress,
    RolloutRequest, WorkloadPicture,
};
use crate::deployment::{
    Deployment, DeploymentId, DeploymentQuery, Namespace, Placement, ResourceRef, Target,
    TimelineEntry, Transition,
};
use crate::lease::{ClaimedDeployment, Fence, InstanceId};
use crate::notification::{Attempt, ClaimedDelivery, Delivery, NextStep, Notification, SinkError};
use crate::release::{
    ImageRef, Release, ReleaseId, ReleaseQuery, ReleaseSummary, ServiceName, Version,
};
use crate::token::{ApiToken, TokenHash, TokenId};

/// A failure of the storage behind a port that the caller cannot correct: the
/// database is down, a query failed. The cause chain is kept for the log.
#[derive(Debug, thiserror::Error)]
#[error("the repository failed: {message}")]
pub struct RepositoryError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    unavailable: bool,
}

impl RepositoryError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            unavailable: false,
        }
    }

    pub fn caused_by(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
            unavailable: false,
        }
    }

    /// The storage could not be reached at all (no connection, the server away): the
    /// same request may well succeed shortly, so clients are told to try again.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            unavailable: true,
            ..Self::caused_by(message, source)
        }
    }

    /// Whether the storage could not be reached (see [`Self::unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
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
    /// Stores a new release and, in the same transaction, its `audit` record.
    ///
    /// # Errors
    /// MUST return [`InsertReleaseError::Duplicate`], storing nothing (no audit record
    /// either), when an active release with the same service and version exists
    /// (deleted ones do not count); this MUST hold under concurrent inserts.
    async fn insert(&self, release: &Release, audit: &AuditEntry)
    -> Result<(), InsertReleaseError>;

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

    /// Marks the release deleted by `actor` at `at`, unless it already is, and stores
    /// `audit` in the same transaction when (and only when) it was deleted now.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn soft_delete(
        &self,
        id: ReleaseId,
        actor: &Actor,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<SoftDeleteOutcome, RepositoryError>;

    /// Whether the storage answers, for readiness probes.
    ///
    /// # Errors
    /// [`RepositoryError`] when it does not.
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// Why [`DeploymentRepository::insert`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum InsertDeploymentError {
    /// Another deployment of this service to this cluster and namespace is active
    /// (queued, applying or rolling out).
    #[error("deployment {active} of this service to this target is still active")]
    ActiveExists { active: DeploymentId },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Where deployments, their timelines and verdicts are kept.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeploymentRepository: Send + Sync + 'static {
    /// Stores a new deployment (its timeline included) and, in the same transaction,
    /// its `audit` record.
    ///
    /// # Errors
    /// MUST return [`InsertDeploymentError::ActiveExists`] naming the active one, storing
    /// nothing (no audit record either), when a deployment of the same service to the
    /// same cluster and namespace is active. The storage itself MUST enforce this (a
    /// unique constraint), so that concurrent requests cannot both pass.
    async fn insert(
        &self,
        deployment: &Deployment,
        audit: &AuditEntry,
    ) -> Result<(), InsertDeploymentError>;

    /// The deployment with its timeline, diagnostics and objects.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn find(&self, id: DeploymentId) -> Result<Option<Deployment>, RepositoryError>;

    /// The objects of deployment `id` while it is active: what its driver applies,
    /// read on its own (no timeline, no manifest) when the driver is about to apply.
    /// `None` when the deployment is unknown or has its verdict.
    ///
    /// # Errors
    /// [`RepositoryError`] when the storage fails or the stored objects are unreadable.
    async fn active_objects(&self, id: DeploymentId)
    -> Result<Option<Vec<Value>>, RepositoryError>;

    /// Deployments matching `query`, newest first, after `query.after`, at most `limit`.
    /// Listed deployments MAY leave `objects`, `manifest` and `timeline` empty.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn list(
        &self,
        query: &DeploymentQuery,
        limit: usize,
    ) -> Result<Vec<Deployment>, RepositoryError>;

    /// Where each service stands on each target: for every (service, cluster,
    /// namespace) with a deployment matching `query`'s service, cluster, namespace and
    /// creation window (its status, cursor and limit are ignored), the newest deployment
    /// and the newest one that succeeded; ordered by service, cluster and namespace.
    /// However many deployments there are, every target is there. Deployments MAY
    /// leave `objects`, `manifest` and `timeline` empty.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn placements(&self, query: &DeploymentQuery) -> Result<Vec<Placement>, RepositoryError>;

    /// Where `releases` went: for each of them and each target it was deployed to, its
    /// newest deployment there, of any status; ordered by release id, cluster and
    /// namespace. However many deployments there are, every such target is there.
    /// Deployments MAY leave `objects`, `manifest` and `timeline` empty.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn newest_per_target(
        &self,
        releases: &[ReleaseId],
    ) -> Result<Vec<Deployment>, RepositoryError>;

    /// Every active deployment, oldest first: what a restarted Kubernaut resumes.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn list_active(&self) -> Result<Vec<Deployment>, RepositoryError>;

    /// Moves the deployment to `transition.to` if, and only if, its status is one of
    /// `transition.from` and, when `transition.fence` is set, that fence is its lease's
    /// current one; returns whether it moved. Entering `applying` sets `started_at`
    /// (once); entering a verdict sets `finished_at` and stores the diagnostics. When it
    /// moved, `transition.audit`, `transition.entries` (appended in order),
    /// `transition.follow_up` (a new deployment with its audit record) and
    /// `transition.notifications` (pending deliveries in the outbox, due at once, see
    /// [`NotificationOutbox`]) are stored in the same transaction; when it did not,
    /// none of them is.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn transition(
        &self,
        id: DeploymentId,
        transition: &Transition,
    ) -> Result<bool, RepositoryError>;

    /// Appends an entry to the deployment's timeline; returns whether it did. With a
    /// `fence`, only while the deployment is active and that fence is its lease's
    /// current one (a driver's lines); without, always (an unknown deployment has no
    /// timeline: `false`).
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn append_timeline(
        &self,
        id: DeploymentId,
        fence: Option<Fence>,
        entry: &TimelineEntry,
    ) -> Result<bool, RepositoryError>;

    /// The newest deployment of `service` to `target` that succeeded, leaving out
    /// deployments of release `excluding` (to find what to roll back to).
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn last_succeeded(
        &self,
        service: &ServiceName,
        target: &Target,
        excluding: Option<ReleaseId>,
    ) -> Result<Option<Deployment>, RepositoryError>;
}

/// The outbox of notifications: deliveries written with the moves they tell of
/// ([`DeploymentRepository::transition`]), claimed by one replica at a time and
/// retried until delivered or given up. Times are the storage's own clock.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait NotificationOutbox: Send + Sync + 'static {
    /// Claims for `owner`, until `lease` from now, at most `limit` pending deliveries
    /// that are due and not claimed by anyone (or whose claim expired), the longest
    /// due first. Concurrent claimers MUST NOT both claim one delivery: one that
    /// another claimer is claiming is skipped, not waited for.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn claim(
        &self,
        owner: &InstanceId,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, RepositoryError>;

    /// Records `attempt` of delivery `id` and what follows it (delivered, due again
    /// after a delay, or dead), and frees its claim, if and only if `owner` still
    /// holds the claim and the delivery is pending; returns whether it did. Nothing
    /// is recorded otherwise: another replica took the delivery over.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn record_attempt(
        &self,
        id: uuid::Uuid,
        owner: &InstanceId,
        attempt: &Attempt,
        next: NextStep,
    ) -> Result<bool, RepositoryError>;

    /// The deliveries of deployment `deployment`'s notifications, oldest first, each
    /// with its attempts (oldest first).
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn deliveries(&self, deployment: DeploymentId) -> Result<Vec<Delivery>, RepositoryError>;
}

/// A receiver of notifications (a webhook, Slack, GitHub, a CDEvents broker).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait NotificationSink: Send + Sync + 'static {
    /// Sends `notification` once; the receiver's HTTP status when it accepted it.
    /// Sending the same notification again MUST be safe (the receiver may
    /// deduplicate on [`Notification::id`]): delivery is at least once.
    ///
    /// # Errors
    /// [`SinkError`] when the receiver refused it, did not answer in time or could not
    /// be reached.
    async fn send(&self, notification: &Notification) -> Result<u16, SinkError>;
}

/// The leases of active deployments: which replica drives each (see [`crate::lease`]).
/// Times are the storage's own clock, so replicas' clocks need not agree.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LeaseRepository: Send + Sync + 'static {
    /// Acquires, for `owner` and `ttl` from now, the leases of at most `limit` active
    /// deployments whose lease is free or expired, oldest deployment first, leaving out
    /// `except` (those the caller drives already: it renews them instead); each
    /// acquisition gets a fence one higher than the deployment's last. Concurrent
    /// claimers MUST NOT both acquire one deployment: a deployment another claimer is
    /// acquiring is skipped, not waited for.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn claim(
        &self,
        owner: &InstanceId,
        ttl: Duration,
        limit: usize,
        except: &[DeploymentId],
    ) -> Result<Vec<ClaimedDeployment>, RepositoryError>;

    /// [`Self::claim`] for deployment `id` alone: `None` when it is not active or its
    /// lease is held by someone and not expired.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn claim_one(
        &self,
        id: DeploymentId,
        owner: &InstanceId,
        ttl: Duration,
    ) -> Result<Option<ClaimedDeployment>, RepositoryError>;

    /// Extends to `ttl` from now every lease of `held` that `owner` still holds with
    /// that fence on a deployment still active (expired or not, as long as nobody took
    /// it over); returns the ids of those it extended. The others are lost.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn renew(
        &self,
        owner: &InstanceId,
        held: &[(DeploymentId, Fence)],
        ttl: Duration,
    ) -> Result<Vec<DeploymentId>, RepositoryError>;

    /// Gives back the leases of `held` that `owner` holds with that fence, so that any
    /// replica may claim them at once.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn release(
        &self,
        owner: &InstanceId,
        held: &[(DeploymentId, Fence)],
    ) -> Result<(), RepositoryError>;
}

/// Why [`AccessRepository::insert_account`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum InsertAccountError {
    #[error("an account with this name exists")]
    Duplicate,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// What [`AccessRepository::add_grant`] and [`AccessRepository::remove_grant`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantChange {
    /// The grant was added (or removed).
    Changed,
    /// The account already held it (or did not hold it): nothing changed.
    Unchanged,
    AccountNotFound,
}

/// Why [`AccessRepository::insert_token`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum InsertTokenError {
    #[error("no account has this name")]
    AccountNotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// What [`AccessRepository::revoke_token`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeTokenOutcome {
    Revoked,
    AlreadyRevoked,
    NotFound,
}

/// Where accounts, their grants and their API tokens are kept. Every change stores its
/// `audit` record in the same transaction, and only when something changed.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AccessRepository: Send + Sync + 'static {
    /// Stores a new account with its grants.
    ///
    /// # Errors
    /// [`InsertAccountError::Duplicate`], storing nothing, when the name is taken.
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), InsertAccountError>;

    /// The account with its grants.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn find_account(&self, name: &AccountName) -> Result<Option<Account>, RepositoryError>;

    /// Every account, by name.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn list_accounts(&self) -> Result<Vec<Account>, RepositoryError>;

    /// Grants `grant` to the account.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn add_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError>;

    /// Takes `grant` from the account.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn remove_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError>;

    /// Stores a new token of `token.account`.
    ///
    /// # Errors
    /// [`InsertTokenError::AccountNotFound`] when the account does not exist.
    async fn insert_token(
        &self,
        token: &ApiToken,
        audit: &AuditEntry,
    ) -> Result<(), InsertTokenError>;

    /// The token with this hash (revoked and expired ones included) and its account.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(ApiToken, Account)>, RepositoryError>;

    /// The token with this id.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn find_token_by_id(&self, id: TokenId) -> Result<Option<ApiToken>, RepositoryError>;

    /// The tokens of `account`, or of everyone, newest first.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn list_tokens(
        &self,
        account: Option<AccountName>,
    ) -> Result<Vec<ApiToken>, RepositoryError>;

    /// Revokes the token (by `by`, at `at`) unless it already is.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn revoke_token(
        &self,
        id: TokenId,
        by: &Actor,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RevokeTokenOutcome, RepositoryError>;

    /// Records that the token was used at `at` (not audited: it is not a change).
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), RepositoryError>;
}

/// Where the audit trail is read. (It is written by the other repositories, each in the
/// transaction of its change.)
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditRepository: Send + Sync + 'static {
    /// Records matching `query`, newest first (by `at`, then `id`, both descending),
    /// starting strictly after `query.after`, at most `limit`.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the storage fails.
    async fn list(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, RepositoryError>;
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The API server refused an object (invalid, forbidden, unknown kind): retrying
    /// will not help. The message says which object and why.
    #[error("the cluster refused {resource}: {message}")]
    Rejected { resource: String, message: String },
    /// The API server could not be reached or kept failing after retries.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
}

/// One Kubernetes cluster. Implementations retry transient failures (5xx, 429,
/// dropped connections) with backoff themselves and never turn one into a verdict.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Server-side applies `objects` (already labelled and namespaced) with field
    /// manager `kubernaut`, forcing ownership. Idempotent: applying the same objects
    /// again changes nothing. Any kind the API server knows is accepted.
    ///
    /// # Errors
    /// [`ClusterError::Rejected`] when the server refuses an object;
    /// [`ClusterError::Unavailable`] when it cannot be reached.
    async fn apply(&self, objects: &[Value]) -> Result<Vec<AppliedResource>, ClusterError>;

    /// Watches the applied resources until every one has rolled out (success), one has
    /// failed (failure, as soon as the rules of `shared/ROLLOUT.md` doom it) or the
    /// deadline passes (timeout). Progress worth telling is sent on `progress`.
    /// Survives dropped watches and `410 Gone` by resuming or relisting.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] only when the cluster stays unreachable until the
    /// deadline.
    async fn watch_rollout(
        &self,
        request: &RolloutRequest,
        progress: UnboundedSender<RolloutProgress>,
    ) -> Result<RolloutOutcome, ClusterError>;

    /// Deletes the objects labelled as Kubernaut's for `service` in `namespace` that
    /// are not in `keep`, returning what it deleted.
    ///
    /// # Errors
    /// [`ClusterError`] when listing or deleting fails.
    async fn prune(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        keep: &[ResourceRef],
    ) -> Result<Vec<ResourceRef>, ClusterError>;

    /// Where the objects of each of `kinds` live, as the API server's discovery says
    /// (custom resources included): one answer per kind, in order, `None` for a kind
    /// the cluster does not serve. Implementations may cache answers, but must ask the
    /// API server again about a kind they do not know (a definition may have arrived).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when discovery cannot be asked.
    async fn kind_scopes(&self, kinds: &[KindRef]) -> Result<Vec<Option<KindScope>>, ClusterError>;

    /// The live object of each of `objects` (found by `apiVersion`, `kind`,
    /// `metadata.namespace` and `metadata.name`), in order; `None` where the cluster
    /// has no such object, or does not serve its kind. Reads only.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when the cluster cannot be read;
    /// [`ClusterError::Rejected`] when it refuses to show an object (forbidden).
    async fn read(&self, objects: &[Value]) -> Result<Vec<Option<Value>>, ClusterError>;

    /// Whether the cluster answers, and its version.
    async fn status(&self) -> ClusterStatus;

    /// How the rollout of each workload among `resources` (Deployments, StatefulSets,
    /// DaemonSets, Jobs; other kinds are left out) in `namespace` stands now: counts,
    /// conditions, and its pods, new revision's and older ones'. Read once, not
    /// watched; a workload that does not exist (any more) is left out. The default
    /// knows of no workload.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when the cluster cannot be asked.
    async fn rollout_picture(
        &self,
        namespace: &Namespace,
        resources: &[ResourceRef],
    ) -> Result<Vec<WorkloadPicture>, ClusterError> {
        let _ = (namespace, resources);
        Ok(Vec::new())
    }
}

/// What a registry says about an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLookup {
    /// The registry holds the manifest; `digest` (`sha256:...`) is its content digest,
    /// the one a pull by digest would fetch.
    Found { digest: String },
    /// The registry answered and holds no such repository, tag or digest.
    NotFound,
}

/// The registry could not be asked: it did not answer, refused our credentials, or
/// failed (5xx). Says nothing about whether the image exists.
#[derive(Debug, thiserror::Error)]
#[error("the registry {registry} could not be asked: {message}")]
pub struct RegistryError {
    registry: String,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RegistryError {
    pub fn new(registry: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            registry: registry.into(),
            message: message.into(),
            source: None,
        }
    }

    pub fn caused_by(
        registry: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            registry: registry.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The registry host (and port) that could not be asked.
    pub fn registry(&self) -> &str {
        &self.registry
    }
}

/// Container image registries (Docker Registry HTTP API v2), asked whether an image
/// exists before a release that names it is registered.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ImageRegistry: Send + Sync + 'static {
    /// Whether the registry this implementation answers for holds `image` (its tag, or
    /// its digest when it pins one), and the manifest's digest when it does.
    /// Implementations handle the registry's authentication themselves.
    ///
    /// # Errors
    /// [`RegistryError`] when the registry cannot give an answer (unreachable,
    /// credentials refused, server errors). A missing image is never an error: it is
    /// `Ok(ImageLookup::NotFound)`.
    async fn resolve(&self, image: &ImageRef) -> Result<ImageLookup, RegistryError>;

    /// Whether this registry answers for images whose registry part is `host`
    /// (`host[:port]` as written in the reference). Images of other hosts are not
    /// checked.
    fn covers(&self, host: &str) -> bool;
}
