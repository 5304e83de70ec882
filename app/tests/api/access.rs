//! Access control and the audit trail, black box: the real server over a fresh
//! database, tokens made as `kubernaut admin create-token` makes them.

use std::time::Duration;

use kubernaut_domain::Role;
use serde_json::{Value, json};

use crate::cluster::{create_namespace, sim_cluster, start_simulator};
use crate::helpers::{
    TestApp, client_with_token, problem, problem_fields, release_body, spawn_app, spawn_app_with,
};

/// A server with the clusters `staging` and `production` (both the simulator).
async fn spawn_with_two_clusters(
    namespaces: &[&str],
) -> (TestApp, kubernaut_testkit::sim::Simulator) {
    let sim = start_simulator().await;
    for namespace in namespaces {
        create_namespace(&sim, namespace).await;
    }
    let mut staging = sim_cluster(&sim);
    staging.name = "staging".to_owned();
    let mut production = sim_cluster(&sim);
    production.name = "production".to_owned();
    let app = spawn_app_with(move |settings| {
        settings.clusters = vec![staging, production];
        settings.deployments.unschedulable_grace_seconds = 1;
    })
    .await;
    (app, sim)
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

/// The answer of each role to each kind of request, with a deployer scoped `staging/*`.
#[tokio::test]
async fn each_role_may_do_exactly_what_it_grants() {
    let roles = [
        ("metrics", Role::Metrics, None),
        ("viewer", Role::Viewer, None),
        ("releaser", Role::Releaser, None),
        ("deployer", Role::Deployer, Some("staging/*")),
        ("admin", Role::Admin, None),
    ];
    let namespaces: Vec<String> = roles.iter().map(|(n, ..)| format!("ns-{n}")).collect();
    let namespace_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let (app, _sim) = spawn_with_two_clusters(&namespace_refs).await;
    app.create_release("web", "1.0.0").await;

    for (name, role, scope) in roles {
        let token = app.token_for(&format!("{name}-bot"), role, scope).await;
        let client = client_with_token(&token);
        let doomed = app.create_release("doomed", name).await;
        let doomed_id = doomed["id"].as_str().expect("an id");
        let namespace = format!("ns-{name}");
        let deploy = |cluster: &str| {
            client.post(app.url("/api/deployments")).json(&json!({
                "service": "web", "version": "1.0.0", "cluster": cluster, "namespace": namespace,
            }))
        };
        let got = [
            status_of(client.get(app.url("/api/releases"))).await,
            status_of(
                client
                    .post(app.url("/api/releases"))
                    .json(&release_body("made", name)),
            )
            .await,
            status_of(client.delete(app.url(&format!("/api/releases/{doomed_id}")))).await,
            status_of(deploy("staging")).await,
            status_of(deploy("production")).await,
            status_of(client.post(app.url("/api/accounts")).json(&json!({
                "name": format!("made-by-{name}"),
                "kind": "robot",
                "grants": [{ "role": "viewer" }],
            })))
            .await,
            status_of(client.get(app.url("/api/audit"))).await,
        ];
        let allowed: [bool; 7] = match role {
            Role::Metrics => [false; 7],
            Role::Viewer => [true, false, false, false, false, false, false],
            Role::Releaser => [true, true, true, false, false, false, false],
            Role::Deployer => [true, false, false, true, false, false, false],
            Role::Admin => [true; 7],
        };
        let what = [
            "list releases",
            "create a release",
            "delete a release",
            "deploy to staging",
            "deploy to production",
            "create an account",
            "read the audit trail",
        ];
        for ((status, allowed), what) in got.iter().zip(allowed).zip(what) {
            if allowed {
                assert!(
                    (200..300).contains(status),
                    "{name} may {what}, got {status}"
                );
            } else {
                assert_eq!(*status, 403, "{name} may not {what}");
            }
        }
    }
}

#[tokio::test]
async fn without_a_token_the_api_answers_401_and_health_stays_open() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    for path in [
        "/api/releases",
        "/api/deployments",
        "/api/whoami",
        "/api/audit",
    ] {
        let response = anonymous.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 401, "{path}");
    }
    let response = anonymous
        .post(app.url("/api/releases"))
        .json(&release_body("web", "1"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    let garbage = client_with_token("knt_not-a-real-token");
    assert_eq!(status_of(garbage.get(app.url("/api/releases"))).await, 401);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(status_of(anonymous.get(app.url(path))).await, 200, "{path}");
    }
    let whoami: Value = app
        .get("/api/whoami")
        .await
        .json()
        .await
        .expect("whoami JSON");
    assert!(whoami.to_string().contains("test-admin"), "{whoami}");
}

/// Issues a token for the admin's own account through the API.
async fn issue(app: &TestApp, name: &str, expires_in: u64) -> (String, String) {
    let response = app
        .client
        .post(app.url("/api/tokens"))
        .json(&json!({ "name": name, "expires_in": expires_in }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let issued: Value = response.json().await.expect("token JSON");
    let id = issued["token"]["id"].as_str().expect("an id").to_owned();
    let secret = issued["secret"].as_str().expect("a secret").to_owned();
    assert!(secret.starts_with("knt_"), "{issued}");
    (id, secret)
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let app = spawn_app().await;

    let (expiring_id, expiring) = issue(&app, "short-lived", 60).await;
    app.sql(
        &format!(
            "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE id = '{expiring_id}'"
        ),
        &format!(
            "UPDATE api_tokens SET expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 minute') WHERE id = '{expiring_id}'"
        ),
    );
    let client = client_with_token(&expiring);
    assert_eq!(status_of(client.get(app.url("/api/releases"))).await, 401);

    let (revoked_id, revoked) = issue(&app, "to-revoke", 3600).await;
    let client = client_with_token(&revoked);
    assert_eq!(status_of(client.get(app.url("/api/releases"))).await, 200);
    let response = app.delete(&format!("/api/tokens/{revoked_id}")).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(status_of(client.get(app.url("/api/releases"))).await, 401);

    // Listed, never with their secrets.
    let listed = app.get("/api/tokens").await.text().await.expect("tokens");
    assert!(
        listed.contains("to-revoke") && listed.contains("short-lived"),
        "{listed}"
    );
    assert!(!listed.contains(&revoked) && !listed.contains(&app.token));
}

#[tokio::test]
async fn changes_are_audited_with_actor_request_and_source_and_refusals_are_not() {
    let (app, _sim) = spawn_with_two_clusters(&["shop"]).await;
    let with_id =
        |request: reqwest::RequestBuilder, id: &str| request.header("X-Request-Id", id.to_owned());

    let created = with_id(
        app.client
            .post(app.url("/api/releases"))
            .json(&release_body("web", "1.0.0")),
        "req-release-create",
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(created.status(), 201);
    let release: Value = created.json().await.expect("release");
    // An idempotent retry changes nothing and records nothing.
    let retry = with_id(
        app.client
            .post(app.url("/api/releases"))
            .json(&release_body("web", "1.0.0")),
        "req-release-retry",
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(retry.status(), 200);
    // A refused change records nothing.
    let viewer = client_with_token(&app.token_for("watcher", Role::Viewer, None).await);
    let refused = with_id(
        viewer
            .post(app.url("/api/releases"))
            .json(&release_body("web", "9.9.9")),
        "req-refused",
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(refused.status(), 403);

    let doomed = app.create_release("doomed", "1").await;
    let deleted = with_id(
        app.client.delete(app.url(&format!(
            "/api/releases/{}",
            doomed["id"].as_str().expect("id")
        ))),
        "req-release-delete",
    )
    .send()
    .await
    .expect("sent");
    assert!(deleted.status().is_success());

    let deploy = with_id(
        app.client.post(app.url("/api/deployments")).json(&json!({
            "service": "web", "version": "1.0.0", "cluster": "staging", "namespace": "shop",
        })),
        "req-deploy",
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(deploy.status(), 202);
    let deployment: Value = deploy.json().await.expect("deployment");
    let id = deployment["id"].as_str().expect("id");
    let done: Value = app
        .get(&format!("/api/deployments/{id}?wait=60"))
        .await
        .json()
        .await
        .expect("deployment");
    assert!(
        !["queued", "applying", "rolling_out"].contains(&done["status"].as_str().unwrap_or("")),
        "{done}"
    );

    let token = with_id(
        app.client
            .post(app.url("/api/tokens"))
            .json(&json!({ "name": "audited" })),
        "req-token-create",
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(token.status(), 201);
    let token: Value = token.json().await.expect("token");
    let token_id = token["token"]["id"].as_str().expect("id");
    let revoked = with_id(
        app.client
            .delete(app.url(&format!("/api/tokens/{token_id}"))),
        "req-token-revoke",
    )
    .send()
    .await
    .expect("sent");
    assert!(revoked.status().is_success());
    let granted = with_id(
        app.client
            .post(app.url("/api/accounts/watcher/grants"))
            .json(&json!({ "role": "releaser" })),
        "req-grant",
    )
    .send()
    .await
    .expect("sent");
    assert!(granted.status().is_success(), "{}", granted.status());

    // deployment.finished is recorded by Kubernaut when the verdict comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let page: Value = app
            .get("/api/audit?limit=200")
            .await
            .json()
            .await
            .expect("audit JSON");
        let entries = page["items"].as_array().cloned().unwrap_or_default();
        if entries.iter().any(|e| e["action"] == "deployment.finished") {
            break entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no deployment.finished: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |action: &str, request_id: &str| -> Value {
        entries
            .iter()
            .find(|e| e["action"] == action && e["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no {action} for {request_id}: {entries:#?}"))
            .clone()
    };
    for (action, request_id) in [
        ("release.created", "req-release-create"),
        ("release.deleted", "req-release-delete"),
        ("deployment.requested", "req-deploy"),
        ("token.created", "req-token-create"),
        ("token.revoked", "req-token-revoke"),
        ("role.granted", "req-grant"),
    ] {
        let entry = find(action, request_id);
        assert_eq!(entry["actor"], "test-admin", "{entry}");
        assert!(
            entry["source"]
                .as_str()
                .is_some_and(|s| s.contains("127.0.0.1")),
            "{entry}"
        );
        assert!(
            entry["target"].as_str().is_some_and(|t| !t.is_empty()),
            "{entry}"
        );
    }
    assert_eq!(
        find("release.created", "req-release-create")["target"]
            .as_str()
            .map(|t| t.contains(release["id"].as_str().unwrap_or("?"))),
        Some(true)
    );
    for request_id in ["req-release-retry", "req-refused"] {
        assert!(
            !entries.iter().any(|e| e["request_id"] == request_id),
            "{request_id} recorded: {entries:#?}"
        );
    }
    let release_id = release["id"].as_str().expect("id");
    let created_web = entries
        .iter()
        .filter(|e| e["action"] == "release.created")
        .filter(|e| e["target"].as_str().is_some_and(|t| t.contains(release_id)))
        .count();
    assert_eq!(created_web, 1, "the retry added no record: {entries:#?}");
    // Filters narrow the trail.
    let only: Value = app
        .get("/api/audit?action=token.revoked")
        .await
        .json()
        .await
        .expect("audit JSON");
    let items = only["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{only}");
}

#[tokio::test]
async fn too_many_changes_in_a_minute_are_refused_with_retry_after() {
    let app = spawn_app_with(|settings| settings.security.mutations_per_minute = 3).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for version in 0..6 {
        let response = app
            .post_release(&release_body("busy", &version.to_string()))
            .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(&statuses[..3], &[201, 201, 201], "{statuses:?}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!(
        retry_after
            .parse::<u64>()
            .is_ok_and(|s| (1..=60).contains(&s)),
        "{retry_after}"
    );
    // Reads are not limited.
    assert_eq!(app.get("/api/releases").await.status(), 200);
}

#[tokio::test]
async fn an_audit_filter_holding_nul_is_a_400_naming_it() {
    let app = spawn_app().await;
    app.create_release("keeper", "1").await;
    let before: Value = app.get("/api/audit").await.json().await.expect("json");
    for (query, field) in [
        ("actor=test-admin%00", "actor"),
        ("actor=%00", "actor"),
        ("target=release/%00", "target"),
    ] {
        let body = problem(app.get(&format!("/api/audit?{query}")).await, 400).await;
        assert_eq!(problem_fields(&body), [field], "{query}: {body}");
        assert!(
            body["errors"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("U+0000")),
            "{query}: {body}"
        );
    }
    let after: Value = app.get("/api/audit").await.json().await.expect("json");
    assert_eq!(after, before);
}
