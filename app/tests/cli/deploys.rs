//! `kubernaut deploy` and `kubernaut rollback` against the simulated cluster.

use kubernaut_testkit::sim::Behaviour;

use crate::helpers::{NAMESPACE, spawn_server_with_cluster};

#[tokio::test]
async fn a_good_deploy_with_wait_shows_timestamped_progress_and_exits_0() {
    let server = spawn_server_with_cluster().await;
    server
        .release("web", "1.0.0", "registry.local/web:1.0.0")
        .await;
    let run = server
        .deploy_and_wait("web", "1.0.0", &["--timeout", "1m", "--attr", "replicas=3"])
        .await;
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 4, "{run:?}");
    // Not a terminal: every progress line starts with an RFC 3339 time.
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[19] == b'Z'),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains('\x1b'),
        "no terminal codes in logs: {run:?}"
    );
    assert!(run.stdout.contains("status: rolling_out"), "{run:?}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with(": succeeded")),
        "{run:?}"
    );
    let deployed = server
        .sim()
        .get_object("Deployment", NAMESPACE, "web")
        .expect("applied to the cluster");
    assert_eq!(
        deployed["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:1.0.0"
    );
    assert_eq!(
        deployed["spec"]["replicas"], 3,
        "--attr overrides the release's"
    );
}

#[tokio::test]
async fn a_crash_looping_release_exits_1_with_its_reason_events_and_log_lines() {
    let server = spawn_server_with_cluster().await;
    server.sim().set_image_behaviour(
        "registry.local/crashloop:1",
        Behaviour::CrashLoop {
            exit_code: 1,
            logs: vec!["FATAL: could not connect to the database".to_owned()],
        },
    );
    server
        .release("crashy", "1", "registry.local/crashloop:1")
        .await;
    let run = server.deploy_and_wait("crashy", "1", &[]).await;
    run.assert_code(1);
    assert!(run.stdout.contains("failed (crash_loop)"), "{run:?}");
    assert!(
        run.stdout.contains("Deployment/crashy: crash_loop"),
        "{run:?}"
    );
    assert!(run.stdout.contains("BackOff"), "the events: {run:?}");
    assert!(
        run.stdout
            .contains("| FATAL: could not connect to the database"),
        "the log lines: {run:?}"
    );
}

#[tokio::test]
async fn a_failed_deploy_in_json_prints_the_final_deployment_and_exits_1() {
    let server = spawn_server_with_cluster().await;
    server
        .release("ghost", "1", "registry.local/notfound:1")
        .await;
    let run = server
        .deploy_and_wait("ghost", "1", &["--output", "json"])
        .await;
    run.assert_code(1);
    let deployment = run.json();
    assert_eq!(deployment["status"], "failed");
    assert_eq!(deployment["reason"], "image_not_found");
    assert!(
        deployment["timeline"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        !run.stderr.is_empty(),
        "progress goes to stderr with JSON output"
    );
}

#[tokio::test]
async fn a_rollout_slower_than_its_timeout_exits_70() {
    let server = spawn_server_with_cluster().await;
    server.sim().set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    server
        .release("sloth", "1", "registry.local/web:slow")
        .await;
    let run = server
        .deploy_and_wait("sloth", "1", &["--timeout", "2s"])
        .await;
    run.assert_code(70);
    assert!(run.stdout.contains(": timed_out"), "{run:?}");
}

#[tokio::test]
async fn deploy_without_wait_returns_at_once_and_a_second_deploy_is_a_conflict() {
    let server = spawn_server_with_cluster().await;
    server.sim().set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    server.release("busy", "1", "registry.local/web:slow").await;
    let args = [
        "deploy",
        "--service",
        "busy",
        "--version",
        "1",
        "--cluster",
        "sim",
        "--namespace",
        NAMESPACE,
        "--timeout",
        "30s",
        "--no-prune",
        "--no-wait",
        "--output",
        "json",
    ];
    let first = server.run(&args).await;
    first.assert_code(0);
    let deployment = first.json();
    assert!(
        ["queued", "applying", "rolling_out"]
            .contains(&deployment["status"].as_str().unwrap_or("")),
        "{deployment}"
    );
    assert_eq!(deployment["timeout_seconds"], 30);
    assert_eq!(deployment["prune"], false);

    // Another deploy active on the target: a conflict, exit 4.
    let second = server.run(&args).await;
    second.assert_code(4);
    assert!(second.stderr.contains("409"), "{second:?}");
    assert!(
        second
            .stderr
            .contains(deployment["id"].as_str().expect("id")),
        "the conflict names the active deployment: {second:?}"
    );
}

#[tokio::test]
async fn a_deploy_the_server_refuses_exits_2_with_the_field_at_fault() {
    let server = spawn_server_with_cluster().await;
    server.release("web", "1", "registry.local/web:1").await;
    let run = server
        .run(&[
            "deploy",
            "--service",
            "web",
            "--version",
            "1",
            "--cluster",
            "nowhere",
            "--namespace",
            NAMESPACE,
            "--wait",
        ])
        .await;
    run.assert_code(2);
    assert!(run.stderr.contains("422"), "{run:?}");
    assert!(run.stderr.contains("cluster: "), "{run:?}");
}

#[tokio::test]
async fn rollback_by_target_and_by_deployment_redeploy_the_last_good_release() {
    let server = spawn_server_with_cluster().await;
    server
        .release("web", "1.0.0", "registry.local/web:1.0.0")
        .await;
    server
        .release("web", "2.0.0", "registry.local/web:2.0.0")
        .await;
    server
        .deploy_and_wait("web", "1.0.0", &[])
        .await
        .assert_code(0);
    let second = server
        .deploy_and_wait("web", "2.0.0", &["--output", "json"])
        .await;
    second.assert_code(0);
    let second_id = second.json()["id"].as_str().expect("id").to_owned();

    let by_target = server
        .run(&[
            "rollback",
            "--service",
            "web",
            "--cluster",
            "sim",
            "--namespace",
            NAMESPACE,
            "--wait",
            "--output",
            "json",
        ])
        .await;
    by_target.assert_code(0);
    let rolled_back = by_target.json();
    assert_eq!(rolled_back["version"], "1.0.0", "{rolled_back}");
    assert_eq!(rolled_back["status"], "succeeded");
    assert_eq!(rolled_back["rollback_of"], second_id.as_str());
    let image = &server
        .sim()
        .get_object("Deployment", NAMESPACE, "web")
        .expect("deployed")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "registry.local/web:1.0.0");

    let by_id = server.run(&["rollback", "--deployment", &second_id]).await;
    by_id.assert_code(0);
    assert!(
        by_id.stdout.contains("of web 1.0.0 to sim/shop"),
        "{by_id:?}"
    );
    assert!(
        by_id.stdout.contains(&format!("rolling back {second_id}")),
        "{by_id:?}"
    );
}

#[tokio::test]
async fn rolling_back_a_target_never_deployed_is_bad_usage() {
    let server = spawn_server_with_cluster().await;
    let run = server
        .run(&[
            "rollback",
            "--service",
            "web",
            "--cluster",
            "sim",
            "--namespace",
            NAMESPACE,
        ])
        .await;
    run.assert_code(2);
    assert!(run.stderr.contains("nothing to roll back"), "{run:?}");
}
