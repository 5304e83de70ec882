//! The verdict rules of `shared/ROLLOUT.md`, as pure functions of what the watches saw.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubernaut_domain::deployment::FailureReason;

use super::pods::{self, FailingContainer, Rules};
use crate::Settings;

const REVISION: &str = "deployment.kubernetes.io/revision";

/// What the watches know, shared by every resource's judgement.
#[derive(Debug)]
pub(crate) struct Observed<'a> {
    pub pods: &'a [&'a Pod],
    pub replica_sets: &'a [&'a ReplicaSet],
    /// Failed readiness probes per pod name since the deploy started.
    pub probe_failures: &'a HashMap<String, i32>,
    /// When each pod (by uid) was first seen unschedulable.
    pub unschedulable_since: &'a HashMap<String, DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub settings: &'a Settings,
}

/// Why a resource failed, and where its diagnostics are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub reason: FailureReason,
    pub message: String,
    /// Objects whose events belong in the diagnostics (pods, the new ReplicaSet).
    pub related: Vec<String>,
    pub containers: Vec<FailingContainer>,
}

/// Where one resource's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Judgement {
    Done {
        warning: Option<String>,
    },
    Waiting {
        message: String,
        /// The pods of the new revision, by name.
        new_pods: Vec<String>,
    },
    Failed(Failure),
}

fn waiting(message: impl Into<String>, new_pods: &[&Pod]) -> Judgement {
    Judgement::Waiting {
        message: message.into(),
        new_pods: new_pods.iter().map(|p| pods::name(p)).collect(),
    }
}

/// Whether the controller has seen the applied spec: nothing else is trustworthy before.
fn observed_generation(
    meta: &ObjectMeta,
    observed: Option<i64>,
    applied: Option<i64>,
) -> Result<(), String> {
    let wanted = applied.max(meta.generation).unwrap_or(0);
    match observed {
        Some(seen) if seen >= wanted => Ok(()),
        _ => Err(format!(
            "waiting for the controller to observe generation {wanted}"
        )),
    }
}

fn owned_pods<'a>(observed: &Observed<'a>, owner_uid: &str) -> Vec<&'a Pod> {
    let mut found: Vec<&Pod> = observed
        .pods
        .iter()
        .copied()
        .filter(|p| !pods::terminating(p) && pods::controlled_by(&p.metadata, owner_uid))
        .collect();
    found.sort_by_key(|p| pods::name(p));
    found
}

/// Fast failure on the pods of the new revision: all doomed, one unschedulable for
/// longer than the grace, or all running with readiness probes failing again and again.
fn new_pods_failure(new_pods: &[&Pod], rules: Rules, observed: &Observed<'_>) -> Option<Failure> {
    let related = || new_pods.iter().map(|p| pods::name(p)).collect::<Vec<_>>();
    if !new_pods.is_empty() {
        let dooms: Vec<_> = new_pods
            .iter()
            .map_while(|pod| pods::doom(pod, rules))
            .collect();
        if dooms.len() == new_pods.len() {
            let first = &dooms[0];
            return Some(Failure {
                reason: first.reason,
                message: if dooms.len() > 1 {
                    format!(
                        "all {} pods of the new revision are doomed; {}",
                        dooms.len(),
                        first.message
                    )
                } else {
                    first.message.clone()
                },
                related: related(),
                containers: dooms.iter().flat_map(|d| d.containers.clone()).collect(),
            });
        }
    }
    let grace = chrono::Duration::from_std(observed.settings.unschedulable_grace)
        .unwrap_or(chrono::Duration::MAX);
    for pod in new_pods {
        let Some(message) = pods::unschedulable(pod) else {
            continue;
        };
        let since = pod
            .metadata
            .uid
            .as_ref()
            .and_then(|uid| observed.unschedulable_since.get(uid));
        if since.is_some_and(|since| observed.now - *since >= grace) {
            return Some(Failure {
                reason: FailureReason::Unschedulable,
                message: format!("pod {} cannot be scheduled: {message}", pods::name(pod)),
                related: related(),
                containers: Vec::new(),
            });
        }
    }
    let probes_failing = |pod: &&Pod| {
        pods::running_unready(pod)
            && observed
                .probe_failures
                .get(&pods::name(pod))
                .is_some_and(|n| *n >= observed.settings.probe_failures)
    };
    if rules == Rules::Service && !new_pods.is_empty() && new_pods.iter().all(probes_failing) {
        return Some(Failure {
            reason: FailureReason::FailedProbe,
            message: format!(
                "pods of the new revision run but never become ready: their readiness probe keeps failing ({})",
                related().join(", ")
            ),
            related: related(),
            containers: new_pods
                .iter()
                .flat_map(|p| pods::unready_containers(p))
                .collect(),
        });
    }
    None
}

pub(crate) fn deployment(
    deployment: &Deployment,
    applied_generation: Option<i64>,
    observed: &Observed<'_>,
) -> Judgement {
    let status = deployment.status.clone().unwrap_or_default();
    if let Err(message) = observed_generation(
        &deployment.metadata,
        status.observed_generation,
        applied_generation,
    ) {
        return waiting(message, &[]);
    }
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let revision = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION));
    let new_rs = observed.replica_sets.iter().find(|rs| {
        pods::controlled_by(&rs.metadata, &uid)
            && rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                == revision
            && revision.is_some()
    });
    let Some(new_rs) = new_rs else {
        return waiting("waiting for the new ReplicaSet", &[]);
    };
    let rs_name = new_rs.metadata.name.clone().unwrap_or_default();
    let new_pods = owned_pods(observed, new_rs.metadata.uid.as_deref().unwrap_or_default());
    let spec = deployment.spec.as_ref();
    let wanted = spec.and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated == wanted && available == wanted && ready == wanted && total == updated {
        return Judgement::Done { warning: None };
    }
    if let Some(mut failure) = new_pods_failure(&new_pods, Rules::Service, observed) {
        failure.related.insert(0, rs_name);
        return Judgement::Failed(failure);
    }
    let deadline_exceeded = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.status == "False")
        .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    if let Some(condition) = deadline_exceeded {
        // A condition left over from an earlier rollout must not fail this one: trust
        // it only once this deploy has itself run for the progress deadline.
        let deadline_seconds = spec
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600);
        let guard = f64::from(deadline_seconds) / observed.settings.clock_scale;
        let elapsed = (observed.now - observed.started_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        if elapsed >= guard {
            let mut related = vec![rs_name];
            related.extend(new_pods.iter().map(|p| pods::name(p)));
            return Judgement::Failed(Failure {
                reason: FailureReason::ProgressDeadlineExceeded,
                message: condition.message.clone().unwrap_or_else(|| {
                    format!("the rollout made no progress for {deadline_seconds} s")
                }),
                related,
                containers: new_pods
                    .iter()
                    .flat_map(|p| pods::unready_containers(p))
                    .collect(),
            });
        }
    }
    let message = if updated < wanted {
        format!("{updated} of {wanted} replicas updated")
    } else if total > updated {
        format!("waiting for {} old replicas to terminate", total - updated)
    } else {
        format!("{available} of {wanted} updated replicas available")
    };
    waiting(message, &new_pods)
}

pub(crate) fn stateful_set(
    set: &StatefulSet,
    applied_generation: Option<i64>,
    observed: &Observed<'_>,
) -> Judgement {
    let status = set.status.clone().unwrap_or_default();
    if let Err(message) = observed_generation(
        &set.metadata,
        status.observed_generation,
        applied_generation,
    ) {
        return waiting(message, &[]);
    }
    let spec = set.spec.as_ref();
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return Judgement::Done {
            warning: Some(format!(
                "StatefulSet/{} uses the OnDelete update strategy: its pods change only when deleted, so its rollout was not watched",
                set.metadata.name.as_deref().unwrap_or_default()
            )),
        };
    }
    let wanted = spec.and_then(|s| s.replicas).unwrap_or(1);
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .clamp(0, wanted);
    let update_revision = status.update_revision.clone().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let new_pods: Vec<&Pod> = owned_pods(observed, &uid)
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash"))
                == Some(&update_revision)
        })
        .collect();
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let revisions_match = partition > 0 || status.current_revision == status.update_revision;
    if ready == wanted && updated >= wanted - partition && revisions_match {
        return Judgement::Done { warning: None };
    }
    if let Some(failure) = new_pods_failure(&new_pods, Rules::Service, observed) {
        return Judgement::Failed(failure);
    }
    let message = if updated < wanted - partition {
        format!("{updated} of {} replicas updated", wanted - partition)
    } else {
        format!("{ready} of {wanted} replicas ready")
    };
    waiting(message, &new_pods)
}

pub(crate) fn daemon_set(
    set: &DaemonSet,
    applied_generation: Option<i64>,
    observed: &Observed<'_>,
) -> Judgement {
    let status = set.status.clone().unwrap_or_default();
    if let Err(message) = observed_generation(
        &set.metadata,
        status.observed_generation,
        applied_generation,
    ) {
        return waiting(message, &[]);
    }
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let generation = set.metadata.generation.map(|g| g.to_string());
    let owned = owned_pods(observed, &uid);
    let of_generation: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-generation"))
                == generation.as_ref()
        })
        .collect();
    // Without the generation label, every owned pod counts as new.
    let new_pods = if of_generation.is_empty()
        && owned.iter().all(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key("pod-template-generation"))
        }) {
        owned
    } else {
        of_generation
    };
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated == desired && available == desired {
        return Judgement::Done { warning: None };
    }
    if let Some(failure) = new_pods_failure(&new_pods, Rules::Service, observed) {
        return Judgement::Failed(failure);
    }
    let message = if updated < desired {
        format!("{updated} of {desired} nodes updated")
    } else {
        format!("{available} of {desired} updated pods available")
    };
    waiting(message, &new_pods)
}

pub(crate) fn job(job: &Job, observed: &Observed<'_>) -> Judgement {
    let status = job.status.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let all_pods = owned_pods(observed, &uid);
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if condition("Complete").is_some() {
        return Judgement::Done { warning: None };
    }
    let failed = status.failed.unwrap_or(0);
    let backoff_limit = job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6);
    let failed_condition = condition("Failed");
    if failed_condition.is_some() || failed > backoff_limit {
        let message = failed_condition
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| {
                format!("{failed} pods failed, more than the backoff limit of {backoff_limit}")
            });
        return Judgement::Failed(Failure {
            reason: FailureReason::JobFailed,
            message,
            related: all_pods.iter().map(|p| pods::name(p)).collect(),
            containers: all_pods
                .iter()
                .flat_map(|p| pods::exited_containers(p))
                .collect(),
        });
    }
    let active: Vec<&Pod> = all_pods
        .iter()
        .copied()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    if let Some(failure) = new_pods_failure(&active, Rules::Batch, observed) {
        return Judgement::Failed(failure);
    }
    waiting(
        format!(
            "{} active, {} succeeded, {failed} failed",
            status.active.unwrap_or(0),
            status.succeeded.unwrap_or(0)
        ),
        &active,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    struct World {
        pods: Vec<Pod>,
        replica_sets: Vec<ReplicaSet>,
        probe_failures: HashMap<String, i32>,
        unschedulable_since: HashMap<String, DateTime<Utc>>,
        settings: Settings,
        started_at: DateTime<Utc>,
        now: DateTime<Utc>,
    }

    impl World {
        fn new() -> Self {
            let now = Utc::now();
            Self {
                pods: Vec::new(),
                replica_sets: Vec::new(),
                probe_failures: HashMap::new(),
                unschedulable_since: HashMap::new(),
                settings: Settings::default(),
                started_at: now,
                now,
            }
        }

        fn judge_deployment(&self, deployment: &Deployment) -> Judgement {
            let pods: Vec<&Pod> = self.pods.iter().collect();
            let replica_sets: Vec<&ReplicaSet> = self.replica_sets.iter().collect();
            let observed = Observed {
                pods: &pods,
                replica_sets: &replica_sets,
                probe_failures: &self.probe_failures,
                unschedulable_since: &self.unschedulable_since,
                started_at: self.started_at,
                now: self.now,
                settings: &self.settings,
            };
            super::deployment(deployment, Some(2), &observed)
        }
    }

    fn from(value: Value) -> Deployment {
        serde_json::from_value(value).expect("a deployment")
    }

    fn web(status: Value) -> Deployment {
        from(json!({
            "metadata": {"name": "web", "uid": "d1", "generation": 2,
                         "annotations": {REVISION: "2"}},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 60,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": status,
        }))
    }

    fn replica_set(uid: &str, revision: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{uid}"), "uid": uid,
                         "annotations": {REVISION: revision},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1", "controller": true}]},
        }))
        .expect("a replica set")
    }

    fn pod_of(rs: &str, name: &str, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": rs, "controller": true}]},
            "status": status,
        }))
        .expect("a pod")
    }

    fn crash_looping() -> Value {
        json!({"phase": "Running", "containerStatuses": [{
            "name": "web", "image": "web:2", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})
    }

    fn complete() -> Value {
        json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
               "readyReplicas": 2, "availableReplicas": 2})
    }

    #[test]
    fn a_rollout_is_done_when_the_new_replicas_are_all_available_and_the_old_gone() {
        let mut world = World::new();
        world.replica_sets = vec![replica_set("rs1", "1"), replica_set("rs2", "2")];
        assert_eq!(
            world.judge_deployment(&web(complete())),
            Judgement::Done { warning: None }
        );
        let mut old_left = complete();
        old_left["replicas"] = json!(3);
        assert!(matches!(
            world.judge_deployment(&web(old_left)),
            Judgement::Waiting { .. }
        ));
    }

    #[test]
    fn nothing_counts_before_the_controller_observed_the_applied_generation() {
        let mut world = World::new();
        world.replica_sets = vec![replica_set("rs1", "1")];
        let mut stale = complete();
        stale["observedGeneration"] = json!(1);
        let judgement = world.judge_deployment(&web(stale));
        assert!(
            matches!(&judgement, Judgement::Waiting { message, .. } if message.contains("generation 2")),
            "{judgement:?}"
        );
    }

    #[test]
    fn the_new_replica_set_is_the_one_of_the_deployments_revision() {
        let mut world = World::new();
        // Only the previous revision's ReplicaSet exists so far: its crash-looping pods
        // belong to the old rollout and must not fail this one.
        world.replica_sets = vec![replica_set("rs1", "1")];
        world.pods = vec![pod_of("rs1", "web-old", crash_looping())];
        let mut rolling = complete();
        rolling["updatedReplicas"] = json!(0);
        assert!(matches!(
            world.judge_deployment(&web(rolling.clone())),
            Judgement::Waiting { .. }
        ));
        world.replica_sets.push(replica_set("rs2", "2"));
        world.pods.push(pod_of("rs2", "web-new", crash_looping()));
        let judgement = world.judge_deployment(&web(rolling));
        assert!(
            matches!(&judgement, Judgement::Failed(f) if f.reason == FailureReason::CrashLoop),
            "{judgement:?}"
        );
    }

    #[test]
    fn one_healthy_new_pod_keeps_the_rollout_going() {
        let mut world = World::new();
        world.replica_sets = vec![replica_set("rs2", "2")];
        world.pods = vec![
            pod_of("rs2", "web-a", crash_looping()),
            pod_of("rs2", "web-b", json!({"phase": "Pending"})),
        ];
        let mut rolling = complete();
        rolling["availableReplicas"] = json!(0);
        assert!(matches!(
            world.judge_deployment(&web(rolling)),
            Judgement::Waiting { .. }
        ));
    }

    #[test]
    fn a_stale_progress_deadline_is_trusted_only_after_the_deadline_passed_for_this_deploy() {
        let mut world = World::new();
        world.replica_sets = vec![replica_set("rs2", "2")];
        let mut stuck = complete();
        stuck["availableReplicas"] = json!(0);
        stuck["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-rs2\" has timed out progressing."}]);
        assert!(matches!(
            world.judge_deployment(&web(stuck.clone())),
            Judgement::Waiting { .. }
        ));
        world.now = world.started_at + chrono::Duration::seconds(61);
        let judgement = world.judge_deployment(&web(stuck));
        assert!(
            matches!(&judgement, Judgement::Failed(f) if f.reason == FailureReason::ProgressDeadlineExceeded),
            "{judgement:?}"
        );
    }

    #[test]
    fn a_pod_unschedulable_past_the_grace_fails_the_rollout() {
        let mut world = World::new();
        world.replica_sets = vec![replica_set("rs2", "2")];
        world.pods = vec![pod_of(
            "rs2",
            "web-a",
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        )];
        world
            .unschedulable_since
            .insert("uid-web-a".into(), world.now);
        let mut rolling = complete();
        rolling["availableReplicas"] = json!(0);
        assert!(matches!(
            world.judge_deployment(&web(rolling.clone())),
            Judgement::Waiting { .. }
        ));
        world.now += chrono::Duration::seconds(16);
        let judgement = world.judge_deployment(&web(rolling));
        assert!(
            matches!(&judgement, Judgement::Failed(f) if f.reason == FailureReason::Unschedulable),
            "{judgement:?}"
        );
    }

    #[test]
    fn running_pods_that_keep_failing_readiness_fail_the_rollout() {
        let mut world = World::new();
        world.replica_sets = vec![replica_set("rs2", "2")];
        let running = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "web", "image": "web:2", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"running": {}}}]});
        world.pods = vec![pod_of("rs2", "web-a", running)];
        let mut rolling = complete();
        rolling["availableReplicas"] = json!(0);
        world.probe_failures.insert("web-a".into(), 1);
        assert!(matches!(
            world.judge_deployment(&web(rolling.clone())),
            Judgement::Waiting { .. }
        ));
        world.probe_failures.insert("web-a".into(), 5);
        let judgement = world.judge_deployment(&web(rolling));
        assert!(
            matches!(&judgement, Judgement::Failed(f) if f.reason == FailureReason::FailedProbe),
            "{judgement:?}"
        );
    }
}
