//! The OpenAPI document against the running server: schemathesis (from PyPI, installed by
//! `scripts/install-test-deps`) sends every operation its examples and generated inputs,
//! valid and invalid, then sequences of them along the links it infers (stateful), and
//! checks that no answer is a 5xx and every answer matches the document (status code,
//! content type, headers, schema).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kubernaut_domain::Role;
use serde_json::{Value, json};

use kubernaut::settings::ClusterConfig;

use crate::cluster::{Deploying, create_namespace, sim_cluster, start_simulator, web_template};
use crate::helpers::{client_with_token, spawn_app_with};

/// The schemathesis version `scripts/install-test-deps` installs.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Test cases per operation and phase: enough to find the odd input (about 5,000 in
/// all), few enough for the whole run to take about a minute and a half on two cores.
const MAX_EXAMPLES: &str = "200";

/// The checks that apply to this API: every one of schemathesis' except
/// `positive_data_acceptance` (a schema cannot say everything a 422 can: that a
/// template renders, that a cluster exists), the stateful ones that need links between
/// operations (`use_after_free`, `ensure_resource_availability`) and
/// `object_level_authorization` (one admin token sees everything by design).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,allow_header_conformance,ignored_auth";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let version = std::process::Command::new("schemathesis")
        .arg("--version")
        .output();
    let installed = match version {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        _ => panic!(
            "schemathesis is not installed: run scripts/install-test-deps (it installs schemathesis {SCHEMATHESIS_VERSION} from PyPI)"
        ),
    };
    assert!(
        installed.contains(SCHEMATHESIS_VERSION),
        "schemathesis {SCHEMATHESIS_VERSION} is expected (scripts/install-test-deps), found {installed}"
    );

    let sim = start_simulator().await;
    create_namespace(&sim, "shop").await;
    // The cluster the document's examples deploy to.
    let cluster = ClusterConfig {
        name: "staging".to_owned(),
        ..sim_cluster(&sim)
    };
    let app = spawn_app_with(move |settings| {
        settings.clusters = vec![cluster];
        // Thousands of changes a minute come from one client: none may be turned away.
        settings.security.mutations_per_minute = 1_000_000;
        // Nor its hundreds of deliberately bad credentials (the `ignored_auth` check):
        // on a fast run they passed the default quota of failed authentications within
        // a minute, and the check got a 429 where it wants a 401 or 403. That limit
        // has tests of its own.
        settings.security.failed_authentications_per_minute = 1_000_000;
    })
    .await;
    let env = Deploying { app, sim };
    let app = &env.app;
    // Something to find: the document's example release, a finished deployment of it,
    // an account and a token that may be taken apart (never the admin's own, which the
    // run needs).
    let document: Value = reqwest::get(app.url("/api/openapi.json"))
        .await
        .expect("the document")
        .json()
        .await
        .expect("JSON");
    let example = document["components"]["schemas"]["NewRelease"]["example"].clone();
    let created = app.post_release(&example).await;
    assert_eq!(created.status(), 201, "the document's example release");
    let release: Value = created.json().await.expect("release JSON");
    let deployment = env
        .deploy_and_wait(
            "hello",
            "1.0.0",
            json!({ "cluster": "staging", "namespace": "shop" }),
        )
        .await;
    assert_eq!(deployment["status"], "succeeded", "{deployment}");
    // And a failure, so that the diagnostics (events, log lines) are checked too.
    env.release(
        "crashy",
        "1",
        "registry.local/crashloop:1",
        &web_template(false),
    )
    .await;
    let failed = env
        .deploy_and_wait(
            "crashy",
            "1",
            json!({ "cluster": "staging", "namespace": "shop" }),
        )
        .await;
    assert_eq!(failed["reason"], "crash_loop", "{failed}");
    let spare_token_secret = app
        .token_for("fuzz-robot", Role::Deployer, Some("sim/*"))
        .await;
    let spare: Value = client_with_token(&spare_token_secret)
        .get(app.url("/api/whoami"))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("whoami JSON");
    let ids = |value: &Value, key: &str| value[key].as_str().expect(key).to_owned();
    let config = schemathesis_config(
        &ids(&release, "id"),
        &[ids(&deployment, "id"), ids(&failed, "id")],
        &ids(&spare, "token_id"),
    );
    let workdir = tempfile::tempdir().expect("a working directory");
    let config_path = workdir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("the config is written");

    let started = Instant::now();
    let output = tokio::process::Command::new("schemathesis")
        .current_dir(workdir.path())
        .env("NO_COLOR", "1")
        .args(["--config-file"])
        .arg(&config_path)
        .args(["run", &app.url("/api/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {}", app.token)])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &max_examples()])
        .args(["--seed", &seed()])
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .args(report_arguments())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("schemathesis runs");
    let mut report = String::new();
    let _ = write!(
        report,
        "schemathesis exited with {} after {:.0?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{report}");
    // The summary, for whoever reads the test's output with --nocapture.
    eprintln!("{report}");
}

/// `KUBERNAUT_SCHEMATHESIS_REPORT=DIR` keeps every request and answer there (HAR and
/// JUnit), to read what a run did, credentials included (a test server's).
fn report_arguments() -> Vec<String> {
    match std::env::var("KUBERNAUT_SCHEMATHESIS_REPORT") {
        Ok(dir) => vec![
            "--report".to_owned(),
            "har,junit".to_owned(),
            "--report-dir".to_owned(),
            dir,
            "--output-sanitize".to_owned(),
            "false".to_owned(),
        ],
        Err(_) => Vec::new(),
    }
}

/// [`MAX_EXAMPLES`], or `KUBERNAUT_SCHEMATHESIS_EXAMPLES` for a longer hunt.
fn max_examples() -> String {
    std::env::var("KUBERNAUT_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned())
}

/// The run's seed: fixed, so a failure reproduces; `KUBERNAUT_SCHEMATHESIS_SEED`
/// explores others.
fn seed() -> String {
    std::env::var("KUBERNAUT_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261204".to_owned())
}

/// Lets half the generated ids be ones that exist, so the operations' success answers
/// (the full deployment, its events, a cancel of a finished one, ...) are checked too.
/// The operations that could lock the run out are pinned to a spare token and account:
/// schemathesis learns ids from answers (`GET /api/tokens` lists the admin's own token,
/// `GET /api/accounts` the admin), and revoking them would turn the rest into 401s and 403s.
fn schemathesis_config(release: &str, deployments: &[String], token: &str) -> String {
    let deployments = deployments
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[dictionaries.releases]
values = ["{release}"]

[dictionaries.deployments]
values = [{deployments}]

[dictionaries.accounts]
values = ["fuzz-robot"]

[[operations]]
include-path-regex = "^/api/releases/"
parameters = {{ "path.id" = {{ dictionary = "releases", probability = 0.5 }} }}

[[operations]]
include-path-regex = "^/api/deployments/"
parameters = {{ "path.id" = {{ dictionary = "deployments", probability = 0.5 }} }}

[[operations]]
include-path-regex = "^/api/tokens/"
parameters = {{ "path.id" = "{token}" }}

[[operations]]
include-path-regex = "^/api/accounts/[^/]+/grants$"
parameters = {{ "path.name" = "fuzz-robot" }}

[[operations]]
include-path-regex = "^/api/accounts/[^/]+$"
parameters = {{ "path.name" = {{ dictionary = "accounts", probability = 0.5 }} }}
"#
    )
}

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
    // `/api/docs` leads to the UI's page.
    let ui = reqwest::get(app.url("/api/docs")).await.expect("sent");
    assert_eq!(ui.url().path(), "/api/docs/");
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
