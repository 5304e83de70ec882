#![doc = include_str!("../README.md")]

mod apply;
mod diagnostics;
mod failures;
mod picture;
mod prune;
mod rollout;
mod watch_count;
mod watches;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource};
use serde_json::Value;
use tokio::sync::RwLock;
use tokio::sync::mpsc::UnboundedSender;

use kubernaut_domain::cluster::{
    AppliedResource, ClusterStatus, KindRef, KindScope, RolloutOutcome, RolloutProgress,
    RolloutRequest, WorkloadPicture,
};
use kubernaut_domain::deployment::{Namespace, ResourceRef};
use kubernaut_domain::ports::{Cluster, ClusterError};
use kubernaut_domain::release::ServiceName;
pub use watch_count::WatchConnections;

/// Why a [`KubernetesCluster`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read, or its context, cluster or user is unusable.
    #[error("could not load the kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// The in-cluster service account credentials are missing or unreadable.
    #[error("could not load the in-cluster credentials: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The HTTP client could not be built from the configuration (TLS, proxy, ...).
    #[error("could not build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Knobs of the rollout watch and the retries, with production defaults.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// How long a pod of the new revision may stay unschedulable before the rollout fails.
    pub unschedulable_grace: Duration,
    /// How many failed readiness probes every new pod must report, while running and
    /// not ready, before the rollout fails with `FailedProbe`.
    pub probe_failures: i32,
    /// How many times faster than the wall clock the cluster's clock runs (1 for real
    /// clusters; an accelerated simulator uses more). Scales the wall-time guard on
    /// `ProgressDeadlineExceeded`.
    pub clock_scale: f64,
    /// Attempts of one API call before a transient failure counts as unavailability.
    pub attempts: u32,
    /// The first pause between attempts, doubled each time up to 5 s.
    pub retry_delay: Duration,
    /// How long a shared watch nobody needs any more stays open for the next rollout.
    pub watch_grace: Duration,
    /// Slots for requests in flight to the cluster (watches aside), shared by clones.
    pub requests: Arc<tokio::sync::Semaphore>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            unschedulable_grace: Duration::from_secs(15),
            probe_failures: 5,
            clock_scale: 1.0,
            attempts: 6,
            retry_delay: Duration::from_millis(200),
            watch_grace: Duration::from_secs(60),
            requests: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_REQUESTS)),
        }
    }
}

/// Requests in flight to one cluster at most, watches aside.
const DEFAULT_MAX_REQUESTS: usize = 64;

type DiscoveryCache = HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>;

/// One Kubernetes cluster, reached through kube-rs: the domain's [`Cluster`] port.
#[derive(Clone)]
pub struct KubernetesCluster {
    client: Client,
    settings: Settings,
    /// Kinds resolved through discovery so far; a miss asks the API server again.
    discovery: Arc<RwLock<DiscoveryCache>>,
    /// The kinds prune looks in (built-in kinds only), asked of discovery now and then.
    prunable: Arc<prune::PrunableKinds>,
    /// The watches every rollout on this cluster shares.
    watches: Arc<watches::Watches>,
    /// The watches open on the API server, for the binary's metrics.
    watch_connections: WatchConnections,
}

impl std::fmt::Debug for KubernetesCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCluster")
            .field("default_namespace", &self.client.default_namespace())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubernetesCluster {
    /// A cluster from a kubeconfig file (`None`: `KUBECONFIG` or `~/.kube/config`) and
    /// one of its contexts (`None`: the current context).
    ///
    /// # Errors
    /// [`Error::Kubeconfig`] when the file or the context is unusable,
    /// [`Error::Client`] when the client cannot be built.
    pub async fn from_kubeconfig(path: Option<&Path>, context: Option<&str>) -> Result<Self> {
        let kubeconfig = match path {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(Error::Kubeconfig)?;
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..KubeConfigOptions::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(Error::Kubeconfig)?;
        Self::from_config(config)
    }

    /// A cluster from the service account Kubernaut runs as, inside the cluster.
    ///
    /// # Errors
    /// [`Error::InCluster`] outside a cluster, [`Error::Client`] when the client cannot
    /// be built.
    pub fn in_cluster() -> Result<Self> {
        Self::from_config(Config::incluster().map_err(Error::InCluster)?)
    }

    fn from_config(mut config: Config) -> Result<Self> {
        // This adapter bounds its own retries (see `with_retries`); kube's default
        // layer would retry 503s and 429s up to 15 times with delays of up to 1000 s
        // underneath it, holding a failing apply for minutes.
        config.default_retry = false;
        Ok(Self::from_client(
            Client::try_from(config).map_err(Error::Client)?,
        ))
    }

    /// A cluster reached through an existing client.
    #[must_use]
    pub fn from_client(client: Client) -> Self {
        let settings = Settings::default();
        let watch_connections = WatchConnections::new();
        Self {
            watches: Arc::new(watches::Watches::new(
                &client,
                settings.watch_grace,
                &watch_connections,
            )),
            watch_connections,
            client,
            settings,
            discovery: Arc::default(),
            prunable: Arc::default(),
        }
    }

    /// Counts this cluster's open watches in `watches` (shared with whoever samples
    /// it) instead of a count of its own. Set it before the first rollout, as
    /// [`KubernetesCluster::with_watch_grace`].
    #[must_use]
    pub fn with_watch_connections(mut self, watches: WatchConnections) -> Self {
        self.watches = Arc::new(watches::Watches::new(
            &self.client,
            self.settings.watch_grace,
            &watches,
        ));
        self.watch_connections = watches;
        self
    }

    /// The count of watches open on this cluster's API server (shared with clones).
    pub fn watch_connections(&self) -> WatchConnections {
        self.watch_connections.clone()
    }

    /// How many requests (applies, prunes, diagnostics; the shared watches aside) may
    /// be in flight to the cluster at once (default 64): beyond, they wait for a slot.
    /// Over HTTP/1.1 each is a connection of its own, so this bounds the connections a
    /// burst of deploys opens.
    #[must_use]
    pub fn with_max_requests(mut self, requests: usize) -> Self {
        self.settings.requests = Arc::new(tokio::sync::Semaphore::new(requests.max(1)));
        self
    }

    /// How long a shared watch that no rollout needs any more stays open, so that the
    /// next rollouts reuse it (default 60 s). Set it before the first rollout: watches
    /// already open keep the grace they were opened with.
    #[must_use]
    pub fn with_watch_grace(mut self, grace: Duration) -> Self {
        self.settings.watch_grace = grace;
        self.watches = Arc::new(watches::Watches::new(
            &self.client,
            grace,
            &self.watch_connections,
        ));
        self
    }

    /// How long a pod of the new revision may stay unschedulable before the rollout
    /// fails (default 15 s, as Flux's kstatus).
    #[must_use]
    pub fn with_unschedulable_grace(mut self, grace: Duration) -> Self {
        self.settings.unschedulable_grace = grace;
        self
    }

    /// How many failed readiness probes each running, unready pod of the new revision
    /// must report before the rollout fails (default 5: 50 s at the default probe
    /// period). Failed startup probes do not count: the kubelet restarts the container
    /// when they run out, which the crash-loop rule catches.
    #[must_use]
    pub fn with_probe_failures(mut self, failures: u32) -> Self {
        self.settings.probe_failures = i32::try_from(failures.max(1)).unwrap_or(i32::MAX);
        self
    }

    /// How many times faster than the wall clock the cluster's clock runs: 1 (the
    /// default) for real clusters, more for an accelerated simulator. A
    /// `ProgressDeadlineExceeded` condition is trusted only after
    /// `progressDeadlineSeconds / scale` of wall time since the deploy started.
    #[must_use]
    pub fn with_clock_scale(mut self, scale: f64) -> Self {
        self.settings.clock_scale = if scale > 0.0 { scale } else { 1.0 };
        self
    }

    /// How often one API call is tried (default 6) and the first pause between tries
    /// (default 200 ms, doubled each time up to 5 s) before a connection error, 5xx or
    /// 429 counts as the cluster being unavailable.
    #[must_use]
    pub fn with_retries(mut self, attempts: u32, first_delay: Duration) -> Self {
        self.settings.attempts = attempts.max(1);
        self.settings.retry_delay = first_delay;
        self
    }
}

/// The current context of a kubeconfig file (`None`: `KUBECONFIG` or
/// `~/.kube/config`), to name the default cluster after; `None` when there is no
/// readable kubeconfig or it has no current context.
#[must_use]
pub fn current_context_name(path: Option<&Path>) -> Option<String> {
    match path {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .ok()?
    .current_context
    .filter(|name| !name.is_empty())
}

#[async_trait]
impl Cluster for KubernetesCluster {
    async fn apply(&self, objects: &[Value]) -> Result<Vec<AppliedResource>, ClusterError> {
        apply::apply_all(self, objects).await
    }

    async fn watch_rollout(
        &self,
        request: &RolloutRequest,
        progress: UnboundedSender<RolloutProgress>,
    ) -> Result<RolloutOutcome, ClusterError> {
        Box::pin(rollout::watch(self, request, progress)).await
    }

    async fn prune(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        keep: &[ResourceRef],
    ) -> Result<Vec<ResourceRef>, ClusterError> {
        prune::prune(self, namespace, service, keep).await
    }

    async fn kind_scopes(&self, kinds: &[KindRef]) -> Result<Vec<Option<KindScope>>, ClusterError> {
        apply::kind_scopes(self, kinds).await
    }

    async fn rollout_picture(
        &self,
        namespace: &Namespace,
        resources: &[ResourceRef],
    ) -> Result<Vec<WorkloadPicture>, ClusterError> {
        picture::picture(self, namespace, resources).await
    }

    async fn read(&self, objects: &[Value]) -> Result<Vec<Option<Value>>, ClusterError> {
        apply::read_all(self, objects).await
    }

    async fn status(&self) -> ClusterStatus {
        match failures::retrying(&self.settings, || self.client.apiserver_version()).await {
            Ok(info) => ClusterStatus {
                reachable: true,
                version: Some(info.git_version),
                error: None,
            },
            Err(error) => ClusterStatus {
                reachable: false,
                version: None,
                error: Some(error.to_string()),
            },
        }
    }
}
