//! `GET /api/dora` over real deployments to the simulated cluster.

use serde_json::{Value, json};

use crate::cluster::{spawn_deploying_app, web_template};
use crate::helpers::{problem, problem_fields};

fn figures_of<'a>(report: &'a Value, service: &str) -> &'a Value {
    report["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["service"] == service))
        .unwrap_or_else(|| panic!("no figures for {service}: {report}"))
}

#[tokio::test]
async fn the_figures_follow_the_verdicts_of_each_service_on_its_target() {
    let env = spawn_deploying_app().await;
    env.release(
        "web",
        "1.0.0",
        "registry.local/web:1.0.0",
        &web_template(false),
    )
    .await;
    env.release(
        "web",
        "2.0.0",
        "registry.local/crashloop-web:2",
        &web_template(false),
    )
    .await;
    let good = env.deploy_and_wait("web", "1.0.0", json!({})).await;
    assert_eq!(good["status"], "succeeded", "{good}");
    let bad = env
        .deploy_and_wait("web", "2.0.0", json!({ "rollback_on_failure": true }))
        .await;
    assert_eq!(bad["status"], "failed", "{bad}");
    // The automatic rollback restores the target.
    let list: Value = env
        .app
        .get("/api/deployments?service=web")
        .await
        .json()
        .await
        .expect("a page");
    let rollback_id = list["items"][0]["id"]
        .as_str()
        .expect("the rollback")
        .to_owned();
    let rollback = env.wait(&rollback_id).await;
    assert_eq!(rollback["status"], "succeeded", "{rollback}");
    assert_eq!(rollback["rollback_of"], bad["id"]);

    let response = env.app.get("/api/dora?service=web&days=7").await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("the report");
    assert_eq!(report["days"], 7);
    let web = figures_of(&report, "web");
    assert_eq!(
        (web["cluster"].as_str(), web["namespace"].as_str()),
        (Some("sim"), Some("shop"))
    );
    assert_eq!(web["deployments"], 3, "{web}");
    assert_eq!(web["successes"], 2);
    assert_eq!(web["failures"], 1);
    // Two changes (the rollback is none), one failed.
    assert_eq!(web["change_failure_rate"], 0.5);
    let per_day = web["deployments_per_day"].as_f64().expect("a number");
    assert!((per_day - 2.0 / 7.0).abs() < 1e-9, "{per_day}");
    assert_eq!(web["restored_incidents"], 1);
    let parse = |field: &Value| {
        chrono::DateTime::parse_from_rfc3339(field.as_str().expect("a time")).expect("RFC 3339")
    };
    let restore = web["time_to_restore_seconds"]
        .as_f64()
        .expect("a restore time");
    let expected = (parse(&rollback["finished_at"]) - parse(&bad["finished_at"])).as_seconds_f64();
    assert!(
        (restore - expected).abs() < 1e-3,
        "{restore} against {expected}"
    );
    // The one successful change: from release 1.0.0's registration to its verdict.
    let release: Value = env
        .app
        .get(&format!(
            "/api/releases/{}",
            good["release_id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("the release");
    let lead = web["lead_time_seconds"].as_f64().expect("a lead time");
    let expected = (parse(&good["finished_at"]) - parse(&release["created_at"])).as_seconds_f64();
    assert!((lead - expected).abs() < 1e-3, "{lead} against {expected}");
    assert_eq!(web["failing_since"], Value::Null);

    let nothing: Value = env
        .app
        .get("/api/dora?service=other")
        .await
        .json()
        .await
        .expect("the report");
    assert_eq!(nothing["days"], 30);
    assert_eq!(nothing["items"], json!([]));
}

#[tokio::test]
async fn a_bad_window_or_filter_is_refused_naming_the_parameter() {
    let env = spawn_deploying_app().await;
    for (query, field) in [
        ("days=0", "days"),
        ("days=366", "days"),
        ("days=week", "days"),
        ("service=Not_A_Label", "service"),
        ("namespace=-x", "namespace"),
    ] {
        let response = env.app.get(&format!("/api/dora?{query}")).await;
        let body = problem(response, 400).await;
        assert_eq!(problem_fields(&body), [field], "{query}: {body}");
    }
    let anonymous = reqwest::get(env.app.url("/api/dora")).await.expect("sent");
    assert_eq!(anonymous.status(), 401);
}
