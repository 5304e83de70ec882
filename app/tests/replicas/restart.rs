//! `kill -9` of Kubernaut mid-rollout: a restarted process resumes the deployment and
//! drives it to the right verdict.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::sim::Behaviour;
use serde_json::{Value, json};

use crate::cluster::{TIME_SCALE, create_namespace, start_simulator, web_template};

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_server(config: &std::path::Path, database_url: &str, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["serve", "--config"])
        .arg(config)
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env("KUBERNAUT__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("KUBERNAUT__SERVER__WORKERS", "1")
        .env("KUBERNAUT__DATABASE__POOL_SIZE", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kubernaut starts");
    Server { child }
}

/// An admin token made by `kubernaut admin create-token` against the server's database.
pub fn admin_token(database_url: &str, name: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["admin", "create-token", "--name", name, "--role", "admin"])
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("kubernaut admin create-token runs");
    assert!(output.status.success(), "{output:?}");
    let secret = String::from_utf8(output.stdout).expect("UTF-8");
    let secret = secret.trim_end_matches('\n');
    assert!(
        secret.starts_with("knt_") && !secret.contains(char::is_whitespace),
        "only the secret on stdout: {secret:?}"
    );
    secret.to_owned()
}

async fn wait_until_up(client: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kubernaut_killed_mid_rollout_resumes_and_reaches_the_verdict() {
    crate::helpers::install_crypto_provider();
    let sim = start_simulator().await;
    create_namespace(&sim, "shop").await;
    // Slow enough (5 s) to be caught mid-rollout even on a loaded machine, then
    // healthy; the progress deadline is far beyond it.
    sim.set_image_behaviour(
        "registry.local/phoenix:1",
        Behaviour::SlowStart { seconds: 100 },
    );
    let template = web_template(false).replace(
        "progressDeadlineSeconds: 60",
        "progressDeadlineSeconds: 3600",
    );
    let database = TestDatabase::create().expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("kubernaut.toml");
    std::fs::write(
        &config,
        format!(
            "[deployments]\nuse_current_kubeconfig_context = false\n\n[[clusters]]\nname = \"sim\"\nkubeconfig = {:?}\nclock_scale = {TIME_SCALE}\n[clusters.attributes]\nregion = \"eu-sim\"\n",
            sim.kubeconfig_path()
        ),
    )
    .expect("config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = start_server(&config, database.url(), port);
    wait_until_up(&reqwest::Client::new(), &base).await;
    let client = crate::helpers::client_with_token(&admin_token(database.url(), "restart"));
    let release = client
        .post(format!("{base}/api/releases"))
        .json(&json!({
            "service": "phoenix", "version": "1", "image": "registry.local/phoenix:1",
            "template": template, "attributes": {"replicas": "2"},
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(release.status(), 201);
    let started: Value = client
        .post(format!("{base}/api/deployments"))
        .json(&json!({"service": "phoenix", "version": "1", "cluster": "sim", "namespace": "shop", "timeout_seconds": 120}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = started["id"].as_str().expect("id").to_owned();

    // Wait until it is rolling out, then kill -9.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now: Value = client
            .get(format!("{base}/api/deployments/{id}"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if now["status"] == "rolling_out" {
            break;
        }
        assert!(
            now["status"] != "succeeded",
            "finished before the kill: {now}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "never rolled out: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(server);

    let _restarted = start_server(&config, database.url(), port);
    wait_until_up(&client, &base).await;
    let done: Value = client
        .get(format!("{base}/api/deployments/{id}?wait=90"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        done["timeline"]
            .to_string()
            .contains("resumed after a restart"),
        "{done}"
    );
}
