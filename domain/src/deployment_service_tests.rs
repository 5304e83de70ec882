//! Contract tests of `DeploymentService` over in-memory repositories and a mocked
//! cluster: the state machine, its persisted steps and the rules of a request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use std::collections::HashMap;

use super::*;
use crate::actor::Actor;
use crate::audit::AuditEntry;
use crate::changes::{Change, LocalChanges};
use crate::cluster::{AppliedResource, ManifestRejected, RolloutOutcome, resource_ref_of};
use crate::deployment::{DeploymentOptions, Fence};
use crate::deployment::{DeploymentQuery, Diagnostics, FailureReason, Namespace, ResourceRef};
use crate::engine::{EngineSettings, RetryPolicy};
use crate::lease::{ClaimedDeployment, InstanceId};
use crate::ports::ClusterError;
use crate::ports::LeaseRepository;
use crate::ports::{MockCluster, MockReleaseRepository, RepositoryError};
use crate::release::{NewRelease, Release, UnvalidatedRelease};

/// A lease as the in-memory store keeps it.
#[derive(Debug, Clone)]
struct MemoryLease {
    owner: Option<InstanceId>,
    expires: std::time::Instant,
    fence: Fence,
}

#[derive(Default)]
pub(super) struct MemoryDeployments {
    pub(super) rows: Mutex<Vec<Deployment>>,
    audit: Mutex<Vec<AuditEntry>>,
    leases: Mutex<HashMap<DeploymentId, MemoryLease>>,
    /// While above zero, each write (a move, a line, a renewal) fails and counts down:
    /// the database is away.
    pub(super) failing_writes: std::sync::atomic::AtomicUsize,
    /// How many times a deployment was read by id.
    pub(super) finds: std::sync::atomic::AtomicUsize,
    /// How many times a deployment's objects were read on their own.
    pub(super) objects_reads: std::sync::atomic::AtomicUsize,
    /// Whether a line appended lets other tasks run, as a database round trip does.
    pub(super) lines_yield: std::sync::atomic::AtomicBool,
}

impl MemoryDeployments {
    fn database_away(&self) -> Result<(), RepositoryError> {
        use std::sync::atomic::Ordering;
        let failing = self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failing {
            Ok(_) => Err(RepositoryError::new("the database is away")),
            Err(_) => Ok(()),
        }
    }

    fn current_fence(&self, id: DeploymentId) -> Fence {
        self.leases
            .lock()
            .expect("lock")
            .get(&id)
            .map_or(Fence::new(0), |lease| lease.fence)
    }

    fn is_active(&self, id: DeploymentId) -> bool {
        self.rows
            .lock()
            .expect("lock")
            .iter()
            .any(|d| d.id == id && d.status.is_active())
    }

    pub(super) fn timeline_of(&self, id: DeploymentId) -> Vec<TimelineEntry> {
        self.rows
            .lock()
            .expect("lock")
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.timeline.clone())
            .unwrap_or_default()
    }

    /// Makes the deployment's lease look expired, as if its owner had stopped renewing.
    pub(super) fn expire_lease(&self, id: DeploymentId) {
        if let Some(lease) = self.leases.lock().expect("lock").get_mut(&id) {
            lease.expires = std::time::Instant::now();
        }
    }

    pub(super) fn take(
        &self,
        id: DeploymentId,
        owner: &InstanceId,
        ttl: Duration,
    ) -> Option<ClaimedDeployment> {
        let deployment = self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .find(|d| d.id == id && d.status.is_active())
            .cloned()?;
        let mut leases = self.leases.lock().expect("lock");
        let now = std::time::Instant::now();
        let lease = leases.entry(id).or_insert(MemoryLease {
            owner: None,
            expires: now,
            fence: Fence::new(0),
        });
        if lease.owner.is_some() && lease.expires > now {
            return None;
        }
        lease.owner = Some(owner.clone());
        lease.expires = now + ttl;
        lease.fence = Fence::new(lease.fence.get() + 1);
        Some(ClaimedDeployment {
            deployment,
            fence: lease.fence,
        })
    }

    pub(super) fn audit_actions(&self) -> Vec<(AuditAction, String)> {
        self.audit
            .lock()
            .expect("lock")
            .iter()
            .map(|a| (a.action, a.actor.to_string()))
            .collect()
    }
}

#[async_trait]
impl DeploymentRepository for MemoryDeployments {
    async fn insert(
        &self,
        deployment: &Deployment,
        audit: &AuditEntry,
    ) -> Result<(), InsertDeploymentError> {
        let mut rows = self.rows.lock().expect("lock");
        if let Some(active) = rows.iter().find(|d| {
            d.status.is_active() && d.service == deployment.service && d.target == deployment.target
        }) {
            return Err(InsertDeploymentError::ActiveExists { active: active.id });
        }
        rows.push(deployment.clone());
        self.audit.lock().expect("lock").push(audit.clone());
        Ok(())
    }

    async fn find(&self, id: DeploymentId) -> Result<Option<Deployment>, RepositoryError> {
        self.finds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .find(|d| d.id == id)
            .cloned())
    }

    async fn active_objects(
        &self,
        id: DeploymentId,
    ) -> Result<Option<Vec<serde_json::Value>>, RepositoryError> {
        self.objects_reads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .find(|d| d.id == id && d.status.is_active())
            .map(|d| d.objects.clone()))
    }

    async fn list(
        &self,
        _: &DeploymentQuery,
        limit: usize,
    ) -> Result<Vec<Deployment>, RepositoryError> {
        let mut rows = self.rows.lock().expect("lock").clone();
        rows.reverse();
        rows.truncate(limit);
        Ok(rows)
    }

    async fn placements(&self, query: &DeploymentQuery) -> Result<Vec<Placement>, RepositoryError> {
        let rows = self.rows.lock().expect("lock").clone();
        let mut placements: BTreeMap<(String, String), Placement> = BTreeMap::new();
        // Rows are oldest first: a later row is newer.
        for row in rows.into_iter().filter(|d| {
            query.service.as_ref().is_none_or(|s| *s == d.service)
                && query
                    .cluster
                    .as_ref()
                    .is_none_or(|c| *c == d.target.cluster)
                && query
                    .namespace
                    .as_ref()
                    .is_none_or(|n| *n == d.target.namespace)
        }) {
            let key = (row.service.to_string(), row.target.to_string());
            let running = (row.status == DeploymentStatus::Succeeded).then(|| row.clone());
            let placement = placements.entry(key).or_insert_with(|| Placement {
                last: row.clone(),
                running: None,
            });
            placement.last = row;
            if running.is_some() {
                placement.running = running;
            }
        }
        Ok(placements.into_values().collect())
    }

    async fn newest_per_target(
        &self,
        releases: &[ReleaseId],
    ) -> Result<Vec<Deployment>, RepositoryError> {
        let mut newest: BTreeMap<(ReleaseId, String, String), Deployment> = BTreeMap::new();
        // Rows are oldest first: a later row is newer.
        for row in self.rows.lock().expect("lock").iter() {
            if releases.contains(&row.release_id) {
                let key = (
                    row.release_id,
                    row.target.cluster.to_string(),
                    row.target.namespace.to_string(),
                );
                newest.insert(key, row.clone());
            }
        }
        Ok(newest.into_values().collect())
    }

    async fn list_active(&self) -> Result<Vec<Deployment>, RepositoryError> {
        Ok(self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| d.status.is_active())
            .cloned()
            .collect())
    }

    async fn transition(
        &self,
        id: DeploymentId,
        transition: &Transition,
    ) -> Result<bool, RepositoryError> {
        self.database_away()?;
        if transition
            .fence
            .is_some_and(|fence| fence != self.current_fence(id))
        {
            return Ok(false);
        }
        let mut rows = self.rows.lock().expect("lock");
        let Some(row) = rows.iter_mut().find(|d| d.id == id) else {
            return Ok(false);
        };
        if !transition.from.contains(&row.status) {
            return Ok(false);
        }
        row.status = transition.to;
        row.timeline.extend(transition.entries.iter().cloned());
        if transition.to == DeploymentStatus::Applying && row.started_at.is_none() {
            row.started_at = Some(transition.at);
        }
        if transition.to.is_verdict() {
            row.finished_at = Some(transition.at);
            row.diagnostics.clone_from(&transition.diagnostics);
        }
        if let Some(audit) = &transition.audit {
            self.audit.lock().expect("lock").push(audit.clone());
        }
        if let Some(follow_up) = &transition.follow_up {
            rows.push(follow_up.deployment.clone());
            self.audit
                .lock()
                .expect("lock")
                .push(follow_up.audit.clone());
        }
        Ok(true)
    }

    async fn append_timeline(
        &self,
        id: DeploymentId,
        fence: Option<Fence>,
        entry: &TimelineEntry,
    ) -> Result<bool, RepositoryError> {
        if self.lines_yield.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        self.database_away()?;
        if let Some(fence) = fence
            && (fence != self.current_fence(id) || !self.is_active(id))
        {
            return Ok(false);
        }
        let mut rows = self.rows.lock().expect("lock");
        let Some(row) = rows.iter_mut().find(|d| d.id == id) else {
            return Ok(false);
        };
        row.timeline.push(entry.clone());
        Ok(true)
    }

    async fn last_succeeded(
        &self,
        service: &ServiceName,
        target: &Target,
        excluding: Option<ReleaseId>,
    ) -> Result<Option<Deployment>, RepositoryError> {
        Ok(self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .rev()
            .find(|d| {
                d.status == DeploymentStatus::Succeeded
                    && &d.service == service
                    && &d.target == target
                    && Some(d.release_id) != excluding
            })
            .cloned())
    }
}

#[async_trait]
impl LeaseRepository for MemoryDeployments {
    async fn claim(
        &self,
        owner: &InstanceId,
        ttl: Duration,
        limit: usize,
        except: &[DeploymentId],
    ) -> Result<Vec<ClaimedDeployment>, RepositoryError> {
        let ids: Vec<DeploymentId> = self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| d.status.is_active() && !except.contains(&d.id))
            .map(|d| d.id)
            .collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| self.take(id, owner, ttl))
            .take(limit)
            .collect())
    }

    async fn claim_one(
        &self,
        id: DeploymentId,
        owner: &InstanceId,
        ttl: Duration,
    ) -> Result<Option<ClaimedDeployment>, RepositoryError> {
        Ok(self.take(id, owner, ttl))
    }

    async fn renew(
        &self,
        owner: &InstanceId,
        held: &[(DeploymentId, Fence)],
        ttl: Duration,
    ) -> Result<Vec<DeploymentId>, RepositoryError> {
        self.database_away()?;
        let active: Vec<DeploymentId> = held
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| self.is_active(*id))
            .collect();
        let mut leases = self.leases.lock().expect("lock");
        let mut kept = Vec::new();
        for (id, fence) in held {
            if let Some(lease) = leases.get_mut(id)
                && lease.owner.as_ref() == Some(owner)
                && lease.fence == *fence
                && active.contains(id)
            {
                lease.expires = std::time::Instant::now() + ttl;
                kept.push(*id);
            }
        }
        Ok(kept)
    }

    async fn release(
        &self,
        owner: &InstanceId,
        held: &[(DeploymentId, Fence)],
    ) -> Result<(), RepositoryError> {
        let mut leases = self.leases.lock().expect("lock");
        for (id, fence) in held {
            if let Some(lease) = leases.get_mut(id)
                && lease.owner.as_ref() == Some(owner)
                && lease.fence == *fence
            {
                lease.owner = None;
            }
        }
        Ok(())
    }
}

const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\nspec:\n  replicas: {{ replicas }}\n  template:\n    spec:\n      containers:\n      - name: app\n        image: {{ image }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-{{ region }}\n";

pub(super) fn release(version: &str) -> Release {
    Release::register(
        NewRelease::parse(&UnvalidatedRelease {
            service: "hello".into(),
            version: version.into(),
            image: format!("hello:{version}"),
            template: TEMPLATE.into(),
            attributes: BTreeMap::from([("replicas".into(), "2".into())]),
            comment: None,
        })
        .expect("valid"),
        Actor::anonymous(),
    )
}

/// A deployer of every namespace of every cluster.
pub(super) fn deployer(name: &str) -> Caller {
    Caller::new(crate::access::Principal {
        actor: Actor::named(name),
        grants: vec![crate::access::Grant::global(crate::access::Role::Deployer)],
    })
}

pub(super) fn target() -> Target {
    Target {
        cluster: ClusterName::parse("eu").expect("cluster"),
        namespace: Namespace::parse("shop").expect("namespace"),
    }
}

pub(super) fn releases_of(all: Vec<Release>) -> MockReleaseRepository {
    let mut repository = MockReleaseRepository::new();
    let by_id = all.clone();
    repository
        .expect_find_active()
        .returning(move |id| Ok(by_id.iter().find(|r| r.id == id).cloned()));
    repository
        .expect_find_active_by_version()
        .returning(move |s, v| {
            Ok(all
                .iter()
                .find(|r| &r.service == s && &r.version == v)
                .cloned())
        });
    repository
}

fn applied(objects: &[serde_json::Value]) -> Vec<AppliedResource> {
    objects
        .iter()
        .map(|o| AppliedResource {
            resource: resource_ref_of(o),
            uid: "uid".into(),
            generation: Some(1),
        })
        .collect()
}

pub(super) fn settings() -> ClusterSettings {
    ClusterSettings {
        attributes: BTreeMap::from([("region".into(), "eu-west".into())]),
        ..ClusterSettings::default()
    }
}

/// A cluster where every apply works and every rollout succeeds.
/// A mocked cluster whose discovery serves every kind, namespaced.
fn mock_cluster() -> MockCluster {
    let mut cluster = MockCluster::new();
    cluster.expect_kind_scopes().returning(|kinds| {
        Ok(vec![
            Some(crate::cluster::KindScope::Namespaced);
            kinds.len()
        ])
    });
    cluster
}

fn a_healthy_cluster() -> MockCluster {
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .returning(|objects| Ok(applied(objects)));
    cluster
        .expect_watch_rollout()
        .returning(|_, _| Ok(RolloutOutcome::Succeeded { warnings: vec![] }));
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    cluster
}

/// Engine settings for tests: short retries and leases.
pub(super) fn fast_engine(name: &str) -> EngineSettings {
    let quick = RetryPolicy {
        first: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    EngineSettings {
        instance: InstanceId::unique(name),
        lease_ttl: Duration::from_millis(600),
        claim_interval: Duration::from_millis(50),
        cluster_retry: quick,
        database_retry: quick,
        ..EngineSettings::default()
    }
}

/// A replica: the use cases and an engine (started when `start`) over `deployments`
/// and `changes`, deploying to `cluster`.
pub(super) fn replica(
    releases: Vec<Release>,
    cluster: Arc<dyn Cluster>,
    deployments: &Arc<MemoryDeployments>,
    changes: &Arc<LocalChanges>,
    name: &str,
    start: bool,
) -> DeploymentService {
    let service = DeploymentService::new(
        Arc::new(releases_of(releases)),
        deployments.clone(),
        deployments.clone(),
        changes.clone(),
        vec![ClusterHandle {
            name: target().cluster,
            settings: settings(),
            cluster,
        }],
    )
    .with_engine_settings(fast_engine(name));
    if start {
        service.engine().start();
    }
    service
}

fn service_with(
    releases: Vec<Release>,
    cluster: MockCluster,
) -> (DeploymentService, Arc<MemoryDeployments>) {
    let deployments = Arc::new(MemoryDeployments::default());
    let service = replica(
        releases,
        Arc::new(cluster),
        &deployments,
        &Arc::new(LocalChanges::new()),
        "test",
        true,
    );
    (service, deployments)
}

pub(super) fn request(release: &Release) -> DeploymentRequest {
    DeploymentRequest {
        release: ReleaseSelector::Id(release.id),
        target: target(),
        attributes: BTreeMap::new(),
        timeout: Some(Duration::from_secs(60)),
        prune: true,
        rollback_on_failure: false,
    }
}

async fn verdict(service: &DeploymentService, id: DeploymentId) -> Deployment {
    service
        .wait(id, Duration::from_secs(10), &deployer("reader"))
        .await
        .expect("deployment")
}

#[tokio::test]
async fn a_deploy_that_rolls_out_is_applied_watched_pruned_and_succeeds() {
    let good = release("1");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .times(1)
        .returning(|objects| Ok(applied(objects)));
    cluster
        .expect_watch_rollout()
        .times(1)
        .returning(|_, progress| {
            let _ = progress.send(crate::cluster::RolloutProgress {
                resource: Some("Deployment/hello".into()),
                message: "2 of 2 replicas ready".into(),
            });
            Ok(RolloutOutcome::Succeeded { warnings: vec![] })
        });
    cluster.expect_prune().times(1).returning(|_, _, keep| {
        assert_eq!(keep.len(), 2);
        Ok(vec![ResourceRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "old".into(),
            namespace: Some("shop".into()),
        }])
    });
    let (service, _) = service_with(vec![good.clone()], cluster);
    let started = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("started");
    assert_eq!(started.status, DeploymentStatus::Queued);
    let labels = &started.objects[0]["metadata"]["labels"];
    assert_eq!(labels["kubernaut.io/service"], "hello");
    assert_eq!(
        started.objects[1]["metadata"]["name"], "hello-eu-west",
        "cluster attributes render"
    );

    let done = verdict(&service, started.id).await;
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    let messages: Vec<_> = done.timeline.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("2 of 2 replicas ready")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("pruned ConfigMap/old")),
        "{messages:?}"
    );
    assert_eq!(messages.last(), Some(&"rolled out"));
}

#[tokio::test]
async fn a_wait_reads_the_deployment_again_only_when_a_verdict_may_have_come() {
    let good = release("1");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .returning(|objects| Ok(applied(objects)));
    cluster.expect_watch_rollout().returning(|_, progress| {
        for ready in 0..20 {
            let _ = progress.send(crate::cluster::RolloutProgress {
                resource: Some("Deployment/hello".into()),
                message: format!("{ready} of 20 replicas ready"),
            });
        }
        Ok(RolloutOutcome::Succeeded { warnings: vec![] })
    });
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    let (service, deployments) = service_with(vec![good.clone()], cluster);
    deployments
        .lines_yield
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("started");
    let before = deployments.finds.load(std::sync::atomic::Ordering::SeqCst);
    let done = verdict(&service, started.id).await;
    let reads = deployments.finds.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert!(
        done.timeline.len() > 20,
        "the waiter was there for every line: {:?}",
        done.timeline
    );
    // Once on arrival, once on the verdict (the driver reads none by id).
    assert!(
        reads <= 3,
        "read {reads} times for {} lines",
        done.timeline.len()
    );
}

#[tokio::test]
async fn a_failed_rollout_stores_its_diagnostics() {
    let bad = release("2");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .returning(|objects| Ok(applied(objects)));
    cluster.expect_watch_rollout().returning(|request, _| {
        Ok(RolloutOutcome::Failed(Diagnostics::single(
            request.resources[0].resource.clone(),
            FailureReason::CrashLoop,
            "back-off restarting failed container",
        )))
    });
    cluster.expect_prune().never();
    let (service, _) = service_with(vec![bad.clone()], cluster);
    let started = service
        .request(request(&bad), &deployer("ci"))
        .await
        .expect("started");
    let done = verdict(&service, started.id).await;
    assert_eq!(done.status, DeploymentStatus::Failed);
    assert_eq!(
        done.diagnostics.and_then(|d| d.primary_reason()),
        Some(FailureReason::CrashLoop)
    );
}

#[tokio::test]
async fn a_manifest_the_cluster_refuses_fails_without_a_watch() {
    let bad = release("3");
    let mut cluster = mock_cluster();
    cluster.expect_apply().returning(|_| {
        Err(ClusterError::Rejected {
            resource: "Deployment/hello".into(),
            message: "spec.replicas: Invalid value".into(),
        })
    });
    cluster.expect_watch_rollout().never();
    let (service, _) = service_with(vec![bad.clone()], cluster);
    let started = service
        .request(request(&bad), &deployer("ci"))
        .await
        .expect("started");
    let done = verdict(&service, started.id).await;
    assert_eq!(done.status, DeploymentStatus::Failed);
    assert_eq!(
        done.diagnostics.and_then(|d| d.primary_reason()),
        Some(FailureReason::ApplyRejected)
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_retried_until_it_answers() {
    let good = release("4");
    let mut cluster = mock_cluster();
    let attempts = Arc::new(Mutex::new(0));
    let counter = attempts.clone();
    cluster.expect_apply().returning(move |objects| {
        let mut attempts = counter.lock().expect("lock");
        *attempts += 1;
        if *attempts < 3 {
            Err(ClusterError::Unavailable("503".into()))
        } else {
            Ok(applied(objects))
        }
    });
    cluster
        .expect_watch_rollout()
        .returning(|_, _| Ok(RolloutOutcome::Succeeded { warnings: vec![] }));
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    let (service, _) = service_with(vec![good.clone()], cluster);
    let started = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("started");
    assert_eq!(
        verdict(&service, started.id).await.status,
        DeploymentStatus::Succeeded
    );
    assert_eq!(*attempts.lock().expect("lock"), 3);
}

#[tokio::test]
async fn a_second_deploy_to_an_active_target_is_refused_naming_the_active_one() {
    let good = release("5");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .returning(|objects| Ok(applied(objects)));
    // The first rollout never ends within this test.
    cluster.expect_watch_rollout().returning(|_, _| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(RolloutOutcome::Succeeded { warnings: vec![] })
    });
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    let (service, _) = service_with(vec![good.clone()], cluster);
    let first = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("first");
    let error = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect_err("second is refused");
    assert!(
        matches!(error, RequestDeploymentError::ActiveExists { active } if active == first.id),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_deploy_that_cannot_supply_the_templates_variables_is_refused_by_name() {
    let good = release("6");
    let deployments = Arc::new(MemoryDeployments::default());
    let service = DeploymentService::new(
        Arc::new(releases_of(vec![good.clone()])),
        deployments.clone(),
        deployments.clone(),
        Arc::new(LocalChanges::new()),
        vec![ClusterHandle {
            name: target().cluster,
            settings: ClusterSettings::default(),
            cluster: Arc::new(mock_cluster()),
        }],
    );
    let error = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect_err("region is missing");
    assert!(
        matches!(&error, RequestDeploymentError::MissingVariables(names) if names == &["region".to_owned()]),
        "{error:?}"
    );
    assert!(
        deployments.rows.lock().expect("lock").is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn unknown_clusters_and_forbidden_namespaces_are_refused() {
    let good = release("7");
    let (service, _) = service_with(vec![good.clone()], mock_cluster());
    let mut elsewhere = request(&good);
    elsewhere.target.cluster = ClusterName::parse("mars").expect("name");
    assert!(matches!(
        service.request(elsewhere, &deployer("ci")).await,
        Err(RequestDeploymentError::UnknownCluster(_))
    ));

    let deployments = Arc::new(MemoryDeployments::default());
    let strict = DeploymentService::new(
        Arc::new(releases_of(vec![good.clone()])),
        deployments.clone(),
        deployments,
        Arc::new(LocalChanges::new()),
        vec![ClusterHandle {
            name: target().cluster,
            settings: ClusterSettings {
                allowed_namespaces: vec!["staging".into()],
                ..settings()
            },
            cluster: Arc::new(mock_cluster()),
        }],
    );
    assert!(matches!(
        strict.request(request(&good), &deployer("ci")).await,
        Err(RequestDeploymentError::NamespaceNotAllowed { .. })
    ));
}

#[tokio::test]
async fn a_failure_with_rollback_on_failure_deploys_the_last_good_release() {
    let good = release("8");
    let bad = release("9");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .returning(|objects| Ok(applied(objects)));
    // The first and third rollouts (good, then the rollback) succeed; the second fails.
    let watches = Arc::new(Mutex::new(0));
    cluster.expect_watch_rollout().returning(move |request, _| {
        let mut watches = watches.lock().expect("lock");
        *watches += 1;
        if *watches == 2 {
            Ok(RolloutOutcome::Failed(Diagnostics::single(
                request.resources[0].resource.clone(),
                FailureReason::ImageNotFound,
                "manifest unknown",
            )))
        } else {
            Ok(RolloutOutcome::Succeeded { warnings: vec![] })
        }
    });
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    let (service, deployments) = service_with(vec![good.clone(), bad.clone()], cluster);
    let first = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("good");
    assert_eq!(
        verdict(&service, first.id).await.status,
        DeploymentStatus::Succeeded
    );

    let mut failing = request(&bad);
    failing.rollback_on_failure = true;
    let second = service
        .request(failing, &deployer("ci"))
        .await
        .expect("bad");
    let failed = verdict(&service, second.id).await;
    assert_eq!(failed.status, DeploymentStatus::Failed);

    // The rollback is recorded on the failed deployment and runs as its own deployment.
    let rollback = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let found = deployments
                .rows
                .lock()
                .expect("lock")
                .iter()
                .find(|d| d.rollback_of == Some(second.id))
                .cloned();
            if let Some(found) = found {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a rollback was started");
    assert_eq!(rollback.release_id, good.id);
    assert_eq!(
        verdict(&service, rollback.id).await.status,
        DeploymentStatus::Succeeded
    );
    let failed = verdict(&service, second.id).await;
    assert!(
        failed
            .timeline
            .iter()
            .any(|e| e.message.contains("rolling back to hello 8"))
    );
}

#[tokio::test]
async fn a_manual_rollback_deploys_the_release_before_and_says_so() {
    let good = release("12");
    let newer = release("13");
    let cluster = a_healthy_cluster();
    let (service, deployments) = service_with(vec![good.clone(), newer.clone()], cluster);
    let first = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("first");
    verdict(&service, first.id).await;
    let second = service
        .request(request(&newer), &deployer("ci"))
        .await
        .expect("second");
    verdict(&service, second.id).await;
    let rollback = service
        .rollback(second.id, &deployer("oncall"))
        .await
        .expect("rollback");
    assert_eq!(rollback.release_id, good.id);
    assert_eq!(rollback.rollback_of, Some(second.id));
    let audit = deployments.audit.lock().expect("lock").clone();
    let rolled_back = audit
        .iter()
        .find(|a| a.action == AuditAction::DeploymentRolledBack)
        .expect("the rollback is audited");
    assert_eq!(rolled_back.actor, Actor::named("oncall"));
    assert_eq!(rolled_back.target, format!("deployment/{}", rollback.id));
    assert_eq!(rolled_back.details["rollback_of"], second.id.to_string());
    assert!(
        rollback.timeline[0]
            .message
            .contains("rollback of deployment")
    );
    assert_eq!(
        verdict(&service, rollback.id).await.status,
        DeploymentStatus::Succeeded
    );

    // Rolling back the very first release has nothing to go back to.
    let lonely = release("14");
    let (service, _) = service_with(vec![lonely.clone()], a_healthy_cluster());
    let only = service
        .request(request(&lonely), &deployer("ci"))
        .await
        .expect("only");
    verdict(&service, only.id).await;
    assert!(matches!(
        service.rollback(only.id, &deployer("ci")).await,
        Err(RollbackError::Request(
            RequestDeploymentError::NothingToRollBackTo
        ))
    ));
}

#[tokio::test]
async fn cancelling_stops_the_watch_and_ends_cancelled() {
    let good = release("10");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .returning(|objects| Ok(applied(objects)));
    cluster.expect_watch_rollout().returning(|_, _| {
        std::thread::sleep(Duration::from_millis(200));
        Ok(RolloutOutcome::Succeeded { warnings: vec![] })
    });
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    let (service, deployments) = service_with(vec![good.clone()], cluster);
    let started = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("started");
    let cancelled = service
        .cancel(started.id, &deployer("oncall"))
        .await
        .expect("cancelled");
    assert_eq!(cancelled.status, DeploymentStatus::Cancelled);
    let done = verdict(&service, started.id).await;
    assert_eq!(
        done.status,
        DeploymentStatus::Cancelled,
        "the watch's verdict does not overwrite it"
    );
    assert!(matches!(
        service.cancel(started.id, &deployer("ci")).await,
        Err(DeploymentLookupError::AlreadyFinished(
            DeploymentStatus::Cancelled
        ))
    ));
    assert_eq!(
        deployments.audit_actions(),
        vec![
            (AuditAction::DeploymentRequested, "ci".to_owned()),
            (AuditAction::DeploymentCancelled, "oncall".to_owned()),
        ],
        "the cancel is audited once, the refused second cancel and the lost verdict not at all"
    );
}

#[tokio::test]
async fn a_restart_resumes_active_deployments_and_reaches_a_verdict() {
    let good = release("11");
    let mut cluster = mock_cluster();
    cluster
        .expect_apply()
        .times(1)
        .returning(|objects| Ok(applied(objects)));
    cluster
        .expect_watch_rollout()
        .times(1)
        .returning(|_, _| Ok(RolloutOutcome::Succeeded { warnings: vec![] }));
    cluster.expect_prune().returning(|_, _, _| Ok(vec![]));
    let (service, deployments) = service_with(vec![good.clone()], cluster);
    // A deployment a previous process left rolling out.
    let now: DateTime<Utc> = Utc::now();
    let left = Deployment {
        id: DeploymentId::generate(),
        release_id: good.id,
        service: good.service.clone(),
        version: good.version.clone(),
        target: target(),
        requested_by: Actor::anonymous(),
        attributes: BTreeMap::new(),
        options: DeploymentOptions::default(),
        manifest: String::new(),
        objects: vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}}),
        ],
        status: DeploymentStatus::RollingOut,
        created_at: now,
        started_at: Some(now),
        finished_at: None,
        timeline: vec![],
        diagnostics: None,
        rollback_of: None,
    };
    deployments.rows.lock().expect("lock").push(left.clone());
    // No lease: the supervisor claims it at its next look.
    let done = verdict(&service, left.id).await;
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert!(done.timeline.iter().any(|e| e.message.contains("resumed")));
}

#[tokio::test]
async fn with_digest_pinning_a_release_with_a_recorded_digest_deploys_its_image_by_digest() {
    let digest = format!("sha256:{}", "b".repeat(64));
    let mut pinned = release("1.0.0");
    pinned.image_digest = Some(digest.clone());
    let unpinned = release("2.0.0");
    let image_of = |preview: &Preview| {
        preview.objects[0]
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };

    let (service, _) = service_with(vec![pinned.clone(), unpinned.clone()], mock_cluster());
    let service = service.with_digest_pinning(true);
    let preview = service
        .preview(pinned.id, &target(), &BTreeMap::new(), &deployer("ci"))
        .await
        .expect("preview");
    assert_eq!(
        image_of(&preview),
        Some(format!("docker.io/library/hello@{digest}"))
    );
    let preview = service
        .preview(unpinned.id, &target(), &BTreeMap::new(), &deployer("ci"))
        .await
        .expect("preview");
    assert_eq!(image_of(&preview).as_deref(), Some("hello:2.0.0"));

    let (service, _) = service_with(vec![pinned.clone()], mock_cluster());
    let preview = service
        .preview(pinned.id, &target(), &BTreeMap::new(), &deployer("ci"))
        .await
        .expect("preview");
    assert_eq!(image_of(&preview).as_deref(), Some("hello:1.0.0"));
}

#[tokio::test]
async fn a_deployer_outside_its_scope_is_refused_and_nothing_is_stored_or_audited() {
    let good = release("1");
    let mut cluster = mock_cluster();
    cluster.expect_apply().never();
    let (service, deployments) = service_with(vec![good.clone()], cluster);
    let staging_only = Caller::new(crate::access::Principal {
        actor: Actor::named("intern"),
        grants: vec![
            crate::access::Grant::new(
                crate::access::Role::Deployer,
                crate::access::Scope::parse("staging/*").expect("scope"),
            )
            .expect("grant"),
        ],
    });
    let error = service
        .request(request(&good), &staging_only)
        .await
        .expect_err("forbidden");
    assert!(
        matches!(error, RequestDeploymentError::Forbidden(ref denied) if denied.permission == Permission::Deploy(target())),
        "{error:?}"
    );
    assert!(deployments.rows.lock().expect("lock").is_empty());
    assert!(deployments.audit_actions().is_empty());
}

#[tokio::test]
async fn an_object_in_another_namespace_needs_the_callers_scope_there_too() {
    let elsewhere = Release::register(
        NewRelease::parse(&UnvalidatedRelease {
            service: "hello".into(),
            version: "7".into(),
            image: "hello:7".into(),
            template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-extra\n  namespace: payments\n".into(),
            attributes: BTreeMap::new(),
            comment: None,
        })
        .expect("valid"),
        Actor::anonymous(),
    );
    let mut cluster = mock_cluster();
    cluster.expect_apply().never();
    let deployments = Arc::new(MemoryDeployments::default());
    let service = DeploymentService::new(
        Arc::new(releases_of(vec![elsewhere.clone()])),
        deployments.clone(),
        deployments.clone(),
        Arc::new(LocalChanges::new()),
        vec![ClusterHandle {
            name: target().cluster,
            settings: ClusterSettings {
                allow_other_namespaces: true,
                ..settings()
            },
            cluster: Arc::new(cluster),
        }],
    );
    let shop_only = Caller::new(crate::access::Principal {
        actor: Actor::named("shop-ci"),
        grants: vec![
            crate::access::Grant::new(
                crate::access::Role::Deployer,
                crate::access::Scope::parse("eu/shop").expect("scope"),
            )
            .expect("grant"),
        ],
    });
    let error = service
        .request(request(&elsewhere), &shop_only)
        .await
        .expect_err("forbidden");
    assert!(
        matches!(
            error,
            RequestDeploymentError::Forbidden(ref denied)
                if denied.permission.to_string().contains("payments")
        ),
        "{error:?}"
    );
    assert!(deployments.rows.lock().expect("lock").is_empty());
    // A deployer of both namespaces may.
    let both = deployer("platform");
    service
        .request(request(&elsewhere), &both)
        .await
        .expect("allowed");
}

fn scoped_deployer(scope: &str) -> Caller {
    Caller::new(crate::access::Principal {
        actor: Actor::named("scoped-ci"),
        grants: vec![
            crate::access::Grant::new(
                crate::access::Role::Deployer,
                crate::access::Scope::parse(scope).expect("scope"),
            )
            .expect("grant"),
        ],
    })
}

/// A release whose template holds a namespaced ConfigMap and a `Policy` of a custom
/// resource definition the cluster serves.
fn release_with_a_policy() -> Release {
    Release::register(
        NewRelease::parse(&UnvalidatedRelease {
            service: "hello".into(),
            version: "8".into(),
            image: "hello:8".into(),
            template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\n---\napiVersion: policy.example.com/v1\nkind: Policy\nmetadata:\n  name: {{ service }}\n".into(),
            attributes: BTreeMap::new(),
            comment: None,
        })
        .expect("valid"),
        Actor::anonymous(),
    )
}

#[tokio::test]
async fn a_custom_kind_the_cluster_discovers_as_cluster_wide_needs_a_scope_over_the_whole_cluster()
{
    let policy = release_with_a_policy();
    let service_on = |allow_cluster_scoped: bool| {
        let mut cluster = MockCluster::new();
        cluster.expect_kind_scopes().returning(|kinds| {
            Ok(kinds
                .iter()
                .map(|kind| {
                    Some(if kind.kind == "Policy" {
                        crate::cluster::KindScope::Cluster
                    } else {
                        crate::cluster::KindScope::Namespaced
                    })
                })
                .collect())
        });
        let deployments = Arc::new(MemoryDeployments::default());
        let service = DeploymentService::new(
            Arc::new(releases_of(vec![policy.clone()])),
            deployments.clone(),
            deployments.clone(),
            Arc::new(LocalChanges::new()),
            vec![ClusterHandle {
                name: target().cluster,
                settings: ClusterSettings {
                    allow_cluster_scoped,
                    ..settings()
                },
                cluster: Arc::new(cluster),
            }],
        );
        (service, deployments)
    };
    // The cluster does not allow cluster-wide objects: refused for everyone.
    let (service, deployments) = service_on(false);
    let error = service
        .request(request(&policy), &deployer("platform"))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            RequestDeploymentError::Rejected(ManifestRejected::ClusterScoped { .. })
        ),
        "{error:?}"
    );
    assert!(deployments.rows.lock().expect("lock").is_empty());
    // It does: a deployer of one namespace still may not.
    let (service, deployments) = service_on(true);
    let error = service
        .request(request(&policy), &scoped_deployer("eu/shop"))
        .await
        .expect_err("forbidden");
    assert!(
        matches!(
            error,
            RequestDeploymentError::Forbidden(ref denied)
                if denied.permission == Permission::DeployClusterWide(target().cluster)
        ),
        "{error:?}"
    );
    assert!(deployments.rows.lock().expect("lock").is_empty());
    // A deployer of every namespace of the cluster may; the Policy goes out unnamespaced.
    let started = service
        .request(request(&policy), &scoped_deployer("eu/*"))
        .await
        .expect("allowed");
    assert_eq!(started.objects[0]["metadata"]["namespace"], "shop");
    assert!(started.objects[1]["metadata"].get("namespace").is_none());
}

#[tokio::test]
async fn a_cluster_whose_discovery_cannot_be_asked_starts_nothing() {
    let good = release("1");
    let mut cluster = MockCluster::new();
    cluster
        .expect_kind_scopes()
        .returning(|_| Err(ClusterError::Unavailable("connection refused".into())));
    cluster.expect_apply().never();
    let (service, deployments) = service_with(vec![good.clone()], cluster);
    let error = service
        .request(request(&good), &deployer("jenkins"))
        .await
        .expect_err("unavailable");
    assert!(
        matches!(error, RequestDeploymentError::ClusterUnavailable { ref message, .. } if message.contains("connection refused")),
        "{error:?}"
    );
    assert!(deployments.rows.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn requests_verdicts_and_cancels_are_audited_with_who_did_them() {
    let good = release("1");
    let cluster = a_healthy_cluster();
    let (service, deployments) = service_with(vec![good.clone()], cluster);
    let caller = deployer("jenkins").with_request(Some("req-9".into()), Some("10.0.0.9".into()));
    let started = service
        .request(request(&good), &caller)
        .await
        .expect("started");
    let done = verdict(&service, started.id).await;
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert_eq!(
        deployments.audit_actions(),
        vec![
            (AuditAction::DeploymentRequested, "jenkins".to_owned()),
            (AuditAction::DeploymentFinished, "kubernaut".to_owned()),
        ]
    );
    let audit = deployments.audit.lock().expect("lock").clone();
    assert_eq!(audit[0].target, format!("deployment/{}", started.id));
    assert_eq!(audit[0].request_id.as_deref(), Some("req-9"));
    assert_eq!(audit[0].source.as_deref(), Some("10.0.0.9"));
    assert_eq!(audit[0].details["namespace"], "shop");
    assert_eq!(audit[1].details["status"], "succeeded");
    // Reading is open to every role and not audited.
    let viewer = Caller::new(crate::access::Principal {
        actor: Actor::named("viewer"),
        grants: vec![crate::access::Grant::global(crate::access::Role::Viewer)],
    });
    service.get(started.id, &viewer).await.expect("readable");
    let placements = service
        .placements(&DeploymentQuery::default(), &viewer)
        .await
        .expect("placements are readable");
    assert_eq!(placements.len(), 1);
    assert_eq!(placements[0].last.id, started.id);
    assert_eq!(
        placements[0].running.as_ref().map(|d| d.id),
        Some(started.id)
    );
    let nobody = Caller::new(crate::access::Principal {
        actor: Actor::named("nobody"),
        grants: vec![],
    });
    assert!(matches!(
        service
            .placements(&DeploymentQuery::default(), &nobody)
            .await,
        Err(DeploymentLookupError::Forbidden(_))
    ));
    let went_to = service
        .newest_per_target(&[good.id], &viewer)
        .await
        .expect("where a release went is readable");
    assert_eq!(
        went_to.iter().map(|d| d.id).collect::<Vec<_>>(),
        [started.id]
    );
    assert!(matches!(
        service.newest_per_target(&[good.id], &nobody).await,
        Err(DeploymentLookupError::Forbidden(_))
    ));
    assert!(matches!(
        service.cancel(started.id, &viewer).await,
        Err(DeploymentLookupError::Forbidden(_))
    ));
    assert!(matches!(
        service.rollback(started.id, &viewer).await,
        Err(RollbackError::Lookup(DeploymentLookupError::Forbidden(_)))
    ));
    assert_eq!(deployments.audit_actions().len(), 2);
}

/// Every change the service (not the engine) makes is published on the feed: a
/// single process on SQLite hears of changes only this way (PostgreSQL's triggers
/// announce them themselves). A new deployment wakes the engine at once, a cancel
/// stops the driver at once, rather than at the next claim tick.
#[tokio::test]
async fn a_new_deployment_and_a_cancel_are_published_on_the_change_feed() {
    let good = release("11");
    let deployments = Arc::new(MemoryDeployments::default());
    let changes = Arc::new(LocalChanges::new());
    // Not started: only what the service itself publishes is on the feed.
    let service = replica(
        vec![good.clone()],
        Arc::new(mock_cluster()),
        &deployments,
        &changes,
        "test",
        false,
    );
    let mut heard = changes.subscribe();

    let started = service
        .request(request(&good), &deployer("ci"))
        .await
        .expect("started");
    assert_eq!(
        heard.try_recv().ok(),
        Some(Change::Deployment {
            id: started.id,
            status: Some(DeploymentStatus::Queued),
        })
    );
    service
        .cancel(started.id, &deployer("oncall"))
        .await
        .expect("cancelled");
    assert_eq!(
        heard.try_recv().ok(),
        Some(Change::Deployment {
            id: started.id,
            status: Some(DeploymentStatus::Cancelled),
        })
    );
    assert!(heard.try_recv().is_err(), "nothing else");
}
