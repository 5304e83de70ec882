//! Real kubectl against the simulator, and the shared real-world manifests.

mod sim_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, ResourceExt};
use kubernaut_testkit::sim::Simulator;
use serde_json::Value;
use sim_support::start;

const KUBECTL: &str = "/usr/bin/kubectl";

fn examples_dir() -> PathBuf {
    std::env::var_os("KUBERNAUT_K8S_EXAMPLES").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/manifests/kubernetes-examples"
            ))
        },
        PathBuf::from,
    )
}

/// The shared real-world manifests, or `None` (after saying the test is skipped) when
/// they are not beside the repository: a clone of the project alone does not have them.
fn example_files() -> Option<Vec<PathBuf>> {
    let dir = examples_dir();
    if !dir.is_dir() {
        eprintln!(
            "skipped: the shared manifests are not at {} (set KUBERNAUT_K8S_EXAMPLES)",
            dir.display()
        );
        return None;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    Some(files)
}

async fn kubectl(sim: &Simulator, args: &[&str]) -> Output {
    tokio::process::Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", sim.kubeconfig_path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .expect("kubectl runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const GOOD: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
";

const BAD: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  replicas: 1
  progressDeadlineSeconds: 10
  selector:
    matchLabels: {app: bad}
  template:
    metadata:
      labels: {app: bad}
    spec:
      containers:
      - name: app
        image: registry.example.com/app:does-not-exist
";

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write manifest");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn kubectl_applies_gets_waits_for_rollouts_and_deletes() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipped: {KUBECTL} is not installed");
        return;
    }
    let (sim, _client) = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.yaml", GOOD);
    let bad = write(dir.path(), "bad.yaml", BAD);

    let out = kubectl(&sim, &["apply", "--server-side", "-f", &good]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web serverside-applied"),
        "{}",
        text(&out)
    );

    let out = kubectl(
        &sim,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let d: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(d["metadata"]["name"], "web");
    assert!(
        d["metadata"]["managedFields"][0]["manager"] == "kubectl",
        "{d}"
    );

    let out = kubectl(
        &sim,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment \"web\" successfully rolled out"),
        "{}",
        text(&out)
    );

    let out = kubectl(&sim, &["get", "pods", "-l", "app=web"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(table.matches("Running").count(), 2, "{table}");

    let out = kubectl(&sim, &["scale", "deployment/web", "--replicas=3"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl(
        &sim,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl(
        &sim,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3", "{}", text(&out));

    let out = kubectl(&sim, &["apply", "--server-side", "-f", &bad]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl(
        &sim,
        &["rollout", "status", "deployment/bad", "--timeout=30s"],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("deployment \"bad\" exceeded its progress deadline"),
        "{}",
        text(&out)
    );

    let out = kubectl(&sim, &["delete", "-f", &good]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl(&sim, &["get", "deployment", "web"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        text(&out)
    );
    sim_support::wait_for("the pods of web to be collected", || async {
        sim.list_objects("Pod", Some("default"))
            .iter()
            .all(|p| p["metadata"]["labels"]["app"] != "web")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn kubectl_applies_the_real_world_examples() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipped: {KUBECTL} is not installed");
        return;
    }
    let Some(files) = example_files() else {
        return;
    };
    let (sim, _client) = start().await;
    for file in files {
        let path = file.to_string_lossy().into_owned();
        let out = kubectl(&sim, &["apply", "--server-side", "-f", &path]).await;
        assert!(out.status.success(), "{path}: {}", text(&out));
    }
    let out = kubectl(&sim, &["get", "deployments,services,ingresses,hpa"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    for name in [
        "tf-serving",
        "selenium-hub",
        "vllm-gemma-deployment",
        "gemma-server-hpa",
        "tf-serving-ingress",
    ] {
        assert!(listing.contains(name), "{name} missing from\n{listing}");
    }
}

#[tokio::test]
async fn every_example_manifest_is_accepted_through_kube_rs() {
    let Some(files) = example_files() else {
        return;
    };
    let (sim, client) = start().await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let mut applied = 0;
    for file in files {
        let yaml = std::fs::read_to_string(&file).expect("read manifest");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            let obj: DynamicObject = serde_json::from_value(doc).expect("an object");
            let types = obj.types.clone().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types).expect("gvk");
            let (resource, caps) = discovery
                .resolve_gvk(&gvk)
                .unwrap_or_else(|| panic!("{}: {gvk:?} is not served", file.display()));
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(client.clone(), "default", &resource),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let name = obj.name_any();
            let stored = api
                .patch(
                    &name,
                    &PatchParams::apply("examples").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| panic!("{} {name}: {e}", file.display()));
            assert!(stored.uid().is_some());
            assert!(sim.get_object(&gvk.kind, "default", &name).is_some());
            applied += 1;
        }
    }
    assert!(applied >= 10, "applied {applied} objects");
}

#[tokio::test]
async fn the_kube_sim_binary_serves_and_writes_a_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--port", "0", "--time-scale", "50", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kube-sim starts");
    let yaml = sim_support::wait_for("the kubeconfig file", || async {
        std::fs::read_to_string(&kubeconfig)
            .ok()
            .filter(|y| y.contains("current-context"))
    })
    .await;
    let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let version = client
        .apiserver_version()
        .await
        .expect("version from the binary");
    assert_eq!(version.minor, "33");
    child.kill().await.expect("stops");
}
