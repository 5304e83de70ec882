//! The document against the routes actix serves and against docs/api.md.

use std::collections::BTreeSet;

use super::*;

/// `METHOD /api/path` pairs, paths in the document's `{param}` form.
type Operations = BTreeSet<(String, String)>;

fn documented() -> Operations {
    let document = serde_json::to_value(document()).expect("the document serialises");
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = Operations::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// The `/api` routes the source registers with actix: each `"/api/..."` literal of
/// `src/*.rs` and the `web::get()` (post, put, patch, delete) calls that follow it
/// before the next such literal: `.route("/api/x", web::get()...)` and
/// `api_resource("/api/x", ..).route(web::get()...).route(web::post()...)` alike.
fn registered() -> Operations {
    let source_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut operations = Operations::new();
    for entry in std::fs::read_dir(source_dir).expect("src is readable") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        let pieces: Vec<&str> = source.split("\"/api/").collect();
        for (i, piece) in pieces.iter().enumerate().skip(1) {
            let Some(end) = piece.find('"') else { continue };
            let route = format!("/api/{}", &piece[..end]);
            // Only registrations: the literal is the argument of `route(` or
            // `resource(` (`api_resource(` included).
            let before = pieces[i - 1].trim_end();
            if !(before.ends_with(".route(") || before.ends_with("resource(")) {
                continue;
            }
            let after = &piece[end..];
            for method in ["get", "post", "put", "patch", "delete"] {
                if after.contains(&format!("web::{method}()")) {
                    operations.insert((method.to_uppercase(), route.clone()));
                }
            }
        }
    }
    operations
}

#[test]
fn every_api_route_actix_serves_is_in_the_document_and_nothing_else() {
    let registered = registered();
    assert!(
        registered.len() >= 20,
        "the route scan found too few routes, so it no longer reads the source right: {registered:?}"
    );
    let documented = documented();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes served but missing from the OpenAPI document (add #[utoipa::path] and list them in ApiDoc): {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "operations in the OpenAPI document that actix does not serve: {unserved:?}"
    );
}

/// The operations docs/api.md has a `### ` heading for: every `` `METHOD /api/...` ``
/// in such a heading, without its query (`?...`, `[?...]`).
fn in_api_md() -> Operations {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md is readable");
    let mut operations = Operations::new();
    for heading in text.lines().filter(|l| l.starts_with("### ")) {
        for quoted in heading.split('`').skip(1).step_by(2) {
            let Some((method, target)) = quoted.split_once(' ') else {
                continue;
            };
            if !target.starts_with("/api/") {
                continue;
            }
            let path = target.split(['?', '[']).next().unwrap_or(target);
            operations.insert((method.to_owned(), path.to_owned()));
        }
    }
    operations
}

#[test]
fn docs_api_md_has_a_heading_for_every_operation_of_the_document_and_no_other() {
    let documented = documented();
    let described = in_api_md();
    let missing: Vec<_> = documented.difference(&described).collect();
    let extra: Vec<_> = described.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "operations of the OpenAPI document without a `### METHOD /api/...` heading in docs/api.md: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "docs/api.md describes operations the OpenAPI document lacks: {extra:?}"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_tokens_required_and_problems_for_every_error() {
    let document = serde_json::to_value(document()).expect("the document serialises");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], SESSION_COOKIE);
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an item") {
            let public = operation["security"] == serde_json::json!([{}]);
            assert_eq!(
                public,
                path == DOCUMENT_PATH,
                "{method} {path}: only the document itself is readable without a token"
            );
            let responses = operation["responses"].as_object().expect("responses");
            if !public {
                assert!(responses.contains_key("401"), "{method} {path}");
                assert!(responses.contains_key("403"), "{method} {path}");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"][PROBLEM_JSON]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let schemas = &document["components"]["schemas"];
    for name in [
        "Problem",
        "Release",
        "Deployment",
        "Account",
        "ApiToken",
        "AuditEntry",
    ] {
        assert!(schemas.get(name).is_some(), "no schema {name}");
    }
    assert_eq!(
        schemas["DeploymentStatus"]["enum"],
        serde_json::json!([
            "queued",
            "applying",
            "rolling_out",
            "succeeded",
            "failed",
            "timed_out",
            "cancelled"
        ])
    );
}

#[test]
fn every_operation_has_its_own_id_and_a_summary() {
    let document = serde_json::to_value(document()).expect("the document serialises");
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an item") {
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_owned()), "{method} {path}: {id} is taken");
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.is_empty() && !summary.contains("/api/"),
                "{method} {path}: a summary in words, not {summary:?}"
            );
        }
    }
}
