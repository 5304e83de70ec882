//! Rollouts share the cluster's watches: many concurrent rollouts over a few
//! namespaces hold a handful of watch streams, across all namespaces when the
//! credentials allow it and per namespace when they do not, with every verdict right.

#[expect(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
mod support;

use std::time::Duration;

use futures_util::future::join_all;
use kubernaut_domain::deployment::FailureReason;
use kubernaut_kubernetes::KubernetesCluster;
use kubernaut_testkit::sim::Simulator;
use serde_json::json;
use support::{GENEROUS, TIME_SCALE, apply, deployment, watch_in};

const NAMESPACES: usize = 4;
const ROLLOUTS: usize = 16;

/// Deploys `ROLLOUTS` Deployments over `NAMESPACES` namespaces at once, every fourth
/// crash-looping, and returns the most watch streams the simulator served at once.
async fn concurrent_rollouts(namespace_only: bool) -> usize {
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("the simulator starts");
    let admin = support::cluster_for(&sim).await;
    let cluster = if namespace_only {
        let path = sim.kubeconfig_path().with_file_name("namespace-only");
        std::fs::write(&path, sim.namespace_only_kubeconfig_yaml()).expect("kubeconfig");
        KubernetesCluster::from_kubeconfig(Some(&path), None)
            .await
            .expect("a cluster with namespace-only credentials")
            .with_clock_scale(TIME_SCALE)
    } else {
        admin.clone().with_clock_scale(TIME_SCALE)
    };
    let namespaces: Vec<_> = (0..NAMESPACES)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{i}")}}))
        .collect();
    apply(&admin, &namespaces).await;
    sim.reset_watch_peak();

    let rollouts = (0..ROLLOUTS).map(|i| {
        let cluster = cluster.clone();
        async move {
            let namespace = format!("team-{}", i % NAMESPACES);
            let crashing = i % 4 == 0;
            let image = if crashing {
                "shop/web:crashloop"
            } else {
                "shop/web:1"
            };
            let mut object = deployment(&format!("app-{i}"), image, 2);
            object["metadata"]["namespace"] = json!(namespace);
            let applied = apply(&cluster, &[object]).await;
            let watched = watch_in(&cluster, &namespace, applied, GENEROUS).await;
            if crashing {
                watched.assert_failed_with(FailureReason::CrashLoop);
            } else {
                watched.assert_succeeded();
            }
        }
    });
    join_all(rollouts).await;
    sim.watch_streams().peak
}

#[tokio::test]
async fn concurrent_rollouts_share_one_watch_per_kind_across_namespaces() {
    let peak = concurrent_rollouts(false).await;
    // Deployments, ReplicaSets, Pods, and warning Events if a pod ran unready: never
    // one per rollout (16 rollouts held 48 watches before they were shared).
    assert!((1..=4).contains(&peak), "{peak} watch streams at once");
}

#[tokio::test]
async fn namespace_only_credentials_watch_each_namespace_with_rollouts_once_per_kind() {
    let peak = concurrent_rollouts(true).await;
    assert!(
        (NAMESPACES..=4 * NAMESPACES).contains(&peak),
        "{peak} watch streams at once"
    );
}

#[tokio::test]
async fn a_watch_closes_after_its_grace_once_the_last_rollout_ended() {
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("the simulator starts");
    let cluster = support::cluster_for(&sim)
        .await
        .with_clock_scale(TIME_SCALE)
        .with_watch_grace(Duration::from_millis(500));
    let applied = apply(&cluster, &[deployment("web", "shop/web:1", 1)]).await;
    watch_in(&cluster, support::NAMESPACE, applied, GENEROUS)
        .await
        .assert_succeeded();
    assert!(
        sim.watch_streams().open >= 1,
        "the watches outlive the rollout"
    );
    let by = std::time::Instant::now() + Duration::from_secs(20);
    while sim.watch_streams().open > 0 {
        assert!(std::time::Instant::now() < by, "the watches never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
