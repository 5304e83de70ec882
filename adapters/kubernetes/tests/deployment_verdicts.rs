//! Deployment rollouts against the simulated API server: each verdict of
//! `shared/ROLLOUT.md`, with the diagnostics it must carry.

mod support;

use std::time::Duration;

use kubernaut_domain::cluster::RolloutOutcome;
use kubernaut_domain::deployment::{Diagnostics, FailureReason};
use kubernaut_testkit::sim::Behaviour;
use serde_json::{Value, json};
use support::{GENEROUS, NAMESPACE, deploy, deployment, start};

fn events_say(diagnostics: &Diagnostics, reason: &str) -> bool {
    diagnostics
        .resources
        .iter()
        .flat_map(|r| &r.events)
        .any(|e| e.reason == reason)
}

fn log_lines(diagnostics: &Diagnostics) -> Vec<&str> {
    diagnostics
        .resources
        .iter()
        .flat_map(|r| &r.logs)
        .flat_map(|l| &l.lines)
        .map(String::as_str)
        .collect()
}

fn new_replica_set_of(sim: &kubernaut_testkit::sim::Simulator, name: &str) -> Value {
    let deployment = sim
        .get_object("Deployment", NAMESPACE, name)
        .expect("the deployment exists");
    let revision =
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"].clone();
    sim.list_objects("ReplicaSet", Some(NAMESPACE))
        .into_iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == revision)
        .expect("the new replica set exists")
}

#[tokio::test]
async fn a_good_rollout_succeeds_once_every_replica_is_available() {
    let (sim, cluster) = start().await;
    let watched = deploy(&cluster, &[deployment("web", "nginx:1.27", 3)], GENEROUS).await;
    watched.assert_succeeded();
    let rs = new_replica_set_of(&sim, "web");
    assert_eq!(rs["status"]["readyReplicas"], json!(3));
    assert!(
        watched.told("Deployment/web: rolled out"),
        "{:?}",
        watched.progress
    );
    assert!(
        !watched.told("status"),
        "the watches starting up are not news: {:?}",
        watched.progress
    );
    let lines: Vec<&str> = watched
        .progress
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    let mut deduplicated = lines.clone();
    deduplicated.dedup();
    assert_eq!(lines, deduplicated, "a line is told only when it changes");
}

#[tokio::test]
async fn an_update_is_judged_on_the_new_replica_set_not_the_previous_rollouts_status() {
    let (sim, cluster) = start().await;
    deploy(&cluster, &[deployment("web", "nginx:1.27", 2)], GENEROUS)
        .await
        .assert_succeeded();

    deploy(&cluster, &[deployment("web", "nginx:1.28", 2)], GENEROUS)
        .await
        .assert_succeeded();
    let rs = new_replica_set_of(&sim, "web");
    assert_eq!(
        rs["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("nginx:1.28")
    );
    assert_eq!(rs["status"]["readyReplicas"], json!(2));

    // The previous rollout left Progressing=True/NewReplicaSetAvailable and healthy
    // old pods behind; a broken update must fail all the same.
    let watched = deploy(&cluster, &[deployment("web", "web:crashloop", 2)], GENEROUS).await;
    watched.assert_failed_with(FailureReason::CrashLoop);
}

#[tokio::test]
async fn a_crash_loop_fails_with_the_containers_last_log_lines_and_events() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[deployment("web", "shop/web:crashloop", 2)],
        GENEROUS,
    )
    .await;
    let diagnostics = watched.assert_failed_with(FailureReason::CrashLoop);
    let lines = log_lines(diagnostics);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("could not connect to the database")),
        "{diagnostics:#?}"
    );
    assert!(lines.len() <= Diagnostics::LOG_LINES);
    assert!(events_say(diagnostics, "BackOff"), "{diagnostics:#?}");
    assert!(watched.told("CrashLoopBackOff"), "{:?}", watched.progress);
}

#[tokio::test]
async fn a_missing_image_fails_as_image_not_found() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[deployment("web", "shop/web:notfound", 2)],
        GENEROUS,
    )
    .await;
    let diagnostics = watched.assert_failed_with(FailureReason::ImageNotFound);
    assert!(events_say(diagnostics, "Failed"), "{diagnostics:#?}");
    assert_eq!(diagnostics.resources[0].resource.kind, "Deployment");
}

#[tokio::test]
async fn pods_that_never_become_ready_fail_on_their_readiness_probe() {
    let (_sim, cluster) = start().await;
    let mut never_ready = deployment("web", "shop/web:neverready", 2);
    never_ready["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10});
    let watched = deploy(&cluster, &[never_ready], GENEROUS).await;
    let diagnostics = watched.assert_failed_with(FailureReason::FailedProbe);
    assert!(events_say(diagnostics, "Unhealthy"), "{diagnostics:#?}");
}

#[tokio::test]
async fn pods_no_node_can_take_fail_as_unschedulable_after_the_grace() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[deployment("web", "shop/web:unschedulable", 1)],
        GENEROUS,
    )
    .await;
    let diagnostics = watched.assert_failed_with(FailureReason::Unschedulable);
    assert!(
        events_say(diagnostics, "FailedScheduling"),
        "{diagnostics:#?}"
    );
}

#[tokio::test]
async fn a_rollout_stuck_past_its_progress_deadline_fails_with_it() {
    let (sim, cluster) = start().await;
    sim.set_image_behaviour("shop/web:stuck", Behaviour::SlowStart { seconds: 100_000 });
    let mut stuck = deployment("web", "shop/web:stuck", 1);
    stuck["spec"]["progressDeadlineSeconds"] = json!(10);
    let watched = deploy(&cluster, &[stuck], GENEROUS).await;
    watched.assert_failed_with(FailureReason::ProgressDeadlineExceeded);
}

#[tokio::test]
async fn a_slow_rollout_past_the_deployments_deadline_times_out() {
    let (sim, cluster) = start().await;
    sim.set_image_behaviour("shop/web:slow", Behaviour::SlowStart { seconds: 100_000 });
    let watched = deploy(
        &cluster,
        &[deployment("web", "shop/web:slow", 2)],
        Duration::from_secs(3),
    )
    .await;
    let RolloutOutcome::TimedOut(diagnostics) = &watched.outcome else {
        panic!("expected a timeout, got {:#?}", watched.outcome);
    };
    assert_eq!(diagnostics.primary_reason(), Some(FailureReason::TimedOut));
    assert!(
        diagnostics.resources[0].message.contains("replicas"),
        "{diagnostics:#?}"
    );
}

#[tokio::test]
async fn kinds_without_a_rollout_succeed_once_applied() {
    let (_sim, cluster) = start().await;
    deploy(
        &cluster,
        &[support::config_map("web-config"), support::service("web")],
        GENEROUS,
    )
    .await
    .assert_succeeded();
}

#[tokio::test]
async fn a_refused_image_pull_fails_as_a_pull_failure_not_a_missing_image() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[deployment("web", "private.example.com/web:denied", 1)],
        GENEROUS,
    )
    .await;
    watched.assert_failed_with(FailureReason::ImagePullFailed);
}

#[tokio::test]
async fn a_container_whose_secret_is_missing_fails_as_misconfigured() {
    let (_sim, cluster) = start().await;
    let mut misconfigured = deployment("web", "nginx:1.27", 1);
    misconfigured["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{
        "name": "DATABASE_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "database", "key": "password"}}
    }]);
    let watched = deploy(&cluster, &[misconfigured], GENEROUS).await;
    let diagnostics = watched.assert_failed_with(FailureReason::ContainerConfigError);
    assert!(
        diagnostics.resources[0].message.contains("database"),
        "{diagnostics:#?}"
    );
}

#[tokio::test]
async fn a_progress_deadline_left_over_from_the_previous_rollout_does_not_fail_the_next() {
    let (sim, cluster) = start().await;
    sim.set_image_behaviour("shop/web:stuck", Behaviour::SlowStart { seconds: 100_000 });
    let mut stuck = deployment("web", "shop/web:stuck", 1);
    stuck["spec"]["progressDeadlineSeconds"] = json!(10);
    deploy(&cluster, &[stuck], GENEROUS)
        .await
        .assert_failed_with(FailureReason::ProgressDeadlineExceeded);

    // The fix goes out while the Deployment still says ProgressDeadlineExceeded.
    let mut fixed = deployment("web", "nginx:1.27", 1);
    fixed["spec"]["progressDeadlineSeconds"] = json!(600);
    deploy(&cluster, &[fixed], GENEROUS)
        .await
        .assert_succeeded();
}
