//! Kubernaut killed (`kill -9`) and started again on the same database while
//! `kubernaut deploy` waits: the client reconnects within its wait, resumes the event
//! stream after the last entry it showed, and prints the verdict once with its exit
//! code; no timeline line is missed or repeated.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::sim::{Behaviour, Simulator};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::helpers::{NAMESPACE, TIME_SCALE, client_command, closed_port, kubernaut_as};

/// A `kubernaut serve` process on `port`, the configuration at `config`.
fn serve(config: &Path, database_url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["serve", "--config"])
        .arg(config)
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env("KUBERNAUT__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("KUBERNAUT__SERVER__WORKERS", "1")
        .env("KUBERNAUT__DATABASE__POOL_SIZE", "4")
        .env("KUBERNAUT__ENGINE__LEASE_TTL_SECONDS", "2")
        .env("KUBERNAUT__ENGINE__CLAIM_INTERVAL_MS", "250")
        .env("KUBERNAUT__SECURITY__MUTATIONS_PER_MINUTE", "0")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubernaut serve starts")
}

async fn until_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(response) = client.get(format!("{url}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("kubernaut serve at {url} did not get ready");
}

/// Kills the process on drop, so that a failing test leaves none behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_deploy_waiting_through_a_restart_of_kubernaut_prints_the_verdict_once_and_exits_with_it()
{
    let database = TestDatabase::create().expect("a fresh test database");
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("the simulator starts");
    reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces", sim.url()))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .send()
        .await
        .expect("the namespace is made");
    // 160 simulated seconds before the pods start: 8 s of the test's time.
    sim.set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 160 },
    );
    let scratch = tempfile::tempdir().expect("a folder");
    let config = scratch.path().join("kubernaut.toml");
    std::fs::write(
        &config,
        format!(
            "[deployments]\nuse_current_kubeconfig_context = false\n\n[[clusters]]\nname = \"sim\"\nkubeconfig = {:?}\nclock_scale = {TIME_SCALE}\n",
            sim.kubeconfig_path()
        ),
    )
    .expect("the configuration is written");
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Process(serve(&config, database.url(), port));
    until_ready(&url).await;
    let token = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["admin", "create-token", "--name", "ci", "--role", "admin"])
        .env("KUBERNAUT__DATABASE__URL", database.url())
        .env("RUST_LOG", "error")
        .output()
        .expect("admin create-token runs");
    let token = String::from_utf8(token.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    let template = scratch.path().join("manifest.yaml.j2");
    std::fs::write(&template, crate::helpers::TEMPLATE).expect("the template is written");
    kubernaut_as(
        &url,
        Some(&token),
        &[
            "release",
            "create",
            "--service",
            "web",
            "--version",
            "1",
            "--image",
            "registry.local/web:slow",
            "-f",
            template.to_str().expect("UTF-8"),
            "--attr",
            "replicas=1",
        ],
    )
    .await
    .assert_code(0);

    let mut deploy = client_command(
        &[("KUBERNAUT_URL", &url), ("KUBERNAUT_TOKEN", &token)],
        &[
            "deploy",
            "--service",
            "web",
            "--version",
            "1",
            "--cluster",
            "sim",
            "-n",
            NAMESPACE,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("kubernaut deploy starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut reader = tokio::io::BufReader::new(deploy.stdout.take().expect("its output")).lines();
    let collected = Arc::clone(&lines);
    let reading = tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            collected.lock().expect("lock").push(line);
        }
    });

    // Once the rollout is under way (and shown), Kubernaut dies and comes back.
    let shown = |needle: &str| {
        lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    };
    for _ in 0..200 {
        if shown("[rolling_out]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shown("[rolling_out]"), "{:?}", lines.lock().expect("lock"));
    let _ = server.0.kill();
    let _ = server.0.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server = Process(serve(&config, database.url(), port));
    until_ready(&url).await;

    let status = tokio::time::timeout(Duration::from_secs(120), deploy.wait())
        .await
        .expect("the deploy ends")
        .expect("its status");
    reading.await.expect("the output is read");
    let mut stderr = String::new();
    if let Some(mut err) = deploy.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = err.read_to_string(&mut stderr).await;
    }
    let lines = lines.lock().expect("lock").clone();
    assert_eq!(status.code(), Some(0), "{lines:#?}\n{stderr}");
    assert!(
        lines.iter().any(|l| l.contains("lost the server")),
        "the restart was noticed: {lines:#?}"
    );
    let verdicts = lines
        .iter()
        .filter(|l| l.starts_with("deployment ") && l.ends_with(": succeeded"))
        .count();
    assert_eq!(verdicts, 1, "{lines:#?}");

    // Every entry of the deployment's timeline was shown, each exactly once (the
    // replica that resumed the rollout wrote lines of the same text again: as many
    // times shown as written).
    let list = kubernaut_as(&url, Some(&token), &["deployment", "list", "-o", "json"]).await;
    let id = list.json()["items"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let shown = kubernaut_as(
        &url,
        Some(&token),
        &["deployment", "show", &id, "-o", "json"],
    )
    .await;
    let timeline: Vec<Value> = shown.json()["timeline"]
        .as_array()
        .expect("a timeline")
        .clone();
    assert!(timeline.len() >= 3, "{timeline:?}");
    let shown_lines: Vec<&String> = lines.iter().filter(|l| l.contains("] ")).collect();
    assert_eq!(
        shown_lines.len(),
        timeline.len(),
        "{lines:#?}\n{timeline:#?}"
    );
    for (line, entry) in shown_lines.iter().zip(&timeline) {
        let message = entry["message"].as_str().expect("a message");
        assert!(line.ends_with(message), "{line:?} is not {message:?}");
    }
    drop(server);
}
