//! Every exit code of the table in docs/cli.md, through the real binary against a
//! real server: 0 succeeded, 1 failed, 70 timed out, 2 refused input, 3 unreachable
//! or failing (5xx after the retries), 4 conflict.

use std::process::Command;

use kubernaut_testkit::sim::Behaviour;

use crate::helpers::{
    Server, closed_port, kubernaut, spawn_server_with, spawn_server_with_cluster,
};

fn deploy<'a>(version: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "deploy",
        "--service",
        "web",
        "--version",
        version,
        "--cluster",
        "sim",
        "-n",
        crate::helpers::NAMESPACE,
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test]
async fn deploy_waits_for_the_verdict_by_default_and_exits_with_it() {
    let server = spawn_server_with_cluster().await;
    server.sim().set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    server.release("web", "1", "registry.local/web:1").await;
    server
        .release("web", "2", "registry.local/web-crashloop:2")
        .await;
    server.release("web", "3", "registry.local/web:slow").await;

    // No flag at all: the command follows the deployment to its verdict.
    let succeeded = server.run(&deploy("1", &[])).await;
    succeeded.assert_code(0);
    assert!(succeeded.stdout.contains(": succeeded"), "{succeeded:?}");

    let failed = server.run(&deploy("2", &[])).await;
    failed.assert_code(1);
    assert!(
        failed.stdout.contains(": failed (crash_loop)"),
        "{failed:?}"
    );

    let timed_out = server.run(&deploy("3", &["--timeout", "2s"])).await;
    timed_out.assert_code(70);
    assert!(timed_out.stdout.contains(": timed_out"), "{timed_out:?}");

    // `--wait` of older pipelines is still accepted, and means what it meant.
    let waited = server.run(&deploy("1", &["--wait"])).await;
    waited.assert_code(0);
    assert!(waited.stdout.contains(": succeeded"), "{waited:?}");

    // `--no-wait` opts out: exit 0 says only that the deploy was accepted.
    let accepted = server.run(&deploy("2", &["--no-wait", "-o", "json"])).await;
    accepted.assert_code(0);
    let requested = accepted.json();
    assert!(
        ["queued", "applying", "rolling_out"]
            .contains(&requested["status"].as_str().unwrap_or_default()),
        "{requested}"
    );
    let id = requested["id"].as_str().expect("an id");
    server.run(&["wait", id]).await.assert_code(1);
}

#[tokio::test]
async fn another_deploy_active_on_the_target_is_a_conflict_4() {
    let server = spawn_server_with_cluster().await;
    server.sim().set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    server.release("web", "3", "registry.local/web:slow").await;
    let first = server
        .run(&deploy(
            "3",
            &["--no-wait", "--timeout", "1m", "-o", "json"],
        ))
        .await;
    first.assert_code(0);
    let id = first.json()["id"].as_str().expect("an id").to_owned();

    let second = server.run(&deploy("3", &[])).await;
    second.assert_code(4);
    assert!(second.stderr.contains("409"), "{second:?}");
    assert!(
        second.stderr.contains(&id),
        "names the active one: {second:?}"
    );

    // Cancelling it ends the conflict; cancelling it again is one too.
    let cancelled = server.run(&["cancel", &id]).await;
    cancelled.assert_code(0);
    assert!(cancelled.stdout.contains(": cancelled"), "{cancelled:?}");
    server.run(&["cancel", &id]).await.assert_code(4);
    server.run(&["wait", &id]).await.assert_code(1);
}

#[tokio::test]
async fn input_the_server_refuses_is_2() {
    let server = spawn_server_with_cluster().await;
    server.release("web", "1", "registry.local/web:1").await;
    let run = server
        .run(&[
            "deploy",
            "--service",
            "web",
            "--version",
            "9",
            "--cluster",
            "sim",
            "-n",
            "shop",
        ])
        .await;
    run.assert_code(2);
    assert!(run.stderr.contains("no active release matches"), "{run:?}");
    // A flag clap refuses is usage too.
    server.run(&["deploy", "--bogus"]).await.assert_code(2);
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_is_3() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = kubernaut(&url, &["deployment", "list"]).await;
    run.assert_code(3);
    assert!(run.stderr.contains("cannot reach"), "{run:?}");
}

/// `psql` as the database's owner, on the server's maintenance database.
fn psql(sql: &str) {
    let status = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-qc",
            sql,
        ])
        .status()
        .expect("psql runs");
    assert!(status.success(), "{sql}");
}

/// The name of the server's database, from its URL.
fn database_name(server: &Server) -> String {
    let url = server.database_url();
    let name = url.rsplit('/').next().unwrap_or_default();
    name.split('?').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_server_whose_database_is_gone_answers_503_and_the_client_exits_3_after_retrying() {
    let server = spawn_server_with(|settings| settings.database.connect_timeout_seconds = 1).await;
    server.run(&["release", "list"]).await.assert_code(0);
    let name = database_name(&server);
    psql(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ));
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    let run = server
        .run(&["release", "list", "--retry-budget", "3s"])
        .await;
    psql(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"));
    run.assert_code(3);
    assert!(run.stderr.contains("503"), "{run:?}");
    assert!(run.stderr.contains("waiting"), "it retried first: {run:?}");
}
