//! `kubernaut status --service S`: what version runs where.

use crate::helpers::spawn_server_with_cluster;

#[tokio::test]
async fn status_shows_the_running_version_and_a_later_failed_deploy() {
    let server = spawn_server_with_cluster().await;
    let empty = server.run(&["status", "--service", "web"]).await;
    empty.assert_code(0);
    assert_eq!(empty.stdout.trim(), "web has no deployments");

    server
        .release("web", "1.0.0", "registry.local/web:1.0.0")
        .await;
    server
        .release("web", "2.0.0", "registry.local/web-crashloop:2.0.0")
        .await;
    server
        .deploy_and_wait("web", "1.0.0", &[])
        .await
        .assert_code(0);
    server
        .deploy_and_wait("web", "2.0.0", &[])
        .await
        .assert_code(1);

    let text = server.run(&["status", "--service", "web"]).await;
    text.assert_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(lines[0].starts_with("CLUSTER"), "{text:?}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..3], ["sim", "shop", "1.0.0"], "{text:?}");
    assert!(lines[1].ends_with("2.0.0 failed (crash_loop)"), "{text:?}");

    let json = server
        .run(&["status", "--service", "web", "--output", "json"])
        .await;
    json.assert_code(0);
    // The server's own answer (`GET /api/placements`), one item per target.
    let status = json.json();
    let items = status["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{status}");
    let target = &items[0];
    assert_eq!(target["service"], "web");
    assert_eq!(target["cluster"], "sim");
    assert_eq!(target["namespace"], "shop");
    assert_eq!(target["running"]["version"], "1.0.0");
    assert_eq!(target["last"]["version"], "2.0.0");
    assert_eq!(target["last"]["status"], "failed");
}
