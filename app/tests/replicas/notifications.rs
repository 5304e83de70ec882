//! Notifications through a replica's death: the replica attempting a delivery is
//! killed (`kill -9`) while the receivers still fail; the other replica takes the
//! delivery over once the claim expires, and each receiver accepts exactly once.

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use kubernaut_testkit::receiver::{Behaviour, Receiver};
use serde_json::{Value, json};

use crate::support::{World, client_with_token, deploy, release, verdict};

/// Seconds an attempt may take, and a claim lasts, in this test.
const ATTEMPT_TIMEOUT_SECONDS: u64 = 2;
const CLAIM_LEASE_SECONDS: u64 = 4;

/// The replica (its instance id) holding the claim on the delivery to `sink`, as the
/// database says.
fn holder(world: &World, sink: &str) -> Option<String> {
    let output = Command::new("psql")
        .args([
            &world.database_url,
            "-tAc",
            &format!(
                "SELECT claim_owner FROM notification_deliveries WHERE sink = '{sink}' AND claim_expires_at > now()"
            ),
        ])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{output:?}");
    let owner = String::from_utf8(output.stdout).expect("UTF-8");
    let owner = owner.trim();
    (!owner.is_empty()).then(|| owner.to_owned())
}

async fn notifications(client: &reqwest::Client, base: &str, id: &str) -> Vec<Value> {
    let body: Value = client
        .get(format!("{base}/api/deployments/{id}/notifications"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_retry_leaves_its_deliveries_to_another_and_each_receiver_accepts_once()
 {
    let Some(world) = World::start().await else {
        return;
    };
    // Both receivers refuse the first attempt and hang on the next ones, until told to
    // accept.
    let hook = Receiver::start(vec![Behaviour::Answer(503, "busy".to_owned())]).await;
    hook.set_default(Behaviour::Hang);
    let events = Receiver::start(vec![Behaviour::Answer(500, "down".to_owned())]).await;
    events.set_default(Behaviour::Hang);
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&world.config)
        .expect("the configuration opens");
    write!(
        config,
        "\n[notifications]\npoll_interval_ms = 100\nattempt_timeout_seconds = {ATTEMPT_TIMEOUT_SECONDS}\nclaim_lease_seconds = {CLAIM_LEASE_SECONDS}\nretry_initial_delay_seconds = 1\nretry_max_delay_seconds = 2\nretry_jitter = 0.0\n\n[[notifications.sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nsecret_env = \"HOOK_SECRET\"\n\n[[notifications.sinks]]\nname = \"cdevents\"\nkind = \"cdevents\"\nurl = \"{}/events\"\nsource = \"/kubernaut/test\"\n\n[[notifications.rules]]\nsink = \"hook\"\nevents = [\"succeeded\"]\n\n[[notifications.rules]]\nsink = \"cdevents\"\nservice = \"w?b\"\nevents = [\"succeeded\"]\n",
        hook.url(),
        events.url()
    )
    .expect("the notification settings are written");
    drop(config);
    world.create_namespace("shop").await;
    let secret = [("HOOK_SECRET", "s3cret")];
    let mut a = world.replica_with("a", &secret).await;
    let mut b = world.replica_with("b", &secret).await;
    let client = client_with_token(&world.admin_token("ci"));

    release(&client, &a.base, "web", "1.0.0", "registry.local/web:1.0.0").await;
    let id = deploy(
        &client,
        &a.base,
        json!({"service": "web", "version": "1.0.0", "cluster": "sim", "namespace": "shop"}),
    )
    .await;
    assert_eq!(verdict(&client, &b.base, &id).await["status"], "succeeded");

    // Refused once, then held hanging by some replica: kill that one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if hook.received().len() >= 2
            && let Some(owner) = holder(&world, "hook")
        {
            break owner;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry never came: {:?}",
            hook.received().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivor = if victim.starts_with("a-") {
        a.kill();
        &b
    } else {
        assert!(victim.starts_with("b-"), "{victim}");
        b.kill();
        &a
    };
    hook.set_default(Behaviour::Answer(200, "ok".to_owned()));
    events.set_default(Behaviour::Answer(202, String::new()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let deliveries = loop {
        let deliveries = notifications(&client, &survivor.base, &id).await;
        if deliveries.len() == 2 && deliveries.iter().all(|d| d["status"] == "delivered") {
            break deliveries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered after the kill: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Exactly one success per receiver, and it came from the survivor.
    for (receiver, name) in [(&hook, "hook"), (&events, "cdevents")] {
        let received = receiver.received();
        let accepted = received.iter().filter(|r| r.accepted()).count();
        assert_eq!(accepted, 1, "{name}: {} requests", received.len());
        let ids: Vec<Option<&str>> = received
            .iter()
            .map(|r| r.header("x-kubernaut-event-id").or(r.header("ce-id")))
            .collect();
        assert!(
            ids.iter().all(|i| i.is_some() && *i == ids[0]),
            "{name}: {ids:?}"
        );
    }
    for delivery in &deliveries {
        let attempts = delivery["attempts"].as_array().expect("attempts");
        let successes: Vec<&Value> = attempts.iter().filter(|a| a["succeeded"] == true).collect();
        assert_eq!(successes.len(), 1, "{delivery}");
        let last = attempts.last().expect("attempted");
        assert_eq!(last["succeeded"], true);
        assert!(
            last["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("{}-", survivor.name))),
            "{delivery}"
        );
        assert_eq!(attempts[0]["succeeded"], false);
    }
    // The killed replica's hanging attempt was never recorded: the hook's record is
    // the refusal and the survivor's success (and any timeouts the survivor had).
    let hook_delivery = deliveries
        .iter()
        .find(|d| d["sink"] == "hook")
        .expect("the hook's delivery");
    let recorded_by_victim = hook_delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .skip(1)
        .filter(|a| a["replica"] == victim.as_str())
        .count();
    assert_eq!(recorded_by_victim, 0, "{hook_delivery}");
    drop(a);
    drop(b);
}
