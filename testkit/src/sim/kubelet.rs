//! The simulated scheduler and kubelet: pods move from Pending through image pulls to
//! Running and Ready (or into one of the failure modes), with the events and container
//! statuses a real kubelet reports, and log lines served by `pods/{name}/log`.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::controllers::{EventSource, record_event};
use super::error::{ApiError, ApiResult};
use super::resources;
use super::store::now_rfc3339;
use super::{SimConfig, World};

/// How the containers of an image behave.
///
/// Chosen per image with [`super::Simulator::set_image_behaviour`], or by a naming
/// convention in the image reference (case-insensitive): `notfound`, `does-not-exist`
/// or `nonexistent` -> [`Behaviour::ImageNotFound`]; `crashloop` or `fail` ->
/// [`Behaviour::CrashLoop`]; `neverready` or `never-ready` -> [`Behaviour::NeverReady`];
/// `unschedulable` -> [`Behaviour::Unschedulable`]; `slow` -> [`Behaviour::SlowStart`];
/// `denied` or `unauthorized` -> [`Behaviour::PullAccessDenied`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// Pulls, starts and becomes ready; under `restartPolicy: Never/OnFailure` (Jobs) it
    /// runs briefly and exits 0.
    Healthy,
    /// The registry does not know the image: `ErrImagePull`, then `ImagePullBackOff`.
    ImageNotFound,
    /// The registry refuses the pull (private repository, no credentials): also
    /// `ErrImagePull` and `ImagePullBackOff`, but the message does not say "not found".
    PullAccessDenied,
    /// Starts, prints `logs`, exits with `exit_code`; restarted with back-off
    /// (`CrashLoopBackOff`) or, under `restartPolicy: Never`, the pod fails.
    CrashLoop {
        /// The exit code of every run.
        exit_code: i32,
        /// The lines each run prints before exiting.
        logs: Vec<String>,
    },
    /// Runs but its readiness probe always fails (`Unhealthy` events).
    NeverReady,
    /// No node fits: `PodScheduled=False`, reason `Unschedulable`, a `FailedScheduling` event.
    Unschedulable,
    /// Healthy, but the image pull takes this many extra simulated seconds.
    SlowStart {
        /// Extra simulated seconds before the container starts.
        seconds: u64,
    },
}

impl Behaviour {
    fn crash_default(image: &str) -> Self {
        Self::CrashLoop {
            exit_code: 1,
            logs: vec![
                format!("starting {image}"),
                "loading configuration from /etc/app/config.yaml".to_owned(),
                "Error: dial tcp 10.96.0.42:5432: connect: connection refused".to_owned(),
                "fatal: could not connect to the database, exiting".to_owned(),
            ],
        }
    }

    pub(crate) fn for_image(image: &str, overrides: &HashMap<String, Behaviour>) -> Self {
        if let Some(b) = overrides.get(image) {
            return b.clone();
        }
        let lower = image.to_ascii_lowercase();
        if ["notfound", "not-found", "does-not-exist", "nonexistent"]
            .iter()
            .any(|k| lower.contains(k))
        {
            Self::ImageNotFound
        } else if ["denied", "unauthorized"].iter().any(|k| lower.contains(k)) {
            Self::PullAccessDenied
        } else if lower.contains("crashloop") || lower.contains("fail") {
            Self::crash_default(image)
        } else if lower.contains("neverready") || lower.contains("never-ready") {
            Self::NeverReady
        } else if lower.contains("unschedulable") {
            Self::Unschedulable
        } else if lower.contains("slow") {
            Self::SlowStart { seconds: 30 }
        } else {
            Self::Healthy
        }
    }
}

// Simulated seconds for each step of a pod's life.
const SCHEDULE_DELAY: f64 = 0.2;
const PULL_DURATION: f64 = 1.0;
const CREATE_DURATION: f64 = 0.3;
const RUN_BEFORE_EXIT: f64 = 1.0;
const ERR_IMAGE_PULL_SHOWN: f64 = 1.0;
const BACKOFF_BASE: f64 = 10.0;
const BACKOFF_CAP: f64 = 300.0;
const PROBE_PERIOD: f64 = 10.0;
const SCHEDULE_RETRY: f64 = 5.0;
const TERMINATION_DURATION: f64 = 2.0;
const CONFIG_RETRY: f64 = 10.0;

#[derive(Debug, Clone)]
enum CState {
    /// Waiting for the pod to be scheduled.
    Unscheduled,
    Pulling {
        until: Instant,
    },
    ErrImagePull {
        until: Instant,
    },
    ImagePullBackOff {
        until: Instant,
    },
    Creating {
        until: Instant,
    },
    ConfigError {
        until: Instant,
        message: String,
    },
    Running {
        started: String,
        ready_at: Option<Instant>,
        exit_at: Option<Instant>,
    },
    CrashLoopBackOff {
        until: Instant,
    },
    Terminated {
        exit_code: i32,
        started: String,
        finished: String,
    },
}

#[derive(Debug, Clone)]
struct ContainerSim {
    name: String,
    image: String,
    behaviour: Behaviour,
    state: CState,
    restarts: u32,
    pull_attempts: u32,
    ready: bool,
    last_terminated: Option<Value>,
    next_probe_event: Option<Instant>,
    container_id: String,
}

#[derive(Debug, Clone)]
struct PodSim {
    created: Instant,
    scheduled: bool,
    unschedulable: Option<String>,
    next_schedule_attempt: Option<Instant>,
    terminate_at: Option<Instant>,
    node: Option<String>,
    ip: Option<String>,
    start_time: Option<String>,
    scheduled_time: Option<String>,
    ready_time: Option<String>,
    containers: Vec<ContainerSim>,
}

#[derive(Debug, Default, Clone)]
struct ContainerLog {
    current: Vec<String>,
    previous: Option<Vec<String>>,
}

/// The kubelet's memory of every pod it runs.
#[derive(Debug, Default)]
pub(crate) struct KubeletState {
    pods: HashMap<String, PodSim>,
    logs: HashMap<(String, String), ContainerLog>,
    next_node: usize,
    next_ip: u32,
}

impl KubeletState {
    pub fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.logs.retain(|(pod_uid, _), _| pod_uid != uid);
    }
}

/// The fully qualified reference a container runtime resolves an image name to.
pub(crate) fn qualified_image(image: &str) -> String {
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_owned(), format!(":{t}")),
        _ => (image.to_owned(), ":latest".to_owned()),
    };
    let tag = if image.contains('@') {
        String::new()
    } else {
        tag
    };
    let first = name.split('/').next().unwrap_or_default();
    let full = if !name.contains('/') {
        format!("docker.io/library/{name}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        name
    } else {
        format!("docker.io/{name}")
    };
    format!("{full}{tag}")
}

/// What containerd says when it cannot pull `image`: the registry refused it
/// (`denied`), or does not have it. Shared with the real control plane's fake kubelet.
pub(crate) fn pull_failure(image: &str, denied: bool) -> String {
    let q = qualified_image(image);
    if denied {
        format!(
            "failed to pull and unpack image \"{q}\": failed to resolve reference \"{q}\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"
        )
    } else {
        format!(
            "failed to pull and unpack image \"{q}\": failed to resolve reference \"{q}\": {q}: not found"
        )
    }
}

fn not_found_message(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = {}",
        pull_failure(image, false)
    )
}

fn pull_error_message(c: &ContainerSim) -> String {
    if c.behaviour == Behaviour::PullAccessDenied {
        format!(
            "rpc error: code = Unknown desc = {}",
            pull_failure(&c.image, true)
        )
    } else {
        not_found_message(&c.image)
    }
}

/// Seconds of the crash-loop back-off before restart `cfg_attempt` (10 s doubling to
/// 300 s, as the kubelet's). Shared with the real control plane's fake kubelet.
pub(crate) fn backoff(cfg_attempt: u32) -> f64 {
    (BACKOFF_BASE * 2_f64.powi(i32::try_from(cfg_attempt.min(10)).unwrap_or(10))).min(BACKOFF_CAP)
}

fn field_path(c: &ContainerSim) -> String {
    format!("spec.containers{{{}}}", c.name)
}

fn readiness_delay(container_spec: &Value) -> Option<f64> {
    container_spec.get("readinessProbe").map(|p| {
        p.get("initialDelaySeconds")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            + 1.0
    })
}

/// One pass of the scheduler and kubelet over all pods.
pub(crate) fn tick(
    world: &mut World,
    cfg: &SimConfig,
    behaviours: &HashMap<String, Behaviour>,
    now: Instant,
) {
    let Some(pod_res) = resources::by_kind("Pod") else {
        return;
    };
    let pods = world.store.list_owned(pod_res, None);
    for pod in pods {
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            terminate(world, cfg, &pod, &uid, now);
            continue;
        }
        let mut sim = match world.kubelet.pods.remove(&uid) {
            Some(s) => s,
            None => new_pod_sim(&pod, behaviours, now),
        };
        step_pod(world, cfg, &pod, &uid, &mut sim, now);
        if let Some(at) = next_wake(cfg, &sim) {
            world.wake(at);
        }
        let status = render_status(&pod, &sim);
        if pod.get("status") != Some(&status)
            || (sim.node.is_some() && pod.pointer("/spec/nodeName").is_none())
        {
            let mut updated = pod.clone();
            updated["status"] = status;
            if let Some(node) = &sim.node {
                updated["spec"]["nodeName"] = json!(node);
            }
            world.store.replace(pod_res, updated);
        }
        world.kubelet.pods.insert(uid, sim);
    }
}

/// Stops the containers of a pod being deleted, then removes it (finalizers permitting).
fn terminate(world: &mut World, cfg: &SimConfig, pod: &Value, uid: &str, now: Instant) {
    let Some(pod_res) = resources::by_kind("Pod") else {
        return;
    };
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let finalizers = pod
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let Some(mut sim) = world.kubelet.pods.remove(uid) else {
        if !finalizers {
            world.store.remove(pod_res, ns, name);
            world.forget(uid);
        }
        return;
    };
    match sim.terminate_at {
        None => {
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_f64)
                .unwrap_or(30.0);
            let at = now + cfg.real(grace.min(TERMINATION_DURATION));
            sim.terminate_at = Some(at);
            world.wake(at);
            let source = EventSource::kubelet(sim.node.as_deref().unwrap_or_default());
            for c in &mut sim.containers {
                c.ready = false;
                if matches!(c.state, CState::Running { .. }) {
                    record_event(
                        world,
                        pod,
                        Some(field_path(c)),
                        "Normal",
                        "Killing",
                        &format!("Stopping container {}", c.name),
                        &source,
                    );
                }
            }
            sim.ready_time = None;
            let mut updated = pod.clone();
            updated["status"] = render_status(pod, &sim);
            world.store.replace(pod_res, updated);
        }
        Some(at) if now >= at && !finalizers => {
            world.store.remove(pod_res, ns, name);
            world.forget(uid);
            return;
        }
        Some(_) => {}
    }
    world.kubelet.pods.insert(uid.to_owned(), sim);
}

/// When this pod's next step is due, if it waits for one.
fn next_wake(cfg: &SimConfig, sim: &PodSim) -> Option<Instant> {
    if !sim.scheduled {
        return Some(
            sim.next_schedule_attempt
                .unwrap_or(sim.created + cfg.real(SCHEDULE_DELAY)),
        );
    }
    let mut times: Vec<Instant> = sim.terminate_at.into_iter().collect();
    for c in &sim.containers {
        match &c.state {
            CState::Pulling { until }
            | CState::ErrImagePull { until }
            | CState::ImagePullBackOff { until }
            | CState::Creating { until }
            | CState::CrashLoopBackOff { until }
            | CState::ConfigError { until, .. } => times.push(*until),
            CState::Running {
                ready_at, exit_at, ..
            } => {
                times.extend(ready_at.filter(|_| !c.ready));
                times.extend(*exit_at);
                times.extend(c.next_probe_event);
            }
            CState::Unscheduled | CState::Terminated { .. } => {}
        }
    }
    times.into_iter().min()
}

fn new_pod_sim(pod: &Value, behaviours: &HashMap<String, Behaviour>, now: Instant) -> PodSim {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let image = c["image"].as_str().unwrap_or_default().to_owned();
            ContainerSim {
                name: c["name"].as_str().unwrap_or_default().to_owned(),
                behaviour: Behaviour::for_image(&image, behaviours),
                image,
                state: CState::Unscheduled,
                restarts: 0,
                pull_attempts: 0,
                ready: false,
                last_terminated: None,
                next_probe_event: None,
                container_id: String::new(),
            }
        })
        .collect();
    PodSim {
        created: now,
        scheduled: false,
        unschedulable: None,
        next_schedule_attempt: None,
        terminate_at: None,
        node: pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ip: None,
        start_time: None,
        scheduled_time: None,
        ready_time: None,
        containers,
    }
}

fn node_fits(pod: &Value, node: &str) -> bool {
    // Simulated nodes carry only the well-known hostname and OS labels.
    pod.pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter().all(|(k, v)| match k.as_str() {
                "kubernetes.io/hostname" => v.as_str() == Some(node),
                "kubernetes.io/os" => v.as_str() == Some("linux"),
                "kubernetes.io/arch" => v.as_str() == Some("amd64"),
                _ => false,
            })
        })
}

fn step_pod(
    world: &mut World,
    cfg: &SimConfig,
    pod: &Value,
    uid: &str,
    sim: &mut PodSim,
    now: Instant,
) {
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let restart_policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_owned();
    if !sim.scheduled {
        if now < sim.created + cfg.real(SCHEDULE_DELAY) {
            return;
        }
        if sim.next_schedule_attempt.is_some_and(|t| now < t) {
            return;
        }
        let node = match &sim.node {
            Some(node) => Ok(node.clone()),
            None => choose_node(world, cfg, pod, sim),
        };
        let node = match node {
            Ok(node) => node,
            Err(msg) => {
                // The scheduler retries; repeats are aggregated into the event's count.
                sim.next_schedule_attempt = Some(now + cfg.real(SCHEDULE_RETRY));
                record_event(
                    world,
                    pod,
                    None,
                    "Warning",
                    "FailedScheduling",
                    &msg,
                    &EventSource::scheduler(),
                );
                sim.unschedulable = Some(msg);
                return;
            }
        };
        sim.unschedulable = None;
        world.kubelet.next_node += 1;
        world.kubelet.next_ip += 1;
        let ip_n = world.kubelet.next_ip;
        sim.scheduled = true;
        sim.ip = Some(format!("10.244.{}.{}", (ip_n / 250) % 250, ip_n % 250 + 1));
        sim.start_time = Some(now_rfc3339());
        sim.scheduled_time = Some(now_rfc3339());
        record_event(
            world,
            pod,
            None,
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to {node}"),
            &EventSource::scheduler(),
        );
        sim.node = Some(node);
        for c in &mut sim.containers {
            c.state = CState::Pulling { until: now };
            c.pull_attempts = 0;
        }
        // The pull starts on the next pass, so the first status shows ContainerCreating.
        for c in &mut sim.containers {
            start_pull(world, cfg, pod, sim.node.as_deref(), c, now);
        }
        return;
    }
    let node = sim.node.clone().unwrap_or_default();
    let source = EventSource::kubelet(&node);
    let pod_ref = format!("{name}_{ns}({uid})");
    for c in &mut sim.containers {
        step_container(world, cfg, pod, &source, &pod_ref, &restart_policy, c, now);
    }
    let all_ready = sim.containers.iter().all(|c| c.ready);
    if all_ready && sim.ready_time.is_none() {
        sim.ready_time = Some(now_rfc3339());
    } else if !all_ready {
        sim.ready_time = None;
    }
}

fn start_pull(
    world: &mut World,
    cfg: &SimConfig,
    pod: &Value,
    node: Option<&str>,
    c: &mut ContainerSim,
    now: Instant,
) {
    let extra = match c.behaviour {
        Behaviour::SlowStart { seconds } => seconds as f64,
        _ => 0.0,
    };
    c.state = CState::Pulling {
        until: now + cfg.real(PULL_DURATION + extra),
    };
    c.pull_attempts += 1;
    let source = EventSource::kubelet(node.unwrap_or_default());
    record_event(
        world,
        pod,
        Some(field_path(c)),
        "Normal",
        "Pulling",
        &format!("Pulling image \"{}\"", c.image),
        &source,
    );
}

fn container_spec<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["name"] == name)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the kubelet's per-container context"
)]
fn step_container(
    world: &mut World,
    cfg: &SimConfig,
    pod: &Value,
    source: &EventSource,
    pod_ref: &str,
    restart_policy: &str,
    c: &mut ContainerSim,
    now: Instant,
) {
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fp = Some(field_path(c));
    match c.state.clone() {
        CState::Unscheduled | CState::Terminated { .. } => {}
        CState::Pulling { until } if now >= until => {
            if matches!(
                c.behaviour,
                Behaviour::ImageNotFound | Behaviour::PullAccessDenied
            ) {
                let msg = pull_error_message(c);
                record_event(
                    world,
                    pod,
                    fp.clone(),
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image \"{}\": {msg}", c.image),
                    source,
                );
                record_event(
                    world,
                    pod,
                    fp,
                    "Warning",
                    "Failed",
                    "Error: ErrImagePull",
                    source,
                );
                c.state = CState::ErrImagePull {
                    until: now + cfg.real(ERR_IMAGE_PULL_SHOWN),
                };
            } else {
                let took = PULL_DURATION
                    + match c.behaviour {
                        Behaviour::SlowStart { seconds } => seconds as f64,
                        _ => 0.0,
                    };
                record_event(
                    world,
                    pod,
                    fp,
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{}\" in {took:.3}s ({took:.3}s including waiting). Image size: 52428800 bytes.",
                        c.image
                    ),
                    source,
                );
                c.state = CState::Creating {
                    until: now + cfg.real(CREATE_DURATION),
                };
            }
        }
        CState::ErrImagePull { until } if now >= until => {
            record_event(
                world,
                pod,
                fp.clone(),
                "Normal",
                "BackOff",
                &format!("Back-off pulling image \"{}\"", c.image),
                source,
            );
            record_event(
                world,
                pod,
                fp,
                "Warning",
                "Failed",
                "Error: ImagePullBackOff",
                source,
            );
            c.state = CState::ImagePullBackOff {
                until: now + cfg.real(backoff(c.pull_attempts.saturating_sub(1))),
            };
        }
        CState::ImagePullBackOff { until } if now >= until => {
            start_pull(world, cfg, pod, None, c, now);
        }
        CState::Creating { until }
        | CState::CrashLoopBackOff { until }
        | CState::ConfigError { until, .. }
            if now >= until =>
        {
            if let Some(message) = missing_config(world, pod, &c.name) {
                record_event(
                    world,
                    pod,
                    fp,
                    "Warning",
                    "Failed",
                    &format!("Error: {message}"),
                    source,
                );
                c.state = CState::ConfigError {
                    until: now + cfg.real(CONFIG_RETRY),
                    message,
                };
                return;
            }
            if matches!(c.state, CState::CrashLoopBackOff { .. }) {
                c.restarts += 1;
            }
            start_container(world, cfg, pod, source, &uid, c, now);
        }
        CState::Running {
            started,
            ready_at,
            exit_at,
        } => {
            if let Some(at) = ready_at
                && now >= at
                && !c.ready
            {
                c.ready = true;
            }
            if c.behaviour == Behaviour::NeverReady && c.next_probe_event.is_none_or(|t| now >= t) {
                c.next_probe_event = Some(now + cfg.real(PROBE_PERIOD));
                record_event(
                    world,
                    pod,
                    fp.clone(),
                    "Warning",
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503",
                    source,
                );
            }
            if let Some(at) = exit_at
                && now >= at
            {
                let exit_code = match &c.behaviour {
                    Behaviour::CrashLoop { exit_code, .. } => *exit_code,
                    _ => 0,
                };
                c.ready = false;
                let finished = now_rfc3339();
                let terminated = json!({"terminated": {
                    "exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "startedAt": started, "finishedAt": finished, "containerID": c.container_id
                }});
                let restart = match restart_policy {
                    "Never" => false,
                    "OnFailure" => exit_code != 0,
                    _ => true,
                };
                if restart {
                    c.last_terminated = Some(terminated);
                    let delay = backoff(c.restarts);
                    c.state = CState::CrashLoopBackOff {
                        until: now + cfg.real(delay),
                    };
                    record_event(
                        world,
                        pod,
                        fp,
                        "Warning",
                        "BackOff",
                        &format!(
                            "Back-off restarting failed container {} in pod {pod_ref}",
                            c.name
                        ),
                        source,
                    );
                } else {
                    c.state = CState::Terminated {
                        exit_code,
                        started,
                        finished,
                    };
                }
            }
        }
        _ => {}
    }
}

fn start_container(
    world: &mut World,
    cfg: &SimConfig,
    pod: &Value,
    source: &EventSource,
    uid: &str,
    c: &mut ContainerSim,
    now: Instant,
) {
    let fp = Some(field_path(c));
    record_event(
        world,
        pod,
        fp.clone(),
        "Normal",
        "Created",
        &format!("Created container: {}", c.name),
        source,
    );
    record_event(
        world,
        pod,
        fp,
        "Normal",
        "Started",
        &format!("Started container {}", c.name),
        source,
    );
    c.container_id = format!("containerd://{}", uuid::Uuid::new_v4().simple());
    let restart_policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let spec = container_spec(pod, &c.name).cloned().unwrap_or_default();
    let (ready_at, exit_at) = match (&c.behaviour, restart_policy) {
        (Behaviour::CrashLoop { .. }, _) => (None, Some(now + cfg.real(RUN_BEFORE_EXIT))),
        (Behaviour::NeverReady, _) => (None, None),
        (_, "Never" | "OnFailure") => (None, Some(now + cfg.real(RUN_BEFORE_EXIT))),
        _ => (
            Some(now + cfg.real(readiness_delay(&spec).unwrap_or(0.0))),
            None,
        ),
    };
    let ts = now_rfc3339();
    let lines: Vec<String> = match &c.behaviour {
        Behaviour::CrashLoop { logs, .. } => logs.clone(),
        Behaviour::NeverReady => vec![
            format!("{ts} starting {}", c.image),
            format!("{ts} waiting for dependencies before reporting ready"),
        ],
        _ if exit_at.is_some() => vec![
            format!("{ts} starting {}", c.image),
            format!("{ts} work done, exiting"),
        ],
        _ => vec![
            format!("{ts} starting {}", c.image),
            format!("{ts} listening on 0.0.0.0:8080"),
        ],
    };
    let log = world
        .kubelet
        .logs
        .entry((uid.to_owned(), c.name.clone()))
        .or_default();
    if !log.current.is_empty() {
        log.previous = Some(std::mem::take(&mut log.current));
    }
    log.current = lines;
    c.state = CState::Running {
        started: ts,
        ready_at,
        exit_at,
    };
}

fn container_status(c: &ContainerSim, pod_ref: &str) -> Value {
    let state = match &c.state {
        CState::Unscheduled | CState::Pulling { .. } | CState::Creating { .. } => {
            json!({"waiting": {"reason": "ContainerCreating"}})
        }
        CState::ErrImagePull { .. } => {
            json!({"waiting": {"reason": "ErrImagePull", "message": pull_error_message(c)}})
        }
        CState::ImagePullBackOff { .. } => json!({"waiting": {
            "reason": "ImagePullBackOff",
            "message": format!("Back-off pulling image \"{}\": ErrImagePull: {}", c.image, pull_error_message(c))
        }}),
        CState::Running { started, .. } => json!({"running": {"startedAt": started}}),
        CState::ConfigError { message, .. } => {
            json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}})
        }
        CState::CrashLoopBackOff { .. } => json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": format!("back-off {}s restarting failed container={} pod={pod_ref}", backoff(c.restarts) as u64, c.name)
        }}),
        CState::Terminated {
            exit_code,
            started,
            finished,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": if *exit_code == 0 { "Completed" } else { "Error" },
            "startedAt": started, "finishedAt": finished, "containerID": c.container_id
        }}),
    };
    let mut status = json!({
        "name": c.name, "image": c.image, "imageID": "", "ready": c.ready,
        "restartCount": c.restarts, "started": matches!(c.state, CState::Running { .. }),
        "state": state, "lastState": c.last_terminated.clone().unwrap_or_else(|| json!({}))
    });
    if !c.container_id.is_empty() {
        status["containerID"] = json!(c.container_id);
        status["imageID"] = json!(format!(
            "{}@sha256:{}",
            qualified_image(&c.image),
            "0".repeat(64)
        ));
    }
    status
}

fn condition(kind: &str, ok: bool, time: &str, reason: Option<(&str, String)>) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": time});
    if let Some((reason, message)) = reason {
        c["reason"] = json!(reason);
        if !message.is_empty() {
            c["message"] = json!(message);
        }
    }
    c
}

fn render_status(pod: &Value, sim: &PodSim) -> Value {
    let created = pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !sim.scheduled {
        let mut status = json!({"phase": "Pending", "qosClass": qos_class(pod)});
        if let Some(msg) = &sim.unschedulable {
            status["conditions"] = json!([condition(
                "PodScheduled",
                false,
                &created,
                Some(("Unschedulable", msg.clone()))
            )]);
        }
        return status;
    }
    let sched_time = sim.scheduled_time.clone().unwrap_or_default();
    let pod_ref = format!(
        "{}_{}({})",
        pod["metadata"]["name"].as_str().unwrap_or_default(),
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["uid"].as_str().unwrap_or_default()
    );
    let statuses: Vec<Value> = sim
        .containers
        .iter()
        .map(|c| container_status(c, &pod_ref))
        .collect();
    let ever_started = sim.containers.iter().all(|c| {
        matches!(
            c.state,
            CState::Running { .. } | CState::CrashLoopBackOff { .. } | CState::Terminated { .. }
        )
    });
    let all_terminated = sim
        .containers
        .iter()
        .all(|c| matches!(c.state, CState::Terminated { .. }));
    let phase = if all_terminated {
        if sim
            .containers
            .iter()
            .all(|c| matches!(c.state, CState::Terminated { exit_code: 0, .. }))
        {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if ever_started {
        "Running"
    } else {
        "Pending"
    };
    let ready = sim.containers.iter().all(|c| c.ready);
    let unready: Vec<&str> = sim
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let not_ready_reason = if all_terminated {
        Some(("PodCompleted", String::new()))
    } else if ready {
        None
    } else {
        Some((
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        ))
    };
    let ready_time = sim.ready_time.clone().unwrap_or_else(|| sched_time.clone());
    let conditions = json!([
        condition(
            "PodReadyToStartContainers",
            !all_terminated,
            &sched_time,
            None
        ),
        condition("Initialized", true, &sched_time, None),
        condition("Ready", ready, &ready_time, not_ready_reason.clone()),
        condition("ContainersReady", ready, &ready_time, not_ready_reason),
        condition("PodScheduled", true, &sched_time, None),
    ]);
    let ip = sim.ip.clone().unwrap_or_default();
    json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": sim.start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    })
}

fn qos_class(pod: &Value) -> &'static str {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let any_resources = containers.into_iter().flatten().any(|c| {
        c.pointer("/resources/requests").is_some() || c.pointer("/resources/limits").is_some()
    });
    if any_resources {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// The log lines of a container, as `GET pods/{name}/log` serves them.
pub(crate) fn read_logs(
    world: &World,
    ns: &str,
    name: &str,
    container: Option<&str>,
    previous: bool,
) -> ApiResult<Vec<String>> {
    let pod_res = resources::by_kind("Pod").ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod = world
        .store
        .get(pod_res, ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match container {
        Some(c) => {
            if !names.contains(&c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c
        }
        None if names.len() == 1 => names[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let log = world
        .kubelet
        .logs
        .get(&(uid.to_owned(), container.to_owned()));
    if previous {
        return log.and_then(|l| l.previous.clone()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ))
        });
    }
    match log {
        Some(l) => Ok(l.current.clone()),
        None => {
            let reason = world
                .kubelet
                .pods
                .get(uid)
                .and_then(|p| p.containers.iter().find(|c| c.name == container))
                .map_or("ContainerCreating", |c| match c.state {
                    CState::ErrImagePull { .. } | CState::ImagePullBackOff { .. } => {
                        "trying and failing to pull image"
                    }
                    _ => "ContainerCreating",
                });
            Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )))
        }
    }
}

/// Parses a Kubernetes quantity (`500m`, `2`, `10Gi`, `1e3`) into base units.
fn quantity(q: &Value) -> f64 {
    let text = match q {
        Value::Number(n) => return n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.trim(),
        _ => return 0.0,
    };
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0_f64.powi(4)),
        ("Pi", 1024.0_f64.powi(5)),
        ("Ei", 1024.0_f64.powi(6)),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().unwrap_or(0.0) * factor;
        }
    }
    text.parse().unwrap_or(0.0)
}

/// What a pod asks of a node: per resource, the sum over its containers of the
/// requests (or the limits where no request is given).
fn pod_requests(pod: &Value) -> std::collections::BTreeMap<String, f64> {
    let mut total = std::collections::BTreeMap::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let mut names: Vec<&String> = requests.into_iter().flat_map(|r| r.keys()).collect();
        names.extend(limits.into_iter().flat_map(|l| l.keys()));
        names.sort();
        names.dedup();
        for name in names {
            let q = requests
                .and_then(|r| r.get(name))
                .or_else(|| limits.and_then(|l| l.get(name)))
                .map_or(0.0, quantity);
            *total.entry(name.clone()).or_insert(0.0) += q;
        }
    }
    total
}

/// Picks a node the way the scheduler filters them, or says why none fits.
fn choose_node(
    world: &mut World,
    cfg: &SimConfig,
    pod: &Value,
    sim: &PodSim,
) -> Result<String, String> {
    let n = cfg.nodes.len();
    let preemption = format!(
        "preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod."
    );
    if sim
        .containers
        .iter()
        .any(|c| c.behaviour == Behaviour::Unschedulable)
    {
        return Err(format!(
            "0/{n} nodes are available: {n} Insufficient cpu. {preemption}"
        ));
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let claims: Vec<&str> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
        })
        .collect();
    if let Some(pvc_res) = resources::by_kind("PersistentVolumeClaim") {
        for claim in claims {
            if world.store.get(pvc_res, ns, claim).is_none() {
                return Err(format!(
                    "0/{n} nodes are available: persistentvolumeclaim \"{claim}\" not found. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
                ));
            }
        }
    }
    let insufficient: Vec<String> = pod_requests(pod)
        .into_iter()
        .filter(|(name, wanted)| *wanted > cfg.node_capacity.get(name).copied().unwrap_or(0.0))
        .map(|(name, _)| format!("{n} Insufficient {name}"))
        .collect();
    if !insufficient.is_empty() {
        return Err(format!(
            "0/{n} nodes are available: {}. {preemption}",
            insufficient.join(", ")
        ));
    }
    let node = (0..n)
        .map(|i| cfg.nodes[(world.kubelet.next_node + i) % n].clone())
        .find(|node| node_fits(pod, node));
    node.ok_or_else(|| {
        format!(
            "0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        )
    })
}

/// The kubelet's complaint when a container's environment names a Secret or ConfigMap
/// (or a key in one) that does not exist, unless the reference is optional.
fn missing_config(world: &World, pod: &Value, container: &str) -> Option<String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let spec = container_spec(pod, container)?;
    let lookup = |kind: &str, name: &str| {
        resources::by_kind(kind).and_then(|r| world.store.get(r, ns, name))
    };
    let label = |kind: &str| {
        if kind == "Secret" {
            "secret"
        } else {
            "configmap"
        }
    };
    for env in spec
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (field, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
            let Some(r) = env.pointer(&format!("/valueFrom/{field}")) else {
                continue;
            };
            if r.get("optional") == Some(&Value::Bool(true)) {
                continue;
            }
            let name = r["name"].as_str().unwrap_or_default();
            let key = r["key"].as_str().unwrap_or_default();
            match lookup(kind, name) {
                None => return Some(format!("{} \"{name}\" not found", label(kind))),
                Some(obj) => {
                    let has_key = ["data", "stringData", "binaryData"]
                        .iter()
                        .any(|d| obj.get(*d).and_then(|m| m.get(key)).is_some());
                    if !has_key {
                        return Some(format!("couldn't find key {key} in {kind} {ns}/{name}"));
                    }
                }
            }
        }
    }
    for env_from in spec
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (field, kind) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
            if let Some(r) = env_from.get(field)
                && r.get("optional") != Some(&Value::Bool(true))
            {
                let name = r["name"].as_str().unwrap_or_default();
                if lookup(kind, name).is_none() {
                    return Some(format!("{} \"{name}\" not found", label(kind)));
                }
            }
        }
    }
    None
}
