//! The server's own log, at debug level, never holds a token's secret: not the one
//! that authenticates requests, nor one it issues.

use std::process::{Command, Stdio};
use std::time::Duration;

use kubernaut_testkit::database::TestDatabase;
use serde_json::{Value, json};

use crate::support::{admin_token, client_with_token};

#[tokio::test]
async fn the_debug_log_never_contains_a_token_secret() {
    crate::support::install_crypto_provider();
    let database = TestDatabase::create().expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("kubernaut.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let base = format!("http://127.0.0.1:{port}");
    // `admin create-token` migrates the fresh database before the server starts.
    let secret = admin_token(database.url(), "log-watcher");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .arg("serve")
        .env("KUBERNAUT__DATABASE__URL", database.url())
        .env("KUBERNAUT__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("KUBERNAUT__SERVER__WORKERS", "1")
        .env("KUBERNAUT__DATABASE__POOL_SIZE", "4")
        .env(
            "KUBERNAUT__DEPLOYMENTS__USE_CURRENT_KUBECONFIG_CONTEXT",
            "false",
        )
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kubernaut starts");

    let client = client_with_token(&secret);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "not up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client
            .get(format!("{base}/api/releases"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    let issued: Value = client
        .post(format!("{base}/api/tokens"))
        .json(&json!({ "name": "issued-while-logging" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let issued_secret = issued["secret"].as_str().expect("a secret").to_owned();
    // A wrong token and a sign-in carry secrets too.
    let _ = client_with_token("knt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .get(format!("{base}/api/releases"))
        .send()
        .await;
    let _ = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/sign-in"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("token={issued_secret}"))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();

    let text = std::fs::read_to_string(&log_path).expect("the log");
    // The log was written, requests and all (the refused one is logged at WARN).
    assert!(text.contains("kubernaut is serving"), "{text}");
    assert!(text.contains("/api/releases"), "{text}");
    for (what, secret) in [
        ("the admin token", &secret),
        ("the issued token", &issued_secret),
    ] {
        assert!(!text.contains(secret.as_str()), "{what} is in the log");
        // Nor its random part alone.
        let body = secret.trim_start_matches("knt_");
        assert!(!text.contains(body), "{what}'s random part is in the log");
    }
    assert!(!text.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
}
