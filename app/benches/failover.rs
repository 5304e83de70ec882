//! Failover benchmark (issue 13): how long a deployment goes undriven when the replica
//! driving it is killed with `kill -9`.
//!
//! `cargo bench -p kubernaut --bench failover` starts a PostgreSQL server of its own
//! (testkit's `PostgresServer`), the simulated API server in this process and two
//! replicas of the `kubernaut` binary of this build, all on 127.0.0.1. Each round
//! deploys a rollout that never ends (through each replica in turn), kills the replica
//! that drives it, and measures from the kill to the first write of the new owner
//! (its "resumed by" timeline line, stamped by the same system clock); then cancels the
//! deployment and restarts the killed replica. The goal is the lease TTL plus 2 s at
//! most: the figures are printed beside the TTL they were measured with.
//!
//! The replicas run the shipped settings but the TTL: `FAILOVER_TTL_SECONDS` (default
//! 5; the shipped 15 only makes each round longer), and each kill falls at another
//! moment of the victim's heartbeat. `FAILOVER_KILLS` (default 20).
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[expect(
    dead_code,
    reason = "the replica helpers of the fault tests, not all of which this uses"
)]
#[path = "../tests/replicas/support.rs"]
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::{World, client_with_token, get, messages, rolling_out, slow_release, until};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn entry_time(deployment: &Value, prefix: &str) -> Option<DateTime<Utc>> {
    deployment["timeline"].as_array()?.iter().find_map(|entry| {
        entry["message"]
            .as_str()
            .filter(|m| m.starts_with(prefix))
            .and_then(|_| entry["at"].as_str())
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc))
    })
}

#[tokio::main]
async fn main() {
    let kills = env_number("FAILOVER_KILLS", 20);
    let ttl = env_number("FAILOVER_TTL_SECONDS", 5);
    let Some(world) = World::start().await else {
        println!("failover: skipped (no PostgreSQL programs on this machine)");
        return;
    };
    world.create_namespace("bench").await;
    let ttl_setting = ttl.to_string();
    // The shipped claim interval (the tests use 250 ms).
    let settings = [
        ("KUBERNAUT__ENGINE__LEASE_TTL_SECONDS", ttl_setting.as_str()),
        ("KUBERNAUT__ENGINE__CLAIM_INTERVAL_MS", "1000"),
    ];
    let mut replicas = [
        world.replica_with("failover-a", &settings).await,
        world.replica_with("failover-b", &settings).await,
    ];
    let client = client_with_token(&world.admin_token("bench"));
    slow_release(
        &world,
        &client,
        &replicas[0].base,
        "failover",
        "1",
        1_000_000,
    )
    .await;
    let mut failovers = Vec::new();
    for round in 0..kills {
        let asked = usize::try_from(round % 2).unwrap_or_default();
        let id = rolling_out(
            &client,
            &replicas[asked],
            &replicas[1 - asked],
            ("failover", "1", "bench"),
            json!({"timeout_seconds": 3600}),
        )
        .await;
        // Whichever replica claimed it first (the one asked, or another that heard of it)
        // is the one killed.
        let rolling = get(&client, &replicas[asked].base, &id).await;
        let victim = replicas
            .iter()
            .position(|r| {
                messages(&rolling)
                    .iter()
                    .any(|m| m.contains(&format!("driven by {}-", r.name)))
            })
            .unwrap_or_else(|| panic!("no replica drives it: {rolling}"));
        let survivor = 1 - victim;
        let victim_name = replicas[victim].name.clone();
        // Killed at a different moment of its heartbeat (every TTL/3) each round.
        let heartbeat_ms = ttl * 1000 / 3;
        tokio::time::sleep(Duration::from_millis(round * 397 % heartbeat_ms)).await;
        let killed_at = Utc::now();
        replicas[victim].kill();
        let survivor_name = replicas[survivor].name.clone();
        let prefix = format!("resumed by {survivor_name}");
        let taken = until(
            &client,
            &replicas[survivor].base,
            &id,
            Duration::from_secs(ttl + 60),
            "taken over",
            |d| entry_time(d, &prefix).is_some(),
        )
        .await;
        let first_write = entry_time(&taken, &prefix).expect("the new owner's line");
        let seconds = (first_write - killed_at).as_seconds_f64();
        println!(
            "round {round:>2}: {victim_name} killed, {survivor_name} wrote after {seconds:.2} s"
        );
        failovers.push(seconds);
        let cancelled = client
            .post(format!(
                "{}/api/deployments/{id}/cancel",
                replicas[survivor].base
            ))
            .send()
            .await
            .expect("sent");
        assert_eq!(cancelled.status(), 200);
        assert_eq!(
            get(&client, &replicas[survivor].base, &id).await["status"],
            "cancelled"
        );
        replicas[victim].restart().await;
    }
    failovers.sort_by(f64::total_cmp);
    let median = percentile(&failovers, 0.5);
    let max = failovers.last().copied().unwrap_or_default();
    let goal = ttl as f64 + 2.0;
    println!();
    println!("failover, kill -9 of the owner -> the new owner's first write, {kills} kills:");
    println!("  lease TTL (reference)  {ttl:>6.2} s");
    println!(
        "  median                 {median:>6.2} s   (TTL + {:.2} s)",
        median - ttl as f64
    );
    println!(
        "  max                    {max:>6.2} s   (TTL + {:.2} s)",
        max - ttl as f64
    );
    println!(
        "  goal: TTL + 2 s = {goal:.2} s at most: {}",
        if max <= goal { "met" } else { "MISSED" }
    );
}
