//! The server's side of a wait that survives: `id:` on timeline events,
//! `Last-Event-ID` honoured, and responses compressed but for the event stream, whose
//! events still arrive one by one.

use std::time::Duration;

use futures_util::StreamExt as _;
use kubernaut_testkit::sim::Behaviour;

use crate::helpers::{NAMESPACE, Server, spawn_server_with_cluster};

/// The `id:` and `event:` of each event of `text`.
fn events(text: &str) -> Vec<(Option<usize>, String)> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l.starts_with("event:")))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            (
                field("id:").and_then(|id| id.parse().ok()),
                field("event:").unwrap_or_default(),
            )
        })
        .collect()
}

async fn finished_deployment(server: &Server) -> String {
    server.release("web", "1", "registry.local/web:1").await;
    let run = server.deploy_and_wait("web", "1", &["-o", "json"]).await;
    run.assert_code(0);
    run.json()["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn timeline_events_carry_their_position_and_a_reconnect_resumes_after_last_event_id() {
    let server = spawn_server_with_cluster().await;
    let id = finished_deployment(&server).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/deployments/{id}/events", server.url);
    let whole = client
        .get(&url)
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("the stream")
        .text()
        .await
        .expect("its text");
    assert!(whole.starts_with("retry: "), "{whole}");
    let all = events(&whole);
    let timeline: Vec<usize> = all
        .iter()
        .filter(|(_, name)| name == "timeline")
        .map(|(id, _)| id.expect("every timeline event has an id"))
        .collect();
    assert!(timeline.len() >= 3, "{whole}");
    assert_eq!(
        timeline,
        (1..=timeline.len()).collect::<Vec<_>>(),
        "{whole}"
    );
    assert_eq!(all.last().map(|(_, n)| n.as_str()), Some("verdict"));

    let resumed = client
        .get(&url)
        .bearer_auth(&server.token)
        .header("Last-Event-ID", "2")
        .send()
        .await
        .expect("the stream")
        .text()
        .await
        .expect("its text");
    let later: Vec<usize> = events(&resumed)
        .into_iter()
        .filter(|(_, name)| name == "timeline")
        .filter_map(|(id, _)| id)
        .collect();
    assert_eq!(later, (3..=timeline.len()).collect::<Vec<_>>(), "{resumed}");
    assert!(resumed.contains("event: verdict"), "{resumed}");
}

#[tokio::test]
async fn answers_are_gzipped_on_request_but_events_flow_one_by_one_uncompressed() {
    let server = spawn_server_with_cluster().await;
    server.release("web", "1", "registry.local/web:1").await;
    let client = reqwest::Client::new();
    let listed = client
        .get(format!("{}/api/releases", server.url))
        .bearer_auth(&server.token)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("the list");
    assert_eq!(
        listed
            .headers()
            .get("content-encoding")
            .map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    let body = listed.bytes().await.expect("the body");
    assert_eq!(&body[..2], [0x1f, 0x8b], "a gzip stream");

    // A rollout that takes long: its first events must come at once, as they happen.
    server.sim().set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    server.release("web", "2", "registry.local/web:slow").await;
    let run = server
        .run(&[
            "deploy",
            "--service",
            "web",
            "--version",
            "2",
            "--cluster",
            "sim",
            "-n",
            NAMESPACE,
            "--no-wait",
            "--timeout",
            "1m",
            "-o",
            "json",
        ])
        .await;
    run.assert_code(0);
    let id = run.json()["id"].as_str().expect("an id").to_owned();
    let response = client
        .get(format!("{}/api/deployments/{id}/events", server.url))
        .bearer_auth(&server.token)
        .header("Accept-Encoding", "gzip, deflate, br")
        .send()
        .await
        .expect("the stream");
    assert_ne!(
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.as_bytes()),
        Some(&b"gzip"[..]),
        "the event stream is not compressed"
    );
    let mut chunks = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(3), chunks.next())
        .await
        .expect("the first events come at once")
        .expect("a chunk")
        .expect("bytes");
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("event: "), "plain text events: {text:?}");
    server.run(&["cancel", &id]).await.assert_code(0);
}
