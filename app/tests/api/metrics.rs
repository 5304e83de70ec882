//! `/metrics` after real deploys to the simulated cluster, read by a Prometheus parser
//! nobody here wrote: `prometheus_client`'s (PyPI; `scripts/install-test-deps`
//! installs it).

use std::collections::BTreeMap;

use kubernaut_domain::access::Role;
use serde::Deserialize;
use serde_json::json;

use crate::cluster::{spawn_deploying_app_with, web_template};
use crate::helpers::client_with_token;

/// Parses the exposition on standard input with `prometheus_client.parser` and prints
/// every sample as JSON; the parser raises on anything that is not the text format.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": sample.name,
                        "labels": sample.labels, "value": sample.value})
json.dump(samples, sys.stdout)
"#;

#[derive(Debug, Deserialize)]
struct Sample {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of an exposition, as `prometheus_client` reads them.
fn parse(exposition: &str) -> Vec<Sample> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("a stdin")
        .write_all(exposition.as_bytes())
        .expect("the exposition is written");
    let output = child.wait_with_output().expect("the parser ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "prometheus_client is not installed: run scripts/install-test-deps"
    );
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {stderr}\n{exposition}"
    );
    serde_json::from_slice(&output.stdout).expect("the parser's JSON")
}

/// The value of the sample `name` whose labels include `labels`, if there is one.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[tokio::test]
async fn deploys_move_the_counters_and_prometheus_client_parses_every_family() {
    let env = spawn_deploying_app_with(|settings| {
        settings.metrics.bind = Some("127.0.0.1:0".to_owned());
    })
    .await;
    env.release(
        "web",
        "1.0.0",
        "registry.local/web:1.0.0",
        &web_template(false),
    )
    .await;
    env.release(
        "crashy",
        "1",
        "registry.local/crashloop:1",
        &web_template(false),
    )
    .await;
    let succeeded = env.deploy_and_wait("web", "1.0.0", json!({})).await;
    assert_eq!(succeeded["status"], "succeeded", "{succeeded}");
    let failed = env.deploy_and_wait("crashy", "1", json!({})).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let response = env.app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.headers()
    );
    let exposition = response.text().await.expect("the exposition");
    let samples = parse(&exposition);

    let target = [("cluster", "sim"), ("namespace", "shop")];
    let finished = |verdict: &str, reason: &str| {
        let mut labels = target.to_vec();
        labels.extend([("verdict", verdict), ("reason", reason)]);
        value(&samples, "kubernaut_deployments_finished_total", &labels)
    };
    assert_eq!(finished("succeeded", "none"), Some(1.0), "{exposition}");
    assert_eq!(finished("failed", "crash_loop"), Some(1.0), "{exposition}");
    assert_eq!(
        value(&samples, "kubernaut_deployments_started_total", &target),
        Some(2.0)
    );
    let mut succeeded_labels = target.to_vec();
    succeeded_labels.extend([("verdict", "succeeded"), ("reason", "none")]);
    assert_eq!(
        value(
            &samples,
            "kubernaut_deployment_request_to_verdict_seconds_count",
            &succeeded_labels
        ),
        Some(1.0)
    );
    let took = value(
        &samples,
        "kubernaut_deployment_request_to_verdict_seconds_sum",
        &succeeded_labels,
    )
    .expect("a sum");
    assert!(took > 0.0 && took < 90.0, "{took}");
    assert_eq!(
        value(
            &samples,
            "kubernaut_deployment_rollout_end_to_verdict_seconds_count",
            &succeeded_labels
        ),
        Some(1.0)
    );

    // Requests by route pattern: the deploys (202) and the long polls by id, never
    // by raw path.
    let deploys = value(
        &samples,
        "kubernaut_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/deployments"),
            ("status", "202"),
        ],
    );
    assert_eq!(deploys, Some(2.0), "{exposition}");
    let polls = value(
        &samples,
        "kubernaut_http_requests_total",
        &[
            ("method", "GET"),
            ("route", "/api/deployments/{id}"),
            ("status", "200"),
        ],
    )
    .expect("the long polls are counted by their pattern");
    assert!(polls >= 2.0, "{polls}");
    let id = succeeded["id"].as_str().expect("an id");
    assert!(
        !samples
            .iter()
            .any(|s| s.labels.values().any(|label| label.contains(id))),
        "a raw path made a series: {exposition}"
    );
    assert!(
        value(
            &samples,
            "kubernaut_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/api/deployments")],
        ) == Some(2.0)
    );

    // Gauges sampled at the scrape.
    let pool = [("pool", crate::BACKEND)];
    let connections = value(&samples, "kubernaut_database_pool_connections", &pool)
        .expect("the pool's connections");
    let idle = value(&samples, "kubernaut_database_pool_idle_connections", &pool)
        .expect("the pool's idle connections");
    assert!(connections >= 1.0 && idle <= connections, "{exposition}");
    assert!(value(&samples, "kubernaut_database_pool_max_connections", &pool).is_some());
    assert!(
        value(
            &samples,
            "kubernaut_kubernetes_watches",
            &[("cluster", "sim")]
        )
        .is_some(),
        "{exposition}"
    );
    // Both deployments reached their verdict: nothing is driven or leased now.
    let leases = samples
        .iter()
        .find(|s| s.name == "kubernaut_leases_held")
        .expect("the leases gauge");
    assert_eq!(leases.value, 0.0);
    assert!(leases.labels.contains_key("replica"));
    let kinds: BTreeMap<&str, &str> = samples
        .iter()
        .map(|s| (s.family.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(
        kinds.get("kubernaut_deployments_finished"),
        Some(&"counter")
    );
    assert_eq!(
        kinds.get("kubernaut_deployment_request_to_verdict_seconds"),
        Some(&"histogram")
    );
    assert_eq!(kinds.get("kubernaut_deployments_active"), Some(&"gauge"));

    // The separate metrics address answers without a token, with the same figures.
    let open = reqwest::get(format!(
        "{}/metrics",
        env.app
            .metrics_address
            .as_deref()
            .expect("metrics.bind was set")
    ))
    .await
    .expect("the metrics address answers");
    assert_eq!(open.status(), 200);
    let samples = parse(&open.text().await.expect("the exposition"));
    assert_eq!(
        value(&samples, "kubernaut_deployments_started_total", &target),
        Some(2.0)
    );
}

#[tokio::test]
async fn metrics_on_the_api_address_are_refused_without_a_token_that_may_read_them() {
    let env = spawn_deploying_app_with(|_| {}).await;
    assert!(env.app.metrics_address.is_none());

    let anonymous = reqwest::get(env.app.url("/metrics")).await.expect("sent");
    assert_eq!(anonymous.status(), 401);
    for role in [Role::Viewer, Role::Releaser, Role::Deployer] {
        let token = env.app.token_for(role.as_str(), role, None).await;
        let refused = client_with_token(&token)
            .get(env.app.url("/metrics"))
            .send()
            .await
            .expect("sent");
        assert_eq!(refused.status(), 403, "{role}");
        let problem: serde_json::Value = refused.json().await.expect("a problem");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("read the metrics")),
            "{problem}"
        );
    }
    let admin = env.app.get("/metrics").await;
    assert_eq!(admin.status(), 200);
    parse(&admin.text().await.expect("the exposition"));

    // A scraper's token reads the metrics, and nothing else.
    let scraper = client_with_token(&env.app.token_for("prometheus", Role::Metrics, None).await);
    let scraped = scraper
        .get(env.app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(scraped.status(), 200);
    parse(&scraped.text().await.expect("the exposition"));
    for path in ["/api/deployments", "/api/releases", "/api/dora"] {
        let refused = scraper.get(env.app.url(path)).send().await.expect("sent");
        assert_eq!(refused.status(), 403, "{path}");
    }
}
