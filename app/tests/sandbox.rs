//! `kubernaut dev`, run as a newcomer runs it: the real binary, its printed token and
//! address, the seeded example's verdicts, a deploy through the printed CLI example to
//! the simulated cluster, and the pages showing it.

#[path = "ui_support/session.rs"]
mod session;

mod dev_support;

use std::process::Command;
use std::time::{Duration, Instant};

use dev_support::Dev;
use serde_json::Value;

#[tokio::test]
async fn kubernaut_dev_serves_a_sandbox_where_a_release_becomes_a_verdict() {
    let mut sandbox = Dev::start(&[]);
    assert!(sandbox.token.starts_with("knt_"), "{}", sandbox.banner);
    assert!(
        sandbox
            .banner
            .contains(&format!("export KUBERNAUT_URL={}", sandbox.url))
            && sandbox
                .banner
                .contains(&format!("export KUBERNAUT_TOKEN={}", sandbox.token)),
        "the banner has a ready-to-paste CLI example: {}",
        sandbox.banner
    );
    let api = sandbox.client();
    assert!(
        std::path::Path::new(&sandbox.data_dir)
            .join("kubernaut.db")
            .exists(),
        "the embedded database lives in the data directory"
    );

    // The cluster is there, and says it is simulated.
    let clusters: Value = api
        .get(format!("{}/api/clusters", sandbox.url))
        .send()
        .await
        .expect("clusters")
        .json()
        .await
        .expect("JSON");
    assert_eq!(clusters["items"][0]["name"], "sandbox", "{clusters}");
    assert_eq!(clusters["items"][0]["simulated"], true, "{clusters}");
    assert_eq!(clusters["items"][0]["reachable"], true, "{clusters}");

    // --seed: one success, one crash loop with its diagnosis.
    let seeded = sandbox.verdicts("service=hello-world", 2).await;
    let by_version = |version: &str| {
        seeded
            .iter()
            .find(|d| d["version"] == version)
            .unwrap_or_else(|| panic!("no {version}: {seeded:?}"))
            .clone()
    };
    assert_eq!(by_version("1.0.0")["status"], "succeeded");
    let crashed = by_version("1.1.0");
    assert_eq!(crashed["status"], "failed", "{crashed}");
    let diagnosis = crashed["diagnostics"].to_string();
    assert!(
        diagnosis.contains("crash_loop") && diagnosis.contains("could not connect to the database"),
        "the crash loop's reason and log lines: {diagnosis}"
    );

    // The printed CLI example, as pasted: a release, then a deploy that waits.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kubernaut"))
            .args(args)
            .env("KUBERNAUT_URL", &sandbox.url)
            .env("KUBERNAUT_TOKEN", &sandbox.token)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .output()
            .expect("the CLI runs")
    };
    let created = cli(&[
        "release",
        "create",
        "--service",
        "hello",
        "--version",
        "1",
        "--image",
        "registry.local/hello:1",
        "--template",
        "examples/hello-world/kubernetes.yaml",
        "--attr",
        "replicas=2",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let deployed = cli(&[
        "deploy",
        "--service",
        "hello",
        "--version",
        "1",
        "--cluster",
        "sandbox",
        "--namespace",
        "staging",
    ]);
    assert!(
        deployed.status.success(),
        "the deploy succeeds: {}{}",
        String::from_utf8_lossy(&deployed.stdout),
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&deployed.stderr).contains("sandbox is a simulated cluster"),
        "the CLI says the cluster is simulated: {}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let hello = sandbox.verdicts("service=hello", 1).await;
    assert_eq!(hello[0]["status"], "succeeded");
    let status = cli(&["status", "--service", "hello"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("sandbox (simulated)"), "{status}");

    // The pages show it, the cluster marked as simulated.
    let cookie = session::sign_in_with(&sandbox.url, &sandbox.token).await;
    let pages = session::no_redirects(Some(&cookie));
    let page = |path: String| {
        let pages = pages.clone();
        async move {
            let response = pages.get(path).send().await.expect("a page");
            assert_eq!(response.status(), 200);
            response.text().await.expect("HTML")
        }
    };
    let deployment = page(format!(
        "{}/deployments/{}",
        sandbox.url,
        hello[0]["id"].as_str().expect("id")
    ))
    .await;
    assert!(deployment.contains("succeeded"), "{deployment}");
    let clusters_page = page(format!("{}/clusters", sandbox.url)).await;
    assert!(clusters_page.contains("simulated"), "{clusters_page}");

    // Stopped, a temporary sandbox leaves nothing behind.
    let data_dir = sandbox.data_dir.clone();
    sandbox.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::path::Path::new(&data_dir).exists() {
        assert!(Instant::now() < deadline, "{data_dir} is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
