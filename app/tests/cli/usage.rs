//! Bad usage (2), an unreachable server (3), the token, and shell completions.

use crate::helpers::{closed_port, kubernaut};

#[tokio::test]
async fn missing_flags_and_bad_values_are_bad_usage() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        vec!["deploy", "--service", "web"],
        vec![
            "deploy",
            "--service",
            "web",
            "--version",
            "1",
            "--cluster",
            "c",
            "--namespace",
            "n",
            "--timeout",
            "10 parsecs",
        ],
        vec!["release", "create", "--service", "web", "--attr", "novalue"],
        vec!["rollback", "--service", "web"],
        vec!["release", "list", "--output", "toml"],
        vec!["release", "list", "--retry-budget", "forever"],
        vec!["status"],
    ] {
        let run = kubernaut(&url, &args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?} says why");
    }
}

#[tokio::test]
async fn a_url_that_is_not_http_is_bad_usage() {
    let run = kubernaut("localhost:8080", &["status", "--service", "web"]).await;
    run.assert_code(2);
    assert!(run.stderr.contains("--url"), "{run:?}");
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_exits_3_for_every_command() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        vec!["release", "list"],
        vec!["release", "show", "0193e0f0-0000-7000-8000-000000000000"],
        vec!["release", "delete", "0193e0f0-0000-7000-8000-000000000000"],
        vec![
            "deploy",
            "--service",
            "web",
            "--version",
            "1",
            "--cluster",
            "c",
            "--namespace",
            "n",
            "--wait",
        ],
        vec![
            "rollback",
            "--deployment",
            "0193e0f0-0000-7000-8000-000000000000",
        ],
        vec!["status", "--service", "web"],
    ] {
        let run = kubernaut(&url, &args).await;
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("cannot reach the server"),
            "{args:?}: {run:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_host_exits_3() {
    let run = kubernaut("http://kubernaut.invalid", &["release", "list"]).await;
    run.assert_code(3);
}

#[tokio::test]
async fn the_token_is_never_printed() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = kubernaut(
        &url,
        &["status", "--service", "web", "--token", "hunter2-secret"],
    )
    .await;
    run.assert_code(3);
    assert!(
        !run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"),
        "{run:?}"
    );
    let help = kubernaut(&url, &["status", "--help"]).await;
    assert!(help.stdout.contains("--token"), "{help:?}");
}

#[tokio::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let run = kubernaut("http://127.0.0.1:1", &["completions", shell]).await;
        run.assert_code(0);
        assert!(run.stdout.contains("kubernaut"), "{shell}: {run:?}");
        assert!(run.stdout.contains("rollback"), "{shell}: {run:?}");
        assert!(
            run.stdout.contains("serve"),
            "{shell}: the server commands too"
        );
    }
    let run = kubernaut("http://127.0.0.1:1", &["completions", "tcsh"]).await;
    run.assert_code(2);
}

/// A one-shot HTTP server that records the request it gets and answers an empty page.
async fn record_one_request() -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = socket.read(&mut buffer).await.expect("readable");
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..read]);
        }
        let body = r#"{"items":[],"next_cursor":null}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket
            .write_all(response.as_bytes())
            .await
            .expect("writable");
        String::from_utf8_lossy(&request).into_owned()
    });
    (url, handle)
}

#[tokio::test]
async fn the_token_from_the_environment_is_sent_as_a_bearer_token() {
    let (url, request) = record_one_request().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["release", "list", "--service", "web", "--limit", "5"])
        .env("KUBERNAUT_URL", &url)
        .env("KUBERNAUT_TOKEN", "t0ken-from-env")
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "no releases"
    );
    let request = request
        .await
        .expect("the request was recorded")
        .to_ascii_lowercase();
    assert!(
        request.starts_with("get /api/releases?service=web&limit=5 "),
        "{request}"
    );
    assert!(
        request.contains("authorization: bearer t0ken-from-env"),
        "{request}"
    );
}
