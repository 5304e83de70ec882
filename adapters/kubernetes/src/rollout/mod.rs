//! Watches a rollout to its verdict.
//!
//! One watch per applied workload (by name), and, once a workload's selector is known,
//! one on its pods (and for Deployments its ReplicaSets); once a pod runs without
//! becoming ready, one on the namespace's warning events, which alone tell of failing
//! readiness probes. kube-runtime's watcher resumes from the last
//! resourceVersion, relists after `410 Gone` and backs off on errors; an error is only
//! ever logged here, never a verdict. Every change re-judges the whole rollout from
//! the watched state, and a short tick re-judges the rules that depend on time
//! (unschedulable grace, the progress-deadline guard) without asking the API server.

pub(crate) mod pods;
mod verdict;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Api;
use kube::core::Selector;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinSet;

use kubernaut_domain::cluster::{AppliedResource, RolloutOutcome, RolloutProgress, RolloutRequest};
use kubernaut_domain::deployment::{Diagnostics, FailureReason};
use kubernaut_domain::ports::ClusterError;

use crate::KubernetesCluster;
use crate::diagnostics::{self, Subject};
use crate::watch_count::WatchHeld;
use verdict::{Judgement, Observed};

/// How often the time-dependent rules are re-judged between changes.
const TICK: Duration = Duration::from_millis(250);

// What a resource waits for while its watches start: not worth a timeline line.
const FIRST_STATUS: &str = "waiting for the first status";
const PODS_STATUS: &str = "waiting for the pods' status";
const REPLICA_SETS_STATUS: &str = "waiting for the ReplicaSets' status";

fn syncing(message: &str) -> Judgement {
    Judgement::Waiting {
        message: message.to_owned(),
        new_pods: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
}

impl WorkloadKind {
    fn of(applied: &AppliedResource) -> Option<Self> {
        let group = applied
            .resource
            .api_version
            .split_once('/')
            .map_or("", |(group, _)| group);
        match (group, applied.resource.kind.as_str()) {
            ("apps", "Deployment") => Some(Self::Deployment),
            ("apps", "StatefulSet") => Some(Self::StatefulSet),
            ("apps", "DaemonSet") => Some(Self::DaemonSet),
            ("batch", "Job") => Some(Self::Job),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    Job(Job),
}

impl Workload {
    fn selector(&self) -> Option<&LabelSelector> {
        match self {
            Self::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
            Self::StatefulSet(s) => s.spec.as_ref().map(|s| &s.selector),
            Self::DaemonSet(d) => d.spec.as_ref().map(|s| &s.selector),
            Self::Job(j) => j.spec.as_ref().and_then(|s| s.selector.as_ref()),
        }
    }
}

trait Keyed {
    fn meta(&self) -> &ObjectMeta;
    fn key(&self) -> String {
        let meta = self.meta();
        meta.uid
            .clone()
            .or_else(|| meta.name.clone())
            .unwrap_or_default()
    }
}

impl Keyed for Workload {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Deployment(d) => &d.metadata,
            Self::StatefulSet(s) => &s.metadata,
            Self::DaemonSet(d) => &d.metadata,
            Self::Job(j) => &j.metadata,
        }
    }
}

macro_rules! keyed {
    ($($kind:ty),*) => {
        $(impl Keyed for $kind {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
        })*
    };
}
keyed!(Pod, ReplicaSet, CoreEvent);

/// The objects one watch currently sees, relists included.
#[derive(Debug)]
struct LiveSet<K> {
    synced: bool,
    objects: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
}

impl<K> Default for LiveSet<K> {
    fn default() -> Self {
        Self {
            synced: false,
            objects: BTreeMap::new(),
            relisting: None,
        }
    }
}

impl<K: Keyed> LiveSet<K> {
    fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Apply(object) => {
                self.objects.insert(object.key(), object);
            }
            Event::Delete(object) => {
                self.objects.remove(&object.key());
            }
            Event::Init => self.relisting = Some(BTreeMap::new()),
            Event::InitApply(object) => {
                let target = self.relisting.as_mut().unwrap_or(&mut self.objects);
                target.insert(object.key(), object);
            }
            Event::InitDone => {
                // Objects deleted while the watch was down are not in the new list.
                if let Some(listed) = self.relisting.take() {
                    self.objects = listed;
                }
                self.synced = true;
            }
        }
    }
}

fn map_event<K, T>(event: Event<K>, f: impl FnOnce(K) -> T) -> Event<T> {
    match event {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
    }
}

#[derive(Debug)]
enum Update {
    Workload(usize, Box<Event<Workload>>),
    ReplicaSets(String, Box<Event<ReplicaSet>>),
    Pods(String, Box<Event<Pod>>),
    Events(Box<Event<CoreEvent>>),
    WatchFailed(String),
}

/// Drives one watch on a task of its own, forwarding what it sees.
fn spawn_watch<K>(
    tasks: &mut JoinSet<()>,
    held: WatchHeld,
    api: Api<K>,
    config: watcher::Config,
    updates: UnboundedSender<Update>,
    wrap: impl Fn(Event<K>) -> Update + Send + 'static,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tasks.spawn(async move {
        // Counted as open for as long as the task runs (aborted with the rollout's watch).
        let _held = held;
        let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(item) = stream.next().await {
            let update = match item {
                Ok(event) => wrap(event),
                Err(error) => Update::WatchFailed(error.to_string()),
            };
            if updates.send(update).is_err() {
                return;
            }
        }
    });
}

fn selector_string(selector: Option<&LabelSelector>) -> String {
    selector
        .cloned()
        .and_then(|s| Selector::try_from(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Everything the watches have seen so far.
#[derive(Debug, Default)]
struct State {
    workloads: HashMap<usize, LiveSet<Workload>>,
    replica_sets: HashMap<String, LiveSet<ReplicaSet>>,
    pods: HashMap<String, LiveSet<Pod>>,
    events: LiveSet<CoreEvent>,
    /// When each pod (by uid) was first seen unschedulable.
    unschedulable_since: HashMap<String, DateTime<Utc>>,
    last_watch_error: Option<String>,
    anything_synced: bool,
}

impl State {
    fn apply(&mut self, update: Update) {
        // The watcher announces a (re)list before making it: only what came back from
        // the API server shows that it answers.
        let answered = match &update {
            Update::Workload(_, event) => !matches!(**event, Event::Init),
            Update::ReplicaSets(_, event) => !matches!(**event, Event::Init),
            Update::Pods(_, event) => !matches!(**event, Event::Init),
            Update::Events(event) => !matches!(**event, Event::Init),
            Update::WatchFailed(_) => false,
        };
        self.anything_synced |= answered;
        match update {
            Update::Workload(index, event) => {
                self.workloads.entry(index).or_default().apply(*event);
            }
            Update::ReplicaSets(selector, event) => {
                self.replica_sets.entry(selector).or_default().apply(*event);
            }
            Update::Pods(selector, event) => {
                self.pods.entry(selector).or_default().apply(*event);
            }
            Update::Events(event) => self.events.apply(*event),
            Update::WatchFailed(error) => {
                tracing::debug!(%error, "a rollout watch failed; it resumes with backoff");
                self.last_watch_error = Some(error);
            }
        }
    }

    fn all_pods(&self) -> Vec<&Pod> {
        let mut seen = HashSet::new();
        self.pods
            .values()
            .flat_map(|set| set.objects.values())
            .filter(|pod| seen.insert(pod.key()))
            .collect()
    }

    fn all_replica_sets(&self) -> Vec<&ReplicaSet> {
        let mut seen = HashSet::new();
        self.replica_sets
            .values()
            .flat_map(|set| set.objects.values())
            .filter(|rs| seen.insert(rs.key()))
            .collect()
    }

    fn note_unschedulable(&mut self, now: DateTime<Utc>) {
        let current: HashSet<String> = self
            .pods
            .values()
            .flat_map(|set| set.objects.values())
            .filter(|pod| pods::unschedulable(pod).is_some())
            .map(Keyed::key)
            .collect();
        self.unschedulable_since
            .retain(|uid, _| current.contains(uid));
        for uid in current {
            self.unschedulable_since.entry(uid).or_insert(now);
        }
    }

    fn probe_failures(&self, started_at: DateTime<Utc>) -> HashMap<String, i32> {
        let mut failures = HashMap::new();
        for event in self.events.objects.values() {
            let probe = event.reason.as_deref() == Some("Unhealthy")
                && event
                    .message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("Readiness probe failed"));
            if probe
                && event.involved_object.kind.as_deref() == Some("Pod")
                && diagnostics::since(event, started_at)
                && let Some(pod) = event.involved_object.name.clone()
            {
                *failures.entry(pod).or_insert(0) += event.count.unwrap_or(1).max(1);
            }
        }
        failures
    }
}

/// One applied resource and where its rollout stands.
#[derive(Debug)]
struct Tracked<'a> {
    applied: &'a AppliedResource,
    kind: Option<WorkloadKind>,
    judgement: Judgement,
}

pub(crate) async fn watch(
    cluster: &KubernetesCluster,
    request: &RolloutRequest,
    progress: UnboundedSender<RolloutProgress>,
) -> Result<RolloutOutcome, ClusterError> {
    let (updates, mut incoming) = unbounded_channel();
    let mut tasks = JoinSet::new();
    let default_namespace = request.namespace.as_str().to_owned();
    let namespace_of = |applied: &AppliedResource| {
        applied
            .resource
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.clone())
    };
    let mut tracked: Vec<Tracked<'_>> = request
        .resources
        .iter()
        .map(|applied| Tracked {
            applied,
            kind: WorkloadKind::of(applied),
            judgement: Judgement::Done { warning: None },
        })
        .collect();
    for (index, resource) in tracked.iter_mut().enumerate() {
        let Some(kind) = resource.kind else { continue };
        resource.judgement = syncing(FIRST_STATUS);
        let namespace = namespace_of(resource.applied);
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", resource.applied.resource.name));
        let client = cluster.client.clone();
        let tx = updates.clone();
        match kind {
            WorkloadKind::Deployment => spawn_watch(
                &mut tasks,
                cluster.watches.hold(),
                Api::<Deployment>::namespaced(client, &namespace),
                config,
                tx,
                move |e| Update::Workload(index, Box::new(map_event(e, Workload::Deployment))),
            ),
            WorkloadKind::StatefulSet => spawn_watch(
                &mut tasks,
                cluster.watches.hold(),
                Api::<StatefulSet>::namespaced(client, &namespace),
                config,
                tx,
                move |e| Update::Workload(index, Box::new(map_event(e, Workload::StatefulSet))),
            ),
            WorkloadKind::DaemonSet => spawn_watch(
                &mut tasks,
                cluster.watches.hold(),
                Api::<DaemonSet>::namespaced(client, &namespace),
                config,
                tx,
                move |e| Update::Workload(index, Box::new(map_event(e, Workload::DaemonSet))),
            ),
            WorkloadKind::Job => spawn_watch(
                &mut tasks,
                cluster.watches.hold(),
                Api::<Job>::namespaced(client, &namespace),
                config,
                tx,
                move |e| Update::Workload(index, Box::new(map_event(e, Workload::Job))),
            ),
        }
    }

    let mut state = State::default();
    let mut started_pod_watches = HashSet::new();
    let mut started_replica_set_watches = HashSet::new();
    let mut started_event_watch = false;
    let mut told: HashMap<String, String> = HashMap::new();
    let mut told_pods: HashMap<String, String> = HashMap::new();
    let deadline =
        tokio::time::Instant::now() + (request.deadline - Utc::now()).to_std().unwrap_or_default();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timed_out = loop {
        let now = Utc::now();
        state.note_unschedulable(now);
        let probe_failures = state.probe_failures(request.started_at);
        let all_pods = state.all_pods();
        let all_replica_sets = state.all_replica_sets();
        let observed = Observed {
            pods: &all_pods,
            replica_sets: &all_replica_sets,
            probe_failures: &probe_failures,
            unschedulable_since: &state.unschedulable_since,
            started_at: request.started_at,
            now,
            settings: &cluster.settings,
        };
        let mut wanted_watches = Vec::new();
        for (index, resource) in tracked.iter_mut().enumerate() {
            if resource.kind.is_none() {
                continue;
            }
            let Some(set) = state.workloads.get(&index).filter(|s| s.synced) else {
                continue;
            };
            let Some(workload) = set.objects.values().next() else {
                resource.judgement = Judgement::Waiting {
                    message: "waiting for the object to exist".to_owned(),
                    new_pods: Vec::new(),
                };
                continue;
            };
            let namespace = namespace_of(resource.applied);
            let selector = selector_string(workload.selector());
            let key = format!("{namespace}|{selector}");
            let is_deployment = matches!(workload, Workload::Deployment(_));
            wanted_watches.push((namespace, selector, key.clone(), is_deployment));
            let pods_synced = state.pods.get(&key).is_some_and(|s| s.synced);
            let rs_synced = state.replica_sets.get(&key).is_some_and(|s| s.synced);
            let generation = resource.applied.generation;
            resource.judgement = match workload {
                _ if !pods_synced => syncing(PODS_STATUS),
                Workload::Deployment(_) if !rs_synced => syncing(REPLICA_SETS_STATUS),
                Workload::Deployment(d) => verdict::deployment(d, generation, &observed),
                Workload::StatefulSet(s) => verdict::stateful_set(s, generation, &observed),
                Workload::DaemonSet(d) => verdict::daemon_set(d, generation, &observed),
                Workload::Job(j) => verdict::job(j, &observed),
            };
        }
        tell_progress(&tracked, &all_pods, &progress, &mut told, &mut told_pods);
        // Failing readiness probes show only in events: watch them once a pod runs
        // without becoming ready, not before (most rollouts never need them).
        let probes_matter = all_pods.iter().any(|p| pods::running_unready(p));
        drop(all_pods);
        drop(all_replica_sets);
        if probes_matter && !started_event_watch {
            started_event_watch = true;
            spawn_watch(
                &mut tasks,
                cluster.watches.hold(),
                Api::<CoreEvent>::namespaced(cluster.client.clone(), &default_namespace),
                watcher::Config::default().fields("type=Warning"),
                updates.clone(),
                |e| Update::Events(Box::new(e)),
            );
        }
        for (namespace, selector, key, is_deployment) in wanted_watches {
            let config = watcher::Config::default().labels(&selector);
            if started_pod_watches.insert(key.clone()) {
                let pods_key = key.clone();
                spawn_watch(
                    &mut tasks,
                    cluster.watches.hold(),
                    Api::<Pod>::namespaced(cluster.client.clone(), &namespace),
                    config.clone(),
                    updates.clone(),
                    move |e| Update::Pods(pods_key.clone(), Box::new(e)),
                );
            }
            if is_deployment && started_replica_set_watches.insert(key.clone()) {
                spawn_watch(
                    &mut tasks,
                    cluster.watches.hold(),
                    Api::<ReplicaSet>::namespaced(cluster.client.clone(), &namespace),
                    config,
                    updates.clone(),
                    move |e| Update::ReplicaSets(key.clone(), Box::new(e)),
                );
            }
        }

        if tracked
            .iter()
            .any(|t| matches!(t.judgement, Judgement::Failed(_)))
        {
            break false;
        }
        if tracked
            .iter()
            .all(|t| matches!(t.judgement, Judgement::Done { .. }))
        {
            let warnings = tracked
                .iter()
                .filter_map(|t| match &t.judgement {
                    Judgement::Done { warning } => warning.clone(),
                    _ => None,
                })
                .collect();
            return Ok(RolloutOutcome::Succeeded { warnings });
        }

        tokio::select! {
            update = incoming.recv() => {
                if let Some(update) = update {
                    state.apply(update);
                    while let Ok(update) = incoming.try_recv() {
                        state.apply(update);
                    }
                }
            }
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(deadline) => break true,
        }
    };
    tasks.abort_all();

    if timed_out && !state.anything_synced {
        return Err(ClusterError::Unavailable(
            state
                .last_watch_error
                .unwrap_or_else(|| "no watch answered before the deadline".to_owned()),
        ));
    }
    let subjects = tracked
        .iter()
        .filter_map(|t| {
            let resource = t.applied.resource.clone();
            match &t.judgement {
                Judgement::Failed(failure) => Some(Subject {
                    resource,
                    reason: failure.reason,
                    message: failure.message.clone(),
                    related: failure.related.clone(),
                    containers: failure.containers.clone(),
                }),
                Judgement::Waiting { message, new_pods } if timed_out => {
                    let all_pods = state.all_pods();
                    Some(Subject {
                        resource,
                        reason: FailureReason::TimedOut,
                        message: format!("still waiting at the deadline: {message}"),
                        related: new_pods.clone(),
                        containers: all_pods
                            .iter()
                            .filter(|p| new_pods.contains(&pods::name(p)))
                            .take(3)
                            .flat_map(|p| pods::unready_containers(p))
                            .collect(),
                    })
                }
                _ => None,
            }
        })
        .collect();
    let diagnostics: Diagnostics =
        diagnostics::gather(cluster, &default_namespace, request.started_at, subjects).await;
    if timed_out {
        Ok(RolloutOutcome::TimedOut(diagnostics))
    } else {
        Ok(RolloutOutcome::Failed(diagnostics))
    }
}

/// Sends what changed since the last time: a resource's progress line, a new pod
/// state worth noting, a resource rolled out or failed.
fn tell_progress(
    tracked: &[Tracked<'_>],
    all_pods: &[&Pod],
    progress: &UnboundedSender<RolloutProgress>,
    told: &mut HashMap<String, String>,
    told_pods: &mut HashMap<String, String>,
) {
    for resource in tracked.iter().filter(|t| t.kind.is_some()) {
        let display = resource.applied.resource.to_string();
        let line = match &resource.judgement {
            Judgement::Done { .. } => "rolled out".to_owned(),
            Judgement::Waiting { message, .. }
                if [FIRST_STATUS, PODS_STATUS, REPLICA_SETS_STATUS].contains(&message.as_str()) =>
            {
                continue;
            }
            Judgement::Waiting { message, .. } => message.clone(),
            Judgement::Failed(failure) => format!("failed: {}", failure.message),
        };
        if told.get(&display) != Some(&line) {
            let _ = progress.send(RolloutProgress {
                resource: Some(display.clone()),
                message: format!("{display}: {line}"),
            });
            told.insert(display, line);
        }
        let noted_pods = match &resource.judgement {
            Judgement::Waiting { new_pods, .. } => Some(new_pods),
            Judgement::Failed(failure) => Some(&failure.related),
            Judgement::Done { .. } => None,
        };
        if let Some(new_pods) = noted_pods {
            for pod in all_pods
                .iter()
                .filter(|p| new_pods.contains(&pods::name(p)))
            {
                let name = pods::name(pod);
                let Some(state) = pods::notable_state(pod) else {
                    continue;
                };
                if told_pods.get(&name) != Some(&state) {
                    let _ = progress.send(RolloutProgress {
                        resource: Some(format!("Pod/{name}")),
                        message: format!("Pod {name}: {state}"),
                    });
                    told_pods.insert(name, state);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name}})).expect("a pod")
    }

    #[test]
    fn a_relist_forgets_what_was_deleted_while_the_watch_was_down() {
        let mut set = LiveSet::default();
        set.apply(Event::Init);
        set.apply(Event::InitApply(pod("a")));
        set.apply(Event::InitApply(pod("b")));
        assert!(!set.synced, "not synced before the list is complete");
        set.apply(Event::InitDone);
        assert!(set.synced);
        assert_eq!(set.objects.len(), 2);

        // After a 410 Gone the watcher relists: until the list is complete the old view
        // stays, then the new one replaces it whole.
        set.apply(Event::Init);
        set.apply(Event::InitApply(pod("b")));
        assert_eq!(set.objects.len(), 2);
        set.apply(Event::InitDone);
        assert_eq!(set.objects.keys().collect::<Vec<_>>(), ["b"]);

        set.apply(Event::Apply(pod("c")));
        set.apply(Event::Delete(pod("b")));
        assert_eq!(set.objects.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn only_the_rollout_kinds_of_their_own_groups_are_watched() {
        let applied = |api_version: &str, kind: &str| AppliedResource {
            resource: kubernaut_domain::deployment::ResourceRef {
                api_version: api_version.into(),
                kind: kind.into(),
                name: "x".into(),
                namespace: None,
            },
            uid: String::new(),
            generation: None,
        };
        assert_eq!(
            WorkloadKind::of(&applied("apps/v1", "Deployment")),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::of(&applied("batch/v1", "Job")),
            Some(WorkloadKind::Job)
        );
        assert_eq!(WorkloadKind::of(&applied("v1", "Service")), None);
        assert_eq!(
            WorkloadKind::of(&applied("example.com/v1", "Deployment")),
            None
        );
    }
}
