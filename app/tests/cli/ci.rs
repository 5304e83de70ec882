//! What CI scripts lean on: retries of 429 and 503 within a budget, `--output yaml`,
//! and `kubernaut wait`.

use crate::helpers::{Server, spawn_server_with, spawn_server_with_cluster};

/// Spends the admin token's quota of changes with cheap refused requests (the limit
/// counts a change before its body is read).
async fn spend_the_quota(server: &Server, changes: u32) {
    let client = reqwest::Client::new();
    let mut refused = 0;
    for _ in 0..=changes {
        let response = client
            .post(format!("{}/api/releases", server.url))
            .bearer_auth(&server.token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("sent");
        if response.status() == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 1, "the quota of {changes} was not spent");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_within_the_budget_and_said_on_stderr() {
    // 30 changes a minute: one more every 2 s once the burst is spent.
    let server = spawn_server_with(|settings| settings.security.mutations_per_minute = 30).await;
    let template = server.template_file();
    let template = template.to_str().expect("a UTF-8 path");
    let create = |version: &'static str, budget: &'static str| {
        vec![
            "release",
            "create",
            "--service",
            "web",
            "--version",
            version,
            "--image",
            "registry.local/web:1",
            "--template",
            template,
            "--attr",
            "replicas=1",
            "--output",
            "yaml",
            "--retry-budget",
            budget,
        ]
    };

    spend_the_quota(&server, 30).await;
    // Still refused once the budget is spent: Kubernaut is not available (3), not a
    // usage error.
    let refused = server.run(&create("1.0.0", "0")).await;
    refused.assert_code(3);
    assert!(
        refused.stderr.contains("429") && refused.stderr.contains("giving up"),
        "{refused:?}"
    );

    spend_the_quota(&server, 30).await;
    let started = std::time::Instant::now();
    let run = server.run(&create("1.0.0", "30s")).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("429 Too Many Requests") && run.stderr.contains("waiting"),
        "the wait is said on stderr: {run:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    // `--output yaml`: the server's answer as YAML.
    let release: serde_json::Value = serde_saphyr::from_str(&run.stdout).expect("stdout is YAML");
    assert_eq!(release["service"], "web", "{}", run.stdout);
    assert_eq!(release["version"], "1.0.0");
    assert!(release["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(!run.stdout.trim_start().starts_with('{'), "{}", run.stdout);
}

#[tokio::test]
async fn the_retry_budget_comes_from_the_environment_too() {
    let server = spawn_server_with(|settings| settings.security.mutations_per_minute = 30).await;
    spend_the_quota(&server, 30).await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubernaut"));
    let output = command
        .args(["release", "delete", "0193a1c4-0000-7000-8000-000000000000"])
        .env("KUBERNAUT_URL", &server.url)
        .env("KUBERNAUT_TOKEN", &server.token)
        .env("KUBERNAUT_RETRY_BUDGET", "0")
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
}

#[tokio::test]
async fn wait_follows_a_deployment_to_its_verdict_with_the_exit_codes_of_deploy_wait() {
    let server = spawn_server_with_cluster().await;
    server
        .release("web", "1.0.0", "registry.local/web:1.0.0")
        .await;
    server
        .release("web", "2.0.0", "registry.local/web-crashloop:2.0.0")
        .await;
    let deploy = |version: &'static str| {
        vec![
            "deploy",
            "--service",
            "web",
            "--version",
            version,
            "--cluster",
            "sim",
            "--namespace",
            crate::helpers::NAMESPACE,
            "--no-wait",
            "--output",
            "json",
        ]
    };

    let requested = server.run(&deploy("1.0.0")).await;
    requested.assert_code(0);
    let id = requested.json()["id"].as_str().expect("an id").to_owned();
    let waited = server.run(&["wait", &id, "--output", "json"]).await;
    waited.assert_code(0);
    assert_eq!(waited.json()["status"], "succeeded", "{waited:?}");
    assert_eq!(waited.json()["id"], id.as_str());

    let requested = server.run(&deploy("2.0.0")).await;
    requested.assert_code(0);
    let id = requested.json()["id"].as_str().expect("an id").to_owned();
    let waited = server.run(&["wait", &id]).await;
    waited.assert_code(1);
    assert!(waited.stdout.contains("failed"), "{waited:?}");

    // A deployment that ended long ago answers at once, with the same code.
    let again = server.run(&["wait", &id, "--output", "yaml"]).await;
    again.assert_code(1);
    let deployment: serde_json::Value = serde_saphyr::from_str(&again.stdout).expect("YAML");
    assert_eq!(deployment["status"], "failed");

    let unknown = server
        .run(&["wait", "0193a1c4-0000-7000-8000-000000000000"])
        .await;
    unknown.assert_code(2);
}
