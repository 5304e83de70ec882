//! How `deploy` follows a deployment, against a scripted server: the event
//! stream when it works, the long poll when it does not, and each verdict's exit code.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::kubernaut;

/// An answer of the scripted server.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn json_answer(status: u16, body: &Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

/// Serves each request with `script(request line, how many requests came before)` and
/// records the request lines.
async fn scripted_server(
    script: impl Fn(&str, usize) -> Answer + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let text = String::from_utf8_lossy(&request).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                let count = {
                    let mut seen = seen.lock().expect("lock");
                    seen.push(line.clone());
                    seen.len() - 1
                };
                let answer = script(&line, count);
                let response = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    answer.status,
                    answer.content_type,
                    answer.body.len(),
                    answer.body
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, recorded)
}

fn deployment(status: &str, timeline: &[&str]) -> Value {
    let timeline: Vec<Value> = timeline
        .iter()
        .map(|message| {
            json!({"at": "2026-11-24T12:00:01Z", "phase": "rolling_out", "message": message})
        })
        .collect();
    json!({
        "id": "d1", "release_id": "r1", "service": "web", "version": "1", "cluster": "c",
        "namespace": "n", "status": status, "reason": null, "requested_by": "anonymous",
        "attributes": {}, "timeout_seconds": 60, "prune": true, "rollback_on_failure": false,
        "rollback_of": null, "created_at": "2026-11-24T12:00:00Z", "started_at": null,
        "finished_at": null, "diagnostics": null, "timeline": timeline,
    })
}

const DEPLOY: [&str; 10] = [
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
];

#[tokio::test]
async fn the_event_stream_shows_each_timeline_entry_once() {
    let (url, seen) = scripted_server(streamed_success).await;
    let run = kubernaut(&url, &DEPLOY).await;
    run.assert_code(0);
    assert_eq!(
        run.stdout.matches("applied 2 objects").count(),
        1,
        "{run:?}"
    );
    assert!(
        run.stdout.contains("Deployment/web: applied 2 objects"),
        "{run:?}"
    );
    assert!(run.stdout.contains("status: rolling_out"), "{run:?}");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|l| l.contains("/events")), "{seen:?}");
}

/// The script of a deployment that applies, rolls out and succeeds, streamed.
fn streamed_success(line: &str, _: usize) -> Answer {
    if line.starts_with("POST /api/deployments ") {
        json_answer(202, &deployment("queued", &[]))
    } else if line.starts_with("GET /api/deployments/d1/events ") {
        let entry = json!({"at": "2026-11-24T12:00:01Z", "phase": "applying", "message": "applied 2 objects", "resource": "Deployment/web"});
        Answer {
            status: 200,
            content_type: "text/event-stream",
            body: format!(
                ": hello\n\nevent: timeline\ndata: {entry}\n\nevent: status\ndata: {{\"status\":\"rolling_out\"}}\n\nevent: verdict\ndata: {}\n\n",
                deployment("succeeded", &[])
            ),
        }
    } else {
        json_answer(200, &deployment("succeeded", &["applied 2 objects"]))
    }
}

#[tokio::test]
async fn on_a_terminal_progress_is_a_live_spinner_line_without_timestamps() {
    let (url, _) = scripted_server(streamed_success).await;
    // `script` gives the binary a pseudo-terminal as its standard output.
    let command = format!("{} {}", env!("CARGO_BIN_EXE_kubernaut"), DEPLOY.join(" "));
    let output = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KUBERNAUT_URL", &url)
        .env_remove("KUBERNAUT_TOKEN")
        .output()
        .await
        .expect("script (util-linux) runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("\r\x1b[2K"),
        "the spinner line is redrawn: {stdout:?}"
    );
    assert!(
        stdout.contains("  [applying] Deployment/web: applied 2 objects"),
        "{stdout:?}"
    );
    assert!(
        !stdout.contains("2026-11-24T12:00:01Z"),
        "no timestamps on a terminal: {stdout:?}"
    );
}

#[tokio::test]
async fn a_broken_event_stream_falls_back_to_the_long_poll() {
    let (url, seen) = scripted_server(|line, count| {
        if line.starts_with("POST /api/deployments ") {
            json_answer(202, &deployment("queued", &[]))
        } else if line.starts_with("GET /api/clusters ") {
            json_answer(200, &json!({"items": []}))
        } else if line.contains("/events") {
            Answer {
                status: 502,
                content_type: "text/html",
                body: "<h1>Bad Gateway</h1>".to_owned(),
            }
        } else if count < 6 {
            // The stream is tried three times (502 each), then the long poll takes over.
            json_answer(200, &deployment("rolling_out", &["first"]))
        } else {
            json_answer(200, &deployment("succeeded", &["first", "second"]))
        }
    })
    .await;
    let run = kubernaut(&url, &DEPLOY).await;
    run.assert_code(0);
    assert_eq!(run.stdout.matches("first").count(), 1, "{run:?}");
    assert_eq!(run.stdout.matches("second").count(), 1, "{run:?}");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .filter(|l| l.contains("/api/deployments/d1?wait="))
            .count()
            >= 2,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|l| l.contains("/events")).count(),
        3,
        "the stream is given up after three refusals: {seen:?}"
    );
}

#[tokio::test]
async fn each_verdict_has_its_exit_code() {
    for (status, code) in [
        ("succeeded", 0),
        ("failed", 1),
        ("cancelled", 1),
        ("timed_out", 70),
    ] {
        let (url, _) = scripted_server(move |line, _| {
            if line.starts_with("POST ") {
                json_answer(202, &deployment("queued", &[]))
            } else if line.contains("/events") {
                json_answer(404, &json!({"detail": "no events here"}))
            } else {
                json_answer(200, &deployment(status, &[]))
            }
        })
        .await;
        let run = kubernaut(&url, &DEPLOY).await;
        assert_eq!(run.code, code, "{status}: {run:?}");
        assert!(
            run.stdout.contains(&format!(": {status}")),
            "{status}: {run:?}"
        );
    }
}

#[tokio::test]
async fn a_server_error_exits_3_with_what_the_server_said() {
    let (url, _) = scripted_server(|_, _| Answer {
        status: 500,
        content_type: "application/problem+json",
        body: json!({"type": "x", "title": "Internal server error", "status": 500, "detail": "the failure is logged"}).to_string(),
    })
    .await;
    let run = kubernaut(&url, &["status", "--service", "web"]).await;
    run.assert_code(3);
    assert!(
        run.stderr.contains("500") && run.stderr.contains("the failure is logged"),
        "{run:?}"
    );
}
