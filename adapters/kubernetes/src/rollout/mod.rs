//! Watches a rollout to its verdict.
//!
//! A rollout reads the cluster's shared watches (`crate::watches`): it subscribes to
//! each applied workload by name, and, once a workload's selector is known, to its
//! pods (and for Deployments its ReplicaSets) by that selector; once a pod runs without
//! becoming ready, to the namespace's warning events, which alone tell of failing
//! readiness probes. Whenever one of those objects changes the rollout is woken and
//! re-judges itself from the stores; a short tick re-judges the rules that depend on
//! time (unschedulable grace, the progress-deadline guard) only while one of them is
//! pending, without asking the API server. A watch error is only ever logged, never a
//! verdict.

pub(crate) mod pods;
mod verdict;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use kubernaut_domain::cluster::{AppliedResource, RolloutOutcome, RolloutProgress, RolloutRequest};
use kubernaut_domain::deployment::{Diagnostics, FailureReason};
use kubernaut_domain::ports::ClusterError;

use crate::KubernetesCluster;
use crate::diagnostics::{self, Subject};
use crate::watches::{KindWatches, Snapshot, Wants, Watched, Watches};
use verdict::{Judgement, Observed};

/// How often the time-dependent rules are re-judged while one of them is pending.
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
    Deployment(Arc<Deployment>),
    StatefulSet(Arc<StatefulSet>),
    DaemonSet(Arc<DaemonSet>),
    Job(Arc<Job>),
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

    /// Whether the Deployment reports `ProgressDeadlineExceeded`, which the verdict
    /// trusts only once enough wall time has passed.
    fn reports_progress_deadline(&self) -> bool {
        let Self::Deployment(deployment) = self else {
            return false;
        };
        deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
    }
}

/// A subscription kept for as long as the rollout is watched.
type Held = Box<dyn Any + Send>;

async fn subscribe<K: Watched>(
    kind: &Arc<KindWatches<K>>,
    namespace: &str,
    wants: Wants,
    wake: &Arc<Notify>,
) -> Held {
    Box::new(kind.subscribe(namespace, wants, Arc::clone(wake)).await)
}

async fn subscribe_workload(
    watches: &Watches,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    wake: &Arc<Notify>,
) -> Held {
    let wants = Wants::Named(name.to_owned());
    match kind {
        WorkloadKind::Deployment => subscribe(&watches.deployments, namespace, wants, wake).await,
        WorkloadKind::StatefulSet => {
            subscribe(&watches.stateful_sets, namespace, wants, wake).await
        }
        WorkloadKind::DaemonSet => subscribe(&watches.daemon_sets, namespace, wants, wake).await,
        WorkloadKind::Job => subscribe(&watches.jobs, namespace, wants, wake).await,
    }
}

/// Whether the workload's watch has listed, and the workload if it exists.
fn read_workload(
    watches: &Watches,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
) -> (bool, Option<Workload>) {
    fn first<K>(snapshot: Snapshot<K>, wrap: fn(Arc<K>) -> Workload) -> (bool, Option<Workload>) {
        (
            snapshot.synced,
            snapshot.objects.into_iter().next().map(wrap),
        )
    }
    let wants = Wants::Named(name.to_owned());
    match kind {
        WorkloadKind::Deployment => first(
            watches.deployments.read(namespace, &wants),
            Workload::Deployment,
        ),
        WorkloadKind::StatefulSet => first(
            watches.stateful_sets.read(namespace, &wants),
            Workload::StatefulSet,
        ),
        WorkloadKind::DaemonSet => first(
            watches.daemon_sets.read(namespace, &wants),
            Workload::DaemonSet,
        ),
        WorkloadKind::Job => first(watches.jobs.read(namespace, &wants), Workload::Job),
    }
}

fn selector_string(selector: Option<&LabelSelector>) -> String {
    selector
        .cloned()
        .and_then(|s| Selector::try_from(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// What selects a workload's pods; a selector that cannot be read selects them all,
/// as an empty one does.
fn selector_wants(selector: Option<&LabelSelector>) -> Wants {
    Wants::Labelled(
        selector
            .cloned()
            .and_then(|s| Selector::try_from(s).ok())
            .unwrap_or_default(),
    )
}

fn identity(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.uid
        .clone()
        .or_else(|| meta.name.clone())
        .unwrap_or_default()
}

/// Where one workload's pods are read.
#[derive(Debug, Clone)]
struct PodsOf {
    namespace: String,
    wants: Wants,
    key: String,
    is_deployment: bool,
}

/// What the rollout read from the stores at one moment.
#[derive(Debug, Default)]
struct Seen {
    /// Per tracked resource: whether its watch listed, and the workload.
    workloads: Vec<Option<(bool, Option<Workload>)>>,
    pods: Vec<Arc<Pod>>,
    replica_sets: Vec<Arc<ReplicaSet>>,
    /// Per selector key: whether the pods' and the ReplicaSets' watches listed.
    synced: HashMap<String, (bool, bool)>,
    anything_synced: bool,
}

impl Seen {
    fn read(
        watches: &Watches,
        tracked: &[Tracked<'_>],
        namespace_of: &dyn Fn(&AppliedResource) -> String,
    ) -> (Self, Vec<Option<PodsOf>>) {
        let mut seen = Self::default();
        let mut pods_of = Vec::with_capacity(tracked.len());
        let mut pod_ids = HashSet::new();
        let mut replica_set_ids = HashSet::new();
        for resource in tracked {
            let Some(kind) = resource.kind else {
                seen.workloads.push(None);
                pods_of.push(None);
                continue;
            };
            let namespace = namespace_of(resource.applied);
            let (synced, workload) =
                read_workload(watches, kind, &namespace, &resource.applied.resource.name);
            seen.anything_synced |= synced;
            let Some(workload) = workload.filter(|_| synced) else {
                seen.workloads.push(Some((synced, None)));
                pods_of.push(None);
                continue;
            };
            let selector = workload.selector();
            let of = PodsOf {
                key: format!("{namespace}|{}", selector_string(selector)),
                wants: selector_wants(selector),
                is_deployment: matches!(workload, Workload::Deployment(_)),
                namespace,
            };
            let pods = watches.pods.read(&of.namespace, &of.wants);
            for pod in pods.objects {
                if pod_ids.insert(identity(&pod.metadata)) {
                    seen.pods.push(pod);
                }
            }
            let mut replica_sets_synced = true;
            if of.is_deployment {
                let found = watches.replica_sets.read(&of.namespace, &of.wants);
                replica_sets_synced = found.synced;
                for replica_set in found.objects {
                    if replica_set_ids.insert(identity(&replica_set.metadata)) {
                        seen.replica_sets.push(replica_set);
                    }
                }
            }
            seen.anything_synced |= pods.synced;
            seen.synced
                .insert(of.key.clone(), (pods.synced, replica_sets_synced));
            seen.workloads.push(Some((synced, Some(workload))));
            pods_of.push(Some(of));
        }
        (seen, pods_of)
    }
}

/// When each pod (by uid) was first seen unschedulable, kept up to date.
fn note_unschedulable(
    since: &mut HashMap<String, DateTime<Utc>>,
    pods: &[Arc<Pod>],
    now: DateTime<Utc>,
) {
    let current: HashSet<String> = pods
        .iter()
        .filter(|pod| pods::unschedulable(pod).is_some())
        .map(|pod| identity(&pod.metadata))
        .collect();
    since.retain(|uid, _| current.contains(uid));
    for uid in current {
        since.entry(uid).or_insert(now);
    }
}

fn probe_failures(events: &[Arc<CoreEvent>], started_at: DateTime<Utc>) -> HashMap<String, i32> {
    let mut failures = HashMap::new();
    for event in events {
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

/// One applied resource and where its rollout stands.
#[derive(Debug)]
struct Tracked<'a> {
    applied: &'a AppliedResource,
    kind: Option<WorkloadKind>,
    judgement: Judgement,
}

#[expect(
    clippy::too_many_lines,
    reason = "the loop reads, judges, tells and waits in order"
)]
pub(crate) async fn watch(
    cluster: &KubernetesCluster,
    request: &RolloutRequest,
    progress: UnboundedSender<RolloutProgress>,
) -> Result<RolloutOutcome, ClusterError> {
    let watches = cluster.watches.as_ref();
    let wake = Arc::new(Notify::new());
    let mut held: Vec<Held> = Vec::new();
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
    for resource in &mut tracked {
        let Some(kind) = resource.kind else { continue };
        resource.judgement = syncing(FIRST_STATUS);
        let namespace = namespace_of(resource.applied);
        held.push(
            subscribe_workload(
                watches,
                kind,
                &namespace,
                &resource.applied.resource.name,
                &wake,
            )
            .await,
        );
    }

    let mut unschedulable_since = HashMap::new();
    let mut anything_synced = false;
    let mut pods_held = HashSet::new();
    let mut replica_sets_held = HashSet::new();
    let mut events_held = false;
    let mut last_pods: Vec<Arc<Pod>>;
    let mut told: HashMap<String, String> = HashMap::new();
    let mut told_pods: HashMap<String, String> = HashMap::new();
    let deadline =
        tokio::time::Instant::now() + (request.deadline - Utc::now()).to_std().unwrap_or_default();
    let timed_out = loop {
        let now = Utc::now();
        let (seen, pods_of) = Seen::read(watches, &tracked, &namespace_of);
        anything_synced |= seen.anything_synced;
        // A workload's pods (and ReplicaSets) are subscribed to once its selector is
        // known; what the stores already hold is read on the next pass.
        let mut subscribed = false;
        for of in pods_of.iter().flatten() {
            if pods_held.insert(of.key.clone()) {
                held.push(subscribe(&watches.pods, &of.namespace, of.wants.clone(), &wake).await);
                subscribed = true;
            }
            if of.is_deployment && replica_sets_held.insert(of.key.clone()) {
                held.push(
                    subscribe(
                        &watches.replica_sets,
                        &of.namespace,
                        of.wants.clone(),
                        &wake,
                    )
                    .await,
                );
                subscribed = true;
            }
        }
        if subscribed {
            continue;
        }
        note_unschedulable(&mut unschedulable_since, &seen.pods, now);
        let events = if events_held {
            watches
                .events
                .read(&default_namespace, &Wants::Everything)
                .objects
        } else {
            Vec::new()
        };
        let probe_failures = probe_failures(&events, request.started_at);
        let all_pods: Vec<&Pod> = seen.pods.iter().map(AsRef::as_ref).collect();
        let all_replica_sets: Vec<&ReplicaSet> =
            seen.replica_sets.iter().map(AsRef::as_ref).collect();
        let observed = Observed {
            pods: &all_pods,
            replica_sets: &all_replica_sets,
            probe_failures: &probe_failures,
            unschedulable_since: &unschedulable_since,
            started_at: request.started_at,
            now,
            settings: &cluster.settings,
        };
        let mut needs_clock = !unschedulable_since.is_empty();
        for ((resource, read), of) in tracked.iter_mut().zip(&seen.workloads).zip(&pods_of) {
            let Some((synced, workload)) = read else {
                continue;
            };
            if !synced {
                continue;
            }
            let (Some(workload), Some(of)) = (workload, of) else {
                resource.judgement = Judgement::Waiting {
                    message: "waiting for the object to exist".to_owned(),
                    new_pods: Vec::new(),
                };
                continue;
            };
            needs_clock |= workload.reports_progress_deadline();
            let (pods_synced, rs_synced) = seen.synced.get(&of.key).copied().unwrap_or_default();
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
        // Failing readiness probes show only in events: subscribe to them once a pod
        // runs without becoming ready, not before (most rollouts never need them).
        let probes_matter = all_pods.iter().any(|p| pods::running_unready(p));
        drop(all_pods);
        drop(all_replica_sets);
        last_pods = seen.pods;

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
        if probes_matter && !events_held {
            events_held = true;
            held.push(
                subscribe(
                    &watches.events,
                    &default_namespace,
                    Wants::Everything,
                    &wake,
                )
                .await,
            );
            continue;
        }

        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(TICK), if needs_clock => {}
            () = tokio::time::sleep_until(deadline) => break true,
        }
    };
    drop(held);

    if timed_out && !anything_synced {
        return Err(ClusterError::Unavailable(
            watches
                .last_error()
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
                Judgement::Waiting { message, new_pods } if timed_out => Some(Subject {
                    resource,
                    reason: FailureReason::TimedOut,
                    message: format!("still waiting at the deadline: {message}"),
                    related: new_pods.clone(),
                    containers: last_pods
                        .iter()
                        .filter(|p| new_pods.contains(&pods::name(p)))
                        .take(3)
                        .flat_map(|p| pods::unready_containers(p))
                        .collect(),
                }),
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
    use super::*;

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
