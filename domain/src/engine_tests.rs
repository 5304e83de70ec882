//! The engine across replicas: leases, fencing, takeover and cluster-wide cancels, over
//! the in-memory store of the deployment service's tests and a cluster whose rollouts
//! end when the test says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use super::tests::{
    MemoryDeployments, deployer, fast_engine, release, releases_of, replica, request, settings,
    target,
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

/// A cluster whose rollouts succeed once `finish` is notified, and whose applies wait
/// while `applies_held` says so; counts what it is asked.
#[derive(Default)]
struct GatedCluster {
    finish: Notify,
    applies_held: tokio::sync::watch::Sender<bool>,
    applies: AtomicUsize,
    /// Applies in flight now, and the most there were at once.
    applying: AtomicUsize,
    most_applying: AtomicUsize,
    watches: AtomicUsize,
    prunes: AtomicUsize,
}

#[async_trait]
impl Cluster for GatedCluster {
    async fn apply(&self, objects: &[Value]) -> Result<Vec<AppliedResource>, ClusterError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        let now = self.applying.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_applying.fetch_max(now, Ordering::SeqCst);
        let _ = self.applies_held.subscribe().wait_for(|held| !*held).await;
        self.applying.fetch_sub(1, Ordering::SeqCst);
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

    async fn kind_scopes(
        &self,
        kinds: &[crate::cluster::KindRef],
    ) -> Result<Vec<Option<crate::cluster::KindScope>>, ClusterError> {
        Ok(vec![
            Some(crate::cluster::KindScope::Namespaced);
            kinds.len()
        ])
    }

    async fn read(&self, objects: &[Value]) -> Result<Vec<Option<Value>>, ClusterError> {
        // Nothing runs in this cluster as far as a comparison asks.
        Ok(vec![None; objects.len()])
    }

    async fn status(&self) -> ClusterStatus {
        ClusterStatus {
            reachable: true,
            version: None,
            error: None,
        }
    }
}

/// One store and one change feed that a test's replicas share, and the release they
/// deploy.
struct Fleet {
    good: Release,
    deployments: Arc<MemoryDeployments>,
    changes: Arc<LocalChanges>,
}

impl Fleet {
    fn new(version: &str) -> Self {
        Self {
            good: release(version),
            deployments: Arc::new(MemoryDeployments::default()),
            changes: Arc::new(LocalChanges::new()),
        }
    }

    /// A replica deploying to `cluster`; its engine runs when `start`.
    fn replica(&self, cluster: Arc<dyn Cluster>, name: &str, start: bool) -> DeploymentService {
        replica(
            vec![self.good.clone()],
            cluster,
            &self.deployments,
            &self.changes,
            name,
            start,
        )
    }

    /// A started replica deploying to `cluster` with `slots` apply slots per cluster.
    fn replica_with_slots(&self, cluster: Arc<dyn Cluster>, slots: usize) -> DeploymentService {
        let service = DeploymentService::new(
            Arc::new(releases_of(vec![self.good.clone()])),
            self.deployments.clone(),
            self.deployments.clone(),
            self.changes.clone(),
            vec![ClusterHandle {
                name: target().cluster,
                settings: settings(),
                cluster,
            }],
        )
        .with_engine_settings(EngineSettings {
            max_applying: slots,
            ..fast_engine("slots")
        });
        service.engine().start();
        service
    }

    /// Requests the release through `replica`; with `watched`, waits until that
    /// cluster watches its rollout.
    async fn deploy(
        &self,
        replica: &DeploymentService,
        watched: Option<&GatedCluster>,
    ) -> DeploymentId {
        let started = replica
            .request(request(&self.good), &deployer("ci"))
            .await
            .expect("requested");
        if let Some(cluster) = watched {
            eventually("the rollout is watched", || {
                cluster.watches.load(Ordering::SeqCst) == 1
            })
            .await;
        }
        started.id
    }

    fn finished_verdicts(&self) -> usize {
        self.deployments
            .audit_actions()
            .iter()
            .filter(|(action, _)| *action == AuditAction::DeploymentFinished)
            .count()
    }
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
    let fleet = Fleet::new("1");
    let cluster = Arc::new(GatedCluster::default());
    let owner = fleet.replica(cluster.clone(), "owner", true);
    let id = fleet.deploy(&owner, Some(&cluster)).await;
    let lines_before = fleet.deployments.timeline_of(id).len();

    // Another replica takes the lease over while the owner is stuck in its watch.
    fleet.deployments.expire_lease(id);
    let taken = fleet
        .deployments
        .take(id, &InstanceId::unique("intruder"), Duration::from_secs(60))
        .expect("an expired lease can be taken");
    assert_eq!(taken.fence, Fence::new(2));

    // The owner's rollout ends: its verdict, its prune and its lines are all refused.
    cluster.finish.notify_waiters();
    eventually("the owner's driver ends", || owner.engine().driving() == 0).await;
    assert_eq!(
        status_of(&fleet.deployments, id),
        DeploymentStatus::RollingOut
    );
    assert_eq!(cluster.prunes.load(Ordering::SeqCst), 0, "no prune");
    assert_eq!(fleet.deployments.timeline_of(id).len(), lines_before);
    assert_eq!(fleet.finished_verdicts(), 0, "no verdict recorded");
}

#[tokio::test]
async fn a_dead_replicas_deployment_is_driven_on_by_another_after_the_ttl() {
    let fleet = Fleet::new("2");
    let healthy = Arc::new(GatedCluster::default());
    // Requested through a replica that serves the API only (its engine is not started),
    // then claimed by a replica that dies at once: its lease is never renewed.
    let api_only = fleet.replica(healthy.clone(), "api-only", false);
    let id = fleet.deploy(&api_only, None).await;
    let ttl = fast_engine("any").lease_ttl;
    let claimed = fleet
        .deployments
        .take(id, &InstanceId::unique("dead"), ttl)
        .expect("the lease is free");
    let killed_at = tokio::time::Instant::now();
    let survivor = fleet.replica(healthy.clone(), "survivor", true);
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
        .wait(id, Duration::from_secs(10), &deployer("ci"))
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
    let late = TimelineEntry {
        at: chrono::Utc::now(),
        phase: DeploymentStatus::RollingOut,
        message: "late".into(),
        resource: None,
    };
    assert!(
        !fleet
            .deployments
            .append_timeline(id, Some(claimed.fence), &late)
            .await
            .expect("append runs")
    );
    assert_eq!(fleet.finished_verdicts(), 1, "one verdict");
}

#[tokio::test]
async fn a_cancel_through_another_replica_stops_the_owners_driver_at_once() {
    let fleet = Fleet::new("3");
    let cluster = Arc::new(GatedCluster::default());
    let owner = fleet.replica(cluster.clone(), "owner", true);
    let other = fleet.replica(cluster.clone(), "other", true);
    let id = fleet.deploy(&owner, Some(&cluster)).await;
    let cancelled_at = tokio::time::Instant::now();
    other
        .cancel(id, &deployer("oncall"))
        .await
        .expect("cancelled");
    eventually("the owner's driver stops", || owner.engine().driving() == 0).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(1));
    cluster.finish.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timeline = fleet.deployments.timeline_of(id);
    assert_eq!(
        timeline.last().map(|e| e.message.as_str()),
        Some("cancelled by oncall"),
        "nothing after the cancel"
    );
    assert_eq!(
        status_of(&fleet.deployments, id),
        DeploymentStatus::Cancelled
    );
    assert_eq!(cluster.prunes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_replica_that_shuts_down_gives_its_leases_back_at_once() {
    let fleet = Fleet::new("4");
    let first = Arc::new(GatedCluster::default());
    let second = Arc::new(GatedCluster::default());
    let leaving = fleet.replica(first.clone(), "leaving", true);
    let id = fleet.deploy(&leaving, Some(&first)).await;
    leaving.engine().shutdown(Duration::from_secs(5)).await;
    assert_eq!(leaving.engine().driving(), 0);
    let staying = fleet.replica(second.clone(), "staying", true);
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
        .wait(id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(done.status, DeploymentStatus::Succeeded);
}

#[tokio::test]
async fn database_errors_never_end_a_rollout_the_driver_retries_and_keeps_its_watch() {
    let fleet = Fleet::new("5");
    let cluster = Arc::new(GatedCluster::default());
    let replica = fleet.replica(cluster.clone(), "flaky", true);
    let id = fleet.deploy(&replica, Some(&cluster)).await;
    // The database goes away for the next 25 writes (about a second of retries); the
    // rollout ends meanwhile.
    fleet.deployments.failing_writes.store(25, Ordering::SeqCst);
    cluster.finish.notify_waiters();
    let done = replica
        .wait(id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert_eq!(fleet.deployments.failing_writes.load(Ordering::SeqCst), 0);
    assert_eq!(cluster.watches.load(Ordering::SeqCst), 1, "one watch, kept");
    assert_eq!(
        done.timeline.last().map(|e| e.message.as_str()),
        Some("rolled out")
    );
    assert_eq!(fleet.finished_verdicts(), 1);
    eventually("the driver ends", || replica.engine().driving() == 0).await;
}

/// A cluster that records the deadline each watch was given and says the rollout is
/// complete.
#[derive(Default)]
struct CompletedCluster {
    inner: GatedCluster,
    deadlines: Mutex<Vec<chrono::DateTime<chrono::Utc>>>,
}

#[async_trait]
impl Cluster for CompletedCluster {
    async fn apply(&self, objects: &[Value]) -> Result<Vec<AppliedResource>, ClusterError> {
        self.inner.apply(objects).await
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
        namespace: &Namespace,
        service: &ServiceName,
        keep: &[ResourceRef],
    ) -> Result<Vec<ResourceRef>, ClusterError> {
        self.inner.prune(namespace, service, keep).await
    }

    async fn kind_scopes(
        &self,
        kinds: &[crate::cluster::KindRef],
    ) -> Result<Vec<Option<crate::cluster::KindScope>>, ClusterError> {
        Ok(vec![
            Some(crate::cluster::KindScope::Namespaced);
            kinds.len()
        ])
    }

    async fn read(&self, objects: &[Value]) -> Result<Vec<Option<Value>>, ClusterError> {
        // Nothing runs in this cluster as far as a comparison asks.
        Ok(vec![None; objects.len()])
    }

    async fn status(&self) -> ClusterStatus {
        self.inner.status().await
    }
}

#[tokio::test]
async fn a_deployment_resumed_past_its_deadline_is_judged_by_what_the_cluster_shows() {
    let fleet = Fleet::new("6");
    let cluster = Arc::new(CompletedCluster::default());
    // Left rolling out by a replica that died, its 60 s deadline long past.
    let api_only = fleet.replica(cluster.clone(), "api-only", false);
    let id = fleet.deploy(&api_only, None).await;
    {
        let mut rows = fleet.deployments.rows.lock().expect("lock");
        let left = rows.iter_mut().find(|d| d.id == id).expect("stored");
        left.status = DeploymentStatus::RollingOut;
        left.started_at = Some(chrono::Utc::now() - chrono::Duration::minutes(10));
    }
    let survivor = fleet.replica(cluster.clone(), "survivor", true);
    let done = survivor
        .wait(id, Duration::from_secs(10), &deployer("ci"))
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

/// What the engine told its observer.
#[derive(Debug, Default)]
struct RecordingObserver {
    started: Mutex<Vec<String>>,
    finished: Mutex<Vec<(String, DeploymentStatus, bool, Duration)>>,
}

impl DeploymentObserver for RecordingObserver {
    fn started(&self, target: &Target) {
        self.started.lock().expect("lock").push(target.to_string());
    }

    fn finished(&self, verdict: &crate::observer::VerdictObserved<'_>) {
        self.finished.lock().expect("lock").push((
            verdict.target.to_string(),
            verdict.verdict,
            verdict.since_rollout_end.is_some(),
            verdict.since_request,
        ));
    }
}

#[tokio::test]
async fn the_observer_hears_of_each_start_and_verdict_once_even_across_a_takeover() {
    let fleet = Fleet::new("7");
    let first = Arc::new(GatedCluster::default());
    let second = Arc::new(GatedCluster::default());
    let leaving_heard = Arc::new(RecordingObserver::default());
    let leaving = fleet
        .replica(first.clone(), "leaving", false)
        .with_observer(leaving_heard.clone());
    leaving.engine().start();
    let id = fleet.deploy(&leaving, Some(&first)).await;
    leaving.engine().shutdown(Duration::from_secs(5)).await;

    let staying_heard = Arc::new(RecordingObserver::default());
    let staying = fleet
        .replica(second.clone(), "staying", false)
        .with_observer(staying_heard.clone());
    staying.engine().start();
    eventually("another replica drives it", || {
        second.watches.load(Ordering::SeqCst) == 1
    })
    .await;
    second.finish.notify_waiters();
    let done = staying
        .wait(id, Duration::from_secs(10), &deployer("ci"))
        .await
        .expect("read");
    assert_eq!(done.status, DeploymentStatus::Succeeded);

    let target = done.target.to_string();
    assert_eq!(
        *leaving_heard.started.lock().expect("lock"),
        std::slice::from_ref(&target)
    );
    assert!(leaving_heard.finished.lock().expect("lock").is_empty());
    assert!(
        staying_heard.started.lock().expect("lock").is_empty(),
        "a resumed rollout is not started again"
    );
    let finished = staying_heard.finished.lock().expect("lock");
    assert_eq!(finished.len(), 1);
    let (heard_target, verdict, watched, since_request) = &finished[0];
    assert_eq!(heard_target, &target);
    assert_eq!(*verdict, DeploymentStatus::Succeeded);
    assert!(*watched, "the verdict came from a watch");
    let requested_to_finished = (done.finished_at.expect("finished") - done.created_at)
        .to_std()
        .expect("positive");
    assert!(
        since_request.abs_diff(requested_to_finished) < Duration::from_secs(1),
        "{since_request:?} against {requested_to_finished:?}"
    );
}

#[tokio::test]
async fn a_burst_reads_its_objects_only_in_the_clusters_apply_slots() {
    let fleet = Fleet::new("7");
    let cluster = Arc::new(GatedCluster::default());
    cluster.applies_held.send_replace(true);
    let service = fleet.replica_with_slots(cluster.clone(), 2);
    let reads_before = fleet.deployments.objects_reads.load(Ordering::SeqCst);
    let mut ids = Vec::new();
    for n in 0..6 {
        let mut asked = request(&fleet.good);
        asked.target.namespace = Namespace::parse(&format!("team-{n}")).expect("a namespace");
        let started = service
            .request(asked, &deployer("ci"))
            .await
            .expect("requested");
        ids.push(started.id);
    }
    eventually("six drivers run", || service.engine().driving() == 6).await;
    eventually("two applies wait in the cluster", || {
        cluster.applying.load(Ordering::SeqCst) == 2
    })
    .await;
    // Time for the four others to go on, were they not held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cluster.applying.load(Ordering::SeqCst), 2, "two slots");
    assert_eq!(
        fleet.deployments.objects_reads.load(Ordering::SeqCst) - reads_before,
        2,
        "only the drivers holding a slot read their objects"
    );
    for id in &ids {
        assert_eq!(
            status_of(&fleet.deployments, *id),
            DeploymentStatus::Applying
        );
    }

    cluster.applies_held.send_replace(false);
    eventually("every deploy succeeds", || {
        cluster.finish.notify_waiters();
        ids.iter()
            .all(|id| status_of(&fleet.deployments, *id) == DeploymentStatus::Succeeded)
    })
    .await;
    assert_eq!(cluster.applies.load(Ordering::SeqCst), 6);
    assert_eq!(cluster.most_applying.load(Ordering::SeqCst), 2);
    for id in &ids {
        let timeline = fleet.deployments.timeline_of(*id);
        let said: Vec<&str> = timeline.iter().map(|e| e.message.as_str()).collect();
        assert!(
            said.iter()
                .any(|m| m.starts_with("applying 2 objects to eu/team-")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|m| m.starts_with("applied ConfigMap/hello-eu-west")),
            "{said:?}"
        );
    }
}

#[tokio::test]
async fn a_deploy_cancelled_while_it_waits_for_an_apply_slot_is_never_applied() {
    let fleet = Fleet::new("8");
    let cluster = Arc::new(GatedCluster::default());
    cluster.applies_held.send_replace(true);
    let service = fleet.replica_with_slots(cluster.clone(), 1);
    let mut ids = Vec::new();
    for namespace in ["first", "second"] {
        let mut asked = request(&fleet.good);
        asked.target.namespace = Namespace::parse(namespace).expect("a namespace");
        let started = service
            .request(asked, &deployer("ci"))
            .await
            .expect("requested");
        ids.push(started.id);
    }
    eventually("the first holds the slot", || {
        cluster.applying.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("both are driven", || service.engine().driving() == 2).await;
    let reads_before = fleet.deployments.objects_reads.load(Ordering::SeqCst);

    let cancelled = service
        .cancel(ids[1], &deployer("oncall"))
        .await
        .expect("cancelled");
    assert_eq!(cancelled.status, DeploymentStatus::Cancelled);
    eventually("the waiting driver stops", || {
        service.engine().driving() == 1
    })
    .await;
    cluster.applies_held.send_replace(false);
    eventually("the first succeeds", || {
        cluster.finish.notify_waiters();
        status_of(&fleet.deployments, ids[0]) == DeploymentStatus::Succeeded
    })
    .await;
    assert_eq!(
        cluster.applies.load(Ordering::SeqCst),
        1,
        "only the first was applied"
    );
    assert_eq!(
        fleet.deployments.objects_reads.load(Ordering::SeqCst),
        reads_before,
        "the cancelled one never read its objects"
    );
    assert_eq!(
        status_of(&fleet.deployments, ids[1]),
        DeploymentStatus::Cancelled
    );
}
