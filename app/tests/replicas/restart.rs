//! `kill -9` of Kubernaut mid-rollout: the restarted process (a new instance) takes the
//! deployment over once the dead one's lease has expired, and drives it to the right
//! verdict.

use serde_json::json;

use crate::support::{World, client_with_token, messages, rolling_out, slow_release};

#[tokio::test]
async fn a_kubernaut_killed_mid_rollout_resumes_and_reaches_the_verdict() {
    let Some(world) = World::start().await else {
        return;
    };
    world.create_namespace("shop").await;
    let mut server = world.replica("phoenix-a").await;
    let client = client_with_token(&world.admin_token("restart"));
    // Slow enough (5 s) to be caught mid-rollout even on a loaded machine.
    slow_release(&world, &client, &server.base, "phoenix", "1", 100).await;
    let id = rolling_out(
        &client,
        &server,
        &server,
        ("phoenix", "1", "shop"),
        json!({"timeout_seconds": 120}),
    )
    .await;

    server.restart().await;
    let done: serde_json::Value = client
        .get(format!("{}/api/deployments/{id}?wait=90", server.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        messages(&done)
            .iter()
            .any(|m| m.starts_with("resumed by phoenix-a")),
        "{done}"
    );
}
