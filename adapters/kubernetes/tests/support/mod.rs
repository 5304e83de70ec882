//! Shared helpers: a simulated cluster with a fast clock, labelled manifests, and a
//! rollout watched to its verdict with the progress it reported.

use std::time::Duration;

use chrono::Utc;
use kubernaut_domain::cluster::{AppliedResource, RolloutOutcome, RolloutProgress, RolloutRequest};
use kubernaut_domain::deployment::{DeploymentId, Diagnostics, FailureReason, Namespace};
use kubernaut_domain::ports::Cluster;
use kubernaut_kubernetes::KubernetesCluster;
use kubernaut_testkit::sim::Simulator;
use serde_json::{Value, json};

/// Simulated seconds per real second: pods start in tens of milliseconds, a crash-loop
/// back-off of 10 s passes in 0.2 s.
pub const TIME_SCALE: f64 = 50.0;

/// How long a rollout that must end by itself may take: generous for a loaded machine.
pub const GENEROUS: Duration = Duration::from_secs(120);

pub const NAMESPACE: &str = "default";
pub const SERVICE: &str = "web";

pub async fn start() -> (Simulator, KubernetesCluster) {
    start_scaled(TIME_SCALE).await
}

pub async fn start_scaled(scale: f64) -> (Simulator, KubernetesCluster) {
    let sim = Simulator::builder()
        .time_scale(scale)
        .start()
        .await
        .expect("the simulator starts");
    let cluster = cluster_for(&sim).await;
    (sim, cluster.with_clock_scale(scale))
}

pub async fn cluster_for(sim: &Simulator) -> KubernetesCluster {
    KubernetesCluster::from_kubeconfig(Some(sim.kubeconfig_path()), None)
        .await
        .expect("a cluster from the simulator's kubeconfig")
        .with_unschedulable_grace(Duration::from_millis(500))
        .with_retries(8, Duration::from_millis(50))
}

/// Labels an object as Kubernaut's for [`SERVICE`] in [`NAMESPACE`], as the domain does.
pub fn labelled(mut object: Value) -> Value {
    let metadata = &mut object["metadata"];
    metadata["namespace"] = json!(NAMESPACE);
    metadata["labels"]["app.kubernetes.io/managed-by"] = json!("kubernaut");
    metadata["labels"]["kubernaut.io/service"] = json!(SERVICE);
    object
}

pub fn deployment(name: &str, image: &str, replicas: i32) -> Value {
    labelled(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    }))
}

pub fn config_map(name: &str) -> Value {
    labelled(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"greeting": "hello"}
    }))
}

pub fn service(name: &str) -> Value {
    labelled(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
    }))
}

/// What a watched rollout ended in, and the progress it told on the way.
#[derive(Debug)]
pub struct Watched {
    pub outcome: RolloutOutcome,
    pub progress: Vec<RolloutProgress>,
}

impl Watched {
    pub fn failure(&self) -> &Diagnostics {
        match &self.outcome {
            RolloutOutcome::Failed(diagnostics) => diagnostics,
            other => panic!("expected a failed rollout, got {other:?}"),
        }
    }

    pub fn assert_failed_with(&self, reason: FailureReason) -> &Diagnostics {
        let diagnostics = self.failure();
        assert_eq!(
            diagnostics.primary_reason(),
            Some(reason),
            "diagnostics: {diagnostics:#?}"
        );
        diagnostics
    }

    pub fn assert_succeeded(&self) {
        assert!(
            matches!(self.outcome, RolloutOutcome::Succeeded { .. }),
            "expected success, got {:#?}",
            self.outcome
        );
    }

    pub fn told(&self, needle: &str) -> bool {
        self.progress.iter().any(|p| p.message.contains(needle))
    }
}

pub async fn apply(cluster: &KubernetesCluster, objects: &[Value]) -> Vec<AppliedResource> {
    cluster.apply(objects).await.expect("the objects apply")
}

pub async fn watch(
    cluster: &KubernetesCluster,
    applied: Vec<AppliedResource>,
    timeout: Duration,
) -> Watched {
    watch_in(cluster, NAMESPACE, applied, timeout).await
}

/// [`watch`] in a namespace of the caller's choosing.
pub async fn watch_in(
    cluster: &KubernetesCluster,
    namespace: &str,
    applied: Vec<AppliedResource>,
    timeout: Duration,
) -> Watched {
    let started_at = Utc::now();
    let request = RolloutRequest {
        deployment: DeploymentId::generate(),
        namespace: Namespace::parse(namespace).expect("a namespace"),
        resources: applied,
        started_at,
        deadline: started_at + chrono::Duration::from_std(timeout).expect("a timeout"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The test's own guard, well past the rollout's deadline: a hung watch fails the
    // test instead of hanging it.
    let outcome = tokio::time::timeout(
        timeout + Duration::from_secs(60),
        cluster.watch_rollout(&request, tx),
    )
    .await
    .expect("the watch ends by its deadline")
    .expect("the cluster stays reachable");
    let mut progress = Vec::new();
    while let Ok(line) = rx.try_recv() {
        progress.push(line);
    }
    Watched { outcome, progress }
}

pub async fn deploy(cluster: &KubernetesCluster, objects: &[Value], timeout: Duration) -> Watched {
    let applied = apply(cluster, objects).await;
    watch(cluster, applied, timeout).await
}
