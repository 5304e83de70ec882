//! The Hello World pipeline end to end: the Jenkinsfile's shell steps (all but the
//! image build, which needs a Docker engine) run against a Kubernaut server, a real
//! Docker registry holding the images and the simulated cluster, and the build's exit
//! code is the verdict.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubernaut::Application;
use kubernaut::settings::{ClusterConfig, DatabaseUrl, RegistryConfig, Settings};
use kubernaut_domain::{Role, Scope};
use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::registry::TestRegistry;
use kubernaut_testkit::sim::Simulator;

const TIME_SCALE: f64 = 20.0;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The `sh '...'` steps of the example's Jenkinsfile, in order.
fn jenkinsfile_shell_steps() -> Vec<String> {
    let jenkinsfile =
        std::fs::read_to_string(repository_root().join("examples/hello-world/Jenkinsfile"))
            .expect("the Jenkinsfile");
    jenkinsfile
        .lines()
        .filter_map(|line| {
            let step = line.trim().strip_prefix("sh '")?.strip_suffix('\'')?;
            Some(step.to_owned())
        })
        .collect()
}

struct Pipeline {
    kubernaut_url: String,
    /// Jenkins's token: releaser, and deployer on production/default only.
    token: String,
    registry: TestRegistry,
    _sim: Simulator,
    _database: TestDatabase,
}

impl Pipeline {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = TestRegistry::start().expect("the registry starts");
        registry
            .push("hello-world", "1.0")
            .expect("push the good image");
        registry
            .push("hello-world", "2.0-crashloop")
            .expect("push the crashing image");
        let sim = Simulator::builder()
            .time_scale(TIME_SCALE)
            .start()
            .await
            .expect("the simulator starts");
        let database = TestDatabase::create().expect("a fresh database");
        let mut settings = Settings::load(None).expect("default settings");
        settings.database.url = DatabaseUrl::new(database.url());
        settings.database.pool_size = 4;
        settings.server.bind = "127.0.0.1:0".to_owned();
        settings.server.workers = 1;
        settings.deployments.use_current_kubeconfig_context = false;
        settings.clusters = vec![ClusterConfig {
            name: "production".to_owned(),
            kubeconfig: Some(sim.kubeconfig_path().to_path_buf()),
            context: None,
            in_cluster: false,
            clock_scale: TIME_SCALE,
            rules: Default::default(),
        }];
        settings.registries = vec![RegistryConfig {
            url: registry.url(),
            host: None,
            username: None,
            password: None,
        }];
        let application = Application::build(settings.clone())
            .await
            .expect("kubernaut builds");
        let kubernaut_url = format!("http://127.0.0.1:{}", application.port());
        tokio::spawn(application.run_until_stopped());
        // As an admin sets Jenkins up: a robot that registers releases and deploys to
        // production/default, no more. The second token carries both grants.
        kubernaut::bootstrap_token(&settings, "jenkins", Role::Releaser, None, None)
            .await
            .expect("the releaser grant");
        let scope = Scope::parse("production/default").expect("a scope");
        let token =
            kubernaut::bootstrap_token(&settings, "jenkins", Role::Deployer, Some(scope), None)
                .await
                .expect("Jenkins's token")
                .expose()
                .to_owned();
        Self {
            kubernaut_url,
            token,
            registry,
            _sim: sim,
            _database: database,
        }
    }

    /// Runs the Jenkinsfile's steps after the build as Jenkins would for `version`,
    /// returning the exit code of the first step that fails (0 when all pass).
    async fn run(&self, version: &str) -> i32 {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_kubernaut"));
        let bin_dir = binary.parent().expect("the binary's folder").to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let steps: Vec<String> = jenkinsfile_shell_steps()
            .into_iter()
            .filter(|step| !step.contains("build.sh"))
            .collect();
        assert_eq!(steps.len(), 2, "release and deploy steps: {steps:?}");
        let registry_host = self.registry.host();
        let kubernaut_url = self.kubernaut_url.clone();
        let token = self.token.clone();
        let version = version.to_owned();
        tokio::task::spawn_blocking(move || {
            for step in steps {
                let status = Command::new("bash")
                    .args(["-c", &step])
                    .current_dir(repository_root())
                    .env("PATH", &path)
                    .env("SERVICE", "hello-world")
                    .env("VERSION", &version)
                    .env("REGISTRY", &registry_host)
                    .env("KUBERNAUT_URL", &kubernaut_url)
                    .env("CLUSTER", "production")
                    .env("NAMESPACE", "default")
                    .env("DEPLOY_TIMEOUT", "2m")
                    .env("BUILD_TAG", format!("jenkins-hello-world-{version}"))
                    .env("KUBERNAUT_TOKEN", &token)
                    .status()
                    .expect("bash runs the step");
                let code = status.code().unwrap_or(-1);
                if code != 0 {
                    return code;
                }
            }
            0
        })
        .await
        .expect("the steps ran")
    }
}

#[tokio::test]
async fn the_pipeline_passes_for_a_good_release_and_fails_for_bad_ones() {
    if !TestRegistry::available() {
        return;
    }
    let pipeline = Pipeline::start().await;
    assert_eq!(pipeline.run("1.0").await, 0, "a good release rolls out");
    assert_eq!(
        pipeline.run("2.0-crashloop").await,
        1,
        "a crash-looping release fails the build"
    );
    assert_eq!(
        pipeline.run("3.0").await,
        2,
        "an image missing from the registry is refused at release time"
    );
    // A retried build of the good version is harmless.
    assert_eq!(
        pipeline.run("1.0").await,
        0,
        "a retry of a good build passes again"
    );
}
