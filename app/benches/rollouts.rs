//! Rollout benchmark (issue 4): how fast Kubernaut stores a verdict once the simulated
//! cluster has decided, and what 200 concurrent deployments cost it.
//!
//! `cargo bench -p kubernaut --bench rollouts` starts the simulated API server in this
//! process (time scale 20), a fresh PostgreSQL database (`KUBERNAUT_TEST_DATABASE_URL`,
//! as the tests) and the `kubernaut` binary of this build as a child process, all on
//! 127.0.0.1. Two watches of its own on the simulator (Deployments and Pods, every
//! namespace) record the wall-clock instant each rollout became complete and each pod
//! became doomed; the deployment's `finished_at`, stored by Kubernaut with the same
//! system clock, is the verdict.
//!
//! 1. Verdict latency: good deployments one after the other, rollout complete ->
//!    `finished_at` (target: median under 100 ms).
//! 2. Doomed pod -> failed verdict: crash-looping and image-not-found deployments one
//!    after the other, from the instant every pod of the deployment was doomed (and from
//!    the first doomed pod) to `finished_at` (target: under 2 s).
//! 3. 200 deployments to 200 namespaces requested at once (170 good, 10 crash loops,
//!    10 missing images, 10 timeouts): every verdict checked, wall time, Kubernaut's
//!    peak RSS and CPU time.
//!
//! 4. 1,000 deployments over 200 namespaces requested at once (issue 17): five services
//!    per namespace, a quarter of them crash-looping or missing their image. Every
//!    verdict checked, wall time, the most watch streams the simulator served to
//!    Kubernaut at once and the most TCP connections Kubernaut held to it, Kubernaut's
//!    CPU seconds (per deploy) and peak RSS.
//!
//! Environment: `ROLLOUTS_LATENCY_RUNS` (default 30), `ROLLOUTS_DOOMED_RUNS` (default
//! 10 of each kind), `ROLLOUTS_FLEET` (default 200), `ROLLOUTS_BURST` (default 1000),
//! `ROLLOUTS_BURST_NAMESPACES` (default 200), `ROLLOUTS_PHASES` (default `1,2,3,4`),
//! `ROLLOUTS_CREDENTIALS=namespace-only` (Kubernaut gets credentials that may list and
//! watch only namespace by namespace: the simulator answers its cluster-wide lists and
//! watches `403 Forbidden`), `ROLLOUTS_ALLOCATOR=defaults` (Kubernaut runs with
//! mimalloc's own settings instead of the image's `MIMALLOC_*` ones).
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::sim::{Behaviour, Simulator};
use serde_json::{Value, json};

/// Simulated seconds per real second (the tests' scale).
const TIME_SCALE: f64 = 20.0;
/// Simulated nodes: 32 x 110 pods leaves room for every phase's pods (2,000 in phase 4).
const NODES: usize = 32;
const REPLICAS: i64 = 2;
/// Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
const SLOW_IMAGE: &str = "registry.local/bench:slow";
const FLEET_TIMEOUT_SECONDS: u64 = 5;

const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\nspec:\n  replicas: {{ replicas }}\n  selector:\n    matchLabels:\n      app: {{ service }}\n  template:\n    metadata:\n      labels:\n        app: {{ service }}\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n        ports:\n        - containerPort: 8080\n        readinessProbe:\n          httpGet:\n            path: /health\n            port: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service }}\nspec:\n  selector:\n    app: {{ service }}\n  ports:\n  - port: 80\n    targetPort: 8080\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-settings\ndata:\n  namespace: \"{{ namespace }}\"\n";

/// What the benchmark's own watches saw, keyed by (namespace, Deployment name / `app` label).
#[derive(Debug, Default)]
struct Observed {
    complete: HashMap<(String, String), DateTime<Utc>>,
    doomed_pods: HashMap<(String, String), HashMap<String, DateTime<Utc>>>,
}

type Shared = Arc<Mutex<Observed>>;

fn lock(observed: &Shared) -> MutexGuard<'_, Observed> {
    observed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(object: &Value, name: &str) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name.to_owned(),
    )
}

/// ROLLOUT.md's success rule for a Deployment.
fn deployment_complete(deployment: &Value) -> bool {
    let status = &deployment["status"];
    let wanted = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let current = match (
        deployment["metadata"]["generation"].as_i64(),
        status["observedGeneration"].as_i64(),
    ) {
        (Some(generation), Some(observed)) => observed >= generation,
        _ => false,
    };
    current
        && [
            "updatedReplicas",
            "availableReplicas",
            "readyReplicas",
            "replicas",
        ]
        .iter()
        .all(|field| status[*field].as_i64() == Some(wanted))
}

/// krane's doomed container states that the simulator produces.
fn pod_doomed(pod: &Value) -> bool {
    pod["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|statuses| {
            statuses.iter().any(|status| {
                let waiting = &status["state"]["waiting"];
                match waiting["reason"].as_str() {
                    Some("CrashLoopBackOff") => true,
                    Some("ErrImagePull" | "ImagePullBackOff") => waiting["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("not found")),
                    _ => false,
                }
            })
        })
}

fn on_deployment(object: &Value, at: DateTime<Utc>, observed: &mut Observed) {
    if deployment_complete(object) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        observed.complete.entry(key(object, name)).or_insert(at);
    }
}

fn on_pod(object: &Value, at: DateTime<Utc>, observed: &mut Observed) {
    if pod_doomed(object) {
        let app = object["metadata"]["labels"]["app"]
            .as_str()
            .unwrap_or_default();
        let pod = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        observed
            .doomed_pods
            .entry(key(object, app))
            .or_default()
            .entry(pod)
            .or_insert(at);
    }
}

/// Watches one kind in every namespace, resuming after a dropped watch; each event is
/// stamped with the instant its chunk arrived.
async fn watch(
    client: reqwest::Client,
    url: String,
    observed: Shared,
    handle: fn(&Value, DateTime<Utc>, &mut Observed),
) {
    let mut resource_version = String::new();
    loop {
        let mut request = format!("{url}?watch=true&timeoutSeconds=3600");
        if !resource_version.is_empty() {
            request.push_str(&format!("&resourceVersion={resource_version}"));
        }
        let Ok(mut response) = client.get(&request).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut buffer: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let at = Utc::now();
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if event["type"] == "ERROR" {
                    resource_version.clear();
                    continue;
                }
                let object = &event["object"];
                if let Some(version) = object["metadata"]["resourceVersion"].as_str() {
                    version.clone_into(&mut resource_version);
                }
                handle(object, at, &mut lock(&observed));
            }
        }
    }
}

/// The `kubernaut` binary of this build, serving on a port of its own.
#[derive(Debug)]
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(database_url: &str, kubeconfig: &std::path::Path, dir: &std::path::Path) -> Self {
        Self::start_with(database_url, kubeconfig, dir, &[])
    }

    fn start_with(
        database_url: &str,
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("kubernaut.toml");
        std::fs::write(
            &config,
            format!(
                "[deployments]\nuse_current_kubeconfig_context = false\n\n[[clusters]]\nname = \"sim\"\nkubeconfig = {:?}\nclock_scale = {TIME_SCALE:.1}\n",
                kubeconfig.display().to_string()
            ),
        )
        .expect("the config file is written");
        let log = std::fs::File::create(dir.join("kubernaut.log")).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("KUBERNAUT__DATABASE__URL", database_url)
            .env("KUBERNAUT__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("KUBERNAUT__LOG__FILTER", "warn")
            .env("KUBERNAUT__SECURITY__MUTATIONS_PER_MINUTE", "0")
            // Every deploy of a burst waits for its verdict on one token.
            .env("KUBERNAUT__SECURITY__STREAMS_PER_TOKEN", "4000")
            .env("KUBERNAUT__SECURITY__STREAMS_TOTAL", "4000")
            .env_remove("RUST_LOG")
            .envs(allocator_settings())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file again"))
            .stderr(log)
            .spawn()
            .expect("kubernaut starts");
        Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    fn status_field(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|value| value.parse::<f64>().ok())
    }

    /// Resident set size now and at its peak, in MiB.
    fn memory(&self) -> (f64, f64) {
        (
            self.status_field("VmRSS")
                .map_or(f64::NAN, |kib| kib / 1024.0),
            self.status_field("VmHWM")
                .map_or(f64::NAN, |kib| kib / 1024.0),
        )
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return f64::NAN;
        };
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| {
            fields
                .get(index)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        // Fields 14 (utime) and 15 (stime) of proc(5); index 0 here is field 3.
        (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_SECOND
    }

    fn threads(&self) -> f64 {
        self.status_field("Threads").unwrap_or(f64::NAN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    http: reqwest::Client,
    server: Server,
    sim: Simulator,
    observed: Shared,
}

/// A service of the burst: name, image, expected status and reason, timeout.
type Kind = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<u64>,
);

/// One requested deployment and what it should end as.
#[derive(Debug, Clone)]
struct Planned {
    namespace: String,
    service: String,
    status: &'static str,
    reason: Option<&'static str>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug)]
struct Outcome {
    planned: Planned,
    deployment: Value,
    requested: DateTime<Utc>,
    answered: DateTime<Utc>,
}

impl Outcome {
    fn finished(&self) -> Option<DateTime<Utc>> {
        self.deployment["finished_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// The timeline's first and last `applying` entries.
    fn applying(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let times: Vec<DateTime<Utc>> = self.deployment["timeline"]
            .as_array()?
            .iter()
            .filter(|entry| entry["phase"] == "applying")
            .filter_map(|entry| entry["at"].as_str())
            .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .collect();
        Some((*times.iter().min()?, *times.iter().max()?))
    }

    fn status_right(&self) -> bool {
        self.deployment["status"] == self.planned.status
    }

    fn right(&self) -> bool {
        self.deployment["status"] == self.planned.status
            && self
                .planned
                .reason
                .is_none_or(|reason| self.deployment["reason"] == reason)
    }
}

impl Bench {
    async fn create_namespace(&self, name: &str) {
        let response = self
            .http
            .post(format!("{}/api/v1/namespaces", self.sim.url()))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .send()
            .await
            .expect("namespace request");
        assert!(response.status().is_success(), "namespace {name}");
    }

    async fn release(&self, service: &str, image: &str) {
        let response = self
            .http
            .post(format!("{}/api/releases", self.server.address))
            .json(&json!({
                "service": service, "version": "1", "image": image, "template": TEMPLATE,
                "attributes": { "replicas": REPLICAS.to_string() },
            }))
            .send()
            .await
            .expect("release request");
        assert_eq!(response.status(), 201, "release {service}");
    }

    /// Requests the deployment and holds on until its verdict.
    async fn deploy(&self, planned: Planned) -> Outcome {
        let mut body = json!({
            "service": planned.service, "version": "1", "cluster": "sim",
            "namespace": planned.namespace,
        });
        if let (Some(seconds), Some(body)) = (planned.timeout_seconds, body.as_object_mut()) {
            body.insert("timeout_seconds".to_owned(), json!(seconds));
        }
        let requested = Utc::now();
        let response = self
            .http
            .post(format!("{}/api/deployments", self.server.address))
            .json(&body)
            .send()
            .await
            .expect("deploy request");
        assert_eq!(response.status(), 202, "deploy {}", planned.service);
        let accepted: Value = response.json().await.expect("deployment JSON");
        let id = accepted["id"].as_str().expect("an id").to_owned();
        loop {
            let deployment: Value = self
                .http
                .get(format!(
                    "{}/api/deployments/{id}?wait=30",
                    self.server.address
                ))
                .send()
                .await
                .expect("wait request")
                .json()
                .await
                .expect("deployment JSON");
            let status = deployment["status"].as_str().unwrap_or_default();
            if !["queued", "applying", "rolling_out"].contains(&status) {
                return Outcome {
                    planned,
                    deployment,
                    requested,
                    answered: Utc::now(),
                };
            }
        }
    }

    fn complete_at(&self, planned: &Planned) -> Option<DateTime<Utc>> {
        lock(&self.observed)
            .complete
            .get(&(planned.namespace.clone(), planned.service.clone()))
            .copied()
    }

    /// When the first pod and when the last of the deployment's pods became doomed.
    fn doomed_at(&self, planned: &Planned) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let observed = lock(&self.observed);
        let pods = observed
            .doomed_pods
            .get(&(planned.namespace.clone(), planned.service.clone()))?;
        if i64::try_from(pods.len()).ok()? < REPLICAS {
            return None;
        }
        Some((*pods.values().min()?, *pods.values().max()?))
    }
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "microseconds of a benchmark")]
    let micros = (to - from).num_microseconds().unwrap_or(i64::MAX) as f64;
    micros / 1000.0
}

#[derive(Debug)]
struct Summary {
    count: usize,
    median: f64,
    p90: f64,
    max: f64,
    min: f64,
}

fn summarize(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a nearest-rank percentile of a short list"
        )]
        let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    };
    (!sorted.is_empty()).then(|| Summary {
        count: sorted.len(),
        median: rank(0.5),
        p90: rank(0.9),
        max: rank(1.0),
        min: sorted[0],
    })
}

/// A limit in milliseconds and the figure of a summary it applies to.
type Target = Option<(f64, fn(&Summary) -> f64)>;

fn row(label: &str, values: &[f64], target: Target) {
    match summarize(values) {
        None => println!("{label:<44} no samples"),
        Some(s) => {
            let verdict = target.map_or(String::new(), |(limit, pick)| {
                let passed = pick(&s) < limit;
                format!(
                    "  target < {limit:.0} ms: {}",
                    if passed { "PASS" } else { "MISSED" }
                )
            });
            println!(
                "{label:<44} n={:<3} min {:>7.1}  median {:>7.1}  p90 {:>7.1}  max {:>7.1} ms{verdict}",
                s.count, s.min, s.median, s.p90, s.max
            );
        }
    }
}

/// Where a set of deployments spent their time, from their timelines.
fn breakdown(label: &str, outcomes: &[Outcome]) {
    let mut queued = Vec::new();
    let mut applying = Vec::new();
    let mut watching = Vec::new();
    for outcome in outcomes {
        let created = outcome.deployment["created_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        if let (Some(created), Some((first, last)), Some(finished)) =
            (created, outcome.applying(), outcome.finished())
        {
            queued.push(millis(created, first));
            applying.push(millis(first, last));
            watching.push(millis(last, finished));
        }
    }
    println!("   {label}, from the timelines:");
    row("     requested -> applying", &queued, None);
    row("     applying -> last object applied", &applying, None);
    row("     last object applied -> verdict", &watching, None);
}

/// Latencies of a cheap request to the simulator and to Kubernaut, sampled until aborted.
async fn probe(
    http: reqwest::Client,
    sim: String,
    kubernaut: String,
    samples: Arc<Mutex<(Vec<f64>, Vec<f64>)>>,
) {
    loop {
        let started = Instant::now();
        let _ = http
            .get(format!("{sim}/api/v1/namespaces/default"))
            .send()
            .await;
        let sim_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let _ = http.get(format!("{kubernaut}/healthz")).send().await;
        let kubernaut_ms = started.elapsed().as_secs_f64() * 1000.0;
        {
            let mut samples = samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            samples.0.push(sim_ms);
            samples.1.push(kubernaut_ms);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// TCP connections the process `pid` holds open to `port`.
fn tcp_connections(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(|line| {
                    line.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        // Fields of proc(5): 2 remote address, 3 state (01 established), 9 inode.
        .filter(|fields| {
            fields.get(2).is_some_and(|remote| remote.ends_with(&port))
                && fields.get(3).is_some_and(|state| state == "01")
                && fields.get(9).is_some_and(|inode| sockets.contains(inode))
        })
        .count()
}

/// This process's user + system CPU seconds (the simulator and the watches).
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_SECOND
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An admin token made by `kubernaut admin create-token` on the benchmark's database
/// (which it migrates): every `/api` request carries one since issue 7.
fn admin_token(database_url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args([
            "admin",
            "create-token",
            "--name",
            "bench",
            "--role",
            "admin",
        ])
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("kubernaut admin create-token runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// The allocator settings Kubernaut's image runs with (the `Dockerfile`'s `ENV`), unless
/// `ROLLOUTS_ALLOCATOR=defaults` asks for mimalloc's own.
fn allocator_settings() -> Vec<(&'static str, &'static str)> {
    if std::env::var("ROLLOUTS_ALLOCATOR").is_ok_and(|v| v == "defaults") {
        Vec::new()
    } else {
        vec![
            ("MIMALLOC_PURGE_DELAY", "0"),
            ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ]
    }
}

fn median_of(s: &Summary) -> f64 {
    s.median
}

fn max_of(s: &Summary) -> f64 {
    s.max
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // The whole run stops by itself, whatever happens.
        match tokio::time::timeout(Duration::from_secs(1800), run()).await {
            Ok(()) => {}
            Err(_) => println!("the benchmark did not finish within 30 minutes"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[expect(clippy::too_many_lines, reason = "the three phases read best in order")]
async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let latency_runs = env_count("ROLLOUTS_LATENCY_RUNS", 30);
    let doomed_runs = env_count("ROLLOUTS_DOOMED_RUNS", 10);
    let fleet = env_count("ROLLOUTS_FLEET", 200);
    let burst = env_count("ROLLOUTS_BURST", 1000);
    let burst_namespaces = env_count("ROLLOUTS_BURST_NAMESPACES", 200).max(1);
    let phases = std::env::var("ROLLOUTS_PHASES").unwrap_or_else(|_| "1,2,3,4".to_owned());
    let phase = |n: &str| phases.split(',').any(|p| p.trim() == n);
    let namespace_only = std::env::var("ROLLOUTS_CREDENTIALS").is_ok_and(|c| c == "namespace-only");

    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .nodes(NODES)
        .start()
        .await
        .expect("the simulator starts");
    sim.set_image_behaviour(SLOW_IMAGE, Behaviour::SlowStart { seconds: 3600 });
    let database = TestDatabase::create().expect("a fresh database");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = admin_token(database.url());
    let kubeconfig = if namespace_only {
        let path = dir.path().join("namespace-only.kubeconfig");
        std::fs::write(&path, sim.namespace_only_kubeconfig_yaml())
            .expect("the namespace-only kubeconfig is written");
        path
    } else {
        sim.kubeconfig_path().to_owned()
    };
    let server = Server::start(database.url(), &kubeconfig, dir.path());
    let mut bearer =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
    bearer.set_sensitive(true);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            bearer,
        )]))
        .build()
        .expect("an HTTP client");
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("{}/readyz", server.address))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < ready_by,
            "kubernaut did not become ready; see {}",
            dir.path().join("kubernaut.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let observed: Shared = Arc::default();
    let watches = [
        tokio::spawn(watch(
            http.clone(),
            format!("{}/apis/apps/v1/deployments", sim.url()),
            observed.clone(),
            on_deployment,
        )),
        tokio::spawn(watch(
            http.clone(),
            format!("{}/api/v1/pods", sim.url()),
            observed.clone(),
            on_pod,
        )),
    ];
    let bench = Bench {
        http,
        server,
        sim,
        observed,
    };
    let (_, idle_peak) = bench.server.memory();
    println!(
        "rollouts benchmark: simulator time scale {TIME_SCALE}, {NODES} nodes, {REPLICAS} replicas per deployment, kubernaut pid {}, credentials {}",
        bench.server.child.id(),
        if namespace_only {
            "namespace-only"
        } else {
            "cluster-wide"
        }
    );
    println!("kubernaut started: peak RSS {idle_peak:.1} MiB");
    println!(
        "kubernaut's allocator: mimalloc with {}",
        if allocator_settings().is_empty() {
            "its own defaults (ROLLOUTS_ALLOCATOR=defaults)".to_owned()
        } else {
            allocator_settings()
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(" ")
                + " (the image's settings)"
        }
    );

    // 1. Rollout complete -> verdict stored, one deployment at a time.
    bench.create_namespace("latency").await;
    let mut latency = Vec::new();
    let mut wrong = Vec::new();
    let mut sequential = Vec::new();
    let latency_runs = if phase("1") { latency_runs } else { 0 };
    let doomed_runs = if phase("2") { doomed_runs } else { 0 };
    let fleet = if phase("3") { fleet } else { 0 };
    for i in 0..latency_runs {
        let service = format!("good-{i:03}");
        bench.release(&service, "registry.local/web:1").await;
        let outcome = bench
            .deploy(Planned {
                namespace: "latency".to_owned(),
                service,
                status: "succeeded",
                reason: None,
                timeout_seconds: None,
            })
            .await;
        if !outcome.right() {
            wrong.push(outcome.deployment.to_string());
        }
        if let (Some(complete), Some(finished)) =
            (bench.complete_at(&outcome.planned), outcome.finished())
        {
            latency.push(millis(complete, finished));
        }
        sequential.push(outcome);
    }

    // 2. Doomed pods -> failed verdict, one deployment at a time.
    bench.create_namespace("doomed").await;
    let mut doomed_last = Vec::new();
    let mut doomed_first = Vec::new();
    for (kind, image, reason) in [
        ("crash", "registry.local/crashloop:1", "crash_loop"),
        ("missing", "registry.local/notfound:1", "image_not_found"),
    ] {
        for i in 0..doomed_runs {
            let service = format!("{kind}-{i:03}");
            bench.release(&service, image).await;
            let outcome = bench
                .deploy(Planned {
                    namespace: "doomed".to_owned(),
                    service,
                    status: "failed",
                    reason: Some(reason),
                    timeout_seconds: None,
                })
                .await;
            if !outcome.right() {
                wrong.push(outcome.deployment.to_string());
            }
            if let (Some((first, last)), Some(finished)) =
                (bench.doomed_at(&outcome.planned), outcome.finished())
            {
                doomed_first.push(millis(first, finished));
                doomed_last.push(millis(last, finished));
            }
        }
    }

    // 3. `fleet` deployments to as many namespaces, all requested at once.
    let kinds: [Kind; 4] = [
        ("web", "registry.local/web:1", "succeeded", None, None),
        (
            "crash",
            "registry.local/crashloop:1",
            "failed",
            Some("crash_loop"),
            None,
        ),
        (
            "missing",
            "registry.local/notfound:1",
            "failed",
            Some("image_not_found"),
            None,
        ),
        (
            "slow",
            SLOW_IMAGE,
            "timed_out",
            None,
            Some(FLEET_TIMEOUT_SECONDS),
        ),
    ];
    for (kind, image, ..) in &kinds {
        bench.release(&format!("fleet-{kind}"), image).await;
    }
    let mut plans = Vec::new();
    for i in 0..fleet {
        let namespace = format!("fleet-{i:03}");
        bench.create_namespace(&namespace).await;
        let (kind, _, status, reason, timeout_seconds) = match i % 20 {
            0 => kinds[1],
            1 => kinds[2],
            2 => kinds[3],
            _ => kinds[0],
        };
        plans.push(Planned {
            namespace,
            service: format!("fleet-{kind}"),
            status,
            reason,
            timeout_seconds,
        });
    }
    let (rss_before, _) = bench.server.memory();
    let cpu_before = bench.server.cpu_seconds();
    let own_cpu_before = own_cpu_seconds();
    let probes: Arc<Mutex<(Vec<f64>, Vec<f64>)>> = Arc::default();
    let prober = tokio::spawn(probe(
        bench.http.clone(),
        bench.sim.url().to_owned(),
        bench.server.address.clone(),
        probes.clone(),
    ));
    let started = Instant::now();
    let outcomes = join_all(plans.into_iter().map(|plan| bench.deploy(plan))).await;
    let wall = started.elapsed();
    prober.abort();
    let cpu = bench.server.cpu_seconds() - cpu_before;
    let own_cpu = own_cpu_seconds() - own_cpu_before;
    let (sim_probe, kubernaut_probe) = probes
        .lock()
        .map(|p| p.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    let (rss_after, peak) = bench.server.memory();
    let threads = bench.server.threads();

    let mut fleet_latency = Vec::new();
    let mut fleet_doomed = Vec::new();
    let mut fleet_wall = Vec::new();
    let mut fleet_right = 0;
    let mut fleet_status_right = 0;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for outcome in &outcomes {
        *counts
            .entry(format!(
                "{} {}",
                outcome.deployment["status"].as_str().unwrap_or("?"),
                outcome.deployment["reason"].as_str().unwrap_or("")
            ))
            .or_default() += 1;
        if outcome.status_right() {
            fleet_status_right += 1;
        }
        if outcome.right() {
            fleet_right += 1;
        } else {
            wrong.push(outcome.deployment.to_string());
        }
        if let Some(finished) = outcome.finished() {
            if outcome.planned.status == "succeeded" {
                fleet_wall.push(millis(outcome.requested, outcome.answered));
                if let Some(complete) = bench.complete_at(&outcome.planned) {
                    fleet_latency.push(millis(complete, finished));
                }
            } else if let Some((_, last)) = bench.doomed_at(&outcome.planned) {
                fleet_doomed.push(millis(last, finished));
            }
        }
    }
    let burst_report = if phase("4") && burst > 0 {
        Some(run_burst(&bench, burst, burst_namespaces).await)
    } else {
        None
    };
    for watch in watches {
        watch.abort();
    }

    println!();
    println!(
        "1. rollout complete -> verdict stored ({latency_runs} good deployments, one at a time)"
    );
    row(
        "   complete -> finished_at",
        &latency,
        Some((100.0, median_of)),
    );
    println!(
        "2. doomed pods -> failed verdict ({doomed_runs} crash loops + {doomed_runs} missing images, one at a time)"
    );
    row(
        "   every pod doomed -> finished_at",
        &doomed_last,
        Some((2000.0, max_of)),
    );
    row("   first pod doomed -> finished_at", &doomed_first, None);
    breakdown("the good ones", &sequential);
    println!("3. {fleet} deployments to {fleet} namespaces, requested at once");
    println!(
        "   verdicts right (status and reason): {fleet_right}/{}, status right: {fleet_status_right} ({})",
        outcomes.len(),
        {
            let mut c: Vec<String> = counts
                .iter()
                .map(|(k, v)| format!("{v} {}", k.trim()))
                .collect();
            c.sort();
            c.join(", ")
        }
    );
    println!(
        "   wall time, all requested -> last verdict: {:.2} s",
        wall.as_secs_f64()
    );
    row("   good: request -> verdict answered", &fleet_wall, None);
    row(
        "   good: complete -> finished_at",
        &fleet_latency,
        Some((100.0, median_of)),
    );
    row(
        "   doomed: every pod doomed -> finished_at",
        &fleet_doomed,
        Some((2000.0, max_of)),
    );
    breakdown("all of them", &outcomes);
    row(
        "   probe: GET a namespace from the simulator",
        &sim_probe,
        None,
    );
    row(
        "   probe: GET /healthz from kubernaut",
        &kubernaut_probe,
        None,
    );
    println!("   this process (simulator and watches): CPU {own_cpu:.2} s during the burst");
    println!(
        "   kubernaut: RSS {rss_before:.1} MiB before, {rss_after:.1} MiB after, peak (VmHWM) {peak:.1} MiB; CPU {cpu:.2} s during the burst; {threads:.0} threads"
    );
    if let Some(report) = burst_report {
        report.print(namespace_only);
        wrong.extend(report.wrong);
    }
    if !wrong.is_empty() {
        println!();
        println!("{} wrong verdicts; the first:", wrong.len());
        for deployment in wrong.iter().take(3) {
            println!("   {deployment}");
        }
    }
    if let Ok(path) = std::env::var("ROLLOUTS_LOG") {
        let _ = std::fs::copy(dir.path().join("kubernaut.log"), &path);
        println!("kubernaut's log copied to {path}");
    }
    drop(bench);
    drop(database);
}

/// What phase 4 measured.
#[derive(Debug)]
struct BurstReport {
    deploys: usize,
    namespaces: usize,
    right: usize,
    counts: Vec<String>,
    wall: Duration,
    latency: Vec<f64>,
    doomed: Vec<f64>,
    /// Watch streams the simulator served to Kubernaut at once, at most.
    peak_watches: usize,
    /// TCP connections Kubernaut held to the simulator at once, at most (sampled).
    peak_connections: usize,
    /// Watch streams still open a while after the last verdict.
    watches_after: Vec<(u64, usize)>,
    cpu: f64,
    own_cpu: f64,
    peak_rss: f64,
    rss_before: f64,
    threads: f64,
    wrong: Vec<String>,
}

impl BurstReport {
    fn print(&self, namespace_only: bool) {
        #[expect(clippy::cast_precision_loss, reason = "a count of deploys")]
        let per_deploy_ms = self.cpu * 1000.0 / self.deploys.max(1) as f64;
        let pass = |ok: bool| if ok { "PASS" } else { "MISSED" };
        println!(
            "4. {} deployments over {} namespaces, requested at once ({} credentials)",
            self.deploys,
            self.namespaces,
            if namespace_only {
                "namespace-only"
            } else {
                "cluster-wide"
            }
        );
        println!(
            "   verdicts right (status and reason): {}/{} ({})  {}",
            self.right,
            self.deploys,
            self.counts.join(", "),
            pass(self.right == self.deploys)
        );
        println!(
            "   wall time, all requested -> last verdict: {:.2} s",
            self.wall.as_secs_f64()
        );
        row(
            "   good: complete -> finished_at",
            &self.latency,
            Some((100.0, median_of)),
        );
        row(
            "   doomed: every pod doomed -> finished_at",
            &self.doomed,
            Some((2000.0, max_of)),
        );
        println!(
            "   peak watch streams served to kubernaut: {}; peak TCP connections kubernaut -> API server: {}",
            self.peak_watches, self.peak_connections
        );
        println!(
            "   watch streams open after the last verdict: {}",
            self.watches_after
                .iter()
                .map(|(s, n)| format!("{n} at {s} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "   kubernaut CPU {:.2} s during the burst = {per_deploy_ms:.1} ms per deploy  target <= 10 ms: {}",
            self.cpu,
            pass(per_deploy_ms <= 10.0)
        );
        println!(
            "   kubernaut RSS {:.1} MiB before, peak (VmHWM) {:.1} MiB  target < 150 MiB: {}; {:.0} threads",
            self.rss_before,
            self.peak_rss,
            pass(self.peak_rss < 150.0),
            self.threads
        );
        println!(
            "   this process (simulator and watches): CPU {:.2} s during the burst",
            self.own_cpu
        );
    }
}

/// Phase 4: `deploys` deployments over `namespaces` namespaces, all requested at once.
#[expect(clippy::too_many_lines, reason = "one phase, read in order")]
async fn run_burst(bench: &Bench, deploys: usize, namespaces: usize) -> BurstReport {
    let per_namespace = deploys.div_ceil(namespaces);
    let good: Kind = ("web", "registry.local/web:1", "succeeded", None, None);
    let crash: Kind = (
        "crash",
        "registry.local/crashloop:1",
        "failed",
        Some("crash_loop"),
        None,
    );
    let missing: Kind = (
        "missing",
        "registry.local/notfound:1",
        "failed",
        Some("image_not_found"),
        None,
    );
    let mut released = std::collections::HashSet::new();
    let mut plans = Vec::with_capacity(deploys);
    for i in 0..deploys {
        let (namespace, slot) = (i / per_namespace, i % per_namespace);
        let namespace = format!("burst-{namespace:03}");
        if slot == 0 {
            bench.create_namespace(&namespace).await;
        }
        // One in eight crash-loops and one in eight misses its image: a quarter.
        let (kind, image, status, reason, timeout_seconds) = match i % 8 {
            0 => crash,
            4 => missing,
            _ => good,
        };
        let service = format!("burst-{kind}-{slot}");
        if released.insert(service.clone()) {
            bench.release(&service, image).await;
        }
        plans.push(Planned {
            namespace,
            service,
            status,
            reason,
            timeout_seconds,
        });
    }
    // Watches left from the earlier phases close after their grace; wait for them.
    let own_watches = 2;
    let settle_by = Instant::now() + Duration::from_secs(120);
    while bench.sim.watch_streams().open > own_watches && Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bench.sim.reset_watch_peak();
    let (rss_before, _) = bench.server.memory();
    let cpu_before = bench.server.cpu_seconds();
    let own_cpu_before = own_cpu_seconds();
    let sim_port: u16 = bench
        .sim
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the simulator's port");
    let peak_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let peak = peak_connections.clone();
        let pid = bench.server.child.id();
        tokio::spawn(async move {
            loop {
                let now = tcp_connections(pid, sim_port);
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let outcomes = join_all(plans.into_iter().map(|plan| bench.deploy(plan))).await;
    let wall = started.elapsed();
    let cpu = bench.server.cpu_seconds() - cpu_before;
    let own_cpu = own_cpu_seconds() - own_cpu_before;
    sampler.abort();
    let peak_watches = bench.sim.watch_streams().peak.saturating_sub(own_watches);
    let (_, peak_rss) = bench.server.memory();
    let threads = bench.server.threads();
    let mut watches_after = Vec::new();
    for seconds in [5, 65] {
        let at = started + wall + Duration::from_secs(seconds);
        tokio::time::sleep_until(at.into()).await;
        watches_after.push((
            seconds,
            bench.sim.watch_streams().open.saturating_sub(own_watches),
        ));
    }

    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut right = 0;
    let mut wrong = Vec::new();
    let mut latency = Vec::new();
    let mut doomed = Vec::new();
    for outcome in &outcomes {
        *counts
            .entry(format!(
                "{} {}",
                outcome.deployment["status"].as_str().unwrap_or("?"),
                outcome.deployment["reason"].as_str().unwrap_or("")
            ))
            .or_default() += 1;
        if outcome.right() {
            right += 1;
        } else {
            wrong.push(outcome.deployment.to_string());
        }
        if let Some(finished) = outcome.finished() {
            if outcome.planned.status == "succeeded" {
                if let Some(complete) = bench.complete_at(&outcome.planned) {
                    latency.push(millis(complete, finished));
                }
            } else if let Some((_, last)) = bench.doomed_at(&outcome.planned) {
                doomed.push(millis(last, finished));
            }
        }
    }
    let mut counts: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("{v} {}", k.trim()))
        .collect();
    counts.sort();
    BurstReport {
        deploys,
        namespaces,
        right,
        counts,
        wall,
        latency,
        doomed,
        peak_watches,
        peak_connections: peak_connections.load(std::sync::atomic::Ordering::SeqCst),
        watches_after,
        cpu,
        own_cpu,
        peak_rss,
        rss_before,
        threads,
        wrong,
    }
}
