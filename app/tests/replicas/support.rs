//! Kubernaut as operators run it: real `kubernaut serve` processes (replicas) on a
//! PostgreSQL server of the test's own, which tests restart and stop, against the
//! simulated cluster.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kubernaut_testkit::postgres_server::PostgresServer;
use kubernaut_testkit::sim::Simulator;
use serde_json::{Value, json};

/// Simulated seconds per real second in these tests.
pub const TIME_SCALE: f64 = 20.0;

/// The lease TTL of the replicas in these tests, in seconds.
pub const LEASE_TTL_SECONDS: u64 = 3;

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that sends `token` as a bearer token with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header");
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The world the replicas share: a PostgreSQL server of its own, the simulator, and a
/// configuration file naming it as cluster `sim`.
pub struct World {
    _alone: tokio::sync::MutexGuard<'static, ()>,
    pub postgres: PostgresServer,
    pub database_url: String,
    pub sim: Simulator,
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for World {
    /// A failing test shows the end of every replica's log (each replica writes to a
    /// file of its own in the world's folder, so passing tests stay quiet).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!("--- the end of {}:\n{tail}", path.display());
            }
        }
    }
}

impl World {
    /// `None` (after saying why) when this machine has no PostgreSQL programs.
    pub async fn start() -> Option<Self> {
        // One world at a time: a test waits here until the previous one has ended.
        static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let alone = ALONE.lock().await;
        install_crypto_provider();
        let postgres = match PostgresServer::start() {
            Ok(server) => server,
            Err(error) if error.is_unavailable() && std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {error}");
                return None;
            }
            Err(error) => panic!("a PostgreSQL server of the test's own: {error}"),
        };
        let database_url = postgres
            .create_database("kubernaut")
            .expect("the database is created");
        let sim = Simulator::builder()
            .time_scale(TIME_SCALE)
            .start()
            .await
            .expect("the simulator starts");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = dir.path().join("kubernaut.toml");
        std::fs::write(
            &config,
            format!(
                "[security]\n# Long, so that only the change feed can end a revoked token's use early.\ntoken_cache_seconds = 60\n\n[deployments]\nuse_current_kubeconfig_context = false\n\n[[clusters]]\nname = \"sim\"\nkubeconfig = {:?}\nclock_scale = {TIME_SCALE}\n[clusters.attributes]\nregion = \"eu-sim\"\n",
                sim.kubeconfig_path()
            ),
        )
        .expect("the configuration is written");
        Some(Self {
            _alone: alone,
            postgres,
            database_url,
            sim,
            config,
            dir,
        })
    }

    /// A replica on a free port, up and ready.
    pub async fn replica(&self, name: &str) -> Replica {
        self.replica_with(name, &[]).await
    }

    /// A replica with more settings (`KUBERNAUT__...` variables).
    pub async fn replica_with(&self, name: &str, settings: &[(&str, &str)]) -> Replica {
        let mut replica = Replica::spawn(self, name, free_port(), settings);
        replica.wait_until_up().await;
        replica
    }

    /// An admin token made by `kubernaut admin create-token` on the database.
    pub fn admin_token(&self, name: &str) -> String {
        admin_token(&self.database_url, name)
    }

    pub async fn create_namespace(&self, name: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/namespaces", self.sim.url()))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .send()
            .await
            .expect("namespace request");
        assert!(response.status().is_success(), "namespace {name}");
    }
}

/// An admin token made by `kubernaut admin create-token` against `database_url` (which
/// it migrates when needed); only the secret is printed.
pub fn admin_token(database_url: &str, name: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["admin", "create-token", "--name", name, "--role", "admin"])
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("kubernaut admin create-token runs");
    assert!(output.status.success(), "{output:?}");
    let secret = String::from_utf8(output.stdout).expect("UTF-8");
    let secret = secret.trim_end_matches('\n');
    assert!(
        secret.starts_with("knt_") && !secret.contains(char::is_whitespace),
        "only the secret on stdout: {secret:?}"
    );
    secret.to_owned()
}

/// One `kubernaut serve` process.
pub struct Replica {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    pub base: String,
    database_url: String,
    config: PathBuf,
    settings: Vec<(String, String)>,
    log: PathBuf,
}

impl Replica {
    fn spawn(world: &World, name: &str, port: u16, settings: &[(&str, &str)]) -> Self {
        let mut replica = Self {
            child: None,
            name: name.to_owned(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            database_url: world.database_url.clone(),
            config: world.config.clone(),
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log: world.dir.path().join(format!("{name}.log")),
        };
        replica.child = Some(replica.command());
        replica
    }

    fn command(&self) -> Child {
        let mut command = serve_command(&self.config, &self.database_url, self.port, &self.name);
        command.envs(self.settings.iter().map(|(k, v)| (k, v)));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the replica's log opens");
        command.stderr(log);
        command.spawn().expect("kubernaut starts")
    }

    /// Waits until `/readyz` answers 200. A process that exits (it cannot reach its
    /// database at start-up) is started again, as a process supervisor would.
    pub async fn wait_until_up(&mut self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {} did not come up",
                self.name
            );
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.child = Some(self.command());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`: no goodbye, its leases stay until they expire.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the process to end.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port (after [`Self::kill`]).
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(self.command());
        self.wait_until_up().await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kubernaut serve` on `port` with the test settings, to spawn.
pub fn serve_command(config: &Path, database_url: &str, port: u16, name: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubernaut"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env("KUBERNAUT__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("KUBERNAUT__SERVER__WORKERS", "1")
        .env("KUBERNAUT__DATABASE__POOL_SIZE", "4")
        .env("KUBERNAUT__DATABASE__CONNECT_TIMEOUT_SECONDS", "2")
        .env("KUBERNAUT__ENGINE__INSTANCE", name)
        .env(
            "KUBERNAUT__ENGINE__LEASE_TTL_SECONDS",
            LEASE_TTL_SECONDS.to_string(),
        )
        .env("KUBERNAUT__ENGINE__CLAIM_INTERVAL_MS", "250")
        .env("KUBERNAUT__SECURITY__MUTATIONS_PER_MINUTE", "0")
        .env("RUST_LOG", "warn,kubernaut_domain=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// A Deployment, a Service and a ConfigMap of `service`.
pub fn web_template() -> String {
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\nspec:\n  replicas: {{ replicas }}\n  progressDeadlineSeconds: 3600\n  selector:\n    matchLabels:\n      app: {{ service }}\n  template:\n    metadata:\n      labels:\n        app: {{ service }}\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-settings\ndata:\n  region: \"{{ region }}\"\n".to_owned()
}

/// Registers `service` `version` with `image` through `base`.
pub async fn release(
    client: &reqwest::Client,
    base: &str,
    service: &str,
    version: &str,
    image: &str,
) {
    let response = client
        .post(format!("{base}/api/releases"))
        .json(&json!({
            "service": service, "version": version, "image": image,
            "template": web_template(), "attributes": {"replicas": "2"},
        }))
        .send()
        .await
        .expect("sent");
    assert!(
        response.status().is_success(),
        "release {service} {version}: {}",
        response.status()
    );
}

/// Asks `base` to deploy; returns the deployment's id.
pub async fn deploy(client: &reqwest::Client, base: &str, body: Value) -> String {
    let response = client
        .post(format!("{base}/api/deployments"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    let answer: Value = response.json().await.expect("json");
    assert!(status.is_success(), "deploy {body}: {status} {answer}");
    answer["id"].as_str().expect("an id").to_owned()
}

/// The deployment as `base` shows it.
pub async fn get(client: &reqwest::Client, base: &str, id: &str) -> Value {
    client
        .get(format!("{base}/api/deployments/{id}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

/// Polls `base` until `check` holds for the deployment, or panics after `within`.
pub async fn until(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(response) = client
            .get(format!("{base}/api/deployments/{id}"))
            .send()
            .await
            && let Ok(deployment) = response.json::<Value>().await
            && check(&deployment)
        {
            return deployment;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The deployment once it has a verdict (within a minute).
pub async fn verdict(client: &reqwest::Client, base: &str, id: &str) -> Value {
    until(
        client,
        base,
        id,
        Duration::from_secs(60),
        "a verdict",
        |d| {
            !matches!(
                d["status"].as_str(),
                Some("queued" | "applying" | "rolling_out")
            )
        },
    )
    .await
}

/// Deploys `service` `version` to `sim`/`namespace` through `through` and returns the
/// deployment once `watcher` shows its verdict.
pub async fn deployed(
    client: &reqwest::Client,
    through: &Replica,
    watcher: &Replica,
    target: (&str, &str, &str),
) -> Value {
    let (service, version, namespace) = target;
    let id = deploy(
        client,
        &through.base,
        json!({"service": service, "version": version, "cluster": "sim", "namespace": namespace}),
    )
    .await;
    verdict(client, &watcher.base, &id).await
}

/// The timeline's messages.
pub fn messages(deployment: &Value) -> Vec<String> {
    deployment["timeline"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Registers `service` `version` through `base` with an image the simulator rolls out
/// in `sim_seconds` simulated seconds (`registry.local/<service>:<version>`).
pub async fn slow_release(
    world: &World,
    client: &reqwest::Client,
    base: &str,
    service: &str,
    version: &str,
    sim_seconds: u64,
) {
    let image = format!("registry.local/{service}:{version}");
    world.sim.set_image_behaviour(
        &image,
        kubernaut_testkit::sim::Behaviour::SlowStart {
            seconds: sim_seconds,
        },
    );
    release(client, base, service, version, &image).await;
}

/// Deploys `service` `version` to `sim`/`namespace` through `through` (with the
/// `extra` fields of the request body) and waits until `watcher` shows it rolling out;
/// returns its id.
pub async fn rolling_out(
    client: &reqwest::Client,
    through: &Replica,
    watcher: &Replica,
    target: (&str, &str, &str),
    extra: Value,
) -> String {
    let (service, version, namespace) = target;
    let mut body =
        json!({"service": service, "version": version, "cluster": "sim", "namespace": namespace});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let id = deploy(client, &through.base, body).await;
    until(
        client,
        &watcher.base,
        &id,
        Duration::from_secs(60),
        "rolling out",
        |d| {
            assert!(
                d["status"] != "succeeded" && d["status"] != "failed",
                "finished before it was caught rolling out: {d}"
            );
            d["status"] == "rolling_out"
        },
    )
    .await;
    id
}
