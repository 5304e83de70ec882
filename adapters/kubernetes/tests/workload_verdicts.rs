//! StatefulSet, DaemonSet and Job rollouts against the simulated API server.

#[expect(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
mod support;

use kubernaut_domain::cluster::RolloutOutcome;
use kubernaut_domain::deployment::FailureReason;
use serde_json::{Value, json};
use support::{GENEROUS, deploy, labelled, start};

fn pod_template(name: &str, image: &str, restart_policy: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": image}]});
    if let Some(policy) = restart_policy {
        spec["restartPolicy"] = json!(policy);
    }
    json!({"metadata": {"labels": {"app": name}}, "spec": spec})
}

fn stateful_set(name: &str, image: &str, replicas: i32) -> Value {
    labelled(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, image, None),
        }
    }))
}

fn daemon_set(name: &str, image: &str) -> Value {
    labelled(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, image, None),
        }
    }))
}

fn job(name: &str, image: &str, backoff_limit: i32) -> Value {
    labelled(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": pod_template(name, image, Some("Never")),
        }
    }))
}

#[tokio::test]
async fn a_stateful_set_succeeds_once_every_replica_is_ready_and_updated() {
    let (_sim, cluster) = start().await;
    deploy(&cluster, &[stateful_set("db", "postgres:17", 3)], GENEROUS)
        .await
        .assert_succeeded();
    deploy(&cluster, &[stateful_set("db", "postgres:18", 3)], GENEROUS)
        .await
        .assert_succeeded();
}

#[tokio::test]
async fn a_crash_looping_stateful_set_fails() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[stateful_set("db", "shop/db:crashloop", 2)],
        GENEROUS,
    )
    .await;
    watched.assert_failed_with(FailureReason::CrashLoop);
}

#[tokio::test]
async fn an_on_delete_stateful_set_succeeds_with_a_warning() {
    let (_sim, cluster) = start().await;
    let mut on_delete = stateful_set("db", "postgres:17", 1);
    on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    let watched = deploy(&cluster, &[on_delete], GENEROUS).await;
    let RolloutOutcome::Succeeded { warnings } = &watched.outcome else {
        panic!("expected success, got {:#?}", watched.outcome);
    };
    assert!(
        warnings.iter().any(|w| w.contains("OnDelete")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_daemon_set_succeeds_once_every_node_runs_an_available_updated_pod() {
    let (_sim, cluster) = start().await;
    deploy(&cluster, &[daemon_set("agent", "fluent-bit:3")], GENEROUS)
        .await
        .assert_succeeded();
}

#[tokio::test]
async fn a_daemon_set_whose_image_is_missing_fails() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[daemon_set("agent", "shop/agent:notfound")],
        GENEROUS,
    )
    .await;
    watched.assert_failed_with(FailureReason::ImageNotFound);
}

#[tokio::test]
async fn a_job_succeeds_when_it_completes() {
    let (_sim, cluster) = start().await;
    deploy(&cluster, &[job("migrate", "shop/migrate:1", 2)], GENEROUS)
        .await
        .assert_succeeded();
}

#[tokio::test]
async fn a_job_out_of_retries_fails_with_its_pods_logs() {
    let (_sim, cluster) = start().await;
    let watched = deploy(
        &cluster,
        &[job("migrate", "shop/migrate:fail", 1)],
        GENEROUS,
    )
    .await;
    let diagnostics = watched.assert_failed_with(FailureReason::JobFailed);
    let lines: Vec<&String> = diagnostics.resources[0]
        .logs
        .iter()
        .flat_map(|l| &l.lines)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("fatal")),
        "{diagnostics:#?}"
    );
    assert!(
        diagnostics.resources[0]
            .events
            .iter()
            .any(|e| e.reason == "BackoffLimitExceeded"),
        "{diagnostics:#?}"
    );
}
