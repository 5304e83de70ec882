//! The commands and flags a kubectl user reaches for: `-n`, `-o json|yaml|table`,
//! `-f`, `deployment list|show`, `cancel`, `render`, `diff`, `status`, and `--all`
//! following the server's cursors.

use serde_json::Value;

use crate::helpers::{NAMESPACE, spawn_server_with_cluster};

#[tokio::test]
async fn deployment_list_follows_every_cursor_with_all_and_show_tells_one_in_full() {
    let server = spawn_server_with_cluster().await;
    server.release("web", "1", "registry.local/web:1").await;
    for _ in 0..3 {
        server.deploy_and_wait("web", "1", &[]).await.assert_code(0);
    }

    // One page of one: the cursor says more exist.
    let page = server
        .run(&["deployment", "list", "--limit", "1", "-o", "json"])
        .await;
    page.assert_code(0);
    assert_eq!(page.json()["items"].as_array().map(Vec::len), Some(1));
    assert!(page.json()["next_cursor"].is_string(), "{page:?}");
    let table = server.run(&["deployment", "list", "--limit", "1"]).await;
    table.assert_code(0);
    assert!(table.stderr.contains("--all"), "more is said: {table:?}");

    // Every page, one at a time.
    let all = server
        .run(&["deployments", "list", "--limit", "1", "--all", "-o", "yaml"])
        .await;
    all.assert_code(0);
    let listed: Value = serde_saphyr::from_str(&all.stdout).expect("YAML");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{listed}");
    assert!(listed["next_cursor"].is_null());
    let mut ids: Vec<&str> = items.iter().filter_map(|d| d["id"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "no deployment twice: {listed}");

    let filtered = server
        .run(&["deployment", "list", "-n", "elsewhere", "-o", "json"])
        .await;
    filtered.assert_code(0);
    assert_eq!(filtered.json()["items"], serde_json::json!([]));
    let bad = server
        .run(&["deployment", "list", "--status", "done"])
        .await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("status"), "{bad:?}");

    let shown = server.run(&["deployment", "show", ids[0]]).await;
    shown.assert_code(0);
    assert!(
        shown.stdout.contains(&format!("id:         {}", ids[0])),
        "{shown:?}"
    );
    assert!(shown.stdout.contains("status:     succeeded"), "{shown:?}");
    assert!(shown.stdout.contains("timeline:"), "{shown:?}");
    let table = server.run(&["deployment", "list", "-o", "table"]).await;
    assert!(table.stdout.starts_with("ID"), "{table:?}");
    assert_eq!(table.stdout.lines().count(), 4, "{table:?}");
}

#[tokio::test]
async fn render_shows_the_preview_and_diff_compares_it_with_what_runs() {
    let server = spawn_server_with_cluster().await;
    server.release("web", "1", "registry.local/web:1").await;
    server.release("web", "2", "registry.local/web:2").await;
    let target = ["--cluster", "sim", "-n", NAMESPACE];
    let with = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        let mut args = head.to_vec();
        args.extend_from_slice(&target);
        args.extend_from_slice(tail);
        args
    };

    let rendered = server
        .run(&with(
            &["render", "--service", "web", "--version", "1"],
            &[],
        ))
        .await;
    rendered.assert_code(0);
    let documents: Vec<Value> = rendered
        .stdout
        .split("\n---")
        .map(|doc| serde_saphyr::from_str(doc).expect("a YAML document"))
        .collect();
    assert_eq!(documents.len(), 2, "{rendered:?}");
    assert_eq!(documents[0]["kind"], "Deployment");
    assert_eq!(
        documents[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:1"
    );
    let objects = server
        .run(&with(
            &["render", "--service", "web", "--version", "1"],
            &["--attr", "replicas=5", "-o", "json"],
        ))
        .await;
    objects.assert_code(0);
    assert_eq!(objects.json()[0]["spec"]["replicas"], 5, "{objects:?}");
    assert_eq!(objects.json()[0]["metadata"]["namespace"], NAMESPACE);
    let missing = server
        .run(&with(
            &["render", "--service", "web", "--version", "9"],
            &[],
        ))
        .await;
    missing.assert_code(2);

    // Nothing runs yet: both objects would be created.
    let before = server
        .run(&with(
            &["diff", "--service", "web", "--version", "1"],
            &["--exit-code"],
        ))
        .await;
    before.assert_code(1);
    assert!(
        before.stdout.contains("# Deployment/web in shop: create"),
        "{before:?}"
    );
    assert!(before.stdout.contains("+kind: Service"), "{before:?}");

    server.deploy_and_wait("web", "1", &[]).await.assert_code(0);
    let same = server
        .run(&with(
            &["diff", "--service", "web", "--version", "1"],
            &["--exit-code"],
        ))
        .await;
    same.assert_code(0);
    assert!(
        same.stdout
            .ends_with("2 object(s): 0 to create or update, 2 unchanged\n"),
        "{same:?}"
    );

    let other = server
        .run(&with(&["diff", "--service", "web", "--version", "2"], &[]))
        .await;
    other.assert_code(0);
    assert!(
        other
            .stdout
            .contains("-      - image: registry.local/web:1\n+      - image: registry.local/web:2"),
        "{other:?}"
    );
    assert!(
        other.stdout.contains("# Deployment/web in shop: update"),
        "{other:?}"
    );
    let json = server
        .run(&with(
            &["diff", "--service", "web", "--version", "2"],
            &["-o", "json"],
        ))
        .await;
    json.assert_code(0);
    let diff = json.json();
    assert_eq!(diff["changed"], true);
    assert_eq!(diff["items"][0]["action"], "update");
    assert_eq!(diff["items"][0]["resource"]["apiVersion"], "apps/v1");
    // The Service changes only in the release it is marked with.
    assert_eq!(diff["items"][1]["action"], "update");
    assert_eq!(
        diff["items"][1]["live"]["spec"], diff["items"][1]["desired"]["spec"],
        "{diff}"
    );
}

#[tokio::test]
async fn status_reads_every_target_from_the_servers_query_with_filters() {
    let server = spawn_server_with_cluster().await;
    server.release("web", "1", "registry.local/web:1").await;
    server.deploy_and_wait("web", "1", &[]).await.assert_code(0);
    let shown = server.run(&["status", "web", "-o", "json"]).await;
    shown.assert_code(0);
    assert_eq!(shown.json()["items"][0]["running"]["version"], "1");
    let none = server
        .run(&["status", "web", "-n", "elsewhere", "-o", "json"])
        .await;
    none.assert_code(0);
    assert_eq!(none.json()["items"], serde_json::json!([]));
    let bad = server.run(&["status", "Web!"]).await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("service"), "{bad:?}");
}
