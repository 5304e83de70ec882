//! A real Kubernetes control plane for tests: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler of one release, built from the Go module
//! proxy by `scripts/build-control-plane`, started on loopback ports in a temporary
//! directory with certificates of their own, and a fake kubelet (see [`kubelet`]) for
//! the pods.
//!
//! ```text
//! let plane = ControlPlane::start().await.expect("the control plane starts");
//! let cluster = KubernetesCluster::from_kubeconfig(Some(plane.kubeconfig_path()), None).await?;
//! ```
//!
//! The programs are looked up in `KUBERNAUT_CONTROL_PLANE_BIN`, else in
//! `${XDG_CACHE_HOME:-~/.cache}/kubernaut/control-plane/<release>-etcd-<etcd>/bin`, the
//! versions being those `testkit/control-plane/go.mod` requires. When they are missing,
//! [`ControlPlane::start`] fails and says to run `scripts/build-control-plane` (which
//! `scripts/install-test-deps` runs).

pub mod kubelet;
pub mod proxy;

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

pub use kubelet::{FakeKubelet, NODE_NAME};

use crate::sim::Behaviour;

/// The `go.mod` whose versions name the programs' cache directory.
const GO_MOD: &str = include_str!("../../control-plane/go.mod");

/// How long the API server and the controllers may take to come up on a loaded
/// machine before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The temporary directories' prefix.
const DIR_PREFIX: &str = "kubernaut-control-plane-";

/// util-linux's setpriv, which sets the parent-death signal of the programs.
const SETPRIV: &str = "/usr/bin/setpriv";

/// The programs, in start order.
const PROGRAMS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The version `go.mod` requires of `module`.
fn required(module: &str) -> Option<&'static str> {
    GO_MOD.lines().find_map(|line| {
        let mut words = line.split_whitespace().skip_while(|w| *w == "require");
        (words.next() == Some(module))
            .then(|| words.next())
            .flatten()
    })
}

/// The Kubernetes release the control plane runs (`v1.37.2`, say).
pub fn kubernetes_version() -> &'static str {
    required("k8s.io/kubernetes").unwrap_or("unknown")
}

/// Where the programs are: `KUBERNAUT_CONTROL_PLANE_BIN`, else the cache directory that
/// `scripts/build-control-plane` fills.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBERNAUT_CONTROL_PLANE_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache
        .join("kubernaut/control-plane")
        .join(format!(
            "{}-etcd-{}",
            kubernetes_version(),
            required("go.etcd.io/etcd/server/v3").unwrap_or("unknown")
        ))
        .join("bin")
}

/// A free TCP port on 127.0.0.1 (free when asked; the program binds it right after).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The certificates and keys the control plane and its clients use, as PEM.
struct Pki {
    ca: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    service_account_key: String,
    service_account_public_key: String,
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    fn generate() -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kubernaut-test-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let (serving_cert, serving_key) = leaf(
            &issuer,
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "10.96.0.1",
            ],
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        // An administrator: group system:masters, which RBAC lets do anything. The
        // controllers and the fake kubelet use it too, as a single-user test cluster may.
        let (admin_cert, admin_key) = leaf(
            &issuer,
            &[],
            "kubernaut-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        // The key the API server signs ServiceAccount tokens with.
        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca,
            serving_cert,
            serving_key,
            admin_cert,
            admin_key,
            service_account_key: service_account.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
        })
    }
}

/// How a control plane of a test's own is set up: [`ControlPlane::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The API server's watch cache (on in every real cluster). Without it, watches
    /// are served by etcd, so [`ControlPlane::compact_etcd`] makes every older
    /// resourceVersion expire at once, which a test can then count on.
    pub watch_cache: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { watch_cache: true }
    }
}

/// A running control plane; dropping it stops every program and removes its files.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    /// etcd's client URL (plain HTTP on loopback).
    etcd_url: String,
    bin: PathBuf,
    /// Each program's arguments, to start it again.
    args: HashMap<&'static str, Vec<String>>,
    children: Vec<(&'static str, Child)>,
    kubeconfig: PathBuf,
    server: String,
    client: kube::Client,
    kubelet: Option<FakeKubelet>,
}

impl ControlPlane {
    /// Starts etcd, the API server, the controller manager and the scheduler, waits
    /// until the API server is ready and the `default` ServiceAccount exists, then
    /// registers the fake node and starts its kubelet and waits until the node is
    /// Ready and schedulable.
    ///
    /// # Errors
    /// The programs are missing (run `scripts/build-control-plane`), one of them exits,
    /// or the cluster is not ready within two minutes; the error carries the end of the
    /// programs' logs.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with other [`Options`].
    ///
    /// # Errors
    /// As [`ControlPlane::start`].
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        // The free ports are free when asked, not when bound: another process may take
        // one in between, so a failed start is tried once more on new ports.
        match Self::start_once(&options).await {
            Ok(plane) => Ok(plane),
            Err(first) if !first.to_string().contains("scripts/build-control-plane") => {
                tracing::warn!(error = %format!("{first:#}"), "the control plane did not start; trying again");
                Self::start_once(&options).await
            }
            Err(first) => Err(first),
        }
    }

    async fn start_once(options: &Options) -> anyhow::Result<Self> {
        let bin = bin_dir();
        let missing: Vec<&str> = PROGRAMS
            .into_iter()
            .filter(|p| !bin.join(p).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "the control plane's programs ({}) are not in {}: run scripts/build-control-plane \
                 (scripts/install-test-deps runs it; it needs Go and builds them once per machine)",
                missing.join(", "),
                bin.display()
            );
        }
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        let path = dir.path().to_owned();
        fs::write(path.join("pid"), std::process::id().to_string())?;
        let pki = Pki::generate()?;
        let write = |name: &str, contents: &str| -> anyhow::Result<PathBuf> {
            let file = path.join(name);
            fs::write(&file, contents).with_context(|| format!("writing {name}"))?;
            Ok(file)
        };
        let ca = write("ca.crt", &pki.ca)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let admin_cert = write("admin.crt", &pki.admin_cert)?;
        let admin_key = write("admin.key", &pki.admin_key)?;
        let sa_key = write("service-account.key", &pki.service_account_key)?;
        let sa_public_key = write("service-account.pub", &pki.service_account_public_key)?;

        let etcd_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = path.join("kubeconfig");
        fs::write(
            &kubeconfig,
            serde_json::to_string_pretty(&json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "control-plane", "cluster": {
                    "server": server,
                    "certificate-authority": ca,
                }}],
                "users": [{"name": "admin", "user": {
                    "client-certificate": admin_cert,
                    "client-key": admin_key,
                }}],
                "contexts": [{"name": "control-plane", "context": {
                    "cluster": "control-plane", "user": "admin", "namespace": "default",
                }}],
                "current-context": "control-plane",
            }))?,
        )?;

        let mut plane = Self {
            etcd_url: etcd_url.clone(),
            bin: bin.clone(),
            args: HashMap::new(),
            children: Vec::new(),
            kubeconfig: kubeconfig.clone(),
            server: server.clone(),
            client: client_for(&kubeconfig).await?,
            kubelet: None,
            dir,
        };
        let p = |file: &Path| file.display().to_string();
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        plane.spawn(
            &bin,
            "etcd",
            &[
                "--name=test".into(),
                format!("--data-dir={}", p(&path.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=test={peer_url}"),
                // A test cluster's data need not survive a power cut.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        plane.spawn(
            &bin,
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // A loopback address cannot be the `kubernetes` Service's endpoint; no
                // pod here calls the API server through it.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p(&path.join("apiserver-certs"))),
                format!("--tls-cert-file={}", p(&serving_cert)),
                format!("--tls-private-key-file={}", p(&serving_key)),
                format!("--client-ca-file={}", p(&ca)),
                format!("--kubelet-client-certificate={}", p(&admin_cert)),
                format!("--kubelet-client-key={}", p(&admin_key)),
                // The fake node's name resolves nowhere; its address is loopback.
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p(&sa_public_key)),
                format!("--service-account-signing-key-file={}", p(&sa_key)),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=Node,RBAC".into(),
                // ConfigMaps are read from etcd rather than the watch cache, so that
                // `compact_etcd` expires their old resourceVersions and continue tokens
                // at once, as a long-running server expires them (the conformance test
                // compares what a client sees then).
                "--watch-cache-sizes=configmaps#0".into(),
                "--allow-privileged=true".into(),
                format!("--watch-cache={}", options.watch_cache),
                "--v=1".into(),
            ],
        )?;
        plane.wait_until_ready().await?;
        let admin_kubeconfig = p(&kubeconfig);
        let controller_port = free_port()?;
        plane.spawn(
            &bin,
            "kube-controller-manager",
            &[
                format!("--kubeconfig={admin_kubeconfig}"),
                format!("--authentication-kubeconfig={admin_kubeconfig}"),
                format!("--authorization-kubeconfig={admin_kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={controller_port}"),
                format!("--cert-dir={}", p(&path.join("controller-manager-certs"))),
                "--leader-elect=false".into(),
                format!("--service-account-private-key-file={}", p(&sa_key)),
                format!("--root-ca-file={}", p(&ca)),
                "--use-service-account-credentials=false".into(),
                "--v=1".into(),
            ],
        )?;
        let scheduler_port = free_port()?;
        plane.spawn(
            &bin,
            "kube-scheduler",
            &[
                format!("--kubeconfig={admin_kubeconfig}"),
                format!("--authentication-kubeconfig={admin_kubeconfig}"),
                format!("--authorization-kubeconfig={admin_kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={scheduler_port}"),
                format!("--cert-dir={}", p(&path.join("scheduler-certs"))),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
        )?;
        plane.wait_for_default_service_account().await?;
        let kubelet = FakeKubelet::start(plane.client.clone()).await?;
        plane.kubelet = Some(kubelet);
        plane.wait_for_schedulable_node().await?;
        Ok(plane)
    }

    fn spawn(&mut self, bin: &Path, program: &'static str, args: &[String]) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{program}.log")))?;
        // Under setpriv --pdeathsig, a program dies with the thread that started it, so
        // a test process that ends without dropping the plane leaves nothing running.
        let mut command = if Path::new(SETPRIV).is_file() {
            let mut command = Command::new(SETPRIV);
            command.arg("--pdeathsig=KILL").arg(bin.join(program));
            command
        } else {
            Command::new(bin.join(program))
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        self.children.push((program, child));
        self.args.insert(program, args.to_vec());
        Ok(())
    }

    /// Stops the API server (SIGKILL: every connection and watch drops at once) and
    /// starts it again on the same port and storage, returning once it is ready.
    ///
    /// # Errors
    /// It does not come back within two minutes.
    pub async fn restart_api_server(&mut self) -> anyhow::Result<()> {
        let program = "kube-apiserver";
        if let Some(index) = self.children.iter().position(|(p, _)| *p == program) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
        let args = self.args.get(program).cloned().unwrap_or_default();
        let bin = self.bin.clone();
        self.spawn(&bin, program, &args)?;
        self.wait_until_ready().await
    }

    /// The kubeconfig of an administrator of this cluster (current context, namespace
    /// `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes a kubeconfig like [`ControlPlane::kubeconfig_path`]'s that reaches the
    /// API server through `proxy` (the serving certificate names 127.0.0.1, so TLS
    /// passes through it unchanged), and returns its path.
    ///
    /// # Errors
    /// The file cannot be read or written.
    pub fn kubeconfig_through(&self, proxy: &proxy::TcpProxy) -> anyhow::Result<PathBuf> {
        let text = fs::read_to_string(&self.kubeconfig)?;
        let through = text.replace(&self.server, &format!("https://{}", proxy.address()));
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{}", proxy.address().port()));
        fs::write(&path, through)?;
        Ok(path)
    }

    /// Compacts etcd's history up to its current revision, so that every
    /// resourceVersion older than now is gone: a watch from one (served by etcd when
    /// the watch cache is off, see [`Options::watch_cache`]) is answered 410 Expired.
    /// Returns the revision compacted at.
    ///
    /// # Errors
    /// etcd does not answer.
    pub async fn compact_etcd(&self) -> anyhow::Result<i64> {
        compact_etcd(&self.etcd_url).await
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A client of the API server as the administrator.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The fake kubelet of the cluster's node.
    pub fn kubelet(&self) -> &FakeKubelet {
        self.kubelet
            .as_ref()
            .unwrap_or_else(|| unreachable!("the kubelet starts with the control plane"))
    }

    /// The last lines each program logged, for a failure's message.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for program in PROGRAMS {
            let text = fs::read_to_string(self.dir.path().join(format!("{program}.log")))
                .unwrap_or_default();
            // The errors (klog's E and F lines, etcd's error level) if there are any,
            // else the end; never the flag dump the Kubernetes programs start with.
            let errors: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with('E') || l.starts_with('F') || l.contains("\"level\":\"error\"")
                })
                .collect();
            let all: Vec<&str> = if errors.is_empty() {
                text.lines().filter(|l| !l.contains("] FLAG: --")).collect()
            } else {
                errors
            };
            out.push_str(&format!("--- {program} ---\n"));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Fails when one of the programs has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for (program, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let program = *program;
                return Err(anyhow!(
                    "{program} exited ({status})\n{}",
                    self.logs_tail(30)
                ));
            }
        }
        Ok(())
    }

    /// Polls `ready` every 100 ms until it is true, a program exits, or the start
    /// timeout passes.
    async fn poll<F, Fut>(&mut self, what: &str, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut(kube::Client) -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_running()?;
            if ready(self.client.clone()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the control plane was not ready ({what}) within {START_TIMEOUT:?}\n{}",
                    self.logs_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        self.poll("/readyz", |client| async move {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .unwrap_or_default();
            client
                .request_text(request)
                .await
                .is_ok_and(|body| body.trim() == "ok")
        })
        .await
    }

    async fn wait_for_default_service_account(&mut self) -> anyhow::Result<()> {
        self.poll("the default ServiceAccount", |client| async move {
            let resource = ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                plural: "serviceaccounts".into(),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
            api.get_opt("default").await.is_ok_and(|sa| sa.is_some())
        })
        .await
    }

    async fn wait_for_schedulable_node(&mut self) -> anyhow::Result<()> {
        self.poll("a Ready node without taints", |client| async move {
            let api: Api<DynamicObject> = Api::all_with(client, &kubelet::node_resource());
            api.get_opt(NODE_NAME).await.is_ok_and(|node| {
                node.is_some_and(|node| {
                    let taints = node.data.pointer("/spec/taints").and_then(|t| t.as_array());
                    taints.is_none_or(Vec::is_empty)
                })
            })
        })
        .await
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir.path())
            .field("server", &self.server)
            .field("programs", &self.children.len())
            .finish_non_exhaustive()
    }
}

async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop();
        }
        // The scheduler and controllers first, etcd last.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One control plane for a whole test process, started on first use and stopped when
/// the process exits; each test works in a namespace of its own.
#[derive(Debug)]
pub struct SharedControlPlane {
    kubeconfig: PathBuf,
    server: String,
    etcd_url: String,
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
}

static SHARED: OnceLock<Result<SharedControlPlane, String>> = OnceLock::new();

impl SharedControlPlane {
    /// The process's control plane, started on the first call (which blocks until it
    /// is ready). It runs on a thread of its own, so it outlives the test that started
    /// it; its programs die with the process (setpriv's parent-death signal) and its
    /// directory is removed by the next process that starts one.
    ///
    /// # Errors
    /// As [`ControlPlane::start`], for every caller.
    pub fn get() -> anyhow::Result<&'static Self> {
        SHARED
            .get_or_init(|| Self::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    fn start() -> anyhow::Result<Self> {
        remove_stale_dirs();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = tx.send(Err(anyhow!(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match ControlPlane::start().await {
                        Ok(plane) => {
                            let shared = SharedControlPlane {
                                kubeconfig: plane.kubeconfig.clone(),
                                server: plane.server.clone(),
                                etcd_url: plane.etcd_url.clone(),
                                behaviours: plane.kubelet().behaviours(),
                            };
                            let _ = tx.send(Ok(shared));
                            // Keep the kubelet running and the programs' parent alive.
                            std::future::pending::<()>().await;
                            drop(plane);
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error));
                        }
                    }
                });
            })?;
        rx.recv()?
    }

    /// The kubeconfig of an administrator of this cluster.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Compacts etcd's history up to now, as the API server does every five minutes:
    /// every resourceVersion handed out so far becomes too old to watch from.
    ///
    /// # Errors
    /// etcd does not answer, or answers something else than its JSON gateway's replies.
    pub async fn compact_etcd(&self) -> anyhow::Result<i64> {
        compact_etcd(&self.etcd_url).await
    }

    /// Makes the containers of `image` behave as `behaviour` from their next pod on.
    pub fn set_image_behaviour(&self, image: &str, behaviour: Behaviour) {
        self.behaviours
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(image.to_owned(), behaviour);
    }
}

/// Compacts the history of the etcd at `etcd_url` (its JSON gateway) up to its current
/// revision, returning that revision.
async fn compact_etcd(etcd_url: &str) -> anyhow::Result<i64> {
    let http = reqwest::Client::new();
    // Any range read carries the store's current revision in its header.
    let range: serde_json::Value = http
        .post(format!("{etcd_url}/v3/kv/range"))
        .json(&json!({"key": "AA==", "limit": 1}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let revision: i64 = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| anyhow!("etcd's range answer has no revision: {range}"))?;
    http.post(format!("{etcd_url}/v3/kv/compaction"))
        .json(&json!({"revision": revision.to_string(), "physical": true}))
        .send()
        .await?
        .error_for_status()?;
    Ok(revision)
}

/// Removes the directories of shared control planes whose process has ended.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let pid = fs::read_to_string(path.join("pid")).unwrap_or_default();
        let pid = pid.trim();
        if ours && !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}
