//! Shared helpers for the simulator tests: a simulator with a fast clock, a kube-rs
//! client for it, and condition waits with generous timeouts.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubernaut_testkit::sim::Simulator;
use serde_json::json;

/// Simulated seconds per real second in tests: a pod is ready in a few tens of milliseconds.
pub const TIME_SCALE: f64 = 50.0;

/// How long a test waits for a condition before failing; generous for loaded CI machines.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn client_for(sim: &Simulator) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(sim.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config from the simulator's kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

pub async fn start() -> (Simulator, kube::Client) {
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("simulator starts");
    let client = client_for(&sim).await;
    (sim, client)
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn deployment(name: &str, image: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    }))
    .expect("a valid Deployment")
}

/// A kube-rs client from a kubeconfig file (the real control plane's).
pub async fn client_for_kubeconfig(path: &std::path::Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config from the kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}
