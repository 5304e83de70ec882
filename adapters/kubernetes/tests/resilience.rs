//! Dropped watches, expired resourceVersions and a failing API server during a rollout
//! must not change its verdict.

#[expect(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
mod support;

use std::time::Duration;

use chrono::Utc;
use kubernaut_domain::cluster::RolloutRequest;
use kubernaut_domain::deployment::{DeploymentId, FailureReason, Namespace};
use kubernaut_domain::ports::{Cluster, ClusterError};
use kubernaut_kubernetes::KubernetesCluster;
use kubernaut_testkit::sim::{Behaviour, Faults, Simulator};
use support::{GENEROUS, NAMESPACE, apply, deployment, start, watch};

/// A rollout that takes a few real seconds: each pod's image pull takes 100 simulated
/// seconds (2 s of wall time).
async fn slow_start(sim: &Simulator) -> &'static str {
    let image = "shop/web:steady";
    sim.set_image_behaviour(image, Behaviour::SlowStart { seconds: 100 });
    image
}

/// Runs `fault` every 300 ms, `times` times, on a task of its own.
fn keep_injecting(
    faults: Faults,
    times: usize,
    fault: impl Fn(&Faults) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..times {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fault(&faults);
        }
    })
}

#[tokio::test]
async fn dropped_watches_do_not_change_a_successful_verdict() {
    let (sim, cluster) = start().await;
    let image = slow_start(&sim).await;
    let applied = apply(&cluster, &[deployment("web", image, 3)]).await;
    let injector = keep_injecting(sim.faults(), 15, Faults::drop_watches);
    watch(&cluster, applied, GENEROUS).await.assert_succeeded();
    injector.abort();
}

#[tokio::test]
async fn expired_resource_versions_force_a_relist_and_not_a_verdict() {
    let (sim, cluster) = start().await;
    let image = slow_start(&sim).await;
    let applied = apply(&cluster, &[deployment("web", image, 3)]).await;
    let injector = keep_injecting(sim.faults(), 10, Faults::force_gone);
    watch(&cluster, applied, GENEROUS).await.assert_succeeded();
    injector.abort();

    let applied = apply(&cluster, &[deployment("web", "shop/web:crashloop", 2)]).await;
    let injector = keep_injecting(sim.faults(), 10, Faults::force_gone);
    watch(&cluster, applied, GENEROUS)
        .await
        .assert_failed_with(FailureReason::CrashLoop);
    injector.abort();
}

#[tokio::test]
async fn server_errors_during_a_rollout_do_not_change_its_verdict() {
    let (sim, cluster) = start().await;
    let image = slow_start(&sim).await;
    let applied = apply(&cluster, &[deployment("web", image, 2)]).await;
    sim.faults().set_error_rate(0.3, 500);
    let watched = watch(&cluster, applied, GENEROUS).await;
    sim.faults().clear();
    watched.assert_succeeded();

    let applied = apply(&cluster, &[deployment("web", "shop/web:crashloop", 2)]).await;
    sim.faults().set_error_rate(0.3, 503);
    let watched = watch(&cluster, applied, GENEROUS).await;
    sim.faults().clear();
    let diagnostics = watched.assert_failed_with(FailureReason::CrashLoop);
    assert!(!diagnostics.resources[0].message.is_empty());
}

#[tokio::test]
async fn throttling_during_a_rollout_does_not_change_its_verdict() {
    let (sim, cluster) = start().await;
    let image = slow_start(&sim).await;
    let applied = apply(&cluster, &[deployment("web", image, 2)]).await;
    sim.faults().set_throttle_rate(0.3, 0);
    let watched = watch(&cluster, applied, GENEROUS).await;
    sim.faults().clear();
    watched.assert_succeeded();
}

#[tokio::test]
async fn apply_retries_through_a_burst_of_server_errors() {
    let (sim, cluster) = start().await;
    sim.faults().fail_next(3, 500);
    let applied = apply(&cluster, &[deployment("web", "nginx:1.27", 1)]).await;
    assert_eq!(applied.len(), 1);
}

#[tokio::test]
async fn apply_to_a_cluster_that_keeps_failing_is_unavailable_not_rejected() {
    let (sim, cluster) = start().await;
    sim.faults().set_error_rate(1.0, 500);
    let error = cluster
        .with_retries(3, Duration::from_millis(10))
        .apply(&[deployment("web", "nginx:1.27", 1)])
        .await
        .expect_err("the cluster fails every request");
    assert!(matches!(error, ClusterError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn a_watch_on_an_unreachable_cluster_is_unavailable_at_the_deadline() {
    let nowhere = kube::Config::new("http://127.0.0.1:1".parse().expect("a url"));
    let cluster = KubernetesCluster::from_client(kube::Client::try_from(nowhere).expect("client"));
    let (_sim, reachable) = start().await;
    let applied = apply(&reachable, &[deployment("web", "nginx:1.27", 1)]).await;
    let started_at = Utc::now();
    let request = RolloutRequest {
        deployment: DeploymentId::generate(),
        namespace: Namespace::parse(NAMESPACE).expect("namespace"),
        resources: applied,
        started_at,
        deadline: started_at + chrono::Duration::seconds(2),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = tokio::time::timeout(GENEROUS, cluster.watch_rollout(&request, tx))
        .await
        .expect("the watch ends at its deadline");
    assert!(
        matches!(outcome, Err(ClusterError::Unavailable(_))),
        "{outcome:?}"
    );
}
