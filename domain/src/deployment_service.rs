//! The deployment use cases: request a deploy, read and wait for deployments, cancel,
//! roll back, preview.
//!
//! A deployment is a state machine persisted at every step (`queued` -> `applying` ->
//! `rolling_out` -> verdict). The [`crate::engine`] drives it, on whichever replica holds
//! its lease; every step is a compare-and-set in the repository, so a cancel racing a
//! verdict leaves exactly one of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::access::{AccessDenied, Caller, Permission};
use crate::audit::AuditAction;
use crate::changes::{Change, ChangeFeed, next_possible_verdict_of};
use crate::cluster::{ClusterSettings, ClusterStatus, ManifestRejected, WorkloadPicture};
use crate::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, Namespace,
    NewDeployment, Placement, ResourceRef, Target, TimelineEntry, Transition,
};
use crate::deployment_plan::{Planner, now};
use crate::dora::DoraService;
use crate::engine::{Engine, EngineSettings};
use crate::notification::Delivery;
use crate::observer::{DeploymentObserver, NoObserver};
use crate::pagination::Page;
use crate::ports::{
    Cluster, ClusterError, DeploymentRepository, InsertDeploymentError, LeaseRepository,
    NotificationOutbox, ReleaseRepository, RepositoryError,
};
use crate::release::{AttributeName, ReleaseId, ServiceName, Version};
use crate::validation::ValidationErrors;

pub use crate::deployment_plan::TIMEOUT_ATTRIBUTE;

/// A configured cluster: its name, its rules and the port to reach it.
#[derive(Clone)]
pub struct ClusterHandle {
    pub name: ClusterName,
    pub settings: ClusterSettings,
    pub cluster: Arc<dyn Cluster>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Which release to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseSelector {
    Id(ReleaseId),
    Version(ServiceName, Version),
}

/// A validated request to deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRequest {
    pub release: ReleaseSelector,
    pub target: Target,
    /// Template variables of this deploy, over every other source.
    pub attributes: BTreeMap<AttributeName, String>,
    /// `None` takes the release's `kubernaut.timeout_seconds` attribute, else 10 min.
    pub timeout: Option<Duration>,
    pub prune: bool,
    pub rollback_on_failure: bool,
}

/// Why a deploy was not started.
#[derive(Debug, thiserror::Error)]
pub enum RequestDeploymentError {
    #[error("no active release matches")]
    ReleaseNotFound,
    #[error("no cluster is configured under the name {0}")]
    UnknownCluster(ClusterName),
    #[error("cluster {cluster} does not allow deploys to namespace {namespace}")]
    NamespaceNotAllowed {
        cluster: ClusterName,
        namespace: Namespace,
    },
    #[error("the template needs variables this deploy does not supply: {}", .0.join(", "))]
    MissingVariables(Vec<String>),
    #[error("the manifest cannot be rendered for this target: {0}")]
    Render(String),
    /// The values of these variables would change the manifest's structure.
    #[error("the values of {} would change the manifest's structure", .0.join(", "))]
    ValueChangesStructure(Vec<String>),
    #[error(transparent)]
    Rejected(#[from] ManifestRejected),
    /// The cluster's discovery could not be asked, so the manifest's kinds cannot be
    /// checked: nothing was started; try again.
    #[error("cluster {cluster} cannot be asked which kinds it serves: {message}")]
    ClusterUnavailable {
        cluster: ClusterName,
        message: String,
    },
    #[error("deployment {active} of this service to this target is still active")]
    ActiveExists { active: DeploymentId },
    #[error("there is no earlier successful release on this target to roll back to")]
    NothingToRollBackTo,
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why a deployment could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentLookupError {
    #[error("no deployment has this id")]
    NotFound,
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error("the deployment already ended: {0}")]
    AlreadyFinished(DeploymentStatus),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why a preview could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no active release has this id")]
    ReleaseNotFound,
    #[error(transparent)]
    Request(#[from] RequestDeploymentError),
}

/// Why a release could not be compared with what runs.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Preview(#[from] PreviewError),
    /// The cluster could not be read.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One object of a rendered release beside its live counterpart.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDiff {
    pub resource: ResourceRef,
    /// The object as Kubernaut would apply it (without the deployment-id label, which
    /// every deploy changes).
    pub desired: serde_json::Value,
    /// The live object cut down to the fields `desired` sets (see
    /// [`crate::cluster::live_as_desired`]); `None` when the cluster has none.
    pub live: Option<serde_json::Value>,
}

impl ObjectDiff {
    /// Whether applying the release would change this object (or create it).
    pub fn changes(&self) -> bool {
        self.live.as_ref() != Some(&self.desired)
    }
}

/// A rendered manifest for a target, nothing applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub text: String,
    pub objects: Vec<serde_json::Value>,
}

/// A configured cluster as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOverview {
    pub name: ClusterName,
    pub settings: ClusterSettings,
    pub status: ClusterStatus,
}

/// The deployment use cases over the release and deployment repositories, the leases,
/// the change feed and the configured clusters.
#[derive(Clone)]
pub struct DeploymentService {
    planner: Planner,
    deployments: Arc<dyn DeploymentRepository>,
    leases: Arc<dyn LeaseRepository>,
    changes: Arc<dyn ChangeFeed>,
    observer: Arc<dyn DeploymentObserver>,
    engine: Engine,
    /// Where deployments' notifications are kept, when they are configured.
    notifications: Option<Arc<dyn NotificationOutbox>>,
}

impl std::fmt::Debug for DeploymentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentService")
            .field(
                "clusters",
                &self.planner.clusters.keys().collect::<Vec<_>>(),
            )
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl DeploymentService {
    /// The use cases, with an engine of [`EngineSettings::default`] (not started: see
    /// [`Engine::start`]).
    pub fn new(
        releases: Arc<dyn ReleaseRepository>,
        deployments: Arc<dyn DeploymentRepository>,
        leases: Arc<dyn LeaseRepository>,
        changes: Arc<dyn ChangeFeed>,
        clusters: Vec<ClusterHandle>,
    ) -> Self {
        let planner = Planner {
            releases,
            clusters: Arc::new(clusters.into_iter().map(|c| (c.name.clone(), c)).collect()),
            pin_image_digest: false,
        };
        let engine = Engine::new(
            Arc::clone(&deployments),
            Arc::clone(&leases),
            Arc::clone(&changes),
            planner.clone(),
            EngineSettings::default(),
            Arc::new(NoObserver),
        );
        Self {
            planner,
            deployments,
            leases,
            changes,
            observer: Arc::new(NoObserver),
            engine,
            notifications: None,
        }
    }

    /// Reads deployments' notifications from `outbox` (see [`Self::notifications`]).
    #[must_use]
    pub fn with_notifications(mut self, outbox: Arc<dyn NotificationOutbox>) -> Self {
        self.notifications = Some(outbox);
        self
    }

    /// The notifications of deployment `id`: each delivery with its attempts, oldest
    /// first (none when no outbox is configured).
    ///
    /// # Errors
    /// [`DeploymentLookupError::NotFound`] for unknown ids.
    pub async fn notifications(
        &self,
        id: DeploymentId,
        caller: &Caller,
    ) -> Result<Vec<Delivery>, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        let deployment = self.find(id).await?;
        self.notifications_of(&deployment, caller).await
    }

    /// [`Self::notifications`] of a deployment already read (its page).
    ///
    /// # Errors
    /// [`DeploymentLookupError::Forbidden`] for a caller who may not read it.
    pub async fn notifications_of(
        &self,
        deployment: &Deployment,
        caller: &Caller,
    ) -> Result<Vec<Delivery>, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        match &self.notifications {
            Some(outbox) => Ok(outbox.deliveries(deployment.id).await?),
            None => Ok(Vec::new()),
        }
    }

    fn rebuild_engine(mut self, settings: EngineSettings) -> Self {
        self.engine = Engine::new(
            Arc::clone(&self.deployments),
            Arc::clone(&self.leases),
            Arc::clone(&self.changes),
            self.planner.clone(),
            settings,
            Arc::clone(&self.observer),
        );
        self
    }

    /// With `pin` set, the `image` template variable of a release whose digest was
    /// recorded is `registry/repository@digest`, so a deploy runs the image that was
    /// checked at release time even when its tag has moved since.
    #[must_use]
    pub fn with_digest_pinning(mut self, pin: bool) -> Self {
        self.planner.pin_image_digest = pin;
        let settings = self.engine.settings().clone();
        self.rebuild_engine(settings)
    }

    /// Runs the engine with `settings` (call before starting it).
    #[must_use]
    pub fn with_engine_settings(self, settings: EngineSettings) -> Self {
        self.rebuild_engine(settings)
    }

    /// Tells `observer` of every rollout this replica's engine starts and every verdict
    /// it stores (call before starting the engine).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn DeploymentObserver>) -> Self {
        self.observer = observer;
        let settings = self.engine.settings().clone();
        self.rebuild_engine(settings)
    }

    /// The DORA figures over the same repositories.
    pub fn dora(&self) -> DoraService {
        DoraService::new(
            Arc::clone(&self.planner.releases),
            Arc::clone(&self.deployments),
        )
    }

    /// The engine that drives this replica's share of the deployments.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Tells of every change to a deployment (a status, a timeline entry), made through
    /// any replica.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Renders the release for a target without applying anything.
    ///
    /// # Errors
    /// [`PreviewError`] when the release is unknown or cannot be rendered there.
    pub async fn preview(
        &self,
        release: ReleaseId,
        target: &Target,
        attributes: &BTreeMap<AttributeName, String>,
        caller: &Caller,
    ) -> Result<Preview, PreviewError> {
        caller
            .require(Permission::Read)
            .map_err(RequestDeploymentError::from)?;
        let release = self
            .planner
            .releases
            .find_active(release)
            .await
            .map_err(RequestDeploymentError::from)?
            .ok_or(PreviewError::ReleaseNotFound)?;
        let rendered = self.planner.render(&release, target, attributes)?;
        let objects = self
            .planner
            .prepare(
                &rendered,
                &release,
                target,
                DeploymentId::from_uuid(uuid::Uuid::nil()),
                None,
            )
            .await?;
        Ok(Preview {
            text: rendered.text,
            objects,
        })
    }

    /// Compares the release rendered for a target with the live objects of the
    /// target's cluster, object by object, reading the cluster and changing nothing.
    ///
    /// # Errors
    /// [`DiffError::Preview`] as [`DeploymentService::preview`];
    /// [`DiffError::Cluster`] when the cluster cannot be read.
    pub async fn diff(
        &self,
        release: ReleaseId,
        target: &Target,
        attributes: &BTreeMap<AttributeName, String>,
        caller: &Caller,
    ) -> Result<Vec<ObjectDiff>, DiffError> {
        let preview = self.preview(release, target, attributes, caller).await?;
        let Some(handle) = self.planner.clusters.get(&target.cluster) else {
            // The preview checked the cluster; a missing one cannot get here.
            return Ok(Vec::new());
        };
        let desired: Vec<serde_json::Value> = preview
            .objects
            .into_iter()
            .map(crate::cluster::without_deployment_id)
            .collect();
        let live = handle.cluster.read(&desired).await?;
        Ok(desired
            .into_iter()
            .zip(live)
            .map(|(desired, live)| ObjectDiff {
                resource: crate::cluster::resource_ref_of(&desired),
                live: live.map(|live| {
                    crate::cluster::live_as_desired(
                        &crate::cluster::without_deployment_id(live),
                        &desired,
                    )
                }),
                desired,
            })
            .collect())
    }

    /// Starts a deploy: renders, stores it `queued`, and has the engine drive it.
    /// The caller needs [`Permission::Deploy`] on the target.
    ///
    /// # Errors
    /// [`RequestDeploymentError`] naming why nothing was started.
    pub async fn request(
        &self,
        request: DeploymentRequest,
        caller: &Caller,
    ) -> Result<Deployment, RequestDeploymentError> {
        caller.require(Permission::Deploy(request.target.clone()))?;
        let release = self.planner.resolve_release(&request.release).await?;
        let planned = self.planner.plan(&release, request, caller, None).await?;
        self.store(planned).await
    }

    async fn store(&self, planned: NewDeployment) -> Result<Deployment, RequestDeploymentError> {
        let NewDeployment { deployment, audit } = planned;
        self.deployments
            .insert(&deployment, &audit)
            .await
            .map_err(|error| match error {
                InsertDeploymentError::ActiveExists { active } => {
                    RequestDeploymentError::ActiveExists { active }
                }
                InsertDeploymentError::Repository(error) => error.into(),
            })?;
        self.changes.publish(Change::Deployment {
            id: deployment.id,
            status: Some(DeploymentStatus::Queued),
        });
        self.engine.started(deployment.id);
        Ok(deployment)
    }

    /// The deployment with its timeline and diagnostics.
    ///
    /// # Errors
    /// [`DeploymentLookupError::NotFound`] for unknown ids.
    pub async fn get(
        &self,
        id: DeploymentId,
        caller: &Caller,
    ) -> Result<Deployment, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        self.find(id).await
    }

    async fn find(&self, id: DeploymentId) -> Result<Deployment, DeploymentLookupError> {
        self.deployments
            .find(id)
            .await?
            .ok_or(DeploymentLookupError::NotFound)
    }

    /// The deployment once it has a verdict, or as it is when `wait` runs out. Wakes on
    /// the change feed, so a verdict stored by any replica ends the wait at once.
    ///
    /// # Errors
    /// [`DeploymentLookupError::NotFound`] for unknown ids.
    pub async fn wait(
        &self,
        id: DeploymentId,
        wait: Duration,
        caller: &Caller,
    ) -> Result<Deployment, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let deployment = self.find(id).await?;
            if deployment.status.is_verdict() {
                return Ok(deployment);
            }
            // Not held while waiting (a thousand waits held a thousand deployments with
            // their objects): the next look reads it again.
            drop(deployment);
            if tokio::time::timeout_at(deadline, next_possible_verdict_of(&mut changes, id))
                .await
                .is_err()
            {
                return self.find(id).await;
            }
        }
    }

    /// A page of deployments, newest first.
    ///
    /// # Errors
    /// [`DeploymentLookupError::Forbidden`] for callers without a role;
    /// [`DeploymentLookupError::Repository`] when the storage fails.
    pub async fn list(
        &self,
        query: &DeploymentQuery,
        caller: &Caller,
    ) -> Result<Page<Deployment>, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        let limit = usize::from(query.limit.get());
        let mut items = self.deployments.list(query, limit + 1).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(Deployment::cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Where each service stands on each target (see
    /// [`DeploymentRepository::placements`]): what the overview pages show.
    ///
    /// # Errors
    /// [`DeploymentLookupError::Forbidden`] when the caller may not read;
    /// [`DeploymentLookupError::Repository`] when the storage fails.
    pub async fn placements(
        &self,
        query: &DeploymentQuery,
        caller: &Caller,
    ) -> Result<Vec<Placement>, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        Ok(self.deployments.placements(query).await?)
    }

    /// Where `releases` went: the newest deployment of each on every target it was
    /// deployed to (see [`DeploymentRepository::newest_per_target`]).
    ///
    /// # Errors
    /// [`DeploymentLookupError::Forbidden`] when the caller may not read;
    /// [`DeploymentLookupError::Repository`] when the storage fails.
    pub async fn newest_per_target(
        &self,
        releases: &[ReleaseId],
        caller: &Caller,
    ) -> Result<Vec<Deployment>, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        if releases.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.deployments.newest_per_target(releases).await?)
    }

    /// Cancels an active deployment: it stops being watched (by whichever replica
    /// drives it) and ends `cancelled`. What was applied stays applied.
    ///
    /// # Errors
    /// [`DeploymentLookupError::AlreadyFinished`] when it has a verdict already.
    pub async fn cancel(
        &self,
        id: DeploymentId,
        caller: &Caller,
    ) -> Result<Deployment, DeploymentLookupError> {
        let deployment = self.find(id).await?;
        caller.require(Permission::Deploy(deployment.target.clone()))?;
        let actor = caller.actor();
        if deployment.status.is_verdict() {
            return Err(DeploymentLookupError::AlreadyFinished(deployment.status));
        }
        let at = now();
        let mut cancel =
            Transition::new(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, at);
        cancel.audit = Some(caller.audit(
            AuditAction::DeploymentCancelled,
            format!("deployment/{id}"),
            serde_json::json!({
                "service": deployment.service.as_str(),
                "version": deployment.version.as_str(),
                "cluster": deployment.target.cluster.as_str(),
                "namespace": deployment.target.namespace.as_str(),
            }),
        ));
        cancel.entries.push(TimelineEntry {
            at,
            phase: DeploymentStatus::Cancelled,
            message: format!("cancelled by {actor}"),
            resource: None,
        });
        if !self.deployments.transition(id, &cancel).await? {
            let now_status = self.find(id).await?.status;
            return Err(DeploymentLookupError::AlreadyFinished(now_status));
        }
        // The replica that drives it hears of this and stops its driver; its fenced
        // writes would be refused anyway.
        self.changes.publish(Change::Deployment {
            id,
            status: Some(DeploymentStatus::Cancelled),
        });
        self.find(id).await
    }

    /// Deploys again the newest release that succeeded on the deployment's target,
    /// other than the deployment's own release.
    ///
    /// # Errors
    /// [`RequestDeploymentError::NothingToRollBackTo`] when there is none.
    pub async fn rollback(
        &self,
        id: DeploymentId,
        caller: &Caller,
    ) -> Result<Deployment, RollbackError> {
        let deployment = self.find(id).await?;
        caller
            .require(Permission::Deploy(deployment.target.clone()))
            .map_err(DeploymentLookupError::from)?;
        let planned = self
            .planner
            .plan_rollback(self.deployments.as_ref(), &deployment, caller)
            .await?;
        Ok(self.store(planned).await?)
    }

    /// How the rollout of `deployment`'s workloads stands on its cluster now (see
    /// [`Cluster::rollout_picture`]): the live picture of its page. Empty when the
    /// cluster is no longer configured.
    ///
    /// # Errors
    /// [`RolloutPictureError::Forbidden`] when the caller may not read;
    /// [`RolloutPictureError::Cluster`] when the cluster cannot be asked.
    pub async fn rollout_picture(
        &self,
        deployment: &Deployment,
        caller: &Caller,
    ) -> Result<Vec<WorkloadPicture>, RolloutPictureError> {
        caller.require(Permission::Read)?;
        let Some(handle) = self.planner.clusters.get(&deployment.target.cluster) else {
            return Ok(Vec::new());
        };
        let resources: Vec<ResourceRef> = deployment
            .objects
            .iter()
            .map(crate::cluster::resource_ref_of)
            .collect();
        Ok(handle
            .cluster
            .rollout_picture(&deployment.target.namespace, &resources)
            .await?)
    }

    /// The configured clusters and whether each answers.
    ///
    /// # Errors
    /// [`AccessDenied`] for callers without a role.
    pub async fn clusters(&self, caller: &Caller) -> Result<Vec<ClusterOverview>, AccessDenied> {
        caller.require(Permission::Read)?;
        let mut overviews = Vec::with_capacity(self.planner.clusters.len());
        for handle in self.planner.clusters.values() {
            overviews.push(ClusterOverview {
                name: handle.name.clone(),
                settings: handle.settings.clone(),
                status: handle.cluster.status().await,
            });
        }
        Ok(overviews)
    }
}

/// Why a rollout's picture could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum RolloutPictureError {
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Why a rollback was not started.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Lookup(#[from] DeploymentLookupError),
    #[error(transparent)]
    Request(#[from] RequestDeploymentError),
}

/// Parses a request's attributes, naming each bad one under `attributes.NAME`.
///
/// # Errors
/// [`ValidationErrors`] for every bad name or value.
pub fn parse_request_attributes(
    raw: &BTreeMap<String, String>,
) -> Result<BTreeMap<AttributeName, String>, ValidationErrors> {
    let attributes = crate::release::Attributes::parse("attributes", raw)?;
    Ok(attributes
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect())
}

#[cfg(test)]
#[path = "deployment_service_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod engine_tests;
