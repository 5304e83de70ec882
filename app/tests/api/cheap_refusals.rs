//! Cheap refusals first: a caller who may not make a change is refused with 403 before
//! the body is read, parsed or a template rendered, whatever the body holds.

use kubernaut_domain::access::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, client_with_token, problem, release_body, spawn_app};

/// Bodies that would each be refused for themselves: too large, not JSON, of the wrong
/// shape, and well-formed with a template that is invalid or burns its render budget.
fn hopeless_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge = release_body("big", "1");
    huge["template"] = json!("#".repeat(4 * 1024 * 1024));
    let mut invalid = release_body("invalid", "1");
    invalid["template"] = json!("{% for x in %}");
    let mut expensive = release_body("expensive", "1");
    expensive["template"] =
        json!("{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}");
    [huge, invalid, expensive]
        .into_iter()
        .map(|body| ("application/json", body.to_string().into_bytes()))
        .chain([
            ("application/json", b"{\"service\":".to_vec()),
            ("application/json", b"[1, 2]".to_vec()),
            ("application/json", b"{\"colour\": \"red\"}".to_vec()),
            (
                "multipart/form-data; boundary=x",
                b"--x\r\nnot a part".to_vec(),
            ),
        ])
        .collect()
}

async fn post(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent")
}

/// Posts `body` and asserts a 403 problem, naming the body when it is not one.
async fn refused(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Value {
    let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
    let response = post(client, app, path, content_type, body).await;
    assert_eq!(response.status(), 403, "{path} {shown}");
    problem(response, 403).await
}

/// Everything a refused change could have touched: releases, deployments, accounts
/// and the audit trail.
async fn stored(app: &TestApp) -> Vec<Value> {
    let mut state = Vec::new();
    for path in [
        "/api/releases",
        "/api/deployments",
        "/api/accounts",
        "/api/audit?limit=500",
    ] {
        let page: Value = app.get(path).await.json().await.expect("json");
        state.push(page["items"].clone());
    }
    state
}

#[tokio::test]
async fn a_viewer_registering_a_release_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    app.create_release("keeper", "1").await;
    let viewer = client_with_token(&app.token_for("watcher", Role::Viewer, None).await);
    let before = stored(&app).await;
    for (content_type, body) in hopeless_bodies() {
        let refusal = refused(&viewer, &app, "/api/releases", content_type, body).await;
        assert!(
            refusal["detail"]
                .as_str()
                .is_some_and(|d| d.contains("manage releases")),
            "{refusal}"
        );
    }
    assert_eq!(stored(&app).await, before);
}

#[tokio::test]
async fn a_caller_who_may_deploy_nowhere_is_refused_before_the_request_is_read() {
    let app = spawn_app().await;
    let releaser = client_with_token(&app.token_for("builder", Role::Releaser, None).await);
    let before = stored(&app).await;
    let mut bodies = hopeless_bodies();
    bodies.push((
        "application/json",
        json!({"service": "x", "version": "1", "cluster": "mars", "namespace": "Bad_NS"})
            .to_string()
            .into_bytes(),
    ));
    for (content_type, body) in bodies {
        let refusal = refused(&releaser, &app, "/api/deployments", content_type, body).await;
        assert!(
            refusal["detail"]
                .as_str()
                .is_some_and(|d| d.contains("deployer")),
            "{refusal}"
        );
    }
    assert_eq!(stored(&app).await, before);
}

#[tokio::test]
async fn a_non_admin_changing_accounts_or_grants_is_refused_before_the_body_is_read() {
    let app = spawn_app().await;
    let deployer = client_with_token(&app.token_for("shipper", Role::Deployer, None).await);
    let before = stored(&app).await;
    for path in [
        "/api/accounts",
        "/api/accounts/shipper/grants",
        "/api/accounts/no-such-account/grants",
    ] {
        for (content_type, body) in hopeless_bodies() {
            refused(&deployer, &app, path, content_type, body).await;
        }
    }
    let removal = deployer
        .delete(app.url("/api/accounts/shipper/grants"))
        .header("content-type", "application/json")
        .body("{\"role\":")
        .send()
        .await
        .expect("sent");
    problem(removal, 403).await;
    assert_eq!(stored(&app).await, before);
}

#[tokio::test]
async fn a_deployer_whose_scope_misses_the_target_is_still_refused_after_the_body_is_read() {
    let app = spawn_app().await;
    app.create_release("web", "1").await;
    let staging = client_with_token(
        &app.token_for("staging-only", Role::Deployer, Some("staging/*"))
            .await,
    );
    let before = stored(&app).await;
    let refused = post(
        &staging,
        &app,
        "/api/deployments",
        "application/json",
        json!({"service": "web", "version": "1", "cluster": "production", "namespace": "shop"})
            .to_string()
            .into_bytes(),
    )
    .await;
    problem(refused, 403).await;
    // Its own badly written requests it learns about as such.
    let malformed = post(
        &staging,
        &app,
        "/api/deployments",
        "application/json",
        b"{\"service\":".to_vec(),
    )
    .await;
    problem(malformed, 400).await;
    assert_eq!(stored(&app).await, before);
}
