//! The faults operators meet, each a test of its own: PostgreSQL restarted, PostgreSQL
//! gone for a minute mid-rollout, a cancel, a live view and a revocation through
//! another replica than the one driving or serving.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::support::{
    World, client_with_token, deploy, deployed, get, messages, release, rolling_out, slow_release,
    until, verdict,
};

#[tokio::test]
async fn after_a_postgresql_restart_every_replica_answers_again_without_an_error() {
    let Some(world) = World::start().await else {
        return;
    };
    let a = world.replica("restart-a").await;
    let b = world.replica("restart-b").await;
    let client = client_with_token(&world.admin_token("ops"));
    release(
        &client,
        &a.base,
        "ledger",
        "1.0.0",
        "registry.local/ledger:1",
    )
    .await;
    let id: Value = client
        .get(format!("{}/api/releases?service=ledger", a.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = id["items"][0]["id"].as_str().expect("an id").to_owned();
    // Every pooled connection of both replicas has been used once at least.
    for _ in 0..8 {
        for replica in [&a, &b] {
            let response = client
                .get(format!("{}/api/releases/{id}", replica.base))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200);
        }
    }

    world.postgres.restart().expect("PostgreSQL restarts");

    // Every request after the restart is answered, on every replica: the pools drop
    // the connections the server closed instead of handing them out.
    for round in 0..20 {
        for replica in [&a, &b] {
            let response = client
                .get(format!("{}/api/releases/{id}", replica.base))
                .send()
                .await
                .expect("sent");
            assert_eq!(
                response.status(),
                200,
                "round {round} on {}: {:?}",
                replica.name,
                response.text().await
            );
            let ready = client
                .get(format!("{}/readyz", replica.base))
                .send()
                .await
                .expect("sent");
            assert_eq!(ready.status(), 200, "readyz on {}", replica.name);
        }
    }
    // And the replicas still deploy.
    world.create_namespace("books").await;
    let done = deployed(&client, &b, &a, ("ledger", "1.0.0", "books")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn a_minute_without_postgresql_mid_rollout_ends_with_the_verdict_the_cluster_shows() {
    let Some(world) = World::start().await else {
        return;
    };
    world.create_namespace("shop").await;
    let replica = world.replica("outage").await;
    let client = client_with_token(&world.admin_token("ops"));
    // 100 simulated seconds: the rollout completes 5 s after it starts, while the
    // database is away; the deploy's deadline (30 s) passes while it is away too.
    slow_release(&world, &client, &replica.base, "cart", "2", 100).await;
    let id = rolling_out(
        &client,
        &replica,
        &replica,
        ("cart", "2", "shop"),
        json!({"timeout_seconds": 30}),
    )
    .await;

    world.postgres.stop().expect("PostgreSQL stops");
    let down = client
        .get(format!("{}/readyz", replica.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(down.status(), 503, "not ready without its database");
    let refused = client
        .get(format!("{}/api/deployments/{id}", replica.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 503, "a request to retry, not a failure");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    world
        .postgres
        .start_again()
        .expect("PostgreSQL starts again");

    let done = verdict(&client, &replica.base, &id).await;
    assert_eq!(
        done["status"], "succeeded",
        "the rollout completed in the cluster: {done}"
    );
    let lines = messages(&done);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("rolled out"),
        "{lines:?}"
    );
    let finished: Value = client
        .get(format!(
            "{}/api/audit?action=deployment.finished&limit=50",
            replica.base
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        finished["items"].as_array().map(|items| items
            .iter()
            .filter(|i| i["target"] == format!("deployment/{id}"))
            .count()),
        Some(1),
        "one verdict: {finished}"
    );
    // The target is free: the next deploy is accepted.
    release(&client, &replica.base, "cart", "3", "registry.local/cart:3").await;
    let next = deployed(&client, &replica, &replica, ("cart", "3", "shop")).await;
    assert_eq!(next["status"], "succeeded", "{next}");
}

#[tokio::test]
async fn a_cancel_through_another_replica_stops_the_owner_and_wakes_waiters_everywhere() {
    let Some(world) = World::start().await else {
        return;
    };
    world.create_namespace("shop").await;
    let owner = world.replica("owner").await;
    let other = world.replica("other").await;
    let client = client_with_token(&world.admin_token("ops"));
    release(
        &client,
        &owner.base,
        "search",
        "8",
        "registry.local/search:8",
    )
    .await;
    slow_release(&world, &client, &owner.base, "search", "9", 2000).await;
    let good = deployed(&client, &owner, &owner, ("search", "8", "shop")).await;
    assert_eq!(good["status"], "succeeded", "{good}");
    // Requested through the owner, which claims it at once; rollback on failure, which
    // a cancel must not set off.
    let id = rolling_out(
        &client,
        &owner,
        &other,
        ("search", "9", "shop"),
        json!({"rollback_on_failure": true}),
    )
    .await;
    let waiters: Vec<_> = [&owner.base, &other.base]
        .into_iter()
        .map(|base| {
            let client = client.clone();
            let url = format!("{base}/api/deployments/{id}?wait=60");
            tokio::spawn(async move {
                let answer: Value = client
                    .get(url)
                    .send()
                    .await
                    .expect("sent")
                    .json()
                    .await
                    .expect("json");
                (answer, tokio::time::Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cancelled_at = tokio::time::Instant::now();
    let cancel = client
        .post(format!("{}/api/deployments/{id}/cancel", other.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(cancel.status(), 200);
    for waiter in waiters {
        let (answer, at) = waiter.await.expect("the wait ends");
        assert_eq!(answer["status"], "cancelled");
        assert!(
            at.duration_since(cancelled_at) < Duration::from_secs(2),
            "the long poll woke on the change, not its timeout"
        );
    }

    // The owner's driver stopped: nothing is written after the cancel, no rollback.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get(&client, &owner.base, &id).await;
    assert_eq!(after["status"], "cancelled");
    let lines = messages(&after);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("cancelled by ops"),
        "{lines:?}"
    );
    let all: Value = client
        .get(format!("{}/api/deployments?service=search", other.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        all["items"].as_array().map(Vec::len),
        Some(2),
        "no automatic rollback of a cancelled deployment: {all}"
    );
    // The target is free again.
    let again = deploy(
        &client,
        &other.base,
        json!({"service": "search", "version": "8", "cluster": "sim", "namespace": "shop"}),
    )
    .await;
    assert_ne!(again, id);
}

#[tokio::test]
async fn a_live_view_on_one_replica_follows_a_rollout_driven_by_another() {
    let Some(world) = World::start().await else {
        return;
    };
    world.create_namespace("shop").await;
    let driver = world.replica("driver").await;
    let viewer = world.replica("viewer").await;
    let client = client_with_token(&world.admin_token("ops"));
    slow_release(&world, &client, &driver.base, "feed", "1", 40).await;
    let id = deploy(
        &client,
        &driver.base,
        json!({"service": "feed", "version": "1", "cluster": "sim", "namespace": "shop"}),
    )
    .await;
    let stream = client
        .get(format!("{}/api/deployments/{id}/events", viewer.base))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
            if text.contains("event: verdict") {
                return;
            }
        }
        panic!("the stream ended without a verdict: {text}");
    })
    .await
    .expect("the verdict arrives");
    let done = get(&client, &driver.base, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Without the change feed the viewer would only re-read every 15 s.
    let finished =
        chrono::DateTime::parse_from_rfc3339(done["finished_at"].as_str().expect("finished_at"))
            .expect("a time");
    let lag = chrono::Utc::now().signed_duration_since(finished);
    assert!(
        lag < chrono::Duration::seconds(5),
        "the viewer streamed the verdict {lag} after it was stored"
    );
    assert!(text.contains("event: timeline"), "{text}");
    assert!(text.contains("applied Deployment/feed"), "{text}");
}

#[tokio::test]
async fn a_token_revoked_through_one_replica_stops_working_on_every_replica_at_once() {
    let Some(world) = World::start().await else {
        return;
    };
    let a = world.replica("revoke-a").await;
    let b = world.replica("revoke-b").await;
    let admin = client_with_token(&world.admin_token("ops"));
    let created: Value = admin
        .post(format!("{}/api/tokens", a.base))
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    let token_id = created["token"]["id"].as_str().expect("an id").to_owned();
    let user = client_with_token(&secret);
    // Both replicas know (and cache) the token.
    for replica in [&a, &b] {
        let response = user
            .get(format!("{}/api/whoami", replica.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    let revoked = admin
        .delete(format!("{}/api/tokens/{token_id}", a.base))
        .send()
        .await
        .expect("sent");
    assert!(revoked.status().is_success(), "{}", revoked.status());
    // The replicas cache tokens for 60 s (see the world's settings): only the change
    // feed can end it sooner.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = user
            .get(format!("{}/api/whoami", b.base))
            .send()
            .await
            .expect("sent")
            .status();
        if status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked token still works on the other replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_replica_stopped_with_sigterm_hands_its_deployments_over_at_once() {
    let Some(world) = World::start().await else {
        return;
    };
    world.create_namespace("shop").await;
    // A lease of 60 s: only a handover can be quicker than that.
    let long_lease = [("KUBERNAUT__ENGINE__LEASE_TTL_SECONDS", "60")];
    let mut leaving = world.replica_with("leaving", &long_lease).await;
    let staying = world.replica_with("staying", &long_lease).await;
    let client = client_with_token(&world.admin_token("ops"));
    slow_release(&world, &client, &leaving.base, "orders", "1", 200).await;
    let id = rolling_out(
        &client,
        &leaving,
        &staying,
        ("orders", "1", "shop"),
        json!({}),
    )
    .await;
    let stopped_at = tokio::time::Instant::now();
    leaving.terminate();
    let taken = until(
        &client,
        &staying.base,
        &id,
        Duration::from_secs(20),
        "taken over",
        |d| {
            messages(d)
                .iter()
                .any(|m| m.starts_with("resumed by staying"))
        },
    )
    .await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "handed over, not left to expire: {taken}"
    );
    let done = verdict(&client, &staying.base, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}
