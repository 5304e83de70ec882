//! Bad input gets a clear 4xx problem naming the field and the reason, never a 500,
//! and leaves what is stored untouched.

use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, problem_fields, release_body, spawn_app};

async fn post_raw(app: &TestApp, content_type: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/releases")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.expect("sent")
}

async fn assert_invalid_field(app: &TestApp, body: Value, field: &str) {
    let problem = problem(app.post_release(&body).await, 422).await;
    assert!(
        problem_fields(&problem).iter().any(|f| f == field),
        "expected {field} in {problem}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let body = problem(
        post_raw(&app, Some("application/json"), b"{\"service\":".to_vec()).await,
        400,
    )
    .await;
    assert_eq!(problem_fields(&body), ["body"]);
    problem(
        post_raw(&app, Some("application/json"), b"[]".to_vec()).await,
        400,
    )
    .await;
}

#[tokio::test]
async fn other_content_types_are_a_415() {
    let app = spawn_app().await;
    problem(
        post_raw(&app, Some("text/plain"), b"service=x".to_vec()).await,
        415,
    )
    .await;
    problem(post_raw(&app, None, b"{}".to_vec()).await, 415).await;
    problem(
        post_raw(
            &app,
            Some("application/x-www-form-urlencoded"),
            b"service=x".to_vec(),
        )
        .await,
        415,
    )
    .await;
}

#[tokio::test]
async fn an_oversize_body_is_a_413() {
    let app = spawn_app().await;
    let mut body = release_body("big", "1");
    body["template"] = json!("#".repeat(4 * 1024 * 1024));
    problem(app.post_release(&body).await, 413).await;
}

#[tokio::test]
async fn a_template_over_one_mebibyte_is_refused_by_name() {
    let app = spawn_app().await;
    let mut body = release_body("big", "1");
    body["template"] = json!(format!(
        "{}\n#{}",
        crate::helpers::TEMPLATE,
        "x".repeat(1024 * 1024)
    ));
    assert_invalid_field(&app, body, "template").await;
}

#[tokio::test]
async fn missing_and_wrongly_typed_fields_are_named() {
    let app = spawn_app().await;
    let body = problem(
        app.post_release(&json!({ "service": 7, "image": "x", "template": "t", "extra": 1 }))
            .await,
        400,
    )
    .await;
    assert_eq!(problem_fields(&body), ["service", "version", "extra"]);
}

#[tokio::test]
async fn each_field_rule_is_enforced_and_every_broken_one_is_reported() {
    let app = spawn_app().await;
    let mut body = release_body("Not_A_Label", "has space");
    body["image"] = json!("UPPER/case image");
    body["attributes"] = json!({ "9lives": "x", "service": "shadow" });
    let problem = problem(app.post_release(&body).await, 422).await;
    let fields = problem_fields(&problem);
    for field in [
        "service",
        "version",
        "image",
        "attributes.9lives",
        "attributes.service",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
}

#[tokio::test]
async fn templates_that_do_not_compile_or_are_not_kubernetes_are_refused() {
    let app = spawn_app().await;
    for template in [
        "{% for x in %}",
        "apiVersion: v1\nkind: Service\n",
        "a: [unclosed",
        "{{ image | nonsense }}",
    ] {
        let mut body = release_body("svc", "1");
        body["template"] = json!(template);
        assert_invalid_field(&app, body, "template").await;
    }
}

#[tokio::test]
async fn bad_listing_parameters_are_named() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=bogus", "cursor"),
        ("created_after=yesterday", "created_after"),
        ("service=Bad_Name", "service"),
    ] {
        let body = problem(app.get(&format!("/api/releases?{query}")).await, 400).await;
        assert_eq!(problem_fields(&body), [field], "{query}");
    }
    let body = problem(app.get("/api/releases?colour=red").await, 400).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("colour"))
    );
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_are_problems_too() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(app.url("/api/releases"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
    problem(response, 405).await;
    problem(app.get("/api/nothing-here").await, 404).await;
}

#[tokio::test]
async fn a_multipart_form_without_a_template_is_refused_by_name() {
    let app = spawn_app().await;
    let form = reqwest::multipart::Form::new()
        .text("service", "svc")
        .text("version", "1")
        .text("image", "svc:1");
    let response = app
        .client
        .post(app.url("/api/releases"))
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let body = problem(response, 400).await;
    assert_eq!(problem_fields(&body), ["template"]);
}

#[tokio::test]
async fn bad_input_leaves_what_is_stored_untouched() {
    let app = spawn_app().await;
    let stored = app.create_release("keeper", "1").await;
    let mut clash = release_body("keeper", "1");
    clash["template"] = json!("{% broken");
    problem(app.post_release(&clash).await, 422).await;
    problem(
        post_raw(&app, Some("application/json"), b"{".to_vec()).await,
        400,
    )
    .await;
    problem(app.delete("/api/releases/not-an-id").await, 404).await;

    let page: Value = app.get("/api/releases").await.json().await.expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let fetched: Value = app
        .get(&format!(
            "/api/releases/{}",
            stored["id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(fetched, stored);
}

/// A cursor as this server spells them (`<micros>.<uuid>`), with any time in it.
fn forged_cursor(micros: i128) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{micros}.{}", uuid::Uuid::now_v7().simple()))
}

/// Cursors that are not ones this server hands out: times PostgreSQL cannot hold
/// (before 4713 BC), times past the year 9999 that nothing stored is near, and the
/// right position spelt another way.
pub fn forged_cursors() -> Vec<String> {
    use base64::Engine as _;
    let id = uuid::Uuid::now_v7();
    vec![
        forged_cursor(-9_000_000_000_000_000_000),
        forged_cursor(-200_000_000_000_000_000),
        forged_cursor(253_402_300_800_000_000),
        forged_cursor(8_000_000_000_000_000_000),
        forged_cursor(i128::from(i64::MIN)),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("1700000000000000.{}", id.hyphenated())),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("+1700000000000000.{}", id.simple())),
    ]
}

#[tokio::test]
async fn a_cursor_with_a_time_the_server_never_wrote_is_a_400_naming_cursor() {
    let app = spawn_app().await;
    let stored = app.create_release("keeper", "1").await;
    for path in ["/api/releases", "/api/deployments", "/api/audit"] {
        for cursor in forged_cursors() {
            let body = problem(app.get(&format!("{path}?cursor={cursor}")).await, 400).await;
            assert_eq!(problem_fields(&body), ["cursor"], "{path} {cursor}");
        }
    }
    let page: Value = app.get("/api/releases").await.json().await.expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["id"], stored["id"]);
}

/// The releases stored, as the listing shows them.
async fn stored_releases(app: &TestApp) -> Value {
    let page: Value = app.get("/api/releases").await.json().await.expect("json");
    page["items"].clone()
}

/// Posts `body` as a multipart form of text parts.
async fn post_form(app: &TestApp, parts: &[(&str, &str)]) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in parts {
        form = form.text((*name).to_owned(), (*value).to_owned());
    }
    app.client
        .post(app.url("/api/releases"))
        .multipart(form)
        .send()
        .await
        .expect("sent")
}

/// Asserts a 422 whose only field is `field`, refused because of a NUL.
async fn assert_refused_for_nul(response: reqwest::Response, field: &str) {
    let body = problem(response, 422).await;
    assert_eq!(problem_fields(&body), [field], "{body}");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("U+0000")),
        "{body}"
    );
}

#[tokio::test]
async fn a_comment_holding_nul_is_a_422_naming_comment_and_stores_nothing() {
    let app = spawn_app().await;
    app.create_release("keeper", "1").await;
    let before = stored_releases(&app).await;

    let mut body = release_body("noisy", "1");
    body["comment"] = json!("built by\u{0} Jenkins");
    assert_refused_for_nul(app.post_release(&body).await, "comment").await;

    let response = post_form(
        &app,
        &[
            ("service", "noisy"),
            ("version", "2"),
            ("image", "registry.local:5000/noisy:2"),
            ("template", crate::helpers::TEMPLATE),
            ("replicas", "1"),
            ("comment", "\u{0}"),
        ],
    )
    .await;
    assert_refused_for_nul(response, "comment").await;
    assert_eq!(stored_releases(&app).await, before);
}

#[tokio::test]
async fn an_attribute_value_holding_nul_is_a_422_naming_the_attribute_and_stores_nothing() {
    let app = spawn_app().await;
    app.create_release("keeper", "1").await;
    let before = stored_releases(&app).await;

    let mut body = release_body("noisy", "1");
    body["attributes"]["team"] = json!("pay\u{0}ments");
    assert_refused_for_nul(app.post_release(&body).await, "attributes.team").await;

    let response = post_form(
        &app,
        &[
            ("service", "noisy"),
            ("version", "2"),
            ("image", "registry.local:5000/noisy:2"),
            ("template", crate::helpers::TEMPLATE),
            ("replicas", "1"),
            ("team", "\u{0}"),
        ],
    )
    .await;
    assert_refused_for_nul(response, "attributes.team").await;
    assert_eq!(stored_releases(&app).await, before);
}

#[tokio::test]
async fn a_template_holding_or_writing_nul_is_a_422_naming_template_and_stores_nothing() {
    let app = spawn_app().await;
    app.create_release("keeper", "1").await;
    let before = stored_releases(&app).await;
    let config_map = |data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"{{{{service}}}}\"\ndata:\n  {data}\n"
        )
    };
    // Raw, hidden in a Jinja comment that renders to nothing; written by a YAML
    // escape into the objects; written by a Jinja escape into the manifest.
    for (index, data) in [
        "a: \"{# \u{0} #}\"",
        "a: \"\\0\"",
        "\"key\\x00\": b",
        "a: \"{{ '\\u0000' }}\"",
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = release_body("noisy", &index.to_string());
        body["template"] = json!(config_map(data));
        assert_refused_for_nul(app.post_release(&body).await, "template").await;
    }
    assert_eq!(stored_releases(&app).await, before);
}
