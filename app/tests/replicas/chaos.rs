//! Chaos: three replicas of the real binary on one PostgreSQL, against the simulator,
//! driving 72 deployments of every kind while replicas are killed with `kill -9` and
//! restarted, PostgreSQL is restarted and then stopped for 20 s, and the simulator drops
//! every watch. Afterwards every deployment has exactly one verdict, the right one, and
//! every target takes the next deploy.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{LEASE_TTL_SECONDS, Replica, World, client_with_token, web_template};
use kubernaut_testkit::sim::Behaviour;
use serde_json::{Value, json};
use tokio::time::Instant;

/// How a service's deploy goes, and so what its verdict must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Healthy,
    Slow,
    CrashLoop,
    ImageNotFound,
    /// Slow, and cancelled mid-rollout through a replica other than the one asked.
    Cancelled,
    /// Crash-looping with `rollback_on_failure`, after a good release succeeded.
    RolledBack,
}

const KINDS: [Kind; 6] = [
    Kind::Healthy,
    Kind::Slow,
    Kind::CrashLoop,
    Kind::ImageNotFound,
    Kind::Cancelled,
    Kind::RolledBack,
];

/// Deploys of each kind.
const EACH: usize = 12;
/// Every deployment's timeout.
const TIMEOUT_SECONDS: i64 = 900;
/// The engine's retry window past the deadline (the default).
const RETRY_WINDOW_SECONDS: i64 = 60;

struct Service {
    name: String,
    kind: Kind,
    namespace: String,
}

impl Service {
    fn image(&self, version: &str) -> String {
        let name = &self.name;
        match (self.kind, version) {
            (Kind::RolledBack, "1") | (Kind::Healthy, _) | (_, "next") => {
                format!("registry.local/{name}:{version}")
            }
            (Kind::Slow | Kind::Cancelled, _) => format!("registry.local/{name}-slow:{version}"),
            (Kind::CrashLoop | Kind::RolledBack, _) => {
                format!("registry.local/{name}-crashloop:{version}")
            }
            (Kind::ImageNotFound, _) => format!("registry.local/{name}-notfound:{version}"),
        }
    }
}

/// Sends the request built by `make` to the replicas in turn until one answers
/// something other than a server error (replicas die and the database goes away).
async fn robust(
    client: &reqwest::Client,
    replicas: &[String],
    start: usize,
    make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = start;
    loop {
        let base = &replicas[attempt % replicas.len()];
        attempt += 1;
        if let Ok(response) = make(client, base).send().await {
            let status = response.status().as_u16();
            if status < 500
                && let Ok(body) = response.json::<Value>().await
            {
                return (status, body);
            }
        }
        assert!(Instant::now() < deadline, "no replica answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deploy(
    client: &reqwest::Client,
    replicas: &[String],
    start: usize,
    service: &Service,
    version: &str,
) -> String {
    let rollback = matches!(service.kind, Kind::Cancelled | Kind::RolledBack);
    let body = json!({
        "service": service.name, "version": version, "cluster": "sim",
        "namespace": service.namespace, "timeout_seconds": TIMEOUT_SECONDS,
        "rollback_on_failure": rollback,
    });
    let (status, answer) = robust(client, replicas, start, |client, base| {
        client.post(format!("{base}/api/deployments")).json(&body)
    })
    .await;
    match status {
        200..=202 => answer["id"].as_str().expect("an id").to_owned(),
        // A retry of a request whose first try was stored after all.
        409 => answer["existing_id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("409 without the active deployment: {answer}")),
        _ => panic!("deploy {} {version}: {status} {answer}", service.name),
    }
}

async fn register(client: &reqwest::Client, replicas: &[String], service: &Service, version: &str) {
    let body = json!({
        "service": service.name, "version": version, "image": service.image(version),
        "template": web_template(), "attributes": {"replicas": "2"},
    });
    let (status, answer) = robust(client, replicas, 0, |client, base| {
        client.post(format!("{base}/api/releases")).json(&body)
    })
    .await;
    assert!(status == 200 || status == 201, "{status} {answer}");
}

async fn read(client: &reqwest::Client, replicas: &[String], path: &str) -> Value {
    robust(client, replicas, 0, |client, base| {
        client.get(format!("{base}{path}"))
    })
    .await
    .1
}

/// Every page of a listing.
async fn all_pages(client: &reqwest::Client, replicas: &[String], path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}&limit=200&cursor={cursor}"),
            None => format!("{path}&limit=200"),
        };
        let page = read(client, replicas, &page_path).await;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn is_active(status: &Value) -> bool {
    matches!(status.as_str(), Some("queued" | "applying" | "rolling_out"))
}

fn time(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time")).expect("RFC 3339")
}

#[tokio::test]
async fn every_deployment_gets_exactly_one_right_verdict_through_kills_outages_and_dropped_watches()
{
    let Some(world) = World::start().await else {
        return;
    };
    let started = Instant::now();
    let mut replicas: Vec<Replica> = Vec::new();
    for n in 0..3 {
        replicas.push(world.replica(&format!("chaos-{n}")).await);
    }
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let client = client_with_token(&world.admin_token("chaos"));

    let mut services = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        for n in 0..EACH {
            services.push(Service {
                name: format!("svc-{k}-{n}"),
                kind: *kind,
                namespace: format!("ns-{}", n % 6),
            });
        }
    }
    for n in 0..6 {
        world.create_namespace(&format!("ns-{n}")).await;
    }
    // Slow rollouts take 5 to 20 s; the cancelled ones would take 100 s.
    for (n, service) in services.iter().enumerate() {
        let seconds = match service.kind {
            Kind::Slow => 100 + 60 * (n as u64 % 6),
            Kind::Cancelled => 2000,
            _ => continue,
        };
        world
            .sim
            .set_image_behaviour(&service.image("1"), Behaviour::SlowStart { seconds });
    }
    for service in &services {
        register(&client, &bases, service, "1").await;
        register(&client, &bases, service, "next").await;
        if service.kind == Kind::RolledBack {
            register(&client, &bases, service, "2").await;
        }
    }
    // The good release the rollbacks go back to.
    let mut goods = Vec::new();
    for service in services.iter().filter(|s| s.kind == Kind::RolledBack) {
        goods.push(deploy(&client, &bases, 0, service, "1").await);
    }
    for good in &goods {
        let deadline = Instant::now() + Duration::from_secs(60);
        while read(&client, &bases, &format!("/api/deployments/{good}")).await["status"]
            != "succeeded"
        {
            assert!(
                Instant::now() < deadline,
                "the good release never succeeded"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The chaos, while deploys are requested and run: the database and the watches
    // on one side, `kill -9` of each replica in turn (restarted 1.5 s later) on the other.
    let faults = async {
        let sim_faults = world.sim.faults();
        let postgres = &world.postgres;
        tokio::time::sleep(Duration::from_secs(6)).await;
        sim_faults.drop_watches();
        tokio::time::sleep(Duration::from_secs(6)).await;
        postgres.restart().expect("PostgreSQL restarts");
        tokio::time::sleep(Duration::from_secs(6)).await;
        postgres.stop().expect("PostgreSQL stops");
        tokio::time::sleep(Duration::from_secs(20)).await;
        postgres.start_again().expect("PostgreSQL starts again");
        tokio::time::sleep(Duration::from_secs(6)).await;
        sim_faults.drop_watches();
    };
    let kills = async {
        for victim in [0usize, 1, 2, 0, 1, 2] {
            tokio::time::sleep(Duration::from_secs(4)).await;
            replicas[victim].kill();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            replicas[victim].restart().await;
        }
    };
    let requests = async {
        for (n, service) in services.iter().enumerate() {
            let version = if service.kind == Kind::RolledBack {
                "2"
            } else {
                "1"
            };
            let id = deploy(&client, &bases, n, service, version).await;
            if service.kind == Kind::Cancelled {
                // Cancel through another replica than the one asked, once it rolls out.
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    let now = read(&client, &bases, &format!("/api/deployments/{id}")).await;
                    if now["status"] == "rolling_out" {
                        break;
                    }
                    assert!(is_active(&now["status"]), "{now}");
                    assert!(Instant::now() < deadline, "never rolled out: {now}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let (status, answer) = robust(&client, &bases, n + 1, |client, base| {
                    client.post(format!("{base}/api/deployments/{id}/cancel"))
                })
                .await;
                assert!(
                    status == 200 || (status == 409 && answer.to_string().contains("cancelled")),
                    "cancel: {status} {answer}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::join!(requests, faults, kills);

    // Every deployment reaches its verdict.
    let deadline = Instant::now() + Duration::from_secs(180);
    let deployments = loop {
        let all = all_pages(&client, &bases, "/api/deployments?cluster=sim").await;
        if all.iter().all(|d| !is_active(&d["status"])) {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "still active: {:?}",
            all.iter()
                .filter(|d| is_active(&d["status"]))
                .map(|d| (d["service"].clone(), d["status"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        deployments.len() >= KINDS.len() * EACH,
        "{} deployments",
        deployments.len()
    );
    let finished_audit = all_pages(&client, &bases, "/api/audit?action=deployment.finished").await;
    let cancelled_audit =
        all_pages(&client, &bases, "/api/audit?action=deployment.cancelled").await;
    let audits_of = |records: &[Value], id: &str| {
        records
            .iter()
            .filter(|r| r["target"] == format!("deployment/{id}"))
            .count()
    };
    let ttl_and_window = LEASE_TTL_SECONDS as i64 + RETRY_WINDOW_SECONDS;
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    for service in &services {
        let mine: Vec<&Value> = deployments
            .iter()
            .filter(|d| d["service"] == service.name.as_str())
            .collect();
        for listed in &mine {
            let id = listed["id"].as_str().expect("an id");
            let whole = read(&client, &bases, &format!("/api/deployments/{id}")).await;
            let status = whole["status"].as_str().expect("a status");
            *verdicts
                .entry(match status {
                    "succeeded" => "succeeded",
                    "failed" => "failed",
                    "cancelled" => "cancelled",
                    _ => "other",
                })
                .or_default() += 1;
            let is_rollback = !whole["rollback_of"].is_null();
            let is_good =
                service.kind == Kind::RolledBack && whole["version"] == "1" && !is_rollback;
            let expected = match service.kind {
                _ if is_rollback || is_good => "succeeded",
                Kind::Healthy | Kind::Slow => "succeeded",
                Kind::CrashLoop | Kind::ImageNotFound | Kind::RolledBack => "failed",
                Kind::Cancelled => "cancelled",
            };
            assert_eq!(
                status, expected,
                "{} ({:?}): {whole}",
                service.name, service.kind
            );
            // One verdict, recorded once.
            if status == "cancelled" {
                assert_eq!(audits_of(&cancelled_audit, id), 1, "{whole}");
                assert_eq!(audits_of(&finished_audit, id), 0, "{whole}");
            } else {
                assert_eq!(audits_of(&finished_audit, id), 1, "{whole}");
            }
            // Nothing written after the verdict: the timeline (in the order it was
            // written) ends with the lines of the verdict's own transaction, all in its
            // phase. (Their times come from the clocks of the replicas that wrote them.)
            let finished_at = time(&whole["finished_at"]);
            let phases: Vec<&str> = whole["timeline"]
                .as_array()
                .expect("a timeline")
                .iter()
                .filter_map(|entry| entry["phase"].as_str())
                .collect();
            let first = phases
                .iter()
                .position(|phase| *phase == status)
                .unwrap_or_else(|| panic!("no line of the verdict: {whole}"));
            assert!(
                phases[first..].iter().all(|phase| *phase == status),
                "a line after the verdict: {whole}"
            );
            // Never active past its deadline + the lease TTL + the retry window.
            if !whole["started_at"].is_null() {
                let active_for = finished_at - time(&whole["started_at"]);
                assert!(
                    active_for.num_seconds() <= TIMEOUT_SECONDS + ttl_and_window,
                    "{whole}"
                );
            }
            // Rollbacks: one for each failure with rollback_on_failure, none otherwise.
            let rollbacks = deployments
                .iter()
                .filter(|d| d["rollback_of"] == id)
                .count();
            let wants_rollback = status == "failed" && service.kind == Kind::RolledBack;
            assert_eq!(
                rollbacks,
                usize::from(wants_rollback),
                "rollbacks of {whole}"
            );
        }
    }

    // Every target takes the next deploy.
    for (n, service) in services.iter().enumerate() {
        let body = json!({
            "service": service.name, "version": "next", "cluster": "sim",
            "namespace": service.namespace,
        });
        let (status, answer) = robust(&client, &bases, n, |client, base| {
            client.post(format!("{base}/api/deployments")).json(&body)
        })
        .await;
        assert!(
            status == 201 || status == 202 || status == 200,
            "the next deploy of {} was refused: {status} {answer}",
            service.name
        );
    }
    eprintln!(
        "chaos: {} deployments ({verdicts:?}) in {:.0} s, through 6 kills, a PostgreSQL restart, 20 s without PostgreSQL and dropped watches",
        deployments.len(),
        started.elapsed().as_secs_f64(),
    );
}
