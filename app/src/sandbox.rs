//! `kubernaut dev`: a sandbox for trying Kubernaut and for demos. The embedded
//! database, testkit's simulated cluster running inside the process as the cluster
//! `sandbox`, and an admin token printed once. The simulator is used here only; `serve`
//! never touches it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use kubernaut_domain::ReleaseService;
use kubernaut_domain::Role;
use kubernaut_domain::access::Caller;
use kubernaut_domain::cluster::ClusterSettings;
use kubernaut_domain::deployment::{ClusterName, Deployment, Namespace, Target};
use kubernaut_domain::deployment_service::{DeploymentRequest, ReleaseSelector};
use kubernaut_domain::ports::Cluster as _;
use kubernaut_domain::release::{NewRelease, UnvalidatedRelease};
use kubernaut_domain::token::TokenSecret;
use kubernaut_kubernetes::KubernetesCluster;
use kubernaut_testkit::sim::Simulator;

use crate::settings::{ClusterConfig, DatabaseUrl, Settings};
use crate::{Application, Storage, issue_token};

/// The simulated cluster's name.
pub const CLUSTER: &str = "sandbox";
/// The namespaces the sandbox's cluster starts with.
pub const NAMESPACES: [&str; 3] = ["default", "staging", "production"];
/// The Hello World example's manifest template, which `--seed` releases.
pub const HELLO_WORLD_TEMPLATE: &str = include_str!("../../examples/hello-world/kubernetes.yaml");

/// How to run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Keep the data here; `None`: a temporary directory removed when the sandbox stops.
    pub data_dir: Option<PathBuf>,
    /// The address to serve on (`127.0.0.1:8080`; port 0 picks a free one).
    pub bind: String,
    /// Simulated seconds per real second: rollouts go this much faster.
    pub time_scale: f64,
    /// Release and deploy the Hello World example: one success, one crash loop.
    pub seed: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            bind: "127.0.0.1:8080".to_owned(),
            time_scale: 5.0,
            seed: false,
        }
    }
}

/// A running sandbox: the server, its simulated cluster and its first token.
pub struct Sandbox {
    port: u16,
    /// The server, running (it stops on SIGINT or SIGTERM).
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    simulator: Simulator,
    token: TokenSecret,
    data_dir: PathBuf,
    temporary: Option<tempfile::TempDir>,
    seeded: Vec<Deployment>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts the simulated cluster, opens the embedded database, builds the server on
    /// them, issues an admin token and, with `seed`, releases and deploys the example.
    ///
    /// # Errors
    /// When the simulator, the database or the server cannot start.
    pub async fn start(mut settings: Settings, options: SandboxOptions) -> anyhow::Result<Self> {
        let (data_dir, temporary) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("kubernaut-dev-")
                    .tempdir()
                    .context("could not make a temporary data directory")?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let simulator = Simulator::builder()
            .time_scale(options.time_scale)
            .start()
            .await
            .context("the simulated cluster did not start")?;
        let cluster = KubernetesCluster::from_kubeconfig(Some(simulator.kubeconfig_path()), None)
            .await
            .context("could not reach the simulated cluster")?;
        let namespaces: Vec<serde_json::Value> = NAMESPACES
            .iter()
            .map(|name| {
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            })
            .collect();
        cluster
            .apply(&namespaces)
            .await
            .context("could not create the sandbox's namespaces")?;

        settings.database.url = DatabaseUrl::empty();
        settings.database.data_dir = Some(data_dir.clone());
        settings.server.bind = options.bind;
        settings.deployments.use_current_kubeconfig_context = false;
        settings.clusters = vec![ClusterConfig {
            name: CLUSTER.to_owned(),
            kubeconfig: Some(simulator.kubeconfig_path().to_path_buf()),
            context: None,
            in_cluster: false,
            clock_scale: options.time_scale,
            max_requests: crate::settings::DEFAULT_MAX_REQUESTS,
            rules: ClusterSettings {
                simulated: true,
                ..ClusterSettings::default()
            },
        }];
        let storage = Storage::open(&settings.database, true).await?;
        let application = Application::build_on(settings, storage).await?;
        let token = issue_token(
            application.storage(),
            "admin",
            Role::Admin,
            None,
            Some(Duration::from_secs(30 * 24 * 3600)),
        )
        .await?;
        let seeded = if options.seed {
            seed(&application).await?
        } else {
            Vec::new()
        };
        let port = application.port();
        let server = tokio::spawn(application.run_until_stopped());
        wait_until_ready(port).await?;
        Ok(Self {
            port,
            server,
            simulator,
            token,
            data_dir,
            temporary,
            seeded,
        })
    }
}

/// Registers Hello World 1.0.0 (a healthy image) and 1.1.0 (one that crash-loops), and
/// deploys 1.0.0 to `sandbox/staging` and 1.1.0 to `sandbox/production`.
async fn seed(application: &Application) -> anyhow::Result<Vec<Deployment>> {
    let caller = Caller::system("kubernaut dev");
    let releases = ReleaseService::new(application.storage().repositories().releases);
    let mut started = Vec::new();
    for (version, image, namespace) in [
        ("1.0.0", "registry.local/hello-world:1.0.0", "staging"),
        (
            "1.1.0",
            "registry.local/hello-world:1.1.0-crashloop",
            "production",
        ),
    ] {
        let new = NewRelease::parse(&UnvalidatedRelease {
            service: "hello-world".to_owned(),
            version: version.to_owned(),
            image: image.to_owned(),
            template: HELLO_WORLD_TEMPLATE.to_owned(),
            attributes: [("replicas".to_owned(), "2".to_owned())].into(),
            comment: Some("seeded by kubernaut dev --seed".to_owned()),
        })
        .map_err(|errors| anyhow::anyhow!("the example release is invalid: {errors:?}"))?;
        let release = releases
            .create(new, &caller)
            .await
            .context("could not register the example release")?
            .release()
            .clone();
        let deployment = application
            .deployments()
            .request(
                DeploymentRequest {
                    release: ReleaseSelector::Id(release.id),
                    target: Target {
                        cluster: ClusterName::parse(CLUSTER).map_err(|e| anyhow::anyhow!("{e}"))?,
                        namespace: Namespace::parse(namespace)
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    },
                    attributes: std::collections::BTreeMap::new(),
                    timeout: Some(Duration::from_secs(120)),
                    prune: true,
                    rollback_on_failure: false,
                },
                &caller,
            )
            .await
            .context("could not deploy the example release")?;
        started.push(deployment);
    }
    Ok(started)
}

/// Waits until the server answers `/readyz` (its workers take a moment to start), so
/// that the address printed works at once.
async fn wait_until_ready(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answered = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut head = [0_u8; 12];
            stream.read_exact(&mut head).await?;
            std::io::Result::Ok(head.starts_with(b"HTTP/1.1 200"))
        };
        if matches!(answered.await, Ok(true)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("the server on port {port} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Sandbox {
    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The web UI's (and the API's) address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The admin token issued at start.
    pub fn token(&self) -> &TokenSecret {
        &self.token
    }

    /// The deployments `--seed` started.
    pub fn seeded(&self) -> &[Deployment] {
        &self.seeded
    }

    /// What to print once it runs: where the UI is, the token, and CLI commands to
    /// paste.
    pub fn banner(&self) -> String {
        let url = self.url();
        let token = self.token.expose();
        let data = match &self.temporary {
            Some(_) => format!(
                "{} (temporary: removed when the sandbox stops; keep it with --data-dir)",
                self.data_dir.display()
            ),
            None => self.data_dir.display().to_string(),
        };
        let seeded = if self.seeded.is_empty() {
            String::new()
        } else {
            "\nSeeded: hello-world 1.0.0 is rolling out to sandbox/staging (it succeeds) and\n1.1.0 to sandbox/production (its image crash-loops: see its diagnosis).\n".to_owned()
        };
        format!(
            "\
Kubernaut sandbox: a simulated cluster \"{CLUSTER}\" (namespaces {namespaces}) and an
embedded database. Nothing here touches a real cluster.

  Web UI:   {url}/   (sign in with the token)
  Token:    {token}   (admin; shown only this once)
  Data:     {data}
{seeded}
Try it from another shell:

  export KUBERNAUT_URL={url}
  export KUBERNAUT_TOKEN={token}
  kubernaut release create --service hello --version 1 --image registry.local/hello:1 \\
    --template examples/hello-world/kubernetes.yaml --attr replicas=2
  kubernaut deploy --service hello --version 1 --cluster {CLUSTER} -n staging

Images whose names contain crashloop, notfound, neverready, unschedulable or slow
misbehave on purpose. Ctrl-C stops the sandbox.
",
            namespaces = NAMESPACES.join(", "),
        )
    }

    /// Serves until SIGINT or SIGTERM, then stops the simulated cluster (and removes a
    /// temporary data directory).
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            simulator,
            temporary,
            ..
        } = self;
        let served = server
            .await
            .unwrap_or_else(|error| Err(std::io::Error::other(error)));
        simulator.shutdown();
        drop(temporary);
        served
    }

    /// The simulated cluster (tests look into it).
    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }
}
