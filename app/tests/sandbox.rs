//! `kubernaut dev`, run as a newcomer runs it: the real binary, its printed token and
//! address, the seeded example's verdicts, a deploy through the printed CLI example to
//! the simulated cluster, and the pages showing it.

#[path = "ui_support/session.rs"]
mod session;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The sandbox process; killed when dropped, so a failing test leaves nothing behind.
struct Running {
    child: Child,
    url: String,
    token: String,
    data_dir: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kubernaut dev --seed` on a free port and reads its banner.
fn start_sandbox() -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args([
            "dev",
            "--seed",
            "--bind",
            "127.0.0.1:0",
            "--time-scale",
            "20",
        ])
        // Nothing of this machine's: no settings file, no kubeconfig, no database URL.
        .env_remove("KUBERNAUT_CONFIG")
        .env_remove("KUBERNAUT_DATA_DIR")
        .env("KUBECONFIG", "/nonexistent")
        .env("KUBERNAUT__LOG__FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubernaut dev starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut banner = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a banner line");
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops the sandbox") {
            break;
        }
    }
    let field = |label: &str| -> String {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label} in the banner:\n{banner}"))
            .to_owned()
    };
    let url = field("Web UI:").trim_end_matches('/').to_owned();
    let token = field("Token:");
    let data_dir = field("Data:");
    assert!(token.starts_with("knt_"), "{banner}");
    assert!(
        banner.contains(&format!("export KUBERNAUT_URL={url}"))
            && banner.contains(&format!("export KUBERNAUT_TOKEN={token}")),
        "the banner has a ready-to-paste CLI example: {banner}"
    );
    Running {
        child,
        url,
        token,
        data_dir,
    }
}

fn client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}

/// The deployments of `service`, once each has a verdict.
async fn verdicts(client: &reqwest::Client, url: &str, service: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: Value = client
            .get(format!("{url}/api/deployments?service={service}"))
            .send()
            .await
            .expect("deployments")
            .json()
            .await
            .expect("JSON");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let done = items
            .iter()
            .filter(|d| {
                ["succeeded", "failed", "timed_out"].contains(&d["status"].as_str().unwrap_or(""))
            })
            .count();
        if items.len() >= count && done == items.len() {
            return items;
        }
        assert!(Instant::now() < deadline, "no verdicts in time: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn kubernaut_dev_serves_a_sandbox_where_a_release_becomes_a_verdict() {
    let sandbox = start_sandbox();
    let api = client(&sandbox.token);
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
    let seeded = verdicts(&api, &sandbox.url, "hello-world", 2).await;
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
        "--wait",
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
    let hello = verdicts(&api, &sandbox.url, "hello", 1).await;
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
    let pid = sandbox.child.id();
    let stopped = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::path::Path::new(&data_dir).exists() {
        assert!(Instant::now() < deadline, "{data_dir} is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sandbox);
}
