use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{TEMPLATE, problem, release_body, spawn_app};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn a_created_release_is_returned_with_its_location_and_can_be_read_back() {
    let app = spawn_app().await;
    let response = app
        .post_release(&release_body("hello-world", "1.0.0"))
        .await;
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_owned();
    let created: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!("/api/releases/{}", created["id"].as_str().expect("id"))
    );
    assert_eq!(created["service"], "hello-world");
    assert_eq!(created["image"], "registry.local:5000/hello-world:1.0.0");
    assert_eq!(created["attributes"]["team"], "payments");
    assert_eq!(created["required_variables"], json!(["namespace"]));
    assert_eq!(created["comment"], "built by Jenkins #42");
    // The account of the token that asked.
    assert_eq!(created["created_by"], "test-admin");

    let fetched: Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(fetched, created);
    assert_eq!(fetched["template"], TEMPLATE);
}

#[tokio::test]
async fn a_ci_retry_with_identical_content_returns_the_existing_release() {
    let app = spawn_app().await;
    let first = app.create_release("hello-world", "1.0.0").await;
    let retry = app
        .post_release(&release_body("hello-world", "1.0.0"))
        .await;
    assert_eq!(retry.status(), 200);
    let retried: Value = retry.json().await.expect("json");
    assert_eq!(retried["id"], first["id"]);

    let page: Value = app.get("/api/releases").await.json().await.expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_same_version_with_other_content_is_a_conflict_naming_the_existing_release() {
    let app = spawn_app().await;
    let first = app.create_release("hello-world", "1.0.0").await;
    let mut other = release_body("hello-world", "1.0.0");
    other["image"] = json!("registry.local:5000/hello-world:other");
    let body = problem(app.post_release(&other).await, 409).await;
    assert_eq!(body["existing_id"], first["id"]);

    let unchanged: Value = app
        .get(&format!(
            "/api/releases/{}",
            first["id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(unchanged["image"], first["image"]);
}

#[tokio::test]
async fn a_deleted_release_is_gone_and_its_version_can_be_released_again() {
    let app = spawn_app().await;
    let first = app.create_release("hello-world", "1.0.0").await;
    let path = format!("/api/releases/{}", first["id"].as_str().expect("id"));

    assert_eq!(app.delete(&path).await.status(), 204);
    assert_eq!(
        app.delete(&path).await.status(),
        204,
        "deleting again is fine"
    );
    problem(app.get(&path).await, 404).await;
    let page: Value = app.get("/api/releases").await.json().await.expect("json");
    assert_eq!(page["items"], json!([]));

    let mut changed = release_body("hello-world", "1.0.0");
    changed["image"] = json!("registry.local:5000/hello-world:rebuilt");
    let again = app.post_release(&changed).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.expect("json");
    assert_ne!(again["id"], first["id"]);
    assert_eq!(again["image"], "registry.local:5000/hello-world:rebuilt");
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let app = spawn_app().await;
    let unknown = format!("/api/releases/{}", uuid::Uuid::new_v4());
    problem(app.get(&unknown).await, 404).await;
    problem(app.delete(&unknown).await, 404).await;
    problem(app.get("/api/releases/not-a-uuid").await, 404).await;
    problem(app.delete("/api/releases/12345").await, 404).await;
}

#[tokio::test]
async fn a_multipart_form_as_jenkins_sends_it_is_accepted() {
    let app = spawn_app().await;
    let form = reqwest::multipart::Form::new()
        .text("service", "hello-world")
        .text("version", "2.0.0")
        .text("image", "registry.local:5000/hello-world:2.0.0")
        .text("comment", "from Jenkins")
        .text("replicas", "3")
        .text("team", "payments")
        .part(
            "template",
            reqwest::multipart::Part::bytes(TEMPLATE.as_bytes().to_vec())
                .file_name("kubernetes.yaml")
                .mime_str("application/x-yaml")
                .expect("mime"),
        );
    let response = app
        .client
        .post(app.url("/api/releases"))
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let release: Value = response.json().await.expect("json");
    assert_eq!(
        release["attributes"],
        json!({ "replicas": "3", "team": "payments" })
    );
    assert_eq!(release["comment"], "from Jenkins");
    assert_eq!(release["template"], TEMPLATE);
}

#[tokio::test]
async fn listing_filters_by_service_version_and_time() {
    let app = spawn_app().await;
    let a1 = app.create_release("alpha", "1").await;
    let b1 = app.create_release("beta", "1").await;
    let a2 = app.create_release("alpha", "2").await;

    let ids = |page: &Value| -> Vec<Value> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].clone())
            .collect()
    };
    let all: Value = app.get("/api/releases").await.json().await.expect("json");
    assert_eq!(
        ids(&all),
        [a2["id"].clone(), b1["id"].clone(), a1["id"].clone()]
    );
    assert!(
        all["items"][0].get("template").is_none(),
        "listings leave templates out"
    );
    assert_eq!(all["next_cursor"], Value::Null);

    let alpha: Value = app
        .get("/api/releases?service=alpha")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&alpha), [a2["id"].clone(), a1["id"].clone()]);

    let alpha1: Value = app
        .get("/api/releases?service=alpha&version=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&alpha1), [a1["id"].clone()]);

    let after = b1["created_at"].as_str().expect("time");
    let newer: Value = app
        .client
        .get(app.url("/api/releases"))
        .query(&[("created_after", after)])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&newer), [a2["id"].clone()]);
    let older: Value = app
        .client
        .get(app.url("/api/releases"))
        .query(&[("created_before", after)])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&older), [a1["id"].clone()]);
}

#[tokio::test]
async fn pages_cover_every_release_once_while_others_are_being_created() {
    let app = spawn_app().await;
    let mut existing = HashSet::new();
    for i in 0..45 {
        let release = app.create_release("paged", &format!("1.{i}")).await;
        existing.insert(release["id"].as_str().expect("id").to_owned());
    }

    let writer = {
        let client = app.client.clone();
        let url = app.url("/api/releases");
        tokio::spawn(async move {
            for i in 0..25 {
                let response = client
                    .post(&url)
                    .json(&release_body("paged", &format!("2.{i}")))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 201);
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = app
            .client
            .get(app.url("/api/releases"))
            .query(&[("limit", "4")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let page: Value = request
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    writer.await.expect("writer finished");

    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no release appears twice");
    assert!(
        existing.is_subset(&unique),
        "every release that existed before paging is seen"
    );
}
