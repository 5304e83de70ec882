//! Notifications of real deploys to a receiver that fails, hangs, then accepts: the
//! retries and their backoff, every attempt in the API, the signature checked with an
//! HMAC nobody here wrote (Python's `hmac`).

use std::time::{Duration, Instant};

use kubernaut::notifications::{RuleConfig, SinkConfig};
use kubernaut::settings::Secret;
use kubernaut_domain::access::Role;
use kubernaut_testkit::receiver::{Behaviour, Receiver};
use serde_json::{Value, json};

use crate::cluster::{spawn_deploying_app_with, web_template};
use crate::helpers::client_with_token;

const SECRET: &str = "whsec_0123456789";

fn sink(name: &str, kind: &str, url: &str) -> SinkConfig {
    SinkConfig {
        name: name.to_owned(),
        kind: kind.to_owned(),
        url: Some(Secret::new(url)),
        url_env: None,
        secret: None,
        secret_env: None,
        repository: None,
        api_url: None,
        token: None,
        token_env: None,
        ref_attribute: None,
        source: None,
    }
}

fn rule(sink: &str, service: &str, events: &[&str]) -> RuleConfig {
    RuleConfig {
        sink: sink.to_owned(),
        cluster: Some("s?m".to_owned()),
        namespace: None,
        service: Some(service.to_owned()),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
    }
}

/// `HMAC-SHA256(key, message)` in hex, as Python's standard library computes it.
fn python_hmac(key: &str, message: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            key,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("a stdin")
        .write_all(message)
        .expect("the message is written");
    let output = child.wait_with_output().expect("python3 ends");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .expect("hex")
        .trim()
        .to_owned()
}

async fn deliveries(app: &crate::helpers::TestApp, id: &str) -> Vec<Value> {
    let response = app
        .get(&format!("/api/deployments/{id}/notifications"))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    body["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_verdict_reaches_a_failing_then_hanging_receiver_on_the_third_attempt() {
    let hook = Receiver::start(vec![
        Behaviour::Answer(500, r#"{"error":"try later"}"#.to_owned()),
        Behaviour::Hang,
        Behaviour::Answer(204, String::new()),
    ])
    .await;
    let starts = Receiver::start(vec![]).await;
    let hook_url = format!("{}/hook", hook.url());
    let starts_url = format!("{}/starts", starts.url());
    let env = spawn_deploying_app_with(move |settings| {
        let notify = &mut settings.notifications;
        notify.attempt_timeout_seconds = 1;
        notify.claim_lease_seconds = 2;
        notify.poll_interval_ms = 100;
        notify.retry_initial_delay_seconds = 1;
        notify.retry_jitter = 0.0;
        notify.retry_max_attempts = 5;
        let mut signed = sink("hook", "webhook", &hook_url);
        signed.secret = Some(Secret::new(SECRET));
        notify.sinks = vec![signed, sink("starts", "webhook", &starts_url)];
        notify.rules = vec![
            rule("hook", "w*", &["succeeded", "failed"]),
            rule("starts", "web", &["started"]),
            // Matches nothing deployed here.
            rule("starts", "payments", &[]),
        ];
    })
    .await;
    env.release(
        "web",
        "1.0.0",
        "registry.local/web:1.0.0",
        &web_template(false),
    )
    .await;
    let deployed = env.deploy_and_wait("web", "1.0.0", json!({})).await;
    assert_eq!(deployed["status"], "succeeded", "{deployed}");
    let id = deployed["id"].as_str().expect("an id");

    // 500 at once, then no answer within the 1 s timeout, then accepted: a second's
    // backoff after the first failure, two after the second.
    let deadline = Instant::now() + Duration::from_secs(30);
    let items = loop {
        let items = deliveries(&env.app, id).await;
        let done = items.len() == 2 && items.iter().all(|d| d["status"] == "delivered");
        if done {
            break items;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered in time: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events: Vec<(&str, &str)> = items
        .iter()
        .map(|d| {
            (
                d["sink"].as_str().expect("a sink"),
                d["event"].as_str().expect("an event"),
            )
        })
        .collect();
    assert_eq!(events, [("starts", "started"), ("hook", "succeeded")]);

    let verdict = &items[1];
    let attempts = verdict["attempts"].as_array().expect("attempts");
    let outcomes: Vec<(u64, Value, bool)> = attempts
        .iter()
        .map(|a| {
            (
                a["number"].as_u64().expect("a number"),
                a["status_code"].clone(),
                a["succeeded"].as_bool().expect("a flag"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, json!(500), false),
            (2, Value::Null, false),
            (3, json!(204), true)
        ]
    );
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("try later")),
        "{attempts:?}"
    );
    assert!(
        attempts[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("within")),
        "{attempts:?}"
    );
    assert!(
        attempts[1]["duration_ms"].as_u64().expect("ms") >= 900,
        "{attempts:?}"
    );
    assert!(attempts[2]["error"].is_null());
    assert_eq!(verdict["next_attempt_at"], Value::Null);

    let received = hook.received();
    assert_eq!(received.len(), 3, "one request per attempt");
    let first_gap = received[1].at - received[0].at;
    let second_gap = received[2].at - received[1].at;
    assert!(first_gap >= Duration::from_millis(950), "{first_gap:?}");
    // The hanging attempt's second, then two of backoff.
    assert!(second_gap >= Duration::from_millis(2900), "{second_gap:?}");
    for request in &received {
        // One event, one id, on every attempt.
        assert_eq!(
            request.header("x-kubernaut-event-id"),
            verdict["event_id"].as_str()
        );
        let header = request.header("x-kubernaut-signature").expect("signed");
        let (t, v1) = header
            .split_once(",v1=")
            .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1)))
            .expect("t=...,v1=...");
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(&request.body);
        assert_eq!(v1, python_hmac(SECRET, &signed));
        let body = request.json();
        assert_eq!(body["event"], "succeeded");
        assert_eq!(body["deployment"]["id"], id);
        assert_eq!(body["deployment"]["service"], "web");
        assert_eq!(body["deployment"]["status"], "succeeded");
    }
    // The deployment's page lists the deliveries and their attempts.
    let cookie = crate::session::sign_in_with(&env.app.address, &env.app.token).await;
    let page = crate::session::no_redirects(Some(&cookie))
        .get(env.app.url(&format!("/deployments/{id}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("the page");
    let section = html
        .split("id=\"notifications-heading\"")
        .nth(1)
        .expect("a Notifications section");
    for expected in [
        "hook",
        "starts",
        "delivered",
        "refused (500)",
        "failed: ",
        "accepted (204)",
    ] {
        assert!(section.contains(expected), "{expected} in {section}");
    }

    let started = starts.received();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].json()["event"], "started");
    assert!(started[0].header("x-kubernaut-signature").is_none());

    // Whoever may read the deployment may read where its notifications went; a
    // scraper's token may not, and an unknown deployment has none.
    let viewer = client_with_token(&env.app.token_for("watcher", Role::Viewer, None).await);
    let seen = viewer
        .get(env.app.url(&format!("/api/deployments/{id}/notifications")))
        .send()
        .await
        .expect("sent");
    assert_eq!(seen.status(), 200);
    let scraper = client_with_token(&env.app.token_for("prometheus", Role::Metrics, None).await);
    let refused = scraper
        .get(env.app.url(&format!("/api/deployments/{id}/notifications")))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 403);
    let unknown = env
        .app
        .get("/api/deployments/0190b7a1-0000-7000-8000-000000000000/notifications")
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        env.app
            .get("/api/deployments/nonsense/notifications")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn a_deployment_no_rule_matches_writes_no_notification() {
    let hook = Receiver::start(vec![]).await;
    let url = hook.url().to_owned();
    let env = spawn_deploying_app_with(move |settings| {
        settings.notifications.sinks = vec![sink("hook", "webhook", &url)];
        settings.notifications.rules = vec![rule("hook", "payments", &["started", "succeeded"])];
    })
    .await;
    env.release(
        "web",
        "1.0.0",
        "registry.local/web:1.0.0",
        &web_template(false),
    )
    .await;
    let deployed = env.deploy_and_wait("web", "1.0.0", json!({})).await;
    assert_eq!(deployed["status"], "succeeded");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        deliveries(&env.app, deployed["id"].as_str().expect("an id"))
            .await
            .is_empty()
    );
    assert!(hook.received().is_empty());
}
