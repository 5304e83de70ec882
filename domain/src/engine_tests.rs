//! The engine across replicas: leases, fencing, takeover and cluster-wide cancels, over
//! the in-memory store of the deployment service's tests and a cluster whose rollouts
//! end when the test says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use super::tests::{
    MemoryDeployments, deployer, fast_engine, release, releases_of, request, settings, target,
};
use super::*;
use crate::audit::AuditAction;
use crate::changes::LocalChanges;
use crate::cluster::{
    AppliedResource, ClusterStatus, RolloutOutcome, RolloutProgress, RolloutRequest,
    resource_ref_of,
};
use crate::deployment::{DeploymentStatus, Fence, Namespace, ResourceRef, TimelineEntry};
use crate::lease::InstanceId;
use crate::ports::{Cluster, ClusterError};
use crate::release::{Release, ServiceName};

/// A cluster whose rollouts succeed once `finish` is notified; counts what it is asked.
#[derive(Default)]
struct GatedCluster {
    finish: Notify,
    applies: AtomicUsize,
    watches: AtomicUsize,
    prunes: AtomicUsize,
}

#[async_trait]
impl Cluster for GatedCluster {
    async fn apply(&self, objects: &[Value]) -> Result<Vec<AppliedResource>, ClusterError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        Ok(objects
            .iter()
            .map(|o| AppliedResource {
                resource: resource_ref_of(o),
                uid: "uid".into(),
                generation: Some(1),
            })
            .collect())
    }

    async fn watch_rollout(
        &self,
        _: &RolloutRequest,
        _: UnboundedSender<RolloutProgress>,
    ) -> Result<RolloutOutcome, ClusterError> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.finish.notified().await;
        Ok(RolloutOutcome::Succeeded { warnings: vec![] })
    }

    async fn prune(
        &self,
        _: &Namespace,
        _: &ServiceName,
        _: &[ResourceRef],
    ) -> Result<Vec<ResourceRef>, ClusterError> {
        self.prunes.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }

    async fn status(&self) -> ClusterStatus {
        ClusterStatus {
            reachable: true,
            version: None,
            error: None,
        }
    }
}

fn gated_replica(
    releases: Vec<Release>,
    cluster: &Arc<GatedCluster>,
    deployments: &Arc<MemoryDeployments>,
    changes: &Arc<LocalChanges>,
    name: &str,
    start_supervisor: bool,
) -> DeploymentService {
    let service = DeploymentService::new(
        Arc::new(releases_of(releases)),
        deployments.clone(),
        deployments.clone(),
        changes.clone(),
        vec![ClusterHandle {
            name: target().cluster,
            settings: settings(),
            cluster: cluster.clone(),
        }],
    )
    .with_engine_settings(fast_engine(name));
    if start_supervisor {
        service.engine().start();
    }
    service
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn status_of(deployments: &MemoryDeployments, id: DeploymentId) -> DeploymentStatus {
    deployments
        .rows
        .lock()
        .expect("lock")
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.status)
        .expect("stored")
}

#[tokio::test]
async fn an_owner_whose_lease_was_taken_over_writes_nothing_and_acts_on_no_cluster() {
    let good = release("1");
    let cluster = Arc::new(GatedCluster::default());
    let deployments = Arc::new(MemoryDeployments::default());
    let changes = Arc::new(LocalChanges::new());
    let owner = gated_replica(
        vec![good.clone()],
        &cluster,
        &deployments,
        &changes,
        "owner",
        true,
    );
    let started = owner
        .request(request(&good), &deployer("ci"))
        .await
        .expect("requested");
    eventually("the owner watches the rollout", || {
        cluster.watches.load(Ordering::SeqCst) == 1
    })
    .await;
    let lines_before = deployments.timeline_of(started.id).len();

    // Another replica takes the lease over while the owner is stuck in its watch.
    let intruder = InstanceId::unique("intruder");
    deployments.expire_lease(started.id);
    let taken = deployments
        .take(started.id, &intruder, Duration::from_secs(60))
        .expect("an expired lease can be taken");
    assert_eq!(taken.fence, Fence::new(2));

    // The owner's rollout ends: its verdict, its prune and its lines are all refused.
    cluster.finish.notify_waiters();
    eventually("the owner's driver ends", || owner.engine().driving() == 0).await;
    assert_eq!(
        status_of(&deployments, started.id),
        DeploymentStatus::RollingOut
    );
    assert_eq!(cluster.prunes.load(Ordering::SeqCst), 0, "no prune");
    assert_eq!(deployments.timeline_of(started.id).len(), lines_before);
    assert!(
        deployments
            .audit_actions()
            .iter()
            .all(|(action, _)| *action != AuditAction::DeploymentFinished),
        "no verdict recorded"
    );
}

#[tokio::test]
async fn a_dead_replicas_deployment_is_driven_on_by_another_after_the_ttl() {
    let good = release("2");
    let healthy = Arc::new(GatedCluster::default());
    let deployments = Arc::new(MemoryDeployments::default());
    let changes = Arc::new(LocalChanges::new());
    // Requested through a replica that serves the API only (its engine is not started),
    // then claimed by a replica that dies at once: its lease is never renewed.
    let api_only = gated_replica(
        vec![good.clone()],
        &healthy,
        &deployments,
        &changes,
        "api-only",
        false,
    );
    let started = api_only
        .request(request(&good), &deployer("ci"))
        .await
        .expect("requested");
    let ttl = fast_engine("any").lease_ttl;
    let dead = InstanceId::unique("dead");
    let claimed = deployments
        .take(started.id, &dead, ttl)
        .expect("the lease is free");
    let killed_at = tokio::time::Instant::now();
    let survivor = gated_replica(
        vec![good.clone()],
        &healthy,
        &deployments,
        &changes,
        "survivor",
        true,
    );
    eventually("the survivor takes over", || {
        healthy.watches.load(Ordering::SeqCst) == 1
    })
    .await;
    let failover = killed_at.elapsed();
    assert!(
        failover >= ttl / 2,
        "not before the lease expired: {failover:?}"
    );
    assert_eq!(
        api_only.engine().driving(),
        0,
        "the API-only replica drives nothing"
    );
    healthy.finish.notify_waiters();
    let done = survivor
        .wait(started.id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    let survivor_name = survivor.engine().settings().instance.to_string();
    assert!(
        done.timeline
            .iter()
            .any(|e| e.message.contains(&format!("driven by {survivor_name}"))),
        "{:?}",
        done.timeline
    );
    // The dead replica's fence is stale now: had it written, nothing would be stored.
    assert!(
        !deployments
            .append_timeline(
                started.id,
                Some(claimed.fence),
                &TimelineEntry {
                    at: chrono::Utc::now(),
                    phase: DeploymentStatus::RollingOut,
                    message: "late".into(),
                    resource: None,
                },
            )
            .await
            .expect("append runs")
    );
    assert_eq!(
        deployments
            .audit_actions()
            .iter()
            .filter(|(action, _)| *action == AuditAction::DeploymentFinished)
            .count(),
        1,
        "one verdict"
    );
}

#[tokio::test]
async fn a_cancel_through_another_replica_stops_the_owners_driver_at_once() {
    let good = release("3");
    let cluster = Arc::new(GatedCluster::default());
    let deployments = Arc::new(MemoryDeployments::default());
    let changes = Arc::new(LocalChanges::new());
    let owner = gated_replica(
        vec![good.clone()],
        &cluster,
        &deployments,
        &changes,
        "owner",
        true,
    );
    let other = gated_replica(
        vec![good.clone()],
        &cluster,
        &deployments,
        &changes,
        "other",
        true,
    );
    let started = owner
        .request(request(&good), &deployer("ci"))
        .await
        .expect("requested");
    eventually("the owner watches", || {
        cluster.watches.load(Ordering::SeqCst) == 1
    })
    .await;
    let cancelled_at = tokio::time::Instant::now();
    other
        .cancel(started.id, &deployer("oncall"))
        .await
        .expect("cancelled");
    eventually("the owner's driver stops", || owner.engine().driving() == 0).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(1));
    cluster.finish.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timeline = deployments.timeline_of(started.id);
    assert_eq!(
        timeline.last().map(|e| e.message.as_str()),
        Some("cancelled by oncall"),
        "nothing after the cancel"
    );
    assert_eq!(
        status_of(&deployments, started.id),
        DeploymentStatus::Cancelled
    );
    assert_eq!(cluster.prunes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_replica_that_shuts_down_gives_its_leases_back_at_once() {
    let good = release("4");
    let first = Arc::new(GatedCluster::default());
    let second = Arc::new(GatedCluster::default());
    let deployments = Arc::new(MemoryDeployments::default());
    let changes = Arc::new(LocalChanges::new());
    let leaving = gated_replica(
        vec![good.clone()],
        &first,
        &deployments,
        &changes,
        "leaving",
        true,
    );
    let started = leaving
        .request(request(&good), &deployer("ci"))
        .await
        .expect("requested");
    eventually("it watches", || first.watches.load(Ordering::SeqCst) == 1).await;
    leaving.engine().shutdown(Duration::from_secs(5)).await;
    assert_eq!(leaving.engine().driving(), 0);
    let staying = gated_replica(
        vec![good.clone()],
        &second,
        &deployments,
        &changes,
        "staying",
        true,
    );
    let took = tokio::time::Instant::now();
    eventually("another replica drives it", || {
        second.watches.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        took.elapsed() < staying.engine().settings().lease_ttl,
        "without waiting for the lease to expire"
    );
    second.finish.notify_waiters();
    let done = staying
        .wait(started.id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(done.status, DeploymentStatus::Succeeded);
}

#[tokio::test]
async fn database_errors_never_end_a_rollout_the_driver_retries_and_keeps_its_watch() {
    let good = release("5");
    let cluster = Arc::new(GatedCluster::default());
    let deployments = Arc::new(MemoryDeployments::default());
    let changes = Arc::new(LocalChanges::new());
    let replica = gated_replica(
        vec![good.clone()],
        &cluster,
        &deployments,
        &changes,
        "flaky",
        true,
    );
    let started = replica
        .request(request(&good), &deployer("ci"))
        .await
        .expect("requested");
    eventually("it watches", || cluster.watches.load(Ordering::SeqCst) == 1).await;
    // The database goes away for the next 25 writes (about a second of retries); the
    // rollout ends meanwhile.
    deployments.failing_writes.store(25, Ordering::SeqCst);
    cluster.finish.notify_waiters();
    let done = replica
        .wait(started.id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert_eq!(deployments.failing_writes.load(Ordering::SeqCst), 0);
    assert_eq!(cluster.watches.load(Ordering::SeqCst), 1, "one watch, kept");
    assert_eq!(
        done.timeline.last().map(|e| e.message.as_str()),
        Some("rolled out")
    );
    assert_eq!(
        deployments
            .audit_actions()
            .iter()
            .filter(|(action, _)| *action == AuditAction::DeploymentFinished)
            .count(),
        1
    );
    eventually("the driver ends", || replica.engine().driving() == 0).await;
}

/// A cluster that records the deadline each watch was given and says the rollout is
/// complete.
#[derive(Default)]
struct CompletedCluster {
    deadlines: std::sync::Mutex<Vec<chrono::DateTime<chrono::Utc>>>,
}

#[async_trait]
impl Cluster for CompletedCluster {
    async fn apply(&self, objects: &[Value]) -> Result<Vec<AppliedResource>, ClusterError> {
        GatedCluster::default().apply(objects).await
    }

    async fn watch_rollout(
        &self,
        request: &RolloutRequest,
        _: UnboundedSender<RolloutProgress>,
    ) -> Result<RolloutOutcome, ClusterError> {
        self.deadlines.lock().expect("lock").push(request.deadline);
        Ok(RolloutOutcome::Succeeded { warnings: vec![] })
    }

    async fn prune(
        &self,
        _: &Namespace,
        _: &ServiceName,
        _: &[ResourceRef],
    ) -> Result<Vec<ResourceRef>, ClusterError> {
        Ok(vec![])
    }

    async fn status(&self) -> ClusterStatus {
        GatedCluster::default().status().await
    }
}

#[tokio::test]
async fn a_deployment_resumed_past_its_deadline_is_judged_by_what_the_cluster_shows() {
    let good = release("6");
    let cluster = Arc::new(CompletedCluster::default());
    let deployments = Arc::new(MemoryDeployments::default());
    let service = DeploymentService::new(
        Arc::new(releases_of(vec![good.clone()])),
        deployments.clone(),
        deployments.clone(),
        Arc::new(LocalChanges::new()),
        vec![ClusterHandle {
            name: target().cluster,
            settings: settings(),
            cluster: cluster.clone(),
        }],
    )
    .with_engine_settings(fast_engine("late"));
    // Left rolling out by a replica that died, its 60 s deadline long past.
    let mut left = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("stored");
    service.engine().shutdown(Duration::from_secs(1)).await;
    left.status = DeploymentStatus::RollingOut;
    left.started_at = Some(chrono::Utc::now() - chrono::Duration::minutes(10));
    {
        let mut rows = deployments.rows.lock().expect("lock");
        rows.retain(|d| d.id != left.id);
        rows.push(left.clone());
    }
    let survivor = DeploymentService::new(
        Arc::new(releases_of(vec![good.clone()])),
        deployments.clone(),
        deployments.clone(),
        Arc::new(LocalChanges::new()),
        vec![ClusterHandle {
            name: target().cluster,
            settings: settings(),
            cluster: cluster.clone(),
        }],
    )
    .with_engine_settings(fast_engine("survivor"));
    survivor.engine().start();
    let done = survivor
        .wait(left.id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(
        done.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        done.timeline
    );
    assert!(
        done.timeline
            .iter()
            .any(|e| e.message.starts_with("past the deadline")),
        "{:?}",
        done.timeline
    );
    // It looked at the cluster for a while rather than timing out at once.
    let deadlines = cluster.deadlines.lock().expect("lock").clone();
    assert!(
        deadlines
            .iter()
            .all(|deadline| *deadline > chrono::Utc::now() - chrono::Duration::seconds(5)),
        "{deadlines:?}"
    );
}
