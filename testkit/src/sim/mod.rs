//! The simulated Kubernetes API server.
//!
//! [`Simulator`] serves a faithful subset of the Kubernetes API over plain HTTP on
//! 127.0.0.1 and runs simulated controllers (Deployment, ReplicaSet and
//! ReplicationController, StatefulSet, DaemonSet, Job, a scheduler and a kubelet) on
//! an accelerated clock. It reads request bodies in JSON, YAML and protobuf
//! (`application/vnd.kubernetes.protobuf`, as client-go's typed clients and so
//! `kubectl create` send them; decoded into the JSON object the client would have
//! sent) and answers in JSON.

mod api;
mod controllers;
mod crd;
mod error;
pub(crate) mod kubelet;
mod merge;
mod protobuf;
mod resources;
mod schema;
mod selector;
mod server;
mod store;
mod table;
mod token;
mod validation;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

pub use kubelet::Behaviour;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding the listening socket or writing the kubeconfig failed.
    #[error("simulator I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server thread ended before it was ready.
    #[error("the simulator thread failed to start: {0}")]
    Start(String),
}

/// Settings fixed when the simulator starts.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    /// Simulated seconds per real second.
    pub time_scale: f64,
    pub nodes: Vec<String>,
    /// What each node offers, in base units (cores, bytes, devices).
    pub node_capacity: HashMap<String, f64>,
    pub bookmark_interval_ms: u64,
    pub tick_ms: u64,
}

impl SimConfig {
    /// The real duration of a span of simulated seconds.
    pub fn real(&self, simulated_secs: f64) -> Duration {
        Duration::from_secs_f64((simulated_secs / self.time_scale).max(0.0))
    }
}

/// Fault injection settings, changed through [`Faults`].
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultState {
    pub error_rate: f64,
    pub error_code: u16,
    pub retry_after_seconds: u64,
    pub delay: Duration,
    pub fail_next: u32,
    pub fail_next_code: u16,
    /// Lists and watches of a namespaced kind across all namespaces are forbidden.
    pub refuse_cluster_wide: bool,
}

/// The bearer token of [`Simulator::namespace_only_kubeconfig_yaml`]: its requests may
/// list and watch namespaced kinds only namespace by namespace, as a service account
/// with a RoleBinding in each namespace and no ClusterRoleBinding.
pub(crate) const NAMESPACE_ONLY_TOKEN: &str = "kube-sim-namespace-only";

/// Watch streams open now and at most so far.
#[derive(Debug, Default)]
pub(crate) struct WatchGauge {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl WatchGauge {
    pub fn opened(&self) {
        use std::sync::atomic::Ordering;
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(open, Ordering::SeqCst);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How many watch streams the simulator serves, and the most it served at once since
/// it started or since [`Simulator::reset_watch_peak`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStreams {
    /// Open now.
    pub open: usize,
    /// The most open at once.
    pub peak: usize,
}

/// Everything the API server and the controllers share.
#[derive(Debug)]
pub(crate) struct World {
    pub store: store::Store,
    pub ip_counter: u32,
    pub node_port_counter: u32,
    pub kubelet: kubelet::KubeletState,
    pub controllers: controllers::ControllerState,
    /// The earliest moment a timer (image pull, back-off, deadline...) expires; the
    /// controllers sleep until then unless an object changes first.
    pub wake_at: Option<tokio::time::Instant>,
    /// The types CustomResourceDefinitions serve (see `crd`).
    pub custom: Vec<&'static resources::Resource>,
}

impl World {
    /// Asks for a controller pass no later than `at`.
    /// Times already past are ignored: whatever waits on them is blocked on something
    /// else (a finalizer, an exceeded deadline) and must not spin the loop.
    pub fn wake(&mut self, at: tokio::time::Instant) {
        if at > tokio::time::Instant::now() {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    /// Drops simulation state kept for an object that is gone.
    pub fn forget(&mut self, uid: &str) {
        self.kubelet.forget(uid);
        self.controllers.forget(uid);
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub config: SimConfig,
    pub behaviours: Mutex<HashMap<String, Behaviour>>,
    pub faults: Mutex<FaultState>,
    pub watch_kill: tokio::sync::watch::Sender<u64>,
    pub watches: WatchGauge,
    /// How many times the list of API groups (`GET /apis`) was asked for: once per
    /// full discovery a client runs.
    pub group_lists: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn lock_world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock must not take every later request down with it.
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Builds a [`Simulator`] with non-default settings.
#[derive(Debug, Clone)]
pub struct SimulatorBuilder {
    time_scale: f64,
    nodes: usize,
    port: u16,
    history: usize,
    node_capacity: HashMap<String, f64>,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            nodes: 3,
            port: 0,
            history: 10_000,
            node_capacity: HashMap::from([
                ("cpu".to_owned(), 8.0),
                ("memory".to_owned(), 32.0 * 1024.0 * 1024.0 * 1024.0),
                (
                    "ephemeral-storage".to_owned(),
                    100.0 * 1024.0 * 1024.0 * 1024.0,
                ),
                ("pods".to_owned(), 110.0),
            ]),
        }
    }
}

impl SimulatorBuilder {
    /// Simulated seconds per real second: 50.0 makes a 10 s progress deadline pass in 0.2 s.
    #[must_use]
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = if scale > 0.0 { scale } else { 1.0 };
        self
    }

    /// Number of schedulable nodes (`kube-sim-node-1`, ...); DaemonSets run one pod on each.
    #[must_use]
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// What every node offers of a resource, in base units (`cpu` in cores, `memory` in
    /// bytes, devices such as `nvidia.com/gpu` by count). Defaults: 8 cores, 32 GiB, no
    /// GPUs. A pod whose requests exceed it stays Pending as `Unschedulable`.
    #[must_use]
    pub fn node_capacity(mut self, resource: &str, amount: f64) -> Self {
        self.node_capacity.insert(resource.to_owned(), amount);
        self
    }

    /// The port to listen on (0 picks a free one).
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How many changes the watch history keeps before older resourceVersions expire.
    #[must_use]
    pub fn watch_history(mut self, changes: usize) -> Self {
        self.history = changes.max(1);
        self
    }

    /// Starts the server and the controllers on a thread of their own.
    ///
    /// # Errors
    /// When the port cannot be bound or the kubeconfig file cannot be written.
    pub async fn start(self) -> Result<Simulator, SimError> {
        let config = SimConfig {
            time_scale: self.time_scale,
            nodes: (1..=self.nodes)
                .map(|i| format!("kube-sim-node-{i}"))
                .collect(),
            node_capacity: self.node_capacity,
            bookmark_interval_ms: 1000,
            tick_ms: 10,
        };
        let (watch_kill, _) = tokio::sync::watch::channel(0);
        let mut world = World {
            store: store::Store::new(self.history),
            ip_counter: 0,
            node_port_counter: 0,
            kubelet: kubelet::KubeletState::default(),
            controllers: controllers::ControllerState::default(),
            wake_at: None,
            custom: Vec::new(),
        };
        controllers::bootstrap(&mut world, &config);
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            config,
            behaviours: Mutex::new(HashMap::new()),
            faults: Mutex::new(FaultState::default()),
            watch_kill,
            watches: WatchGauge::default(),
            group_lists: std::sync::atomic::AtomicU64::new(0),
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))?;
        let port = listener.local_addr()?.port();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("kube-sim".to_owned())
            .spawn(move || run_server(thread_shared, listener, ready_tx, stop_rx))?;
        ready_rx
            .await
            .map_err(|_| SimError::Start("the server thread ended".to_owned()))?
            .map_err(SimError::Start)?;
        let url = format!("http://127.0.0.1:{port}");
        let kubeconfig_yaml = kubeconfig_for(&url);
        let dir = tempfile::tempdir()?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig_yaml)?;
        Ok(Simulator {
            shared,
            url,
            kubeconfig_yaml,
            kubeconfig_path,
            _dir: dir,
            stop: Some(stop_tx),
        })
    }
}

fn run_server(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    runtime.block_on(async move {
        let data = actix_web::web::Data::new(Arc::clone(&shared));
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .app_data(actix_web::web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(actix_web::web::to(server::handle))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener);
        let server = match server {
            Ok(s) => s.run(),
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let handle = server.handle();
        tokio::spawn(server);
        let controller = tokio::spawn(controllers::run(Arc::clone(&shared)));
        let _ = ready.send(Ok(()));
        // Either an explicit stop or the Simulator being dropped ends the server.
        let _ = stop.await;
        controller.abort();
        handle.stop(false).await;
    });
}

fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// A running simulated Kubernetes API server. Stops when dropped.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    url: String,
    kubeconfig_yaml: String,
    kubeconfig_path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Simulator {
    /// Starts a simulator with default settings (real-time clock, three nodes).
    ///
    /// # Errors
    /// See [`SimulatorBuilder::start`].
    pub async fn start() -> Result<Self, SimError> {
        Self::builder().start().await
    }

    /// A builder for non-default settings.
    #[must_use]
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig whose cluster, user and context are all named `kube-sim`.
    #[must_use]
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig_yaml
    }

    /// A kubeconfig file with [`Self::kubeconfig_yaml`], removed when the simulator is dropped.
    #[must_use]
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes the kubeconfig to another file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.kubeconfig_yaml)
    }

    /// Makes containers with exactly this image behave as told, over the naming conventions.
    pub fn set_image_behaviour(&self, image: &str, behaviour: Behaviour) {
        if let Ok(mut b) = self.shared.behaviours.lock() {
            b.insert(image.to_owned(), behaviour);
        }
    }

    /// The fault injector.
    #[must_use]
    pub fn faults(&self) -> Faults {
        Faults {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A stored object by kind (`Deployment`, `Pod`, ...), namespace (empty for
    /// cluster-scoped kinds) and name.
    #[must_use]
    pub fn get_object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let world = self.shared.lock_world();
        let r = resources::by_kind(kind)
            .or_else(|| world.custom.iter().copied().find(|r| r.kind == kind))?;
        world.store.get(r, namespace, name).cloned()
    }

    /// Stored objects of a kind, in one namespace or (with `None`) all.
    #[must_use]
    pub fn list_objects(&self, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let world = self.shared.lock_world();
        resources::by_kind(kind)
            .or_else(|| world.custom.iter().copied().find(|r| r.kind == kind))
            .map_or_else(Vec::new, |r| world.store.list_owned(r, namespace))
    }

    /// Events whose `involvedObject` is the named object.
    #[must_use]
    pub fn events_for(&self, namespace: &str, name: &str) -> Vec<Value> {
        self.list_objects("Event", Some(namespace))
            .into_iter()
            .filter(|e| e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(name))
            .collect()
    }

    /// A kubeconfig for the same server whose user may list and watch namespaced kinds
    /// only within a namespace: across all namespaces it is answered `403 Forbidden`,
    /// as by RBAC without a ClusterRoleBinding. Everything else it may do.
    #[must_use]
    pub fn namespace_only_kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml.replace(
            "  user: {}\n",
            &format!("  user:\n    token: {NAMESPACE_ONLY_TOKEN}\n"),
        )
    }

    /// Watch streams open now and the most open at once.
    #[must_use]
    pub fn watch_streams(&self) -> WatchStreams {
        use std::sync::atomic::Ordering;
        WatchStreams {
            open: self.shared.watches.open.load(Ordering::SeqCst),
            peak: self.shared.watches.peak.load(Ordering::SeqCst),
        }
    }

    /// How many times a client asked for the list of API groups (`GET /apis`), which
    /// every full discovery starts with (resolving one kind does not).
    #[must_use]
    pub fn group_lists(&self) -> u64 {
        self.shared
            .group_lists
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts counting the peak of [`Self::watch_streams`] again from the open ones.
    pub fn reset_watch_peak(&self) {
        use std::sync::atomic::Ordering;
        let open = self.shared.watches.open.load(Ordering::SeqCst);
        self.shared.watches.peak.store(open, Ordering::SeqCst);
    }

    /// The current (latest) resourceVersion.
    #[must_use]
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_world().store.resource_version()
    }

    /// The names of the simulated nodes.
    #[must_use]
    pub fn nodes(&self) -> Vec<String> {
        self.shared.config.nodes.clone()
    }

    /// Stops the server now (dropping does the same).
    pub fn shutdown(mut self) {
        self.stop_server();
    }

    fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.shared.watch_kill.send_modify(|n| *n += 1);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// Fault injection for reliability tests. Settings apply to every later request.
#[derive(Debug, Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    fn update(&self, f: impl FnOnce(&mut FaultState)) {
        if let Ok(mut state) = self.shared.faults.lock() {
            f(&mut state);
        }
    }

    /// Answers this fraction of requests (0.0..=1.0) with an error `status` (500, 503, 504, 429).
    pub fn set_error_rate(&self, rate: f64, status: u16) {
        self.update(|s| {
            s.error_rate = rate.clamp(0.0, 1.0);
            s.error_code = status;
        });
    }

    /// Answers this fraction of requests with 429 Too Many Requests and `Retry-After`.
    pub fn set_throttle_rate(&self, rate: f64, retry_after_seconds: u64) {
        self.update(|s| {
            s.error_rate = rate.clamp(0.0, 1.0);
            s.error_code = 429;
            s.retry_after_seconds = retry_after_seconds;
        });
    }

    /// Answers the next `count` requests with `status`, whatever they are.
    pub fn fail_next(&self, count: u32, status: u16) {
        self.update(|s| {
            s.fail_next = count;
            s.fail_next_code = status;
        });
    }

    /// Delays every response by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.update(|s| s.delay = delay);
    }

    /// Ends every open watch stream (clients see the connection close and re-watch).
    pub fn drop_watches(&self) {
        self.shared.watch_kill.send_modify(|n| *n += 1);
    }

    /// Expires every resourceVersion handed out so far and ends open watches: the next
    /// watch from an old resourceVersion gets an `ERROR` event with a 410 `Expired` Status.
    pub fn force_gone(&self) {
        self.shared.lock_world().store.compact_all();
        self.drop_watches();
    }

    /// Forbids (`403`) or allows again lists and watches of namespaced kinds across all
    /// namespaces, for every client: credentials that lost their cluster-wide rights.
    pub fn refuse_cluster_wide(&self, refuse: bool) {
        self.update(|s| s.refuse_cluster_wide = refuse);
    }

    /// Removes all injected faults.
    pub fn clear(&self) {
        self.update(|s| *s = FaultState::default());
    }
}
