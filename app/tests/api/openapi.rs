//! The OpenAPI document as the running server serves it.

use kubernaut_domain::Role;
use serde_json::{Value, json};

/// Every path of the document answers the methods it does not document with 405 and
/// an `Allow` naming those it does (they were 404 on the paths with one method).
#[tokio::test]
async fn every_documented_path_answers_other_methods_with_405_and_allow() {
    let app = crate::helpers::spawn_app().await;
    let document: Value = reqwest::get(app.url("/api/openapi.json"))
        .await
        .expect("the document is served")
        .json()
        .await
        .expect("JSON");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{paths:?}");
    let all = ["GET", "POST", "PUT", "PATCH", "DELETE", "TRACE"];
    for (path, item) in paths {
        let documented: Vec<&str> = all
            .into_iter()
            .filter(|method| item.get(method.to_lowercase()).is_some())
            .collect();
        let concrete = path
            .replace("{id}", "01938f4e-0000-7000-8000-000000000000")
            .replace("{name}", "someone");
        for method in all.into_iter().filter(|m| !documented.contains(m)) {
            let response = app
                .client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("a method"),
                    app.url(&concrete),
                )
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow = response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let mut allowed: Vec<&str> = allow.split(", ").collect();
            allowed.sort_unstable();
            let mut expected = documented.clone();
            expected.sort_unstable();
            assert_eq!(allowed, expected, "Allow of {method} {path}");
        }
    }
}

/// The document and the Swagger UI are readable without a token; the UI's files are
/// built into the binary.
#[tokio::test]
async fn the_document_and_the_swagger_ui_need_no_token() {
    let app = crate::helpers::spawn_app().await;
    let document = reqwest::get(app.url("/api/openapi.json"))
        .await
        .expect("sent");
    assert_eq!(document.status(), 200);
    assert_eq!(
        document
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let document: Value = document.json().await.expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        document["openapi"]
    );
    let ui = reqwest::get(app.url("/api/docs/")).await.expect("sent");
    assert_eq!(ui.status(), 200);
    let page = ui.text().await.expect("the page");
    assert!(page.contains("swagger-ui"), "{page}");
    let initializer = reqwest::get(app.url("/api/docs/swagger-initializer.js"))
        .await
        .expect("sent")
        .text()
        .await
        .expect("the script");
    assert!(initializer.contains("/api/openapi.json"), "{initializer}");
    let bundle = reqwest::get(app.url("/api/docs/swagger-ui-bundle.js"))
        .await
        .expect("sent");
    assert_eq!(bundle.status(), 200);
}

/// A grant sent both as JSON and as `?role=` was granted from the body, the query
/// silently ignored: now it is a 400 naming the query, and nothing changes.
#[tokio::test]
async fn a_grant_both_in_the_body_and_in_the_query_is_refused() {
    let app = crate::helpers::spawn_app().await;
    app.token_for("watcher", Role::Viewer, None).await;
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let response = app
            .client
            .request(
                method.clone(),
                app.url("/api/accounts/watcher/grants?role=admin"),
            )
            .json(&json!({ "role": "releaser" }))
            .send()
            .await
            .expect("sent");
        let problem = crate::helpers::problem(response, 400).await;
        assert_eq!(
            crate::helpers::problem_fields(&problem),
            ["query"],
            "{method}"
        );
    }
    let account: Value = app
        .get("/api/accounts/watcher")
        .await
        .json()
        .await
        .expect("account JSON");
    assert_eq!(
        account["grants"],
        json!([{ "role": "viewer", "scope": "*/*" }])
    );
}
