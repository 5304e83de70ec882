//! End to end: Kubernaut + PostgreSQL + the simulated cluster.

use std::time::Duration;

use kubernaut_domain::access::Role;
use kubernaut_testkit::sim::Behaviour;
use serde_json::{Value, json};

use crate::cluster::{job_template, spawn_deploying_app, web_template};
use crate::helpers::{client_with_token, problem};

fn diagnosis(deployment: &Value) -> &Value {
    &deployment["diagnostics"]["resources"][0]
}

fn event_reasons(deployment: &Value) -> Vec<String> {
    diagnosis(deployment)["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["reason"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_good_release_rolls_out_and_a_new_version_updates_it_in_place() {
    let env = spawn_deploying_app().await;
    env.release(
        "web",
        "1.0.0",
        "registry.local/web:1.0.0",
        &web_template(false),
    )
    .await;
    let first = env.deploy_and_wait("web", "1.0.0", json!({})).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert!(first["finished_at"].is_string());
    assert_eq!(first["diagnostics"], Value::Null);
    let timeline = first["timeline"].as_array().expect("timeline");
    assert!(timeline.len() >= 4, "{timeline:?}");

    let deployed = env
        .sim
        .get_object("Deployment", "shop", "web")
        .expect("applied");
    assert_eq!(
        deployed["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kubernaut"
    );
    assert_eq!(
        deployed["metadata"]["annotations"]["kubernaut.io/deployment-id"],
        first["id"]
    );
    let settings = env
        .sim
        .get_object("ConfigMap", "shop", "web-settings")
        .expect("configmap");
    assert_eq!(
        settings["data"]["region"], "eu-sim",
        "cluster attributes reach the template"
    );

    env.release(
        "web",
        "1.1.0",
        "registry.local/web:1.1.0",
        &web_template(false),
    )
    .await;
    let second = env.deploy_and_wait("web", "1.1.0", json!({})).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let updated = env
        .sim
        .get_object("Deployment", "shop", "web")
        .expect("still there");
    assert_eq!(
        updated["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:1.1.0"
    );
    assert_eq!(
        updated["metadata"]["uid"], deployed["metadata"]["uid"],
        "updated in place"
    );
}

#[tokio::test]
async fn a_crash_looping_release_fails_with_events_and_log_lines() {
    let env = spawn_deploying_app().await;
    env.release(
        "crashy",
        "1",
        "registry.local/crashloop:1",
        &web_template(false),
    )
    .await;
    let deployment = env.deploy_and_wait("crashy", "1", json!({})).await;
    assert_eq!(deployment["status"], "failed", "{deployment}");
    assert_eq!(deployment["reason"], "crash_loop");
    assert_eq!(diagnosis(&deployment)["resource"]["kind"], "Deployment");
    assert!(
        event_reasons(&deployment).iter().any(|r| r == "BackOff"),
        "{deployment}"
    );
    let logs = diagnosis(&deployment)["logs"].to_string();
    assert!(logs.contains("could not connect to the database"), "{logs}");
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_as_image_not_found() {
    let env = spawn_deploying_app().await;
    env.release(
        "ghost",
        "1",
        "registry.local/notfound:1",
        &web_template(false),
    )
    .await;
    let deployment = env.deploy_and_wait("ghost", "1", json!({})).await;
    assert_eq!(deployment["status"], "failed", "{deployment}");
    assert_eq!(deployment["reason"], "image_not_found");
    let reasons = event_reasons(&deployment);
    assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
}

#[tokio::test]
async fn a_release_that_never_becomes_ready_fails_on_its_probe() {
    let env = spawn_deploying_app().await;
    env.release(
        "shy",
        "1",
        "registry.local/neverready:1",
        &web_template(false),
    )
    .await;
    let deployment = env.deploy_and_wait("shy", "1", json!({})).await;
    assert_eq!(deployment["status"], "failed", "{deployment}");
    let reason = deployment["reason"].as_str().unwrap_or_default();
    assert!(
        reason == "failed_probe" || reason == "progress_deadline_exceeded",
        "{deployment}"
    );
    assert!(
        event_reasons(&deployment).iter().any(|r| r == "Unhealthy"),
        "{deployment}"
    );
}

#[tokio::test]
async fn an_unschedulable_release_fails_as_unschedulable() {
    let env = spawn_deploying_app().await;
    env.release(
        "huge",
        "1",
        "registry.local/unschedulable:1",
        &web_template(false),
    )
    .await;
    let deployment = env.deploy_and_wait("huge", "1", json!({})).await;
    assert_eq!(deployment["status"], "failed", "{deployment}");
    assert_eq!(deployment["reason"], "unschedulable");
    assert!(
        event_reasons(&deployment)
            .iter()
            .any(|r| r == "FailedScheduling"),
        "{deployment}"
    );
}

#[tokio::test]
async fn a_failing_job_fails_as_job_failed() {
    let env = spawn_deploying_app().await;
    env.release("migrate", "1", "registry.local/job-fail:1", job_template())
        .await;
    let deployment = env.deploy_and_wait("migrate", "1", json!({})).await;
    assert_eq!(deployment["status"], "failed", "{deployment}");
    assert_eq!(deployment["reason"], "job_failed");

    env.release("migrate", "2", "registry.local/job-ok:2", job_template())
        .await;
    let good = env.deploy_and_wait("migrate", "2", json!({})).await;
    assert_eq!(good["status"], "succeeded", "{good}");
}

#[tokio::test]
async fn a_rollout_slower_than_its_timeout_times_out() {
    let env = spawn_deploying_app().await;
    env.sim.set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    env.release(
        "sloth",
        "1",
        "registry.local/web:slow",
        &web_template(false),
    )
    .await;
    let deployment = env
        .deploy_and_wait("sloth", "1", json!({ "timeout_seconds": 2 }))
        .await;
    assert_eq!(deployment["status"], "timed_out", "{deployment}");
    assert!(
        deployment["diagnostics"]["resources"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
}

#[tokio::test]
async fn a_second_deploy_to_a_busy_target_is_a_conflict_naming_the_active_one() {
    let env = spawn_deploying_app().await;
    env.sim.set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    env.release("busy", "1", "registry.local/web:slow", &web_template(false))
        .await;
    let body = json!({"service": "busy", "version": "1", "cluster": "sim", "namespace": "shop", "timeout_seconds": 30});
    let first = env.deploy(body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let conflict = problem(env.deploy(body).await, 409).await;
    assert_eq!(conflict["existing_id"], first["id"]);

    // Cancelling frees the target.
    let cancelled: Value = env
        .app
        .client
        .post(env.app.url(&format!(
            "/api/deployments/{}/cancel",
            first["id"].as_str().expect("id")
        )))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test]
async fn prune_removes_the_dropped_object_and_nothing_else() {
    let env = spawn_deploying_app().await;
    // An object of another service, and one nobody manages, must survive.
    env.release("other", "1", "registry.local/other:1", &web_template(true))
        .await;
    assert_eq!(
        env.deploy_and_wait("other", "1", json!({})).await["status"],
        "succeeded"
    );
    crate::cluster::create_namespace(&env.sim, "unrelated").await;

    env.release(
        "shop-web",
        "1",
        "registry.local/shop-web:1",
        &web_template(true),
    )
    .await;
    assert_eq!(
        env.deploy_and_wait("shop-web", "1", json!({})).await["status"],
        "succeeded"
    );
    assert!(
        env.sim
            .get_object("ConfigMap", "shop", "shop-web-extra")
            .is_some()
    );

    env.release(
        "shop-web",
        "2",
        "registry.local/shop-web:2",
        &web_template(false),
    )
    .await;
    let second = env.deploy_and_wait("shop-web", "2", json!({})).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let waited = tokio::time::Instant::now() + Duration::from_secs(10);
    while env
        .sim
        .get_object("ConfigMap", "shop", "shop-web-extra")
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < waited,
            "the dropped ConfigMap is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        env.sim
            .get_object("ConfigMap", "shop", "shop-web-settings")
            .is_some()
    );
    assert!(
        env.sim
            .get_object("Deployment", "shop", "shop-web")
            .is_some()
    );
    assert!(env.sim.get_object("Service", "shop", "shop-web").is_some());
    assert!(
        env.sim
            .get_object("ConfigMap", "shop", "other-extra")
            .is_some(),
        "other services are left alone"
    );
    assert!(
        second["timeline"]
            .to_string()
            .contains("pruned ConfigMap/shop-web-extra"),
        "{second}"
    );
}

#[tokio::test]
async fn rollback_and_rollback_on_failure_return_to_the_last_good_release() {
    let env = spawn_deploying_app().await;
    env.release("app", "1", "registry.local/app:1", &web_template(false))
        .await;
    env.release(
        "app",
        "2",
        "registry.local/crashloop-app:2",
        &web_template(false),
    )
    .await;
    env.release("app", "3", "registry.local/app:3", &web_template(false))
        .await;
    assert_eq!(
        env.deploy_and_wait("app", "1", json!({})).await["status"],
        "succeeded"
    );

    let failed = env
        .deploy_and_wait("app", "2", json!({ "rollback_on_failure": true }))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    // The automatic rollback is its own deployment, pointing back at the failure.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rollback = loop {
        let page: Value = env
            .app
            .get("/api/deployments?service=app")
            .await
            .json()
            .await
            .expect("json");
        let found = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["rollback_of"] == failed["id"])
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no automatic rollback: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rollback = env.wait(rollback["id"].as_str().expect("id")).await;
    assert_eq!(rollback["status"], "succeeded", "{rollback}");
    assert_eq!(rollback["version"], "1");
    let image = env
        .sim
        .get_object("Deployment", "shop", "app")
        .expect("deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        .clone();
    assert_eq!(image, "registry.local/app:1");

    // A manual rollback from version 3 goes back to 1, the last other success.
    let third = env.deploy_and_wait("app", "3", json!({})).await;
    assert_eq!(third["status"], "succeeded");
    let response = env
        .app
        .client
        .post(env.app.url(&format!(
            "/api/deployments/{}/rollback",
            third["id"].as_str().expect("id")
        )))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let manual: Value = response.json().await.expect("json");
    let manual = env.wait(manual["id"].as_str().expect("id")).await;
    assert_eq!(manual["status"], "succeeded", "{manual}");
    assert_eq!(manual["version"], "1");
    assert_eq!(manual["rollback_of"], third["id"]);
}

#[tokio::test]
async fn dropped_watches_and_injected_errors_do_not_change_the_verdict() {
    let env = spawn_deploying_app().await;
    env.sim.set_image_behaviour(
        "registry.local/web:steady",
        Behaviour::SlowStart { seconds: 20 },
    );
    env.release(
        "steady",
        "1",
        "registry.local/web:steady",
        &web_template(false),
    )
    .await;
    let response = env
        .deploy(json!({"service": "steady", "version": "1", "cluster": "sim", "namespace": "shop"}))
        .await;
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.expect("json");
    let faults = env.sim.faults();
    faults.set_error_rate(0.3, 503);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        faults.drop_watches();
        faults.force_gone();
    }
    faults.clear();
    let deployment = env.wait(started["id"].as_str().expect("id")).await;
    assert_eq!(deployment["status"], "succeeded", "{deployment}");
}

#[tokio::test]
async fn the_events_stream_tells_the_timeline_until_the_verdict() {
    let env = spawn_deploying_app().await;
    env.release(
        "streamed",
        "1",
        "registry.local/streamed:1",
        &web_template(false),
    )
    .await;
    let response = env
        .deploy(
            json!({"service": "streamed", "version": "1", "cluster": "sim", "namespace": "shop"}),
        )
        .await;
    let started: Value = response.json().await.expect("json");
    let stream = env
        .app
        .get(&format!(
            "/api/deployments/{}/events",
            started["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let text = tokio::time::timeout(Duration::from_secs(60), stream.text())
        .await
        .expect("the stream ends at the verdict")
        .expect("body");
    assert!(text.contains("event: timeline"), "{text}");
    assert!(text.contains("event: verdict"), "{text}");
    assert!(text.contains("\"succeeded\""), "{text}");
}

#[tokio::test]
async fn the_manifest_preview_renders_for_a_target_without_applying() {
    let env = spawn_deploying_app().await;
    let release = env
        .release(
            "preview",
            "1",
            "registry.local/preview:1",
            &web_template(false),
        )
        .await;
    let id = release["id"].as_str().expect("id");
    let response = env
        .app
        .get(&format!(
            "/api/releases/{id}/manifest?cluster=sim&namespace=shop"
        ))
        .await;
    assert_eq!(response.status(), 200);
    let yaml = response.text().await.expect("text");
    assert!(yaml.contains("region: \"eu-sim\""), "{yaml}");
    assert!(yaml.contains("namespace: \"shop\""), "{yaml}");
    assert!(
        env.sim
            .get_object("Deployment", "shop", "preview")
            .is_none(),
        "nothing applied"
    );

    let missing = problem(
        env.app
            .get(&format!(
                "/api/releases/{id}/manifest?cluster=mars&namespace=shop"
            ))
            .await,
        422,
    )
    .await;
    assert_eq!(missing["errors"][0]["field"], "cluster");
}

#[tokio::test]
async fn clusters_are_listed_with_their_reachability() {
    let env = spawn_deploying_app().await;
    let clusters: Value = env
        .app
        .get("/api/clusters")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(clusters["items"][0]["name"], "sim");
    assert_eq!(clusters["items"][0]["reachable"], true);
    assert!(
        clusters["items"][0]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1."))
    );
}

#[tokio::test]
async fn bad_deploy_requests_are_refused_with_the_field_at_fault() {
    let env = spawn_deploying_app().await;
    env.release("needy", "1", "registry.local/needy:1", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\ndata:\n  owner: \"{{ owner }}\"\n").await;
    let cases = [
        (
            json!({"service": "needy", "version": "1", "cluster": "sim", "namespace": "shop"}),
            422,
            "attributes",
        ),
        (
            json!({"service": "needy", "version": "9", "cluster": "sim", "namespace": "shop", "attributes": {"owner": "x"}}),
            422,
            "release_id",
        ),
        (
            json!({"service": "needy", "version": "1", "cluster": "mars", "namespace": "shop"}),
            422,
            "cluster",
        ),
        (
            json!({"service": "needy", "version": "1", "cluster": "sim", "namespace": "Bad_NS"}),
            400,
            "namespace",
        ),
        (
            json!({"release_id": "nope", "cluster": "sim", "namespace": "shop"}),
            400,
            "release_id",
        ),
        (
            json!({"service": "needy", "version": "1", "cluster": "sim"}),
            400,
            "body",
        ),
        (
            json!({"service": "needy", "version": "1", "cluster": "sim", "namespace": "shop", "timeout_seconds": 0}),
            400,
            "timeout_seconds",
        ),
        (
            json!({"service": "needy", "version": "1", "cluster": "sim", "namespace": "shop", "colour": 1}),
            400,
            "colour",
        ),
    ];
    for (body, status, field) in cases {
        let problem = problem(env.deploy(body.clone()).await, status).await;
        assert_eq!(
            problem["errors"][0]["field"], field,
            "{body} gave {problem}"
        );
    }
    let missing = problem(
        env.deploy(
            json!({"service": "needy", "version": "1", "cluster": "sim", "namespace": "shop"}),
        )
        .await,
        422,
    )
    .await;
    assert!(
        missing["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("owner")),
        "{missing}"
    );
    // Kinds are checked against the cluster's discovery before anything is stored: one
    // it does not serve, and one outside namespaces (the cluster allows none).
    env.release(
        "odd",
        "1",
        "registry.local/odd:1",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ service }}\n",
    )
    .await;
    env.release(
        "wide",
        "1",
        "registry.local/wide:1",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ service }}-ns\n",
    )
    .await;
    for (service, says) in [
        ("odd", "does not serve kind example.com/v1 Widget"),
        ("wide", "cluster-scoped"),
    ] {
        let refused = problem(
            env.deploy(
                json!({"service": service, "version": "1", "cluster": "sim", "namespace": "shop"}),
            )
            .await,
            422,
        )
        .await;
        assert_eq!(refused["errors"][0]["field"], "manifest", "{refused}");
        assert!(
            refused["errors"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(says)),
            "{refused}"
        );
    }
    assert!(
        env.sim.get_object("Namespace", "", "wide-ns").is_none(),
        "nothing was applied"
    );
    problem(env.app.get("/api/deployments/not-an-id").await, 404).await;
    problem(env.app.get("/api/deployments?status=exploded").await, 400).await;

    let page: Value = env
        .app
        .get("/api/deployments")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn deployments_are_listed_newest_first_with_filters() {
    let env = spawn_deploying_app().await;
    env.release(
        "lister",
        "1",
        "registry.local/lister:1",
        &web_template(false),
    )
    .await;
    env.release(
        "lister",
        "2",
        "registry.local/crashloop-lister:2",
        &web_template(false),
    )
    .await;
    let first = env.deploy_and_wait("lister", "1", json!({})).await;
    let second = env.deploy_and_wait("lister", "2", json!({})).await;
    let page: Value = env
        .app
        .get("/api/deployments?service=lister")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<_> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(ids, [second["id"].clone(), first["id"].clone()]);
    assert!(page["items"][0].get("timeline").is_none());
    let failed: Value = env
        .app
        .get("/api/deployments?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(failed["items"].as_array().map(Vec::len), Some(1));
    let paged: Value = env
        .app
        .get("/api/deployments?limit=1")
        .await
        .json()
        .await
        .expect("json");
    let cursor = paged["next_cursor"].as_str().expect("a next page");
    let next: Value = env
        .app
        .get(&format!("/api/deployments?limit=1&cursor={cursor}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(next["items"][0]["id"], first["id"]);

    let of_release: Value = env
        .app
        .get(&format!(
            "/api/deployments?release_id={}",
            first["release_id"].as_str().expect("a release id")
        ))
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<_> = of_release["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [first["id"].clone()],
        "only the deployments of that release"
    );
    let bad = problem(env.app.get("/api/deployments?release_id=nope").await, 400).await;
    assert_eq!(bad["errors"][0]["field"], "release_id", "{bad}");
}

/// Reads the event stream until it ends or `within` passes, returning what it sent.
async fn read_stream_until_end(mut stream: reqwest::Response, within: Duration) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => return text,
            Ok(Err(error)) => panic!("the stream broke: {error}; so far: {text}"),
            Err(_) => panic!("the stream did not end within {within:?}; so far: {text}"),
        }
    }
}

/// A deployment still rolling out (its image takes an hour to start, so only its
/// progress deadline ends it, a few seconds later at the tests' time scale), watched by
/// a viewer through the event stream; returns the viewer's stream after its first events.
async fn a_viewer_watching_a_long_rollout(
    env: &crate::cluster::Deploying,
    viewer: &str,
) -> reqwest::Response {
    env.sim.set_image_behaviour(
        "registry.local/web:slow",
        Behaviour::SlowStart { seconds: 3600 },
    );
    env.release(
        "watched",
        "1",
        "registry.local/web:slow",
        &web_template(false),
    )
    .await;
    let started: Value = env
        .deploy(
            json!({"service": "watched", "version": "1", "cluster": "sim",
                       "namespace": "shop", "timeout_seconds": 600}),
        )
        .await
        .json()
        .await
        .expect("json");
    let secret = env.app.token_for(viewer, Role::Viewer, None).await;
    let mut stream = client_with_token(&secret)
        .get(env.app.url(&format!(
            "/api/deployments/{}/events",
            started["id"].as_str().expect("id")
        )))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    let opening = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("the opening events come at once")
        .expect("a chunk")
        .expect("not the end");
    assert!(
        String::from_utf8_lossy(&opening).contains("event: status"),
        "{opening:?}"
    );
    stream
}

#[tokio::test]
async fn an_open_events_stream_ends_when_its_token_is_revoked() {
    let env = spawn_deploying_app().await;
    let stream = a_viewer_watching_a_long_rollout(&env, "watcher").await;

    let tokens: Value = env
        .app
        .get("/api/tokens?account=watcher")
        .await
        .json()
        .await
        .expect("json");
    let token = tokens["items"][0]["id"]
        .as_str()
        .expect("the viewer's token");
    let revoked = env.app.delete(&format!("/api/tokens/{token}")).await;
    assert!(revoked.status().is_success(), "{}", revoked.status());

    // Revoked through this process: the stream hears of it at once, not at its next
    // 15 s wake-up.
    let text = read_stream_until_end(stream, Duration::from_secs(10)).await;
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("no longer valid"), "{text}");
    assert!(!text.contains("event: verdict"), "{text}");
}

#[tokio::test]
async fn an_open_events_stream_ends_when_its_account_loses_the_right_to_read() {
    let env = spawn_deploying_app().await;
    let stream = a_viewer_watching_a_long_rollout(&env, "demoted").await;

    let removed = env
        .app
        .client
        .delete(env.app.url("/api/accounts/demoted/grants"))
        .json(&json!({ "role": "viewer" }))
        .send()
        .await
        .expect("sent");
    assert!(removed.status().is_success(), "{}", removed.status());

    let text = read_stream_until_end(stream, Duration::from_secs(10)).await;
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("may not"), "{text}");
    assert!(!text.contains("event: verdict"), "{text}");
}

#[tokio::test]
async fn values_that_would_reshape_the_manifest_are_refused_naming_them_and_nothing_is_applied() {
    let env = spawn_deploying_app().await;
    env.release(
        "shaped",
        "1",
        "registry.local/shaped:1",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\n  labels: {team: {{ team }}}\nspec:\n  replicas: {{ replicas }}\n  selector:\n    matchLabels:\n      app: {{ service }}\n  template:\n    metadata:\n      labels:\n        app: {{ service }}\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n",
    )
    .await;
    // A whole extra document, the image swapped for another, a key slipped into a flow
    // mapping: each through a deploy-time attribute.
    let injections = [
        (
            "replicas",
            "1\n---\napiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata:\n  name: starve\nspec:\n  type: Exempt\n",
        ),
        (
            "replicas",
            "1\n  template:\n    spec:\n      containers:\n      - name: web\n        image: evil/miner:1",
        ),
        ("team", "payments, admin: \"true\""),
    ];
    for (name, value) in injections {
        let problem = problem(
            env.deploy(json!({
                "service": "shaped", "version": "1", "cluster": "sim", "namespace": "shop",
                "attributes": {"team": "payments", name: value},
            }))
            .await,
            422,
        )
        .await;
        assert_eq!(
            problem["errors"][0]["field"],
            format!("attributes.{name}"),
            "{value:?} gave {problem}"
        );
    }
    // The same values are fine where the template quotes them as text.
    let fine = env
        .deploy_and_wait("shaped", "1", json!({"attributes": {"team": "payments"}}))
        .await;
    assert_eq!(fine["status"], "succeeded", "{fine}");
    assert!(
        env.sim
            .list_objects("PriorityLevelConfiguration", None)
            .is_empty(),
        "nothing injected was applied"
    );
    let page: Value = env
        .app
        .get("/api/deployments?service=shaped")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "no refused deploy was stored: {page}"
    );

    // A release attribute is checked when the release is registered.
    let refused = problem(
        env.app
            .post_release(&json!({
                "service": "shaped", "version": "2", "image": "registry.local/shaped:2",
                "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {team: {{ team }}}\n",
                "attributes": {"team": "a, evil: yes"},
            }))
            .await,
        422,
    )
    .await;
    assert_eq!(
        refused["errors"][0]["field"], "attributes.team",
        "{refused}"
    );
}

#[tokio::test]
async fn a_deploy_attribute_holding_nul_is_refused_naming_it_and_starts_nothing() {
    let env = spawn_deploying_app().await;
    env.release("needy", "1", "registry.local/needy:1", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\ndata:\n  owner: \"{{ owner }}\"\n").await;
    let audit_before: Value = env.app.get("/api/audit").await.json().await.expect("json");
    let refused = problem(
        env.deploy(json!({
            "service": "needy", "version": "1", "cluster": "sim", "namespace": "shop",
            "attributes": {"owner": "team\u{0}a"},
        }))
        .await,
        400,
    )
    .await;
    assert_eq!(
        refused["errors"][0]["field"], "attributes.owner",
        "{refused}"
    );
    assert!(
        refused["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("U+0000")),
        "{refused}"
    );
    let page: Value = env
        .app
        .get("/api/deployments")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"], json!([]));
    let audit_after: Value = env.app.get("/api/audit").await.json().await.expect("json");
    assert_eq!(audit_after, audit_before);
}

#[tokio::test]
async fn requests_held_open_are_capped_per_token_with_a_429() {
    let sim = crate::cluster::start_simulator().await;
    crate::cluster::create_namespace(&sim, "shop").await;
    sim.set_image_behaviour(
        "registry.local/held:1",
        Behaviour::SlowStart { seconds: 100_000 },
    );
    let cluster = crate::cluster::sim_cluster(&sim);
    let app = crate::helpers::spawn_app_with(move |settings| {
        settings.clusters = vec![cluster];
        settings.security.streams_per_token = 2;
    })
    .await;
    let env = crate::cluster::Deploying { app, sim };
    env.release("held", "1", "registry.local/held:1", &web_template(false))
        .await;
    let started: Value = env
        .deploy(json!({"service": "held", "version": "1", "cluster": "sim", "namespace": "shop"}))
        .await
        .json()
        .await
        .expect("json");
    let id = started["id"].as_str().expect("an id").to_owned();
    let events = env.app.url(&format!("/api/deployments/{id}/events"));
    // Two streams held open by the admin's token...
    let mut open = Vec::new();
    for _ in 0..2 {
        let stream = env.app.client.get(&events).send().await.expect("sent");
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    // ... and a third stream or a long poll of the same token is refused at once.
    for refused in [
        env.app.client.get(&events).send().await.expect("sent"),
        env.app
            .client
            .get(env.app.url(&format!("/api/deployments/{id}?wait=30")))
            .send()
            .await
            .expect("sent"),
    ] {
        assert!(refused.headers().get("retry-after").is_some());
        problem(refused, 429).await;
    }
    // A plain read is no held request; another token has its own quota.
    let plain = env.app.get(&format!("/api/deployments/{id}")).await;
    assert_eq!(plain.status(), 200);
    let viewer = client_with_token(&env.app.token_for("watcher", Role::Viewer, None).await);
    let theirs = viewer.get(&events).send().await.expect("sent");
    assert_eq!(theirs.status(), 200);
    drop(open);
}
