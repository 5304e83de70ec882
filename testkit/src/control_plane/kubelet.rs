//! The fake kubelet of the real control plane: one Node, kept Ready by renewing its
//! Lease, and the pods the real scheduler binds to it, driven through the API server's
//! `pods/status` subresource with the statuses and events a real kubelet reports.
//!
//! Images behave as in kube-sim ([`Behaviour`], by the same naming conventions:
//! `notfound`, `denied`, `crashloop`/`fail`, `neverready`, `slow`), on a clock ten
//! times faster than the wall clock (a crash-loop back-off of 10 s passes in 1 s, a
//! readiness probe every 10 s fails every second). Scheduling is the real scheduler's:
//! a pod no node fits stays Pending with the scheduler's own `FailedScheduling` events.
//! Container logs are served as a kubelet serves them to the API server
//! (`GET /containerLogs/{namespace}/{pod}/{container}` over TLS), so `pods/log` works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::sim::Behaviour;
use crate::sim::kubelet::{backoff, qualified_image};

/// The name of the cluster's only node.
pub const NODE_NAME: &str = "kubernaut-node";

/// Kubelet seconds per wall-clock second.
const TIME_SCALE: f64 = 10.0;
/// How often the kubelet looks at its pods.
const SYNC_PERIOD: Duration = Duration::from_millis(200);
/// How often the node's Lease is renewed (a real kubelet: every 10 s of a 40 s lease).
const LEASE_RENEWAL: Duration = Duration::from_secs(10);

// Kubelet seconds for each step of a pod's life.
const PULL_DURATION: f64 = 1.0;
const CREATE_DURATION: f64 = 1.0;
const RUN_BEFORE_EXIT: f64 = 3.0;
const ERR_IMAGE_PULL_SHOWN: f64 = 5.0;
const PROBE_PERIOD: f64 = 10.0;

fn real(seconds: f64) -> Duration {
    Duration::from_secs_f64((seconds / TIME_SCALE).clamp(0.0, 1e7))
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub(crate) fn node_resource() -> ApiResource {
    resource("", "v1", "Node", "nodes")
}

fn pod_resource() -> ApiResource {
    resource("", "v1", "Pod", "pods")
}

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn object(value: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(value)?)
}

/// A running fake kubelet; dropping the control plane ends it.
#[derive(Debug)]
pub struct FakeKubelet {
    task: JoinHandle<()>,
    server: JoinHandle<()>,
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
}

/// A container's log lines: those of its current (or last) run and of the run before.
#[derive(Debug, Default, Clone)]
struct ContainerLog {
    current: Vec<String>,
    previous: Option<Vec<String>>,
}

/// Every container's logs, by (namespace, pod, container).
type Logs = Arc<Mutex<HashMap<(String, String, String), ContainerLog>>>;

impl FakeKubelet {
    /// Registers the node (Ready, 8 CPUs, 32 GiB, 110 pods) and its Lease, and starts
    /// driving the pods bound to it.
    pub(crate) async fn start(client: kube::Client) -> anyhow::Result<Self> {
        let logs: Logs = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(serve_logs(listener, tls_acceptor()?, Arc::clone(&logs)));
        register_node(&client, port).await?;
        let behaviours = Arc::new(Mutex::new(HashMap::new()));
        let mut kubelet = Kubelet {
            client,
            logs,
            behaviours: Arc::clone(&behaviours),
            pods: HashMap::new(),
            events: HashMap::new(),
            next_ip: 0,
        };
        let task = tokio::spawn(async move {
            let mut lease_renewed = Instant::now();
            loop {
                if lease_renewed.elapsed() >= LEASE_RENEWAL {
                    if let Err(error) = renew_lease(&kubelet.client).await {
                        tracing::warn!(%error, "the fake kubelet could not renew its lease");
                    }
                    lease_renewed = Instant::now();
                }
                if let Err(error) = kubelet.sync().await {
                    tracing::debug!(%error, "the fake kubelet's sync failed; trying again");
                }
                tokio::time::sleep(SYNC_PERIOD).await;
            }
        });
        Ok(Self {
            task,
            server,
            behaviours,
        })
    }

    /// Makes the containers of `image` behave as `behaviour` from their next pod on,
    /// whatever the image's name says (as kube-sim's `set_image_behaviour`).
    pub fn set_image_behaviour(&self, image: &str, behaviour: Behaviour) {
        self.behaviours
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(image.to_owned(), behaviour);
    }

    pub(crate) fn behaviours(&self) -> Arc<Mutex<HashMap<String, Behaviour>>> {
        Arc::clone(&self.behaviours)
    }

    pub(crate) fn stop(self) {
        self.task.abort();
        self.server.abort();
    }
}

async fn register_node(client: &kube::Client, port: u16) -> anyhow::Result<()> {
    let nodes: Api<DynamicObject> = Api::all_with(client.clone(), &node_resource());
    let node = object(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "fake",
            },
        },
        "spec": {},
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    let capacity =
        json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": timestamp(), "lastTransitionTime": timestamp()})
    };
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": NODE_NAME},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "kubernaut", "systemUUID": "kubernaut", "bootID": "kubernaut",
            "kernelVersion": "6.1.0", "osImage": "Kubernaut fake node",
            "containerRuntimeVersion": "containerd://2.0.0",
            "kubeletVersion": super::kubernetes_version(),
            "kubeProxyVersion": super::kubernetes_version(),
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    nodes
        .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    renew_lease(client).await
}

/// Creates or renews the node's Lease in `kube-node-lease`, as a kubelet's heartbeat.
async fn renew_lease(client: &kube::Client) -> anyhow::Result<()> {
    let leases: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "kube-node-lease",
        &resource("coordination.k8s.io", "v1", "Lease", "leases"),
    );
    let spec =
        json!({"holderIdentity": NODE_NAME, "leaseDurationSeconds": 40, "renewTime": now_micro()});
    if leases.get_opt(NODE_NAME).await?.is_some() {
        leases
            .patch(
                NODE_NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await?;
    } else {
        let lease = object(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
            "spec": spec,
        }))?;
        leases.create(&PostParams::default(), &lease).await?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum State {
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
    Running {
        started: String,
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

#[derive(Debug)]
struct Container {
    name: String,
    image: String,
    behaviour: Behaviour,
    state: State,
    restarts: u32,
    pull_attempts: u32,
    ready: bool,
    ready_at: Option<Instant>,
    next_probe: Option<Instant>,
    last_terminated: Option<Value>,
    id: String,
}

#[derive(Debug)]
struct PodRun {
    ip: String,
    start_time: String,
    containers: Vec<Container>,
    last_status: Option<Value>,
    deleting: bool,
}

struct Kubelet {
    client: kube::Client,
    logs: Logs,
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    pods: HashMap<String, PodRun>,
    /// Events already recorded, by (pod uid, reason, message): their name and count,
    /// so repeats are aggregated into one Event as a kubelet's recorder does.
    events: HashMap<(String, String, String), (String, i32)>,
    next_ip: u32,
}

fn pull_error(c: &Container) -> String {
    crate::sim::kubelet::pull_failure(&c.image, c.behaviour == Behaviour::PullAccessDenied)
}

fn hex_id(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pending event: (field path, type, reason, message).
type Pending = (Option<String>, &'static str, &'static str, String);

impl Kubelet {
    fn behaviour(&self, image: &str) -> Behaviour {
        let overrides = self
            .behaviours
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Behaviour::for_image(image, &overrides)
    }

    async fn sync(&mut self) -> anyhow::Result<()> {
        let pods: Api<DynamicObject> = Api::all_with(self.client.clone(), &pod_resource());
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={NODE_NAME}")))
            .await?;
        let mut seen = Vec::new();
        for pod in list.items {
            let value = serde_json::to_value(&pod)?;
            let uid = value["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            seen.push(uid.clone());
            if let Err(error) = self.sync_pod(&value, &uid).await {
                tracing::debug!(%error, "the fake kubelet could not sync a pod");
            }
        }
        self.pods.retain(|uid, _| seen.contains(uid));
        self.events.retain(|(uid, _, _), _| seen.contains(uid));
        Ok(())
    }

    async fn sync_pod(&mut self, pod: &Value, uid: &str) -> anyhow::Result<()> {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &pod_resource());
        let now = Instant::now();
        if !self.pods.contains_key(uid) {
            self.next_ip += 1;
            let containers = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let image = c["image"].as_str().unwrap_or_default().to_owned();
                    let name = c["name"].as_str().unwrap_or_default().to_owned();
                    Container {
                        behaviour: self.behaviour(&image),
                        id: String::new(),
                        state: State::Pulling { until: now },
                        restarts: 0,
                        pull_attempts: 0,
                        ready: false,
                        ready_at: None,
                        next_probe: None,
                        last_terminated: None,
                        name,
                        image,
                    }
                })
                .collect();
            self.pods.insert(
                uid.to_owned(),
                PodRun {
                    ip: format!(
                        "10.244.{}.{}",
                        (self.next_ip / 250) % 250,
                        self.next_ip % 250 + 1
                    ),
                    start_time: timestamp(),
                    containers,
                    last_status: None,
                    deleting: false,
                },
            );
            // A pod's life starts with its first image pull.
            let run = self
                .pods
                .get_mut(uid)
                .ok_or_else(|| anyhow::anyhow!("just inserted"))?;
            for c in &mut run.containers {
                start_pull(c, now);
            }
            let pulls: Vec<Pending> = run
                .containers
                .iter()
                .map(|c| {
                    (
                        Some(field_path(c)),
                        "Normal",
                        "Pulling",
                        format!("Pulling image \"{}\"", c.image),
                    )
                })
                .collect();
            self.record(pod, pulls).await;
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let run = self
                .pods
                .get_mut(uid)
                .ok_or_else(|| anyhow::anyhow!("a known pod"))?;
            if !run.deleting {
                run.deleting = true;
                let kills: Vec<Pending> = run
                    .containers
                    .iter()
                    .filter(|c| matches!(c.state, State::Running { .. }))
                    .map(|c| {
                        (
                            Some(field_path(c)),
                            "Normal",
                            "Killing",
                            format!("Stopping container {}", c.name),
                        )
                    })
                    .collect();
                self.record(pod, kills).await;
            }
            // The containers stop at once; the kubelet then removes the pod for good.
            let mut params = DeleteParams::default().grace_period(0);
            params.preconditions = Some(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            });
            api.delete(&name, &params).await?;
            return Ok(());
        }
        let restart_policy = pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
            .to_owned();
        let run = self
            .pods
            .get_mut(uid)
            .ok_or_else(|| anyhow::anyhow!("a known pod"))?;
        let mut pending = Vec::new();
        for c in &mut run.containers {
            let run_before = c.id.clone();
            let spec = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == c.name.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            step(
                c,
                &spec,
                &restart_policy,
                &format!("{namespace}/{name}"),
                uid,
                now,
                &mut pending,
            );
            if c.id != run_before {
                // A new run of the container: what it prints.
                let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
                let log = logs
                    .entry((namespace.clone(), name.clone(), c.name.clone()))
                    .or_default();
                if !log.current.is_empty() {
                    log.previous = Some(std::mem::take(&mut log.current));
                }
                log.current = run_output(c, restart_policy != "Always");
            }
        }
        let status = render_status(run);
        let changed = run.last_status.as_ref() != Some(&status);
        if changed {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await?;
            run.last_status = Some(status);
        }
        self.record(pod, pending).await;
        Ok(())
    }

    /// Records events about `pod` through the API, aggregating repeats.
    async fn record(&mut self, pod: &Value, events: Vec<Pending>) {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource("", "v1", "Event", "events"),
        );
        for (field_path, kind, reason, message) in events {
            let key = (uid.to_owned(), reason.to_owned(), message.clone());
            let result = match self.events.get_mut(&key) {
                Some((name, count)) => {
                    *count += 1;
                    let patch = json!({"count": *count, "lastTimestamp": timestamp()});
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
                None => {
                    let name = format!(
                        "{}.{}",
                        pod["metadata"]["name"].as_str().unwrap_or_default(),
                        &hex_id(&format!("{uid}{reason}{message}{}", now_micro()))[..16]
                    );
                    let event = object(json!({
                        "apiVersion": "v1",
                        "kind": "Event",
                        "metadata": {"name": name, "namespace": namespace},
                        "involvedObject": {
                            "apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                            "name": pod["metadata"]["name"], "uid": uid,
                            "resourceVersion": pod["metadata"]["resourceVersion"],
                            "fieldPath": field_path,
                        },
                        "reason": reason,
                        "message": message,
                        "type": kind,
                        "count": 1,
                        "firstTimestamp": timestamp(),
                        "lastTimestamp": timestamp(),
                        "source": {"component": "kubelet", "host": NODE_NAME},
                        "reportingComponent": "kubelet",
                        "reportingInstance": NODE_NAME,
                    }));
                    self.events.insert(key, (name, 1));
                    match event {
                        Ok(event) => api.create(&PostParams::default(), &event).await.map(|_| ()),
                        Err(error) => {
                            tracing::warn!(%error, "an event the fake kubelet could not build");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "the fake kubelet could not record an event");
            }
        }
    }
}

fn field_path(c: &Container) -> String {
    format!("spec.containers{{{}}}", c.name)
}

fn start_pull(c: &mut Container, now: Instant) {
    let extra = match c.behaviour {
        Behaviour::SlowStart { seconds } => seconds as f64,
        _ => 0.0,
    };
    c.state = State::Pulling {
        until: now + real(PULL_DURATION + extra),
    };
    c.pull_attempts += 1;
}

/// One step of a container's life, pushing the events it causes.
fn step(
    c: &mut Container,
    spec: &Value,
    restart_policy: &str,
    pod_ref: &str,
    uid: &str,
    now: Instant,
    events: &mut Vec<Pending>,
) {
    let fp = Some(field_path(c));
    match c.state.clone() {
        State::Pulling { until } if now >= until => {
            if matches!(
                c.behaviour,
                Behaviour::ImageNotFound | Behaviour::PullAccessDenied
            ) {
                let error = pull_error(c);
                events.push((
                    fp.clone(),
                    "Warning",
                    "Failed",
                    format!("Failed to pull image \"{}\": {error}", c.image),
                ));
                events.push((fp, "Warning", "Failed", "Error: ErrImagePull".into()));
                c.state = State::ErrImagePull {
                    until: now + real(ERR_IMAGE_PULL_SHOWN),
                };
            } else {
                events.push((
                    fp,
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{}\" in 1.2s (1.2s including waiting). Image size: 52428800 bytes.",
                        c.image
                    ),
                ));
                c.state = State::Creating {
                    until: now + real(CREATE_DURATION),
                };
            }
        }
        State::ErrImagePull { until } if now >= until => {
            events.push((
                fp.clone(),
                "Normal",
                "BackOff",
                format!("Back-off pulling image \"{}\"", c.image),
            ));
            events.push((fp, "Warning", "Failed", "Error: ImagePullBackOff".into()));
            c.state = State::ImagePullBackOff {
                until: now + real(backoff(c.pull_attempts.saturating_sub(1))),
            };
        }
        State::ImagePullBackOff { until } if now >= until => {
            events.push((
                fp,
                "Normal",
                "Pulling",
                format!("Pulling image \"{}\"", c.image),
            ));
            start_pull(c, now);
        }
        State::Creating { until } | State::CrashLoopBackOff { until } if now >= until => {
            if matches!(c.state, State::CrashLoopBackOff { .. }) {
                c.restarts += 1;
            }
            c.id = format!(
                "containerd://{}",
                hex_id(&format!("{uid}{}{}", c.name, c.restarts))
            );
            events.push((
                fp.clone(),
                "Normal",
                "Created",
                format!("Created container: {}", c.name),
            ));
            events.push((
                fp,
                "Normal",
                "Started",
                format!("Started container {}", c.name),
            ));
            let batch = restart_policy != "Always";
            let exits = matches!(c.behaviour, Behaviour::CrashLoop { .. }) || batch;
            c.state = State::Running {
                started: timestamp(),
                exit_at: exits.then(|| now + real(RUN_BEFORE_EXIT)),
            };
            c.ready = false;
            c.ready_at = match c.behaviour {
                Behaviour::NeverReady => None,
                _ if spec.get("readinessProbe").is_some() => Some(
                    now + real(
                        spec["readinessProbe"]["initialDelaySeconds"]
                            .as_f64()
                            .unwrap_or(0.0)
                            + 1.0,
                    ),
                ),
                _ => Some(now),
            };
            c.next_probe = (c.behaviour == Behaviour::NeverReady).then(|| {
                now + real(
                    spec["readinessProbe"]["initialDelaySeconds"]
                        .as_f64()
                        .unwrap_or(0.0)
                        + 1.0,
                )
            });
        }
        State::Running { started, exit_at } => {
            if c.ready_at.is_some_and(|at| now >= at) && !c.ready && exit_at.is_none() {
                c.ready = true;
            }
            if let Some(at) = c.next_probe.filter(|at| now >= *at) {
                let period = spec["readinessProbe"]["periodSeconds"]
                    .as_f64()
                    .unwrap_or(PROBE_PERIOD);
                c.next_probe = Some(at + real(period));
                events.push((
                    fp.clone(),
                    "Warning",
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503".into(),
                ));
            }
            if exit_at.is_some_and(|at| now >= at) {
                let exit_code = match &c.behaviour {
                    Behaviour::CrashLoop { exit_code, .. } => *exit_code,
                    _ => 0,
                };
                let finished = timestamp();
                let terminated = json!({"terminated": {
                    "exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "startedAt": started, "finishedAt": finished, "containerID": c.id,
                }});
                c.ready = false;
                let restarts =
                    restart_policy == "Always" || (restart_policy == "OnFailure" && exit_code != 0);
                if restarts {
                    let delay = backoff(c.restarts);
                    events.push((
                        fp,
                        "Warning",
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {} in pod {pod_ref}",
                            c.name
                        ),
                    ));
                    c.last_terminated = Some(terminated);
                    c.state = State::CrashLoopBackOff {
                        until: now + real(delay),
                    };
                } else {
                    c.state = State::Terminated {
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

fn container_status(c: &Container) -> Value {
    let state = match &c.state {
        State::Pulling { .. } | State::Creating { .. } => {
            json!({"waiting": {"reason": "ContainerCreating"}})
        }
        State::ErrImagePull { .. } => {
            json!({"waiting": {"reason": "ErrImagePull", "message": pull_error(c)}})
        }
        State::ImagePullBackOff { .. } => json!({"waiting": {
            "reason": "ImagePullBackOff",
            "message": format!("Back-off pulling image \"{}\": ErrImagePull: {}", c.image, pull_error(c)),
        }}),
        State::CrashLoopBackOff { .. } => json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": format!("back-off {}s restarting failed container={}", backoff(c.restarts.saturating_sub(1)) as u64, c.name),
        }}),
        State::Running { started, .. } => json!({"running": {"startedAt": started}}),
        State::Terminated {
            exit_code,
            started,
            finished,
        } => json!({"terminated": {
            "exitCode": exit_code,
            "reason": if *exit_code == 0 { "Completed" } else { "Error" },
            "startedAt": started, "finishedAt": finished, "containerID": c.id,
        }}),
    };
    let pulled = !matches!(
        c.state,
        State::Pulling { .. } | State::ErrImagePull { .. } | State::ImagePullBackOff { .. }
    );
    let mut status = json!({
        "name": c.name,
        "image": c.image,
        "imageID": if pulled { format!("{}@sha256:{}", qualified_image(&c.image).rsplit_once(':').map_or(c.image.as_str(), |(n, _)| n), hex_id(&c.image)) } else { String::new() },
        "ready": c.ready,
        "started": matches!(c.state, State::Running { .. }),
        "restartCount": c.restarts,
        "state": state,
        "lastState": c.last_terminated.clone().unwrap_or_else(|| json!({})),
    });
    if !c.id.is_empty() {
        status["containerID"] = json!(c.id);
    }
    status
}

fn render_status(run: &PodRun) -> Value {
    let statuses: Vec<Value> = run.containers.iter().map(container_status).collect();
    let all_ready = run.containers.iter().all(|c| c.ready);
    let terminated: Vec<i32> = run
        .containers
        .iter()
        .filter_map(|c| match c.state {
            State::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    let phase = if !terminated.is_empty() && terminated.len() == run.containers.len() {
        if terminated.iter().all(|code| *code == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if run.containers.iter().any(|c| {
        matches!(
            c.state,
            State::Running { .. } | State::CrashLoopBackOff { .. }
        ) || c.restarts > 0
    }) {
        "Running"
    } else {
        "Pending"
    };
    let created = run.containers.iter().any(|c| {
        !matches!(
            c.state,
            State::Pulling { .. } | State::ErrImagePull { .. } | State::ImagePullBackOff { .. }
        )
    });
    let not_ready: Vec<&str> = run
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let transition = run.start_time.clone();
    let condition = |kind: &str, ok: bool| {
        let mut condition = json!({"type": kind, "status": if ok { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": transition});
        if !ok && (kind == "Ready" || kind == "ContainersReady") {
            let completed = phase == "Succeeded" || phase == "Failed";
            condition["reason"] = json!(if completed {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            });
            if !completed {
                condition["message"] = json!(format!(
                    "containers with unready status: [{}]",
                    not_ready.join(" ")
                ));
            }
        }
        condition
    };
    json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", created),
            condition("Initialized", true),
            condition("Ready", all_ready),
            condition("ContainersReady", all_ready),
            condition("PodScheduled", true),
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": run.ip,
        "podIPs": [{"ip": run.ip}],
        "startTime": run.start_time,
        "containerStatuses": statuses,
    })
}

/// The lines one run of a container prints, as kube-sim's containers print them.
fn run_output(c: &Container, exits: bool) -> Vec<String> {
    let ts = timestamp();
    match &c.behaviour {
        Behaviour::CrashLoop { logs, .. } => logs.clone(),
        Behaviour::NeverReady => vec![
            format!("{ts} starting {}", c.image),
            format!("{ts} waiting for dependencies before reporting ready"),
        ],
        _ if exits => vec![
            format!("{ts} starting {}", c.image),
            format!("{ts} work done, exiting"),
        ],
        _ => vec![
            format!("{ts} starting {}", c.image),
            format!("{ts} listening on 0.0.0.0:8080"),
        ],
    }
}

/// TLS for the kubelet's port, with a self-signed certificate (the API server does not
/// check kubelets' certificates unless told a CA, as here).
fn tls_acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), NODE_NAME.to_owned()])?
        .self_signed(&key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `GET /containerLogs/{namespace}/{pod}/{container}[?previous=true&tailLines=N]`
/// to the API server, one request per connection.
async fn serve_logs(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    logs: Logs,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let logs = Arc::clone(&logs);
        tokio::spawn(async move {
            if let Err(error) = answer(acceptor, stream, &logs).await {
                tracing::debug!(%error, "the fake kubelet could not answer a request");
            }
        });
    }
}

async fn answer(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    logs: &Logs,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = acceptor.accept(stream).await?;
    let mut request = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65_536 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let request = String::from_utf8_lossy(&request);
    let target = request.split_whitespace().nth(1).unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, body) = match parts.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            let previous = param("previous") == Some("true");
            let tail = param("tailLines").and_then(|n| n.parse::<usize>().ok());
            let log = logs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&(
                    (*namespace).to_owned(),
                    (*pod).to_owned(),
                    (*container).to_owned(),
                ))
                .cloned();
            let lines = if previous {
                log.and_then(|l| l.previous).ok_or_else(|| {
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    )
                })
            } else {
                log.map(|l| l.current).ok_or_else(|| {
                    format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
                })
            };
            match lines {
                Ok(lines) => {
                    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
                    let text: String = lines.iter().skip(skip).map(|l| format!("{l}\n")).collect();
                    ("200 OK", text)
                }
                Err(message) => ("400 Bad Request", message),
            }
        }
        _ => ("404 Not Found", "404 page not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
