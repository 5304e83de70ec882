//! `kill -9` of Kubernaut mid-rollout: the restarted process (a new instance) takes the
//! deployment over once the dead one's lease has expired, and drives it to the right
//! verdict.

use std::time::Duration;

use kubernaut_testkit::sim::Behaviour;
use serde_json::json;

use crate::support::{World, client_with_token, deploy, messages, release, until};

#[tokio::test]
async fn a_kubernaut_killed_mid_rollout_resumes_and_reaches_the_verdict() {
    let Some(world) = World::start().await else {
        return;
    };
    world.create_namespace("shop").await;
    // Slow enough (5 s) to be caught mid-rollout even on a loaded machine.
    world.sim.set_image_behaviour(
        "registry.local/phoenix:1",
        Behaviour::SlowStart { seconds: 100 },
    );
    let mut server = world.replica("phoenix-a").await;
    let client = client_with_token(&world.admin_token("restart"));
    release(
        &client,
        &server.base,
        "phoenix",
        "1",
        "registry.local/phoenix:1",
    )
    .await;
    let id = deploy(
        &client,
        &server.base,
        json!({"service": "phoenix", "version": "1", "cluster": "sim", "namespace": "shop", "timeout_seconds": 120}),
    )
    .await;
    until(
        &client,
        &server.base,
        &id,
        Duration::from_secs(30),
        "rolling out",
        |d| {
            assert_ne!(d["status"], "succeeded", "finished before the kill: {d}");
            d["status"] == "rolling_out"
        },
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
