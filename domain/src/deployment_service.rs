//! The deployment use cases: request a deploy, drive it to a verdict, cancel, roll
//! back, preview, and resume whatever a restart interrupted.
//!
//! A deployment is a state machine persisted at every step (`queued` -> `applying` ->
//! `rolling_out` -> verdict). Every step is a compare-and-set in the repository, so a
//! cancel racing a verdict leaves exactly one of them, and a Kubernaut restarted
//! mid-deploy resumes from what is stored: applying again is idempotent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SubsecRound as _, Utc};
use tokio::sync::{broadcast, mpsc, watch};

use crate::access::{AccessDenied, Caller, Permission};
use crate::actor::Actor;
use crate::audit::{AuditAction, AuditEntry};
use crate::cluster::{
    ClusterSettings, ClusterStatus, ManifestRejected, RolloutOutcome, RolloutRequest,
    prepare_objects, resource_ref_of,
};
use crate::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentOptions, DeploymentQuery, DeploymentStatus,
    Diagnostics, FailureReason, Namespace, Placement, ResourceRef, Target, TimelineEntry,
    Transition,
};
use crate::pagination::Page;
use crate::ports::{
    Cluster, ClusterError, DeploymentRepository, InsertDeploymentError, ReleaseRepository,
    RepositoryError,
};
use crate::release::{AttributeName, Release, ReleaseId, ServiceName, Version};
use crate::template::{RenderError, TemplateVariables};
use crate::validation::ValidationErrors;

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
    #[error(transparent)]
    Rejected(#[from] ManifestRejected),
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

#[derive(Default)]
struct Runners {
    /// The cancel signal of each deployment driven by this process.
    cancels: HashMap<DeploymentId, watch::Sender<bool>>,
}

/// The deployment use cases over the release and deployment repositories and the
/// configured clusters.
#[derive(Clone)]
pub struct DeploymentService {
    releases: Arc<dyn ReleaseRepository>,
    deployments: Arc<dyn DeploymentRepository>,
    clusters: Arc<BTreeMap<ClusterName, ClusterHandle>>,
    runners: Arc<Mutex<Runners>>,
    changes: broadcast::Sender<DeploymentId>,
    retry_delay: Duration,
    pin_image_digest: bool,
}

impl std::fmt::Debug for DeploymentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentService")
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The release attribute that sets a release's default rollout timeout.
pub const TIMEOUT_ATTRIBUTE: &str = "kubernaut.timeout_seconds";

fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl DeploymentService {
    pub fn new(
        releases: Arc<dyn ReleaseRepository>,
        deployments: Arc<dyn DeploymentRepository>,
        clusters: Vec<ClusterHandle>,
    ) -> Self {
        let (changes, _) = broadcast::channel(4096);
        Self {
            releases,
            deployments,
            clusters: Arc::new(clusters.into_iter().map(|c| (c.name.clone(), c)).collect()),
            runners: Arc::new(Mutex::new(Runners::default())),
            changes,
            retry_delay: Duration::from_secs(1),
            pin_image_digest: false,
        }
    }

    /// With `pin` set, the `image` template variable of a release whose digest was
    /// recorded is `registry/repository@digest`, so a deploy runs the image that was
    /// checked at release time even when its tag has moved since.
    #[must_use]
    pub fn with_digest_pinning(mut self, pin: bool) -> Self {
        self.pin_image_digest = pin;
        self
    }

    /// Sets the first delay between retries of an unreachable cluster (tests shorten it).
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Tells of every change to a deployment (a status, a timeline entry) by its id.
    pub fn subscribe(&self) -> broadcast::Receiver<DeploymentId> {
        self.changes.subscribe()
    }

    fn cluster(&self, name: &ClusterName) -> Result<&ClusterHandle, RequestDeploymentError> {
        self.clusters
            .get(name)
            .ok_or_else(|| RequestDeploymentError::UnknownCluster(name.clone()))
    }

    async fn resolve_release(
        &self,
        selector: &ReleaseSelector,
    ) -> Result<Release, RequestDeploymentError> {
        let found = match selector {
            ReleaseSelector::Id(id) => self.releases.find_active(*id).await?,
            ReleaseSelector::Version(service, version) => {
                self.releases
                    .find_active_by_version(service, version)
                    .await?
            }
        };
        found.ok_or(RequestDeploymentError::ReleaseNotFound)
    }

    /// Renders `release` for `target`: variables from the cluster, the namespace, the
    /// release, `cluster` and `namespace`, then the request's attributes, later winning.
    fn render(
        &self,
        release: &Release,
        target: &Target,
        attributes: &BTreeMap<AttributeName, String>,
    ) -> Result<(String, Vec<serde_json::Value>, &ClusterHandle), RequestDeploymentError> {
        let handle = self.cluster(&target.cluster)?;
        if !handle.settings.allows_namespace(&target.namespace) {
            return Err(RequestDeploymentError::NamespaceNotAllowed {
                cluster: target.cluster.clone(),
                namespace: target.namespace.clone(),
            });
        }
        let mut variables = TemplateVariables::default();
        for (name, value) in &handle.settings.attributes {
            variables.set(name, value);
        }
        if let Some(namespace_attributes) = handle
            .settings
            .namespace_attributes
            .get(target.namespace.as_str())
        {
            for (name, value) in namespace_attributes {
                variables.set(name, value);
            }
        }
        for (name, value) in release.attributes().iter() {
            variables.set(name.as_str(), value);
        }
        variables.set("service", release.service.as_str());
        variables.set("version", release.version.as_str());
        match release.pinned_image().filter(|_| self.pin_image_digest) {
            Some(pinned) => variables.set("image", &pinned),
            None => variables.set("image", release.image().as_str()),
        }
        variables.set("cluster", target.cluster.as_str());
        variables.set("namespace", target.namespace.as_str());
        for (name, value) in attributes {
            variables.set(name.as_str(), value);
        }
        let rendered = release
            .template()
            .render(&variables)
            .map_err(|error| match error {
                RenderError::MissingVariables(names) => {
                    RequestDeploymentError::MissingVariables(names)
                }
                other => RequestDeploymentError::Render(other.to_string()),
            })?;
        Ok((rendered.text, rendered.objects, handle))
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
            .releases
            .find_active(release)
            .await
            .map_err(RequestDeploymentError::from)?
            .ok_or(PreviewError::ReleaseNotFound)?;
        let (text, objects, handle) = self.render(&release, target, attributes)?;
        let objects = prepare_objects(
            &objects,
            &handle.settings,
            &target.cluster,
            &target.namespace,
            &release.service,
            release.id,
            DeploymentId::from_uuid(uuid::Uuid::nil()),
        )
        .map_err(RequestDeploymentError::from)?;
        Ok(Preview { text, objects })
    }

    /// Starts a deploy: renders, stores it `queued` and drives it in the background.
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
        let release = self.resolve_release(&request.release).await?;
        self.start(release, request, caller, None).await
    }

    async fn start(
        &self,
        release: Release,
        request: DeploymentRequest,
        caller: &Caller,
        rollback_of: Option<DeploymentId>,
    ) -> Result<Deployment, RequestDeploymentError> {
        let actor = caller.actor().clone();
        let (manifest, objects, handle) =
            self.render(&release, &request.target, &request.attributes)?;
        let id = DeploymentId::generate();
        let objects = prepare_objects(
            &objects,
            &handle.settings,
            &request.target.cluster,
            &request.target.namespace,
            &release.service,
            release.id,
            id,
        )?;
        let timeout = request
            .timeout
            .or_else(|| {
                release
                    .attributes()
                    .get(TIMEOUT_ATTRIBUTE)
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(Duration::from_secs)
            })
            .unwrap_or(DeploymentOptions::DEFAULT_TIMEOUT)
            .clamp(Duration::from_secs(1), DeploymentOptions::MAX_TIMEOUT);
        let created_at = now();
        let message = match rollback_of {
            Some(of) => format!(
                "rollback of deployment {of} to {} {} requested by {actor}",
                release.service, release.version
            ),
            None => format!(
                "{} {} to {} requested by {actor}",
                release.service, release.version, request.target
            ),
        };
        let deployment = Deployment {
            id,
            release_id: release.id,
            service: release.service.clone(),
            version: release.version.clone(),
            target: request.target,
            requested_by: actor,
            attributes: request
                .attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            options: DeploymentOptions {
                timeout,
                prune: request.prune,
                rollback_on_failure: request.rollback_on_failure,
            },
            manifest,
            objects,
            status: DeploymentStatus::Queued,
            created_at,
            started_at: None,
            finished_at: None,
            timeline: vec![TimelineEntry {
                at: created_at,
                phase: DeploymentStatus::Queued,
                message,
                resource: None,
            }],
            diagnostics: None,
            rollback_of,
        };
        let audit = caller.audit(
            if rollback_of.is_some() {
                AuditAction::DeploymentRolledBack
            } else {
                AuditAction::DeploymentRequested
            },
            format!("deployment/{}", deployment.id),
            serde_json::json!({
                "service": deployment.service.as_str(),
                "version": deployment.version.as_str(),
                "release": deployment.release_id.to_string(),
                "cluster": deployment.target.cluster.as_str(),
                "namespace": deployment.target.namespace.as_str(),
                "rollback_of": rollback_of.map(|of| of.to_string()),
            }),
        );
        self.deployments
            .insert(&deployment, &audit)
            .await
            .map_err(|error| match error {
                InsertDeploymentError::ActiveExists { active } => {
                    RequestDeploymentError::ActiveExists { active }
                }
                InsertDeploymentError::Repository(error) => error.into(),
            })?;
        self.spawn_driver(deployment.clone());
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

    /// The deployment once it has a verdict, or as it is when `wait` runs out.
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
            // Wake on a change of this deployment; re-read at least every second in case
            // another Kubernaut process drives it.
            let woke = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                async {
                    loop {
                        match changes.recv().await {
                            Ok(changed) if changed == id => return,
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => return,
                            Err(broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                },
            )
            .await;
            if woke.is_err() && tokio::time::Instant::now() >= deadline {
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

    /// Cancels an active deployment: it stops being watched and ends `cancelled`.
    /// What was applied stays applied.
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
        let moved = self
            .deployments
            .transition(
                id,
                &Transition {
                    from: DeploymentStatus::ACTIVE.to_vec(),
                    to: DeploymentStatus::Cancelled,
                    at,
                    diagnostics: None,
                    audit: Some(caller.audit(
                        AuditAction::DeploymentCancelled,
                        format!("deployment/{id}"),
                        serde_json::json!({
                            "service": deployment.service.as_str(),
                            "version": deployment.version.as_str(),
                            "cluster": deployment.target.cluster.as_str(),
                            "namespace": deployment.target.namespace.as_str(),
                        }),
                    )),
                },
            )
            .await?;
        if !moved {
            let now_status = self.find(id).await?.status;
            return Err(DeploymentLookupError::AlreadyFinished(now_status));
        }
        self.deployments
            .append_timeline(
                id,
                &TimelineEntry {
                    at,
                    phase: DeploymentStatus::Cancelled,
                    message: format!("cancelled by {actor}"),
                    resource: None,
                },
            )
            .await?;
        if let Ok(runners) = self.runners.lock()
            && let Some(cancel) = runners.cancels.get(&id)
        {
            let _ = cancel.send(true);
        }
        let _ = self.changes.send(id);
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
        Ok(self.roll_back_from(&deployment, caller).await?)
    }

    async fn roll_back_from(
        &self,
        deployment: &Deployment,
        caller: &Caller,
    ) -> Result<Deployment, RequestDeploymentError> {
        let good = self
            .deployments
            .last_succeeded(
                &deployment.service,
                &deployment.target,
                Some(deployment.release_id),
            )
            .await?
            .ok_or(RequestDeploymentError::NothingToRollBackTo)?;
        let release = self
            .releases
            .find_active(good.release_id)
            .await?
            .ok_or(RequestDeploymentError::NothingToRollBackTo)?;
        let attributes = good
            .attributes
            .iter()
            .filter_map(|(k, v)| AttributeName::parse(k).ok().map(|k| (k, v.clone())))
            .collect();
        let request = DeploymentRequest {
            release: ReleaseSelector::Id(release.id),
            target: deployment.target.clone(),
            attributes,
            timeout: Some(good.options.timeout),
            prune: good.options.prune,
            rollback_on_failure: false,
        };
        self.start(release, request, caller, Some(deployment.id))
            .await
    }

    /// The configured clusters and whether each answers.
    ///
    /// # Errors
    /// [`AccessDenied`] for callers without a role.
    pub async fn clusters(&self, caller: &Caller) -> Result<Vec<ClusterOverview>, AccessDenied> {
        caller.require(Permission::Read)?;
        let mut overviews = Vec::with_capacity(self.clusters.len());
        for handle in self.clusters.values() {
            overviews.push(ClusterOverview {
                name: handle.name.clone(),
                settings: handle.settings.clone(),
                status: handle.cluster.status().await,
            });
        }
        Ok(overviews)
    }

    /// Drives every deployment a previous process left active to its verdict. Call once
    /// at start-up.
    ///
    /// # Errors
    /// [`RepositoryError`] when the active deployments cannot be listed.
    pub async fn resume_active(&self) -> Result<usize, RepositoryError> {
        let active = self.deployments.list_active().await?;
        let count = active.len();
        for deployment in active {
            tracing::info!(deployment = %deployment.id, status = %deployment.status, "resuming deployment");
            self.spawn_driver(deployment);
        }
        Ok(count)
    }

    fn spawn_driver(&self, deployment: Deployment) {
        let (cancel, cancelled) = watch::channel(false);
        if let Ok(mut runners) = self.runners.lock() {
            runners.cancels.insert(deployment.id, cancel);
        }
        let service = self.clone();
        tokio::spawn(async move {
            let id = deployment.id;
            if let Err(error) = service.drive(deployment, cancelled).await {
                tracing::error!(deployment = %id, error = %error, "deployment driver failed; it will resume on restart");
            }
            if let Ok(mut runners) = service.runners.lock() {
                runners.cancels.remove(&id);
            }
            let _ = service.changes.send(id);
        });
    }

    async fn note(
        &self,
        id: DeploymentId,
        phase: DeploymentStatus,
        message: String,
        resource: Option<String>,
    ) -> Result<(), RepositoryError> {
        self.deployments
            .append_timeline(
                id,
                &TimelineEntry {
                    at: now(),
                    phase,
                    message,
                    resource,
                },
            )
            .await?;
        let _ = self.changes.send(id);
        Ok(())
    }

    /// Moves the deployment on; `false` when someone else (a cancel) moved it first.
    async fn step(
        &self,
        id: DeploymentId,
        from: &[DeploymentStatus],
        to: DeploymentStatus,
        diagnostics: Option<Diagnostics>,
    ) -> Result<bool, RepositoryError> {
        let moved = self
            .deployments
            .transition(
                id,
                &Transition {
                    from: from.to_vec(),
                    to,
                    at: now(),
                    audit: to
                        .is_verdict()
                        .then(|| finished(id, to, diagnostics.as_ref())),
                    diagnostics,
                },
            )
            .await?;
        let _ = self.changes.send(id);
        Ok(moved)
    }

    /// Runs the state machine from wherever the deployment is.
    async fn drive(
        &self,
        deployment: Deployment,
        mut cancelled: watch::Receiver<bool>,
    ) -> Result<(), RepositoryError> {
        use DeploymentStatus::{Applying, Failed, Queued, RollingOut, Succeeded, TimedOut};
        let id = deployment.id;
        let Some(handle) = self.clusters.get(&deployment.target.cluster).cloned() else {
            let diagnostics = Diagnostics::single(
                placeholder_resource(&deployment),
                FailureReason::Other,
                format!(
                    "cluster {} is no longer configured",
                    deployment.target.cluster
                ),
            );
            self.step(id, &DeploymentStatus::ACTIVE, Failed, Some(diagnostics))
                .await?;
            return Ok(());
        };
        let resumed = deployment.status != Queued;
        if resumed {
            self.note(
                id,
                deployment.status,
                "resumed after a restart of Kubernaut".into(),
                None,
            )
            .await?;
        } else if !self.step(id, &[Queued], Applying, None).await? {
            return Ok(());
        }
        let started_at = deployment.started_at.unwrap_or_else(now);
        let deadline = deployment.started_at.map_or_else(
            || started_at + chrono_duration(deployment.options.timeout),
            |_| deployment.deadline(),
        );

        // Apply, retrying while the cluster is unreachable and time remains.
        self.note(
            id,
            Applying,
            format!(
                "applying {} objects to {}",
                deployment.objects.len(),
                deployment.target
            ),
            None,
        )
        .await?;
        let mut delay = self.retry_delay;
        let applied = loop {
            let attempt = tokio::select! {
                result = handle.cluster.apply(&deployment.objects) => result,
                _ = wait_cancelled(&mut cancelled) => return Ok(()),
            };
            match attempt {
                Ok(applied) => break applied,
                Err(ClusterError::Rejected { resource, message }) => {
                    let resource_ref = deployment
                        .objects
                        .iter()
                        .map(resource_ref_of)
                        .find(|r| r.to_string() == resource)
                        .unwrap_or_else(|| placeholder_resource(&deployment));
                    let diagnostics = Diagnostics::single(
                        resource_ref,
                        FailureReason::ApplyRejected,
                        message.clone(),
                    );
                    self.note(
                        id,
                        Applying,
                        format!("the cluster refused {resource}: {message}"),
                        Some(resource),
                    )
                    .await?;
                    self.step(id, &[Applying, RollingOut], Failed, Some(diagnostics))
                        .await?;
                    return self.after_verdict(&deployment, Failed).await;
                }
                Err(ClusterError::Unavailable(message)) => {
                    if Utc::now() + chrono_duration(delay) >= deadline {
                        let diagnostics = Diagnostics::single(
                            placeholder_resource(&deployment),
                            FailureReason::TimedOut,
                            format!("the cluster stayed unreachable until the deadline: {message}"),
                        );
                        self.step(id, &[Applying, RollingOut], TimedOut, Some(diagnostics))
                            .await?;
                        return self.after_verdict(&deployment, TimedOut).await;
                    }
                    self.note(
                        id,
                        Applying,
                        format!("the cluster is unreachable, retrying: {message}"),
                        None,
                    )
                    .await?;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        for resource in &applied {
            let generation = resource
                .generation
                .map(|g| format!(" (generation {g})"))
                .unwrap_or_default();
            self.note(
                id,
                Applying,
                format!("applied {}{generation}", resource.resource),
                Some(resource.resource.to_string()),
            )
            .await?;
        }
        if !self
            .step(id, &[Applying, RollingOut], RollingOut, None)
            .await?
        {
            return Ok(());
        }

        // Watch to a verdict, forwarding progress to the timeline as it comes.
        let request = RolloutRequest {
            deployment: id,
            namespace: deployment.target.namespace.clone(),
            resources: applied,
            started_at,
            deadline,
        };
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
        let forwarder = {
            let service = self.clone();
            tokio::spawn(async move {
                while let Some(progress) = progress_rx.recv().await {
                    let progress: crate::cluster::RolloutProgress = progress;
                    if let Err(error) = service
                        .note(id, RollingOut, progress.message, progress.resource)
                        .await
                    {
                        tracing::warn!(deployment = %id, %error, "could not record progress");
                    }
                }
            })
        };
        let mut delay = self.retry_delay;
        let outcome = loop {
            let watched = tokio::select! {
                outcome = handle.cluster.watch_rollout(&request, progress_tx.clone()) => outcome,
                _ = wait_cancelled(&mut cancelled) => {
                    forwarder.abort();
                    return Ok(());
                }
            };
            match watched {
                Ok(outcome) => break outcome,
                Err(error) if Utc::now() + chrono_duration(delay) < deadline => {
                    self.note(
                        id,
                        RollingOut,
                        format!("lost the cluster while watching, retrying: {error}"),
                        None,
                    )
                    .await?;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(error) => {
                    break RolloutOutcome::TimedOut(Diagnostics::single(
                        placeholder_resource(&deployment),
                        FailureReason::TimedOut,
                        format!("the cluster stayed unreachable until the deadline: {error}"),
                    ));
                }
            }
        };
        drop(progress_tx);
        let _ = forwarder.await;

        let verdict = match outcome {
            RolloutOutcome::Succeeded { warnings } => {
                for warning in warnings {
                    self.note(id, RollingOut, format!("warning: {warning}"), None)
                        .await?;
                }
                if deployment.options.prune {
                    let keep: Vec<ResourceRef> =
                        deployment.objects.iter().map(resource_ref_of).collect();
                    match handle
                        .cluster
                        .prune(&deployment.target.namespace, &deployment.service, &keep)
                        .await
                    {
                        Ok(pruned) => {
                            for resource in pruned {
                                self.note(
                                    id,
                                    RollingOut,
                                    format!("pruned {resource}"),
                                    Some(resource.to_string()),
                                )
                                .await?;
                            }
                        }
                        Err(error) => {
                            self.note(
                                id,
                                RollingOut,
                                format!("warning: prune failed: {error}"),
                                None,
                            )
                            .await?;
                        }
                    }
                }
                self.step(id, &[RollingOut], Succeeded, None).await?;
                self.note(id, Succeeded, "rolled out".into(), None).await?;
                Succeeded
            }
            RolloutOutcome::Failed(diagnostics) => {
                let headline = headline(&diagnostics);
                self.step(id, &[RollingOut], Failed, Some(diagnostics))
                    .await?;
                self.note(id, Failed, format!("failed: {headline}"), None)
                    .await?;
                Failed
            }
            RolloutOutcome::TimedOut(diagnostics) => {
                let headline = headline(&diagnostics);
                self.step(id, &[RollingOut], TimedOut, Some(diagnostics))
                    .await?;
                self.note(id, TimedOut, format!("timed out: {headline}"), None)
                    .await?;
                TimedOut
            }
        };
        self.after_verdict(&deployment, verdict).await
    }

    async fn after_verdict(
        &self,
        deployment: &Deployment,
        verdict: DeploymentStatus,
    ) -> Result<(), RepositoryError> {
        if verdict == DeploymentStatus::Succeeded || !deployment.options.rollback_on_failure {
            return Ok(());
        }
        match self
            .roll_back_from(
                deployment,
                &Caller::system("kubernaut (rollback on failure)"),
            )
            .await
        {
            Ok(rollback) => {
                self.note(
                    deployment.id,
                    verdict,
                    format!(
                        "rolling back to {} {} in deployment {}",
                        rollback.service, rollback.version, rollback.id
                    ),
                    None,
                )
                .await
            }
            Err(error) => {
                self.note(
                    deployment.id,
                    verdict,
                    format!("no automatic rollback: {error}"),
                    None,
                )
                .await
            }
        }
    }
}

/// Why a rollback was not started.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Lookup(#[from] DeploymentLookupError),
    #[error(transparent)]
    Request(#[from] RequestDeploymentError),
}

/// The audit record of a deployment reaching `verdict`, decided by Kubernaut itself.
fn finished(
    id: DeploymentId,
    verdict: DeploymentStatus,
    diagnostics: Option<&Diagnostics>,
) -> AuditEntry {
    AuditEntry::new(
        Actor::named("kubernaut"),
        AuditAction::DeploymentFinished,
        format!("deployment/{id}"),
        None,
        None,
        serde_json::json!({
            "status": verdict.to_string(),
            "reason": diagnostics.map(headline),
        }),
    )
}

async fn wait_cancelled(cancelled: &mut watch::Receiver<bool>) {
    loop {
        if *cancelled.borrow() {
            return;
        }
        if cancelled.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or_else(|_| chrono::Duration::seconds(600))
}

fn headline(diagnostics: &Diagnostics) -> String {
    diagnostics
        .resources
        .first()
        .map(|r| format!("{} {}: {}", r.resource, r.reason, r.message))
        .unwrap_or_else(|| "no diagnosis".to_owned())
}

fn placeholder_resource(deployment: &Deployment) -> ResourceRef {
    deployment
        .objects
        .first()
        .map(resource_ref_of)
        .unwrap_or_else(|| ResourceRef {
            api_version: String::new(),
            kind: "Deployment".into(),
            name: deployment.service.to_string(),
            namespace: Some(deployment.target.namespace.to_string()),
        })
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
