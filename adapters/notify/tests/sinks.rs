//! Each sink against a local receiver: what it sends (the bodies and headers the real
//! services expect), and what it makes of refusals and silence.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use kubernaut_domain::deployment::{DeploymentId, DeploymentStatus};
use kubernaut_domain::notification::{Notification, NotificationEvent, NotifiedDeployment};
use kubernaut_domain::ports::NotificationSink;
use kubernaut_domain::release::ReleaseId;
use kubernaut_notify::{CdEventsSink, GitHubSink, SinkSecret, SlackSink, WebhookSink, signature};
use kubernaut_testkit::receiver::{Behaviour, Receiver};
use serde_json::json;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(2);

fn notification(event: NotificationEvent, status: DeploymentStatus) -> Notification {
    let at = Utc
        .with_ymd_and_hms(2026, 12, 4, 12, 0, 0)
        .single()
        .expect("a time");
    Notification {
        id: Uuid::now_v7(),
        event,
        occurred_at: at,
        deployment: NotifiedDeployment {
            id: DeploymentId::generate(),
            release_id: ReleaseId::from_uuid(Uuid::now_v7()),
            service: "payments".to_owned(),
            version: "1.4.2".to_owned(),
            cluster: "production".to_owned(),
            namespace: "shop".to_owned(),
            status,
            requested_by: "jenkins".to_owned(),
            created_at: at,
            started_at: Some(at),
            finished_at: status.is_verdict().then_some(at),
            rollback_of: None,
            reason: (status == DeploymentStatus::Failed)
                .then(|| "Deployment/payments crash_loop: container app keeps exiting".to_owned()),
            attributes: BTreeMap::from([("commit".to_owned(), "0123abc".to_owned())]),
        },
    }
}

#[tokio::test]
async fn the_webhook_posts_the_notification_signed_with_its_timestamp() {
    let receiver = Receiver::start(vec![]).await;
    let sink = WebhookSink::new(
        &format!("{}/hooks/kubernaut", receiver.url()),
        Some(SinkSecret::new("s3cret")),
        TIMEOUT,
    )
    .expect("a sink");
    let sent = notification(NotificationEvent::Succeeded, DeploymentStatus::Succeeded);
    assert_eq!(sink.send(&sent).await, Ok(200));

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/hooks/kubernaut")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-kubernaut-event"), Some("succeeded"));
    assert_eq!(
        request.header("x-kubernaut-event-id"),
        Some(sent.id.to_string().as_str())
    );
    let back: Notification = serde_json::from_slice(&request.body).expect("the notification");
    assert_eq!(back, sent);

    // Verified as a receiver would: t and v1 from the header, HMAC over "t.body".
    let header = request.header("x-kubernaut-signature").expect("signed");
    let parts: BTreeMap<&str, &str> = header
        .split(',')
        .filter_map(|part| part.split_once('='))
        .collect();
    let t: i64 = parts["t"].parse().expect("a unix time");
    assert!(
        (Utc::now().timestamp() - t).abs() < 60,
        "a fresh timestamp: {t}"
    );
    assert_eq!(parts["v1"], signature::sign(b"s3cret", t, &request.body));
    assert_ne!(parts["v1"], signature::sign(b"other", t, &request.body));
    assert_ne!(
        parts["v1"],
        signature::sign(b"s3cret", t + 1, &request.body)
    );
}

#[tokio::test]
async fn refusals_and_silence_are_errors_with_what_the_receiver_said() {
    let receiver = Receiver::start(vec![
        Behaviour::Answer(500, r#"{"error":"database down"}"#.to_owned()),
        Behaviour::Hang,
    ])
    .await;
    let sink = WebhookSink::new(receiver.url(), None, Duration::from_millis(500)).expect("a sink");
    let sent = notification(NotificationEvent::Failed, DeploymentStatus::Failed);

    let refused = sink.send(&sent).await.expect_err("a 500 is a failure");
    assert_eq!(refused.status, Some(500));
    assert!(refused.message.contains("database down"), "{refused}");

    let silent = sink.send(&sent).await.expect_err("no answer is a failure");
    assert_eq!(silent.status, None);
    assert!(
        silent.message.contains("did not answer within 500 ms"),
        "{silent}"
    );
    // Unsigned without a secret.
    assert!(
        receiver.received()[0]
            .header("x-kubernaut-signature")
            .is_none()
    );

    let unreachable = WebhookSink::new("http://127.0.0.1:9/", None, TIMEOUT)
        .expect("a sink")
        .send(&sent)
        .await
        .expect_err("nothing listens on port 9");
    assert!(
        unreachable.message.contains("could not be reached"),
        "{unreachable}"
    );
}

#[tokio::test]
async fn slack_gets_a_message_with_text_and_blocks() {
    let receiver = Receiver::start(vec![]).await;
    let sink = SlackSink::new(
        &format!("{}/services/T0/B0/x", receiver.url()),
        Some("https://kubernaut.example.com/".to_owned()),
        TIMEOUT,
    )
    .expect("a sink");
    let sent = notification(NotificationEvent::Failed, DeploymentStatus::Failed);
    assert_eq!(sink.send(&sent).await, Ok(200));

    let message = receiver.received()[0].json();
    assert_eq!(
        message["text"],
        "Deployment of payments 1.4.2 to production/shop failed"
    );
    let blocks = message["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    let section = blocks[0]["text"]["text"].as_str().expect("text");
    assert!(
        section.contains(&format!(
            "<https://kubernaut.example.com/deployments/{}|",
            sent.deployment.id
        )),
        "{section}"
    );
    assert!(section.contains("crash_loop"), "{section}");
    assert_eq!(blocks[1]["type"], "context");
    assert_eq!(blocks[1]["elements"][0]["type"], "mrkdwn");
}

#[tokio::test]
async fn github_gets_one_deployment_per_kubernaut_deployment_and_a_status_per_event() {
    let receiver = Receiver::start(vec![]).await;
    receiver.route(
        "GET",
        "/api/v3/repos/acme/shop/deployments",
        Behaviour::Answer(200, "[]".to_owned()),
    );
    receiver.route(
        "POST",
        "/api/v3/repos/acme/shop/deployments/4242/statuses",
        Behaviour::Answer(201, r#"{"id": 1, "state": "success"}"#.to_owned()),
    );
    receiver.route(
        "POST",
        "/api/v3/repos/acme/shop/deployments",
        Behaviour::Answer(201, r#"{"id": 4242}"#.to_owned()),
    );
    let sink = GitHubSink::new(
        &format!("{}/api/v3", receiver.url()),
        "acme/shop",
        SinkSecret::new("ghp_token"),
        "commit",
        Some("https://kubernaut.example.com".to_owned()),
        TIMEOUT,
    )
    .expect("a sink");
    let sent = notification(NotificationEvent::Succeeded, DeploymentStatus::Succeeded);
    assert_eq!(sink.send(&sent).await, Ok(201));

    let received = receiver.received();
    let calls: Vec<(&str, &str)> = received
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "GET",
                "/api/v3/repos/acme/shop/deployments?ref=0123abc&environment=production%2Fshop&per_page=100"
            ),
            ("POST", "/api/v3/repos/acme/shop/deployments"),
            ("POST", "/api/v3/repos/acme/shop/deployments/4242/statuses"),
        ]
    );
    for request in &received {
        assert_eq!(request.header("authorization"), Some("Bearer ghp_token"));
        assert_eq!(
            request.header("accept"),
            Some("application/vnd.github+json")
        );
        assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
        assert!(
            request
                .header("user-agent")
                .is_some_and(|a| a.starts_with("kubernaut/"))
        );
    }
    let created = received[1].json();
    assert_eq!(created["ref"], "0123abc");
    assert_eq!(created["environment"], "production/shop");
    assert_eq!(created["auto_merge"], false);
    assert_eq!(created["required_contexts"], json!([]));
    assert_eq!(
        created["payload"]["kubernaut_deployment_id"],
        sent.deployment.id.to_string()
    );
    let status = received[2].json();
    assert_eq!(status["state"], "success");
    assert_eq!(status["environment"], "production/shop");
    assert_eq!(
        status["log_url"],
        format!(
            "https://kubernaut.example.com/deployments/{}",
            sent.deployment.id
        )
    );
    assert!(
        status["description"]
            .as_str()
            .is_some_and(|d| d.len() <= 140)
    );

    // The next event of the same deployment finds the GitHub deployment made before.
    let listed = json!([
        {"id": 7, "payload": {"kubernaut_deployment_id": "someone else"}},
        {"id": 4242, "payload": {"kubernaut_deployment_id": sent.deployment.id.to_string()}},
    ]);
    let again = Receiver::start(vec![]).await;
    again.route(
        "GET",
        "/repos/acme/shop/deployments",
        Behaviour::Answer(200, listed.to_string()),
    );
    again.route(
        "POST",
        "/repos/acme/shop/deployments/4242/statuses",
        Behaviour::Answer(201, r#"{"id": 2, "state": "failure"}"#.to_owned()),
    );
    let sink = GitHubSink::new(
        again.url(),
        "acme/shop",
        SinkSecret::new("t"),
        "commit",
        None,
        TIMEOUT,
    )
    .expect("a sink");
    let mut failed = sent.clone();
    failed.event = NotificationEvent::Failed;
    assert_eq!(sink.send(&failed).await, Ok(201));
    let received = again.received();
    assert_eq!(received.len(), 2, "no second GitHub deployment");
    assert_eq!(
        received[1].path,
        "/repos/acme/shop/deployments/4242/statuses"
    );
    assert_eq!(received[1].json()["state"], "failure");
    assert!(received[1].json().get("log_url").is_none());
}

#[test]
fn github_states_follow_the_event() {
    let states: Vec<&str> = NotificationEvent::ALL
        .into_iter()
        .map(GitHubSink::state)
        .collect();
    assert_eq!(
        states,
        ["in_progress", "success", "failure", "error", "error"]
    );
    assert!(
        GitHubSink::new(
            "https://api.github.com",
            "not-a-repo",
            SinkSecret::new("t"),
            "commit",
            None,
            TIMEOUT
        )
        .is_err()
    );
}

#[tokio::test]
async fn cdevents_are_cloudevents_in_binary_mode_with_the_subject_cdevents_asks_for() {
    let receiver = Receiver::start(vec![]).await;
    let sink = CdEventsSink::new(
        &format!("{}/events", receiver.url()),
        "https://kubernaut.example.com",
        TIMEOUT,
    )
    .expect("a sink");
    let deployed = notification(NotificationEvent::Succeeded, DeploymentStatus::Succeeded);
    let mut rolled_back = notification(NotificationEvent::Succeeded, DeploymentStatus::Succeeded);
    rolled_back.deployment.rollback_of = Some(DeploymentId::generate());
    let failed = notification(NotificationEvent::Failed, DeploymentStatus::Failed);
    for sent in [&deployed, &rolled_back, &failed, &deployed] {
        assert_eq!(sink.send(sent).await, Ok(200));
    }

    let received = receiver.received();
    let types: Vec<&str> = received
        .iter()
        .filter_map(|r| r.header("ce-type"))
        .collect();
    assert_eq!(
        types,
        [
            "dev.cdevents.service.deployed.0.2.0",
            "dev.cdevents.service.rolledback.0.2.0",
            "dev.cdevents.environment.modified.0.2.0",
            "dev.cdevents.service.deployed.0.2.0",
        ]
    );
    for (request, sent) in received
        .iter()
        .zip([&deployed, &rolled_back, &failed, &deployed])
    {
        // The CloudEvents required attributes, as binary-mode headers.
        assert_eq!(request.header("ce-specversion"), Some("1.0"));
        assert_eq!(request.header("ce-id"), Some(sent.id.to_string().as_str()));
        assert_eq!(
            request.header("ce-source"),
            Some("https://kubernaut.example.com")
        );
        assert_eq!(request.header("ce-time"), Some("2026-12-04T12:00:00.000Z"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        // The CDEvent: its context repeats them.
        let event = request.json();
        assert_eq!(event["context"]["specversion"], "0.4.1");
        assert_eq!(event["context"]["id"], sent.id.to_string());
        assert_eq!(
            event["context"]["type"],
            request.header("ce-type").expect("a type")
        );
        assert_eq!(event["context"]["source"], "https://kubernaut.example.com");
        assert_eq!(event["context"]["timestamp"], "2026-12-04T12:00:00.000Z");
        assert_eq!(event["customData"]["kubernaut"]["id"], sent.id.to_string());
        assert_eq!(
            request.header("ce-subject"),
            event["subject"]["id"].as_str()
        );
    }
    // A service event's subject: the service, its environment and its artifact.
    let subject = &received[0].json()["subject"];
    assert_eq!(subject["type"], "service");
    assert_eq!(subject["id"], "production/shop/payments");
    assert_eq!(subject["content"]["environment"]["id"], "production/shop");
    assert_eq!(
        subject["content"]["artifactId"],
        "pkg:generic/payments@1.4.2"
    );
    let subject = &received[2].json()["subject"];
    assert_eq!(subject["type"], "environment");
    assert_eq!(subject["id"], "production/shop");
    // A retry is the same event: the same id.
    assert_eq!(received[0].header("ce-id"), received[3].header("ce-id"));
}
