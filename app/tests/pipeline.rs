//! The Hello World pipeline end to end: the Jenkinsfile's shell steps and the GitHub
//! Actions workflow's `run` steps (all but the image build and the CLI's install, which
//! need a Docker engine) run against a Kubernaut server, a real Docker registry holding
//! the images and the simulated cluster, and the build's exit code is the verdict.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubernaut::Application;
use kubernaut::settings::{ClusterConfig, DatabaseUrl, RegistryConfig, Settings};
use kubernaut_domain::{Role, Scope};
use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::registry::TestRegistry;
use kubernaut_testkit::sim::{Behaviour, Simulator};
use serde_json::Value;

const TIME_SCALE: f64 = 20.0;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A step of the example's GitHub Actions workflow that runs a command.
struct WorkflowStep {
    name: String,
    run: String,
    /// The step's own `env`, its `${{ ... }}` expressions unresolved.
    env: Vec<(String, String)>,
}

/// The example workflow's job-wide `env` and its `run` steps, in order.
fn workflow() -> (Vec<(String, String)>, Vec<WorkflowStep>) {
    let text = std::fs::read_to_string(
        repository_root().join("examples/hello-world/.github/workflows/deploy.yml"),
    )
    .expect("the workflow");
    let workflow: Value = serde_saphyr::from_str(&text).expect("the workflow is YAML");
    let pairs = |env: &Value| -> Vec<(String, String)> {
        env.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().expect("env values are text").to_owned(),
                )
            })
            .collect()
    };
    let steps = workflow["jobs"]["deploy"]["steps"]
        .as_array()
        .expect("the deploy job's steps")
        .iter()
        .filter_map(|step| {
            Some(WorkflowStep {
                name: step["name"].as_str().unwrap_or_default().to_owned(),
                run: step["run"].as_str()?.to_owned(),
                env: pairs(&step["env"]),
            })
        })
        .collect();
    (pairs(&workflow["env"]), steps)
}

/// `value` with the `${{ ... }}` expressions GitHub would resolve resolved from
/// `context`; an expression the test does not know fails it.
fn resolve(value: &str, context: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("an expression ends") + start;
        let expression = rest[start + 3..end].trim();
        let (_, resolved) = context
            .iter()
            .find(|(name, _)| *name == expression)
            .unwrap_or_else(|| panic!("the test does not provide `{expression}`"));
        out.push_str(resolved);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
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
    sim: Simulator,
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
            max_requests: kubernaut::settings::DEFAULT_MAX_REQUESTS,
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
            sim,
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

impl Pipeline {
    /// Runs the workflow's `run` steps after the build as GitHub Actions would for
    /// run `run_number` of commit `sha` (job env, then each step's env; `GITHUB_ENV`
    /// carried from step to step), returning the exit code of the first step that
    /// fails (0 when all pass) and the version the workflow computed.
    async fn run_workflow(&self, run_number: &str, sha: &str) -> (i32, String) {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_kubernaut"));
        let bin_dir = binary.parent().expect("the binary's folder").to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let registry_host = self.registry.host();
        let token = self.token.clone();
        let context = [
            ("env.REGISTRY", registry_host.as_str()),
            ("secrets.KUBERNAUT_TOKEN", token.as_str()),
            ("secrets.REGISTRY_USERNAME", ""),
            ("secrets.REGISTRY_PASSWORD", ""),
            ("github.repository", "example/hello-world"),
            ("github.run_number", run_number),
            ("github.sha", sha),
        ];
        let (job_env, steps) = workflow();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Version",
                "Build and push",
                "Install the kubernaut CLI",
                "Release",
                "Deploy"
            ],
            "the workflow's run steps"
        );
        // What the test's machine stands in for: the server, the registry it runs.
        let overrides = [
            ("KUBERNAUT_URL", self.kubernaut_url.clone()),
            ("REGISTRY", registry_host.clone()),
            ("DEPLOY_TIMEOUT", "2m".to_owned()),
        ];
        let job_env: Vec<(String, String)> = job_env
            .into_iter()
            .map(|(k, v)| {
                let v = overrides
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map_or(v, |(_, value)| value.clone());
                (k, v)
            })
            .collect();
        let steps: Vec<(String, Vec<(String, String)>)> = steps
            .into_iter()
            // The image build and the CLI's install from Kubernaut's image need Docker;
            // the CLI under test is on PATH instead.
            .filter(|s| !s.run.contains("build.sh") && !s.run.contains("docker"))
            .map(|s| {
                let env = s
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), resolve(v, &context)))
                    .collect();
                (resolve(&s.run, &context), env)
            })
            .collect();
        let run_number = run_number.to_owned();
        let sha = sha.to_owned();
        tokio::task::spawn_blocking(move || {
            let github_env = tempfile::NamedTempFile::new().expect("a GITHUB_ENV file");
            for (run, env) in steps {
                // What earlier steps wrote to $GITHUB_ENV is in the environment of the
                // later ones.
                let carried: Vec<(String, String)> = std::fs::read_to_string(github_env.path())
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let status = Command::new("bash")
                    .args(["-e", "-c", &run])
                    .current_dir(repository_root())
                    .env("PATH", &path)
                    .env("GITHUB_ENV", github_env.path())
                    .env("GITHUB_RUN_NUMBER", &run_number)
                    .env("GITHUB_SHA", &sha)
                    .envs(job_env.iter().cloned())
                    .envs(carried)
                    .envs(env)
                    .status()
                    .expect("bash runs the step");
                let code = status.code().unwrap_or(-1);
                if code != 0 {
                    return (code, carried_version(github_env.path()));
                }
            }
            (0, carried_version(github_env.path()))
        })
        .await
        .expect("the steps ran")
    }
}

/// The `VERSION` the workflow's steps wrote to `$GITHUB_ENV`, if any.
fn carried_version(github_env: &Path) -> String {
    std::fs::read_to_string(github_env)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION=").map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_github_actions_workflow_passes_for_a_good_release_and_fails_for_bad_ones() {
    if !TestRegistry::available() {
        return;
    }
    let pipeline = Pipeline::start().await;
    // Run 11 of commit 1111111...: its image is pushed and healthy.
    pipeline
        .registry
        .push("hello-world", "11-1111111")
        .expect("push the good image");
    // Run 12: pushed, but its containers crash.
    pipeline
        .registry
        .push("hello-world", "12-2222222")
        .expect("push the crashing image");
    pipeline.sim.set_image_behaviour(
        &format!("{}/hello-world:12-2222222", pipeline.registry.host()),
        Behaviour::CrashLoop {
            exit_code: 1,
            logs: vec!["cannot bind port 3000".to_owned()],
        },
    );
    let good = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        pipeline.run_workflow("11", good).await,
        (0, "11-1111111".to_owned()),
        "a good release rolls out"
    );
    assert_eq!(
        pipeline
            .run_workflow("12", "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
            .await,
        (1, "12-2222222".to_owned()),
        "a crash-looping release fails the run"
    );
    assert_eq!(
        pipeline
            .run_workflow("13", "3333333ccccccccccccccccccccccccccccccccc")
            .await,
        (2, "13-3333333".to_owned()),
        "an image missing from the registry is refused at release time"
    );
    assert_eq!(
        pipeline.run_workflow("11", good).await.0,
        0,
        "a re-run of a good run passes again"
    );
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

/// The deploy step leans on `kubernaut deploy` waiting for the verdict by default:
/// were it to opt out (`--no-wait`), a failed rollout would pass the build.
#[test]
fn the_deploy_step_waits_for_the_verdict() {
    let script =
        std::fs::read_to_string(repository_root().join("examples/hello-world/ci/deploy.sh"))
            .expect("the deploy script");
    assert!(script.contains("kubernaut deploy"), "{script}");
    assert!(!script.contains("--no-wait"), "{script}");
    let steps = jenkinsfile_shell_steps();
    assert!(
        steps.iter().any(|s| s.contains("ci/deploy.sh")),
        "{steps:?}"
    );
    let (_, steps) = workflow();
    assert!(
        steps.iter().any(|s| s.run.contains("ci/deploy.sh")),
        "the workflow deploys"
    );
}
