//! A Kubernaut server (port 0, fresh database, optionally a simulated cluster) and a
//! way to run the real `kubernaut` binary against it.

use std::path::PathBuf;

use kubernaut::Application;
use kubernaut::settings::{ClusterConfig, DatabaseUrl, Settings};
use kubernaut_domain::Role;
use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::sim::Simulator;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Simulated seconds per real second: rollouts take a fraction of a second.
pub const TIME_SCALE: f64 = 20.0;
/// The namespace the simulated cluster has for deploys.
pub const NAMESPACE: &str = "shop";

/// A running server, its database, its cluster (when asked for) and a scratch folder.
pub struct Server {
    pub url: String,
    /// An admin token, sent as `KUBERNAUT_TOKEN` by [`Server::run`].
    pub token: String,
    pub sim: Option<Simulator>,
    pub scratch: TempDir,
    database: TestDatabase,
}

/// A server without clusters: enough for releases and bad input.
pub async fn spawn_server() -> Server {
    spawn(None).await
}

/// A server wired to a simulated cluster named `sim` that has the namespace `shop`.
pub async fn spawn_server_with_cluster() -> Server {
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("the simulator starts");
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces", sim.url()))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .send()
        .await
        .expect("namespace request");
    assert!(
        response.status().is_success(),
        "namespace: {}",
        response.status()
    );
    spawn(Some(sim)).await
}

/// A server without clusters whose settings `adjust` changes first.
pub async fn spawn_server_with(adjust: impl FnOnce(&mut Settings)) -> Server {
    spawn_adjusted(None, adjust).await
}

async fn spawn(sim: Option<Simulator>) -> Server {
    spawn_adjusted(sim, |_| {}).await
}

async fn spawn_adjusted(sim: Option<Simulator>, adjust: impl FnOnce(&mut Settings)) -> Server {
    let database = TestDatabase::create().expect("a fresh test database");
    let mut settings = Settings::load(None).expect("default settings");
    settings.database.url = DatabaseUrl::new(database.url());
    settings.database.pool_size = 4;
    settings.deployments.use_current_kubeconfig_context = false;
    settings.deployments.unschedulable_grace_seconds = 1;
    settings.server.bind = "127.0.0.1:0".to_owned();
    settings.server.workers = 1;
    if let Some(sim) = &sim {
        settings.clusters = vec![ClusterConfig {
            name: "sim".to_owned(),
            kubeconfig: Some(sim.kubeconfig_path().to_path_buf()),
            context: None,
            in_cluster: false,
            clock_scale: TIME_SCALE,
            max_requests: kubernaut::settings::DEFAULT_MAX_REQUESTS,
            rules: Default::default(),
        }];
    }
    adjust(&mut settings);
    let application = Application::build(settings.clone())
        .await
        .expect("the application builds");
    let url = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    let token = kubernaut::bootstrap_token(&settings, "cli-admin", Role::Admin, None, None)
        .await
        .expect("an admin token")
        .expose()
        .to_owned();
    Server {
        url,
        token,
        sim,
        scratch: tempfile::tempdir().expect("a scratch folder"),
        database,
    }
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Standard output as JSON, failing the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code of {self:#?}");
        self
    }
}

/// Runs `kubernaut ARGS` with `KUBERNAUT_URL` set to `url` (no token, no terminal).
pub async fn kubernaut(url: &str, args: &[&str]) -> Run {
    kubernaut_as(url, None, args).await
}

/// Runs `kubernaut ARGS` with `KUBERNAUT_URL` set to `url` and `KUBERNAUT_TOKEN` to
/// `token` (none when `None`), without a terminal.
pub async fn kubernaut_as(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut env = vec![("KUBERNAUT_URL", url)];
    if let Some(token) = token {
        env.push(("KUBERNAUT_TOKEN", token));
    }
    kubernaut_with_env(&env, args).await
}

/// The binary with none of the client's variables but `env` (and no client
/// configuration of the machine's user: `XDG_CONFIG_HOME` is an empty folder).
pub fn client_command(env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubernaut"));
    for name in [
        "KUBERNAUT_URL",
        "KUBERNAUT_TOKEN",
        "KUBERNAUT_CONFIG",
        "KUBERNAUT_CONTEXT",
        "KUBERNAUT_RETRY_BUDGET",
    ] {
        command.env_remove(name);
    }
    command
        .env("XDG_CONFIG_HOME", empty_config_home())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `kubernaut ARGS` with exactly the client variables `env`, without a terminal.
pub async fn kubernaut_with_env(env: &[(&str, &str)], args: &[&str]) -> Run {
    let output = client_command(env, args)
        .output()
        .await
        .expect("the kubernaut binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A folder with no `kubernaut/config.yaml`, shared by the tests' runs.
fn empty_config_home() -> &'static std::path::Path {
    static HOME: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("a folder"))
        .path()
}

/// A Deployment and a Service; the template needs `replicas` from the release.
pub const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\nspec:\n  replicas: {{ replicas }}\n  progressDeadlineSeconds: 600\n  selector:\n    matchLabels:\n      app: {{ service }}\n  template:\n    metadata:\n      labels:\n        app: {{ service }}\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n        ports:\n        - containerPort: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service }}\nspec:\n  selector:\n    app: {{ service }}\n  ports:\n  - port: 80\n    targetPort: 8080\n";

impl Server {
    /// Runs `kubernaut ARGS` against this server with its admin token.
    pub async fn run(&self, args: &[&str]) -> Run {
        kubernaut_as(&self.url, Some(&self.token), args).await
    }

    /// Runs `kubernaut ARGS` against this server with `token` (or none).
    pub async fn run_as(&self, token: Option<&str>, args: &[&str]) -> Run {
        kubernaut_as(&self.url, token, args).await
    }

    /// The server's database URL, for `kubernaut admin` and SQL.
    pub fn database_url(&self) -> &str {
        self.database.url()
    }

    pub fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("a server with a cluster")
    }

    /// The template written to a file for `release create --template`.
    pub fn template_file(&self) -> PathBuf {
        let path = self.scratch.path().join("manifest.yaml.j2");
        std::fs::write(&path, TEMPLATE).expect("template written");
        path
    }

    /// Registers a release through the CLI, returning its JSON.
    pub async fn release(&self, service: &str, version: &str, image: &str) -> Value {
        let template = self.template_file();
        let template = template.to_str().expect("a UTF-8 path");
        let run = self
            .run(&[
                "release",
                "create",
                "--service",
                service,
                "--version",
                version,
                "--image",
                image,
                "--template",
                template,
                "--attr",
                "replicas=2",
                "--output",
                "json",
            ])
            .await;
        run.assert_code(0);
        run.json()
    }

    /// Deploys `service` `version` to sim/shop and waits for the verdict (the
    /// default).
    pub async fn deploy_and_wait(&self, service: &str, version: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "deploy",
            "--service",
            service,
            "--version",
            version,
            "--cluster",
            "sim",
            "--namespace",
            NAMESPACE,
        ];
        args.extend_from_slice(extra);
        self.run(&args).await
    }
}

/// A local port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
