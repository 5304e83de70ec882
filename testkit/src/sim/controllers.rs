//! Simulated controllers: Deployment, ReplicaSet and ReplicationController,
//! StatefulSet, DaemonSet, Job, the
//! garbage collector, and the small housekeeping the control plane does (default
//! ServiceAccounts, LoadBalancer addresses). They run on a fixed tick over the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{self, random_name_suffix};
use super::kubelet::{self, Behaviour};
use super::resources::{self, Resource};
use super::store::now_rfc3339;
use super::{Shared, SimConfig, World};

const MANAGER: &str = "kube-controller-manager";

/// Who reports an event.
#[derive(Debug, Clone)]
pub(crate) struct EventSource {
    component: String,
    host: Option<String>,
}

impl EventSource {
    pub fn kubelet(node: &str) -> Self {
        Self {
            component: "kubelet".to_owned(),
            host: Some(node.to_owned()),
        }
    }

    pub fn scheduler() -> Self {
        Self {
            component: "default-scheduler".to_owned(),
            host: None,
        }
    }

    fn controller(name: &str) -> Self {
        Self {
            component: name.to_owned(),
            host: None,
        }
    }
}

#[derive(Debug, Clone)]
struct DeploymentSim {
    progress_at: Instant,
    last_counts: (i64, i64, i64, i64),
    new_rs: String,
}

/// Controller memory that is not part of any object.
#[derive(Debug, Default)]
pub(crate) struct ControllerState {
    deployments: HashMap<String, DeploymentSim>,
    ready_since: HashMap<String, Instant>,
    events: HashMap<(String, String, String, String), (String, String)>,
    templates: HashMap<String, Value>,
    last_event_id: u64,
}

impl ControllerState {
    pub fn forget(&mut self, uid: &str) {
        self.deployments.remove(uid);
        self.ready_since.remove(uid);
    }
}

fn res(kind: &str) -> &'static Resource {
    // The kinds named in this module are all in the static table.
    resources::by_kind(kind).unwrap_or(&resources::RESOURCES[0])
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn i(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn uid(v: &Value) -> String {
    s(v, "/metadata/uid").to_owned()
}

fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true
    })
}

fn controlled_by(obj: &Value, owner_uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == owner_uid && r["controller"] == true)
        })
}

/// Records an event as the real components do, aggregating repeats into `count`.
pub(crate) fn record_event(
    world: &mut World,
    involved: &Value,
    field_path: Option<String>,
    event_type: &str,
    reason: &str,
    message: &str,
    source: &EventSource,
) {
    let ev_res = res("Event");
    let ns = match s(involved, "/metadata/namespace") {
        "" => "default".to_owned(),
        n => n.to_owned(),
    };
    let key = (
        uid(involved),
        field_path.clone().unwrap_or_default(),
        reason.to_owned(),
        message.to_owned(),
    );
    let now = now_rfc3339();
    if let Some((ev_ns, ev_name)) = world.controllers.events.get(&key).cloned()
        && let Some(existing) = world.store.get(ev_res, &ev_ns, &ev_name).cloned()
    {
        let mut updated = existing;
        updated["count"] = json!(i(&updated, "/count") + 1);
        updated["lastTimestamp"] = json!(now);
        world.store.replace(ev_res, updated);
        return;
    }
    // Like the real recorders, names end in the time in hex, so lists come out in order.
    let nanos = u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
    let id = nanos.max(world.controllers.last_event_id + 1);
    world.controllers.last_event_id = id;
    let name = format!("{}.{id:x}", s(involved, "/metadata/name"));
    let mut involved_ref = json!({
        "kind": involved["kind"], "namespace": involved["metadata"]["namespace"],
        "name": involved["metadata"]["name"], "uid": involved["metadata"]["uid"],
        "apiVersion": involved["apiVersion"], "resourceVersion": involved["metadata"]["resourceVersion"]
    });
    if let Some(fp) = &field_path {
        involved_ref["fieldPath"] = json!(fp);
    }
    let mut source_json = json!({"component": source.component});
    if let Some(h) = &source.host {
        source_json["host"] = json!(h);
    }
    let event = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved_ref,
        "reason": reason, "message": message, "source": source_json,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": event_type,
        "eventTime": null, "reportingComponent": source.component,
        "reportingInstance": source.host.clone().unwrap_or_default()
    });
    world.store.insert_new(ev_res, event);
    world.controllers.events.insert(key, (ns, name));
}

/// Creates the namespaces and nodes a fresh cluster has.
pub(crate) fn bootstrap(world: &mut World, cfg: &SimConfig) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let _ = api::create(
            world,
            res("Namespace"),
            "",
            json!({"metadata": {"name": ns}}),
            MANAGER,
            false,
        );
    }
    let capacity: serde_json::Map<String, Value> = cfg
        .node_capacity
        .iter()
        .map(|(k, v)| (k.clone(), json!(format!("{v}"))))
        .collect();
    let capacity = Value::Object(capacity);
    for node in &cfg.nodes {
        let node_obj = json!({
            "metadata": {"name": node, "labels": {
                "kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"
            }},
            "spec": {"podCIDR": "10.244.0.0/24"},
        });
        if let Ok(created) = api::create(world, res("Node"), "", node_obj, MANAGER, false) {
            let mut ready = created;
            ready["status"] = json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "capacity": capacity.clone(),
                "allocatable": capacity,
                "nodeInfo": {"kubeletVersion": "v1.33.0", "containerRuntimeVersion": "containerd://2.0.0", "operatingSystem": "linux", "architecture": "amd64"}
            });
            world.store.replace(res("Node"), ready);
        }
    }
    housekeeping(world);
}

/// Runs the controllers until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_millis(shared.config.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_rv = 0;
    let mut last_pass = Instant::now();
    loop {
        interval.tick().await;
        let behaviours = shared
            .behaviours
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        let spent = {
            let mut world = shared.lock_world();
            let now = Instant::now();
            // An idle cluster costs nothing: a pass runs when an object changed, a timer
            // expired, or (as a safety net) a second has gone by.
            let changed = world.store.resource_version() != last_rv;
            let due = world.wake_at.is_some_and(|w| now >= w);
            if !changed && !due && now < last_pass + Duration::from_secs(1) {
                continue;
            }
            world.wake_at = None;
            // Changes made by this pass trigger the next one, until a pass changes nothing.
            last_rv = world.store.resource_version();
            tick(&mut world, &shared.config, &behaviours, now);
            last_pass = now;
            now.elapsed()
        };
        // A pass over thousands of objects holds the world for long: leave the API
        // server's workers as long again to answer before the next one, or on a
        // loaded machine back-to-back passes starve them.
        if spent > Duration::from_millis(shared.config.tick_ms) {
            tokio::time::sleep(spent.min(Duration::from_millis(250))).await;
        }
    }
}

/// The objects of a kind the controllers manage: those not being deleted, which the
/// real controllers leave alone.
fn managed(world: &World, kind: &str) -> Vec<Value> {
    world
        .store
        .list(res(kind), None)
        .into_iter()
        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_none())
        .cloned()
        .collect()
}

fn tick(world: &mut World, cfg: &SimConfig, behaviours: &HashMap<String, Behaviour>, now: Instant) {
    finish_deletions(world);
    garbage_collect(world);
    housekeeping(world);
    for d in managed(world, "Deployment") {
        reconcile_deployment(world, cfg, &d, now);
    }
    for kind in ["ReplicaSet", "ReplicationController"] {
        for owner in managed(world, kind) {
            reconcile_replicas(world, cfg, &owner, now);
        }
    }
    for sts in managed(world, "StatefulSet") {
        reconcile_statefulset(world, &sts);
    }
    for ds in managed(world, "DaemonSet") {
        reconcile_daemonset(world, cfg, &ds);
    }
    for job in managed(world, "Job") {
        reconcile_job(world, &job);
    }
    kubelet::tick(world, cfg, behaviours, now);
}

/// Finishes the deletions the API left marked, as the namespace controller and the
/// garbage collector do: a terminating namespace is emptied and removed; an owner under
/// the `orphan` finalizer frees its dependents, one under `foregroundDeletion` deletes
/// them and waits until they are gone; each goes once no finalizer is left.
fn finish_deletions(world: &mut World) {
    let marked: Vec<(&'static str, Value)> = world
        .store
        .all()
        .filter(|(kind, o)| *kind != "Event" && o.pointer("/metadata/deletionTimestamp").is_some())
        .map(|(kind, o)| (kind, o.clone()))
        .collect();
    for (kind, object) in marked {
        let Some(r) = resources::by_key(&world.custom, kind) else {
            continue;
        };
        let (ns, name) = (
            s(&object, "/metadata/namespace"),
            s(&object, "/metadata/name"),
        );
        if kind == "Namespace" {
            api::delete_namespace_contents(world, name);
            let _ = api::remove(world, r, ns, name);
            continue;
        }
        let finalizers: Vec<&str> = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let owner_uid = uid(&object);
        let mut left = finalizers.clone();
        if finalizers.contains(&"orphan") {
            api::orphan_dependents(world, &owner_uid);
            left.retain(|f| *f != "orphan");
        }
        if finalizers.contains(&"foregroundDeletion") && !api::delete_dependents(world, &owner_uid)
        {
            left.retain(|f| *f != "foregroundDeletion");
        }
        if left.len() == finalizers.len() {
            continue;
        }
        if left.is_empty() {
            let _ = api::remove(world, r, ns, name);
        } else if let Some(mut fresh) = world.store.get(r, ns, name).cloned() {
            fresh["metadata"]["finalizers"] = json!(left);
            world.store.replace(r, fresh);
        }
    }
}

fn garbage_collect(world: &mut World) {
    // Events neither own anything nor are owned; skipping them keeps the pass cheap.
    let uids: HashSet<String> = world
        .store
        .all()
        .filter(|(kind, _)| *kind != "Event")
        .map(|(_, o)| uid(o))
        .collect();
    let orphans: Vec<(&'static str, String, String)> = world
        .store
        .all()
        .filter(|(kind, _)| *kind != "Event")
        .filter(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    !refs.is_empty()
                        && refs
                            .iter()
                            .all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default()))
                })
        })
        .map(|(k, o)| {
            (
                k,
                s(o, "/metadata/namespace").to_owned(),
                s(o, "/metadata/name").to_owned(),
            )
        })
        .collect();
    for (kind, ns, name) in orphans {
        if let Some(r) = resources::by_key(&world.custom, kind) {
            let _ = api::delete(world, r, &ns, &name, None);
        }
    }
}

fn housekeeping(world: &mut World) {
    let sa = res("ServiceAccount");
    let namespaces: Vec<String> = world
        .store
        .list(res("Namespace"), None)
        .into_iter()
        .map(|n| s(n, "/metadata/name").to_owned())
        .collect();
    for ns in namespaces {
        if world.store.get(sa, &ns, "default").is_none() {
            let _ = api::create(
                world,
                sa,
                &ns,
                json!({"metadata": {"name": "default"}}),
                MANAGER,
                false,
            );
        }
    }
    let svc = res("Service");
    for service in world.store.list_owned(svc, None) {
        if s(&service, "/spec/type") == "LoadBalancer"
            && service.pointer("/status/loadBalancer/ingress").is_none()
        {
            let mut updated = service.clone();
            let last = s(&service, "/spec/clusterIP")
                .rsplit('.')
                .next()
                .unwrap_or("1")
                .to_owned();
            updated["status"] = json!({"loadBalancer": {"ingress": [{"ip": format!("172.18.255.{last}"), "ipMode": "VIP"}]}});
            world.store.replace(svc, updated);
        }
    }
}

fn pods_of(world: &World, ns: &str, owner_uid: &str) -> Vec<Value> {
    world
        .store
        .list(res("Pod"), Some(ns))
        .into_iter()
        .filter(|p| {
            controlled_by(p, owner_uid) && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .cloned()
        .collect()
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn pod_available(
    world: &mut World,
    cfg: &SimConfig,
    pod: &Value,
    min_ready_seconds: i64,
    now: Instant,
) -> bool {
    let id = uid(pod);
    if !pod_ready(pod) {
        world.controllers.ready_since.remove(&id);
        return false;
    }
    let since = *world.controllers.ready_since.entry(id).or_insert(now);
    let available_at = since + cfg.real(min_ready_seconds as f64);
    if min_ready_seconds > 0 && now < available_at {
        world.wake(available_at);
        return false;
    }
    true
}

/// The component name a workload's controller reports events as.
fn controller_of(owner: &Value) -> EventSource {
    EventSource::controller(&match s(owner, "/kind") {
        "ReplicationController" => "replication-controller".to_owned(),
        kind => format!("{}-controller", kind.to_ascii_lowercase()),
    })
}

/// Creates a pod from a template for an owner, named `name` or, without one, as the
/// real controllers name them: `generateName` `<owner>-` and a random suffix.
fn create_pod(
    world: &mut World,
    owner: &Value,
    template: &Value,
    name: Option<&str>,
    extra_labels: &[(&str, String)],
    node: Option<&str>,
) -> Option<Value> {
    let ns = s(owner, "/metadata/namespace").to_owned();
    let mut pod = json!({
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let name = match name {
        Some(name) => name.to_owned(),
        None => {
            let prefix = format!("{}-", s(owner, "/metadata/name"));
            pod["metadata"]["generateName"] = json!(prefix);
            format!("{prefix}{}", random_name_suffix())
        }
    };
    let name = name.as_str();
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["ownerReferences"] = json!([owner_ref(owner)]);
    for (k, v) in extra_labels {
        pod["metadata"]["labels"][*k] = json!(v);
    }
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
    }
    let created = api::create(world, res("Pod"), &ns, pod, MANAGER, false).ok()?;
    record_event(
        world,
        owner,
        None,
        "Normal",
        "SuccessfulCreate",
        &format!("Created pod: {name}"),
        &controller_of(owner),
    );
    Some(created)
}

fn delete_pod(world: &mut World, owner: &Value, pod: &Value) {
    let ns = s(pod, "/metadata/namespace").to_owned();
    let name = s(pod, "/metadata/name").to_owned();
    if api::delete(world, res("Pod"), &ns, &name, None).is_ok() {
        record_event(
            world,
            owner,
            None,
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted pod: {name}"),
            &controller_of(owner),
        );
    }
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// A pod-template-hash in the style of the real controllers (FNV-1a, safe alphabet).
fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in canonical(template).bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d - b'0')]))
        .collect()
}

fn resolve_int_or_percent(v: Option<&Value>, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(p)) => {
            let pct: f64 = p.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i64
        }
        _ => default,
    }
}

fn revision(rs: &Value) -> i64 {
    s(
        rs,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    )
    .parse()
    .unwrap_or(0)
}

fn set_rs_replicas(world: &mut World, deployment: &Value, rs: &Value, replicas: i64) -> Value {
    let old = i(rs, "/spec/replicas");
    if old == replicas {
        return rs.clone();
    }
    let mut updated = rs.clone();
    updated["spec"]["replicas"] = json!(replicas);
    updated["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
        json!(i(deployment, "/spec/replicas").to_string());
    let stored = world
        .store
        .replace(res("ReplicaSet"), updated)
        .unwrap_or_else(|| rs.clone());
    let direction = if replicas > old { "up" } else { "down" };
    record_event(
        world,
        deployment,
        None,
        "Normal",
        "ScalingReplicaSet",
        &format!(
            "Scaled {direction} replica set {} from {old} to {replicas}",
            s(rs, "/metadata/name")
        ),
        &EventSource::controller("deployment-controller"),
    );
    stored
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    previous: Option<&Value>,
    bump_update: bool,
) -> Value {
    let now = now_rfc3339();
    let same = previous.is_some_and(|p| p["status"] == status);
    let transition = if same {
        previous.map_or(now.clone(), |p| {
            p["lastTransitionTime"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    } else {
        now.clone()
    };
    let update = match previous {
        Some(p) if same && p["reason"] == reason && !bump_update => {
            p["lastUpdateTime"].as_str().unwrap_or_default().to_owned()
        }
        _ => now,
    };
    json!({"type": kind, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": message})
}

fn find_condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind)
}

fn reconcile_deployment(world: &mut World, cfg: &SimConfig, d: &Value, now: Instant) {
    let ns = s(d, "/metadata/namespace").to_owned();
    let name = s(d, "/metadata/name").to_owned();
    let d_uid = uid(d);
    let desired = i(d, "/spec/replicas");
    let template = d
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let rs_res = res("ReplicaSet");
    let owned: Vec<Value> = world
        .store
        .list(rs_res, Some(&ns))
        .into_iter()
        .filter(|rs| controlled_by(rs, &d_uid))
        .cloned()
        .collect();
    let max_revision = owned.iter().map(revision).max().unwrap_or(0);
    let mut created_new = false;
    let mut new_rs = match owned
        .iter()
        .find(|rs| s(rs, "/metadata/labels/pod-template-hash") == hash)
    {
        Some(rs) if revision(rs) < max_revision => {
            let mut bumped = rs.clone();
            bumped["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                json!((max_revision + 1).to_string());
            world
                .store
                .replace(rs_res, bumped)
                .unwrap_or_else(|| rs.clone())
        }
        Some(rs) => rs.clone(),
        None => {
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = d
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or_else(|| json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut labels = template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            labels["pod-template-hash"] = json!(hash);
            let rs_name = format!("{name}-{hash}");
            let max_surge = resolve_int_or_percent(
                d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
                desired,
                true,
                0,
            );
            // Like the real controller, the new ReplicaSet is created at the size the
            // rollout allows at once: all of it on a first rollout, the surge room on
            // an update, nothing while old pods of a Recreate still run or when paused.
            let old_total: i64 = owned.iter().map(|rs| i(rs, "/spec/replicas")).sum();
            let old_active = owned
                .iter()
                .any(|rs| i(rs, "/spec/replicas") > 0 || i(rs, "/status/replicas") > 0);
            let initial = if d.pointer("/spec/paused") == Some(&json!(true))
                || (s(d, "/spec/strategy/type") == "Recreate" && old_active)
            {
                0
            } else if s(d, "/spec/strategy/type") == "Recreate" {
                desired
            } else {
                let surge = resolve_int_or_percent(
                    d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
                    desired,
                    true,
                    1,
                );
                (desired + surge - old_total).clamp(0, desired)
            };
            let rs = json!({
                "metadata": {
                    "name": rs_name, "namespace": ns, "labels": labels,
                    "annotations": {
                        "deployment.kubernetes.io/revision": (max_revision + 1).to_string(),
                        "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                        "deployment.kubernetes.io/max-replicas": (desired + max_surge).to_string(),
                    },
                    "ownerReferences": [owner_ref(d)],
                },
                "spec": {
                    "replicas": initial, "minReadySeconds": i(d, "/spec/minReadySeconds"),
                    "selector": selector, "template": rs_template,
                },
            });
            match api::create(world, rs_res, &ns, rs, MANAGER, false) {
                Ok(created) => {
                    created_new = true;
                    if initial > 0 {
                        record_event(
                            world,
                            d,
                            None,
                            "Normal",
                            "ScalingReplicaSet",
                            &format!("Scaled up replica set {rs_name} from 0 to {initial}"),
                            &EventSource::controller("deployment-controller"),
                        );
                    }
                    created
                }
                Err(_) => return,
            }
        }
    };
    let new_name = s(&new_rs, "/metadata/name").to_owned();
    let new_revision = revision(&new_rs).to_string();
    let mut d_now = d.clone();
    // The new revision is written with the status, in one update, as the real
    // controller writes it.
    let revised = s(
        d,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    ) != new_revision;
    if revised {
        d_now["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(new_revision);
    }
    let mut olds: Vec<Value> = owned
        .iter()
        .filter(|rs| s(rs, "/metadata/name") != new_name)
        .cloned()
        .collect();
    olds.sort_by_key(|rs| s(rs, "/metadata/creationTimestamp").to_owned());

    let paused = d.pointer("/spec/paused") == Some(&json!(true));
    let recreate = s(d, "/spec/strategy/type") == "Recreate";
    let max_surge = resolve_int_or_percent(
        d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        desired,
        true,
        1,
    );
    let mut max_unavailable = resolve_int_or_percent(
        d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        desired,
        false,
        0,
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    max_unavailable = max_unavailable.min(desired);
    if !paused {
        if recreate {
            // Like the real controller, wait until no old pod runs, terminating ones included.
            let old_uids: HashSet<String> = olds.iter().map(uid).collect();
            let old_pods_running = world
                .store
                .list(res("Pod"), Some(&ns))
                .into_iter()
                .any(|p| {
                    !matches!(s(p, "/status/phase"), "Succeeded" | "Failed")
                        && p.pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .is_some_and(|refs| {
                                refs.iter().any(|r| {
                                    old_uids.contains(r["uid"].as_str().unwrap_or_default())
                                })
                            })
                });
            let old_active = old_pods_running
                || olds
                    .iter()
                    .any(|rs| i(rs, "/spec/replicas") > 0 || i(rs, "/status/replicas") > 0);
            for rs in &mut olds {
                if i(rs, "/spec/replicas") > 0 {
                    *rs = set_rs_replicas(world, &d_now, rs, 0);
                }
            }
            if !old_active {
                new_rs = set_rs_replicas(world, &d_now, &new_rs, desired);
            }
        } else {
            let new_spec = i(&new_rs, "/spec/replicas");
            let total: i64 = new_spec + olds.iter().map(|rs| i(rs, "/spec/replicas")).sum::<i64>();
            let mut scaled_up = false;
            if new_spec > desired {
                new_rs = set_rs_replicas(world, &d_now, &new_rs, desired);
            } else if new_spec < desired {
                let room = desired + max_surge - total;
                if room > 0 {
                    new_rs = set_rs_replicas(world, &d_now, &new_rs, desired.min(new_spec + room));
                    scaled_up = true;
                }
            }
            if !scaled_up && olds.iter().any(|rs| i(rs, "/spec/replicas") > 0) {
                let min_available = desired - max_unavailable;
                let all_pods: i64 = i(&new_rs, "/spec/replicas")
                    + olds.iter().map(|rs| i(rs, "/spec/replicas")).sum::<i64>();
                let new_unavailable =
                    i(&new_rs, "/spec/replicas") - i(&new_rs, "/status/availableReplicas");
                let mut max_down = all_pods - min_available - new_unavailable;
                for rs in &mut olds {
                    if max_down <= 0 {
                        break;
                    }
                    let spec = i(rs, "/spec/replicas");
                    let unhealthy = spec - i(rs, "/status/availableReplicas");
                    let down = max_down.min(unhealthy).max(0);
                    if down > 0 {
                        *rs = set_rs_replicas(world, &d_now, rs, spec - down);
                        max_down -= down;
                    }
                }
                let available: i64 = i(&new_rs, "/status/availableReplicas")
                    + olds
                        .iter()
                        .map(|rs| i(rs, "/status/availableReplicas").min(i(rs, "/spec/replicas")))
                        .sum::<i64>();
                let mut can = available - min_available;
                for rs in &mut olds {
                    if can <= 0 {
                        break;
                    }
                    let spec = i(rs, "/spec/replicas");
                    let down = can.min(spec);
                    if down > 0 {
                        *rs = set_rs_replicas(world, &d_now, rs, spec - down);
                        can -= down;
                    }
                }
            }
        }
        // Old ReplicaSets beyond the revision history limit are deleted once empty.
        let limit = d
            .pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
            .unwrap_or(10);
        let empty: Vec<&Value> = olds
            .iter()
            .filter(|rs| i(rs, "/spec/replicas") == 0 && i(rs, "/status/replicas") == 0)
            .collect();
        let excess = i64::try_from(empty.len()).unwrap_or(0) - limit;
        for rs in empty
            .into_iter()
            .take(usize::try_from(excess.max(0)).unwrap_or(0))
        {
            let _ = api::delete(world, rs_res, &ns, s(rs, "/metadata/name"), None);
        }
    }

    // Status, computed from the ReplicaSets' own status.
    let all: Vec<&Value> = std::iter::once(&new_rs).chain(olds.iter()).collect();
    let replicas: i64 = all.iter().map(|rs| i(rs, "/status/replicas")).sum();
    let updated = i(&new_rs, "/status/replicas");
    let ready: i64 = all.iter().map(|rs| i(rs, "/status/readyReplicas")).sum();
    let available: i64 = all
        .iter()
        .map(|rs| i(rs, "/status/availableReplicas"))
        .sum();
    let counts = (updated, ready, available, replicas);
    let min_available = desired - max_unavailable;
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_f64);

    let sim = world
        .controllers
        .deployments
        .entry(d_uid.clone())
        .or_insert_with(|| DeploymentSim {
            progress_at: now,
            last_counts: (-1, -1, -1, -1),
            new_rs: String::new(),
        });
    let rs_changed = sim.new_rs != new_name;
    let progressed = rs_changed
        || created_new
        || counts.0 > sim.last_counts.0
        || counts.1 > sim.last_counts.1
        || counts.2 > sim.last_counts.2
        || counts.3 < sim.last_counts.3;
    if progressed {
        sim.progress_at = now;
    }
    sim.last_counts = counts;
    sim.new_rs.clone_from(&new_name);
    let progress_at = sim.progress_at;
    if let Some(dl) = deadline {
        world.wake(progress_at + cfg.real(dl));
    }

    let previous_progressing = find_condition(d, "Progressing");
    let previous_available = find_condition(d, "Available");
    let complete = updated == desired && replicas == desired && available == desired;
    let progressing = if paused {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            previous_progressing,
            false,
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            previous_progressing,
            false,
        )
    } else if rs_changed && created_new {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{new_name}\""),
            previous_progressing,
            true,
        )
    } else if !rs_changed
        && previous_progressing.is_some_and(|p| p["reason"] == "NewReplicaSetAvailable")
        && !progressed
    {
        previous_progressing.cloned().unwrap_or_default()
    } else if deadline.is_some_and(|dl| now >= progress_at + cfg.real(dl)) {
        condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            previous_progressing,
            false,
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{new_name}\" is progressing."),
            previous_progressing,
            progressed,
        )
    };
    let available_condition = if available >= min_available {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            previous_available,
            false,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            previous_available,
            false,
        )
    };
    let mut status = json!({
        "observedGeneration": i(d, "/metadata/generation"),
        "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (desired - available).max(0),
        "conditions": [available_condition, progressing],
    });
    if let Some(o) = status.as_object_mut() {
        // The real API omits zero counts.
        o.retain(|_, v| v != &json!(0));
        if !o.contains_key("observedGeneration") {
            o.insert("observedGeneration".to_owned(), json!(0));
        }
    }
    if revised || d_now.get("status") != Some(&status) {
        let mut out = d_now.clone();
        out["status"] = status;
        world.store.replace(res("Deployment"), out);
    }
}

/// The ReplicaSet controller, which ReplicationControllers share (a real cluster runs
/// the same code for both): as many pods from the template as `spec.replicas` asks,
/// and the status counts.
fn reconcile_replicas(world: &mut World, cfg: &SimConfig, owner: &Value, now: Instant) {
    let r = res(s(owner, "/kind"));
    let ns = s(owner, "/metadata/namespace").to_owned();
    let owner_uid = uid(owner);
    let desired = i(owner, "/spec/replicas");
    let mut pods = pods_of(world, &ns, &owner_uid);
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let current = i64::try_from(pods.len()).unwrap_or(0);
    if current < desired {
        for _ in current..desired {
            if let Some(p) = create_pod(world, owner, &template, None, &[], None) {
                pods.push(p);
            }
        }
    } else if current > desired {
        // Like the real controller: unscheduled, then not ready, then newest pods go first.
        pods.sort_by_key(|p| {
            (
                p.pointer("/spec/nodeName").is_some(),
                pod_ready(p),
                std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_owned()),
            )
        });
        let excess = usize::try_from(current - desired).unwrap_or(0);
        let victims: Vec<Value> = pods.drain(..excess).collect();
        for p in victims {
            delete_pod(world, owner, &p);
        }
    }
    let min_ready = i(owner, "/spec/minReadySeconds");
    let template_labels = super::selector::LabelSelector::from_object(
        &json!({"matchLabels": template.pointer("/metadata/labels")}),
    );
    let fully_labeled = pods
        .iter()
        .filter(|p| template_labels.matches_labels(p.pointer("/metadata/labels")))
        .count();
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let available = pods
        .iter()
        .filter(|p| pod_available(world, cfg, p, min_ready, now))
        .count();
    let mut status = json!({
        "replicas": pods.len(), "fullyLabeledReplicas": fully_labeled, "readyReplicas": ready,
        "availableReplicas": available, "observedGeneration": i(owner, "/metadata/generation"),
    });
    if let Some(o) = status.as_object_mut() {
        o.retain(|k, v| k == "replicas" || k == "observedGeneration" || v != &json!(0));
    }
    if let Some(fresh) = world.store.get(r, &ns, s(owner, "/metadata/name")).cloned()
        && fresh.get("status") != Some(&status)
    {
        let mut out = fresh;
        out["status"] = status;
        world.store.replace(r, out);
    }
}

fn reconcile_statefulset(world: &mut World, sts: &Value) {
    let ns = s(sts, "/metadata/namespace").to_owned();
    let name = s(sts, "/metadata/name").to_owned();
    let desired = i(sts, "/spec/replicas");
    let partition = i(sts, "/spec/updateStrategy/rollingUpdate/partition");
    let on_delete = s(sts, "/spec/updateStrategy/type") == "OnDelete";
    let parallel = s(sts, "/spec/podManagementPolicy") == "Parallel";
    let template = sts
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let update_rev = format!("{name}-{}", template_hash(&template));
    world
        .controllers
        .templates
        .insert(update_rev.clone(), template.clone());
    let current_rev = match s(sts, "/status/currentRevision") {
        "" => update_rev.clone(),
        r => r.to_owned(),
    };
    let pods = pods_of(world, &ns, &uid(sts));
    let by_ordinal: HashMap<i64, Value> = pods
        .iter()
        .filter_map(|p| {
            let ord = s(p, "/metadata/name").rsplit('-').next()?.parse().ok()?;
            Some((ord, p.clone()))
        })
        .collect();
    let rev_of = |p: &Value| s(p, "/metadata/labels/controller-revision-hash").to_owned();
    let mut acted = false;
    for ord in 0..desired {
        if by_ordinal.contains_key(&ord) {
            if !parallel && !pod_ready(&by_ordinal[&ord]) {
                acted = true;
                break;
            }
            continue;
        }
        let rev = if ord < partition {
            current_rev.clone()
        } else {
            update_rev.clone()
        };
        let tpl = world
            .controllers
            .templates
            .get(&rev)
            .cloned()
            .unwrap_or_else(|| template.clone());
        let pod_name = format!("{name}-{ord}");
        create_pod(
            world,
            sts,
            &tpl,
            Some(&pod_name),
            &[
                ("controller-revision-hash", rev),
                ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
                ("apps.kubernetes.io/pod-index", ord.to_string()),
            ],
            None,
        );
        acted = true;
        if !parallel {
            break;
        }
    }
    if !acted {
        // Scale down from the highest ordinal, one at a time.
        let mut extra: Vec<i64> = by_ordinal
            .keys()
            .copied()
            .filter(|o| *o >= desired)
            .collect();
        extra.sort_unstable();
        if let Some(ord) = extra.last() {
            delete_pod(world, sts, &by_ordinal[ord]);
            acted = true;
        }
    }
    let all_ready = (0..desired).all(|o| by_ordinal.get(&o).is_some_and(pod_ready));
    if !acted && !on_delete && all_ready {
        // Rolling update: the highest outdated ordinal at or above the partition is replaced.
        let outdated = (partition..desired)
            .rev()
            .find(|o| by_ordinal.get(o).is_some_and(|p| rev_of(p) != update_rev));
        if let Some(ord) = outdated {
            delete_pod(world, sts, &by_ordinal[&ord]);
        }
    }
    let pods = pods_of(world, &ns, &uid(sts));
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let updated = pods.iter().filter(|p| rev_of(p) == update_rev).count();
    let current = pods.iter().filter(|p| rev_of(p) == current_rev).count();
    let all_updated = i64::try_from(updated).unwrap_or(0) == desired
        && i64::try_from(pods.len()).unwrap_or(0) == desired;
    let (current_revision, current_replicas) = if all_updated {
        (update_rev.clone(), updated)
    } else {
        (current_rev, current)
    };
    let status = json!({
        "observedGeneration": i(sts, "/metadata/generation"), "replicas": pods.len(),
        "readyReplicas": ready, "currentReplicas": current_replicas, "updatedReplicas": updated,
        "availableReplicas": ready, "currentRevision": current_revision, "updateRevision": update_rev,
        "collisionCount": 0,
    });
    if let Some(fresh) = world.store.get(res("StatefulSet"), &ns, &name).cloned()
        && fresh.get("status") != Some(&status)
    {
        let mut out = fresh;
        out["status"] = status;
        world.store.replace(res("StatefulSet"), out);
    }
}

fn reconcile_daemonset(world: &mut World, cfg: &SimConfig, ds: &Value) {
    let ns = s(ds, "/metadata/namespace").to_owned();
    let name = s(ds, "/metadata/name").to_owned();
    let template = ds
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let pods = pods_of(world, &ns, &uid(ds));
    let node_of = |p: &Value| s(p, "/spec/nodeName").to_owned();
    for node in &cfg.nodes {
        if !pods.iter().any(|p| node_of(p) == *node) {
            create_pod(
                world,
                ds,
                &template,
                None,
                &[
                    ("controller-revision-hash", hash.clone()),
                    (
                        "pod-template-generation",
                        i(ds, "/metadata/generation").to_string(),
                    ),
                ],
                Some(node),
            );
        }
    }
    let desired = cfg.nodes.len();
    let max_unavailable = usize::try_from(
        resolve_int_or_percent(
            ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            desired as i64,
            true,
            1,
        )
        .max(1),
    )
    .unwrap_or(1);
    let rolling = s(ds, "/spec/updateStrategy/type") != "OnDelete";
    if rolling && pods.len() == desired {
        let unavailable = pods.iter().filter(|p| !pod_ready(p)).count();
        let budget = max_unavailable.saturating_sub(unavailable);
        let outdated: Vec<&Value> = pods
            .iter()
            .filter(|p| s(p, "/metadata/labels/controller-revision-hash") != hash)
            .collect();
        for p in outdated.into_iter().take(budget) {
            delete_pod(world, ds, p);
        }
    }
    let pods = pods_of(world, &ns, &uid(ds));
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| s(p, "/metadata/labels/controller-revision-hash") == hash)
        .count();
    let status = json!({
        "observedGeneration": i(ds, "/metadata/generation"), "desiredNumberScheduled": desired,
        "currentNumberScheduled": pods.len(), "numberMisscheduled": 0, "numberReady": ready,
        "numberAvailable": ready, "numberUnavailable": desired.saturating_sub(ready),
        "updatedNumberScheduled": updated,
    });
    if let Some(fresh) = world.store.get(res("DaemonSet"), &ns, &name).cloned()
        && fresh.get("status") != Some(&status)
    {
        let mut out = fresh;
        out["status"] = status;
        world.store.replace(res("DaemonSet"), out);
    }
}

fn reconcile_job(world: &mut World, job: &Value) {
    let ns = s(job, "/metadata/namespace").to_owned();
    let name = s(job, "/metadata/name").to_owned();
    let finished = ["Complete", "Failed"]
        .iter()
        .any(|c| find_condition(job, c).is_some_and(|x| x["status"] == "True"));
    if finished {
        return;
    }
    let pods = pods_of(world, &ns, &uid(job));
    let phase = |p: &Value| s(p, "/status/phase").to_owned();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let active: Vec<&Value> = pods
        .iter()
        .filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
        .collect();
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let parallelism = job
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let backoff_limit = job
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
    let now = now_rfc3339();
    let start_time = job
        .pointer("/status/startTime")
        .cloned()
        .unwrap_or_else(|| json!(now));
    let mut status = json!({"startTime": start_time, "succeeded": succeeded, "failed": failed, "terminating": 0, "uncountedTerminatedPods": {}});
    let source = EventSource::controller("job-controller");
    if failed > backoff_limit {
        for p in active {
            delete_pod(world, job, p);
        }
        let msg = "Job has reached the specified backoff limit";
        status["conditions"] = json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": msg, "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": msg, "lastProbeTime": now, "lastTransitionTime": now},
        ]);
        record_event(
            world,
            job,
            None,
            "Warning",
            "BackoffLimitExceeded",
            msg,
            &source,
        );
    } else if succeeded >= completions {
        status["completionTime"] = json!(now);
        status["conditions"] = json!([
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
        ]);
        record_event(
            world,
            job,
            None,
            "Normal",
            "Completed",
            "Job completed",
            &source,
        );
    } else if !suspended {
        let want = parallelism.min(completions - succeeded);
        let have = i64::try_from(active.len()).unwrap_or(0);
        let template = job
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        for _ in have..want {
            create_pod(world, job, &template, None, &[], None);
        }
        let pods = pods_of(world, &ns, &uid(job));
        let active_now = pods
            .iter()
            .filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
            .count();
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        status["active"] = json!(active_now);
        status["ready"] = json!(ready);
    }
    if let Some(o) = status.as_object_mut() {
        o.retain(|k, v| {
            !(matches!(k.as_str(), "succeeded" | "failed" | "active") && v == &json!(0))
        });
    }
    if let Some(fresh) = world.store.get(res("Job"), &ns, &name).cloned()
        && fresh.get("status") != Some(&status)
    {
        let mut out = fresh;
        out["status"] = status;
        world.store.replace(res("Job"), out);
    }
}
