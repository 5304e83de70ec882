//! The contract of the deployment and lease repositories, each test on a fresh store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kubernaut_domain::access::Caller;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::deployment::{
    ClusterName, ContainerLogs, Deployment, DeploymentId, DeploymentOptions, DeploymentQuery,
    DeploymentStatus, Diagnostics, EventRecord, FailureReason, Namespace, ResourceDiagnosis,
    ResourceRef, Target, TimelineEntry, Transition,
};
use kubernaut_domain::deployment::{Fence, NewDeployment};
use kubernaut_domain::lease::InstanceId;
use kubernaut_domain::ports::{DeploymentRepository, InsertDeploymentError};
use kubernaut_domain::release::{NewRelease, Release, ReleaseId, ServiceName, UnvalidatedRelease};
use serde_json::json;

use crate::contract::Backend;

const TEMPLATE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
spec:
  template:
    spec:
      containers:
        - name: app
          image: {{ image }}
";

pub(crate) struct Harness<B> {
    pub(crate) deployments: Arc<dyn DeploymentRepository>,
    pub(crate) backend: B,
}

impl<B: Backend> Harness<B> {
    pub(crate) fn new() -> Self {
        Self::with_pool_size(2)
    }

    pub(crate) fn with_pool_size(max_size: u32) -> Self {
        let backend = B::create(max_size);
        Self {
            deployments: backend.deployments(),
            backend,
        }
    }

    /// A stored release: deployments refer to one.
    pub(crate) async fn release(&self, service: &str, version: &str) -> Release {
        let release = Release::register(
            NewRelease::parse(&UnvalidatedRelease {
                service: service.to_owned(),
                version: version.to_owned(),
                image: format!("registry.example.com/{service}:{version}"),
                template: TEMPLATE.to_owned(),
                attributes: BTreeMap::new(),
                comment: None,
            })
            .expect("a valid release"),
            Actor::named("jenkins"),
        );
        self.backend
            .releases()
            .insert(
                &release,
                &audit_for("release", release.id, AuditAction::ReleaseCreated),
            )
            .await
            .expect("the release is stored");
        release
    }

    pub(crate) async fn insert(&self, deployment: &Deployment) {
        self.deployments
            .insert(deployment, &requested(deployment))
            .await
            .expect("the deployment is stored");
    }

    pub(crate) async fn find(&self, id: DeploymentId) -> Deployment {
        self.deployments
            .find(id)
            .await
            .expect("the lookup succeeds")
            .expect("the deployment exists")
    }

    pub(crate) async fn transition(&self, id: DeploymentId, transition: &Transition) -> bool {
        self.deployments
            .transition(id, transition)
            .await
            .expect("the transition runs")
    }

    async fn list(&self, query: &DeploymentQuery, limit: usize) -> Vec<DeploymentId> {
        ids(&self
            .deployments
            .list(query, limit)
            .await
            .expect("the listing succeeds"))
    }
}

pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid instant")
}

pub fn at(seconds: i64) -> DateTime<Utc> {
    epoch() + TimeDelta::seconds(seconds)
}

pub fn target(cluster: &str, namespace: &str) -> Target {
    Target {
        cluster: ClusterName::parse(cluster).expect("a valid cluster name"),
        namespace: Namespace::parse(namespace).expect("a valid namespace"),
    }
}

pub fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).expect("a valid service name")
}

/// A queued deployment of `release` to `target`, created `seconds` after a fixed
/// instant, with the timeline entry the service writes at creation.
pub fn deployment(release: &Release, target: Target, seconds: i64) -> Deployment {
    Deployment {
        id: DeploymentId::generate(),
        release_id: release.id,
        service: release.service.clone(),
        version: release.version.clone(),
        target,
        requested_by: Actor::named("alice"),
        attributes: BTreeMap::new(),
        options: DeploymentOptions::default(),
        manifest: "kind: Deployment\n".to_owned(),
        objects: vec![json!({"kind": "Deployment", "metadata": {"name": "x"}})],
        status: DeploymentStatus::Queued,
        created_at: at(seconds),
        started_at: None,
        finished_at: None,
        timeline: vec![TimelineEntry {
            at: at(seconds),
            phase: DeploymentStatus::Queued,
            message: "queued".to_owned(),
            resource: None,
        }],
        diagnostics: None,
        rollback_of: None,
    }
}

/// The same deployment, already at a verdict (so many can share a target).
pub fn finished(mut deployment: Deployment, status: DeploymentStatus) -> Deployment {
    deployment.status = status;
    deployment.started_at = Some(deployment.created_at + TimeDelta::seconds(1));
    deployment.finished_at = Some(deployment.created_at + TimeDelta::seconds(2));
    deployment
}

pub fn diagnostics() -> Diagnostics {
    Diagnostics {
        resources: vec![ResourceDiagnosis {
            resource: ResourceRef {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                name: "payments".to_owned(),
                namespace: Some("shop".to_owned()),
            },
            reason: FailureReason::CrashLoop,
            message: "container app keeps exiting with code 1".to_owned(),
            events: vec![EventRecord {
                at: Some(at(30)),
                event_type: "Warning".to_owned(),
                reason: "BackOff".to_owned(),
                message: "Back-off restarting failed container".to_owned(),
                object: "Pod/payments-7d4b9-x2x".to_owned(),
                count: 4,
            }],
            logs: vec![ContainerLogs {
                pod: "payments-7d4b9-x2x".to_owned(),
                container: "app".to_owned(),
                lines: vec!["starting".to_owned(), "panic: no \"DB_URL\"".to_owned()],
            }],
        }],
    }
}

pub fn transition(from: &[DeploymentStatus], to: DeploymentStatus, seconds: i64) -> Transition {
    Transition::new(from, to, at(seconds))
}

/// An audit record by `jenkins` of `action` on `kind/<id>`.
pub fn audit_for(kind: &str, id: impl std::fmt::Display, action: AuditAction) -> AuditEntry {
    Caller::system("jenkins").audit(action, format!("{kind}/{id}"), serde_json::Value::Null)
}

/// The audit record the deployment service writes with a new deployment.
pub fn requested(deployment: &Deployment) -> AuditEntry {
    audit_for(
        "deployment",
        deployment.id,
        AuditAction::DeploymentRequested,
    )
}

pub fn ids(deployments: &[Deployment]) -> Vec<DeploymentId> {
    deployments.iter().map(|deployment| deployment.id).collect()
}

/// What a listing shows of a deployment: everything but the timeline, the manifest and
/// the objects.
fn as_listed(mut deployment: Deployment) -> Deployment {
    deployment.timeline.clear();
    deployment.manifest.clear();
    deployment.objects.clear();
    deployment
}

pub async fn a_deployment_reads_back_exactly_as_it_was_stored<B: Backend>() {
    let harness = Harness::<B>::new();
    let good = harness.release("payments", "1.0.0").await;
    let bad = harness.release("payments", "2.0.0").await;
    let earlier = finished(
        deployment(&good, target("production-eu", "shop"), 0),
        DeploymentStatus::Succeeded,
    );
    harness.insert(&earlier).await;

    let mut stored = finished(
        deployment(
            &bad,
            target("arn:aws:eks:eu-west-1:1:cluster/prod", "shop"),
            10,
        ),
        DeploymentStatus::Failed,
    );
    stored.requested_by = Actor::named("ci job #42");
    stored.attributes = BTreeMap::from([
        ("replicas".to_owned(), "3".to_owned()),
        ("team.name".to_owned(), "päyments \"core\"".to_owned()),
    ]);
    stored.options = DeploymentOptions {
        timeout: Duration::from_secs(90),
        prune: false,
        rollback_on_failure: true,
    };
    stored.manifest = TEMPLATE.replace("{{ service }}", "payments");
    stored.objects = vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments", "labels": {"kubernaut.io/service": "payments"}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"n": 1.5, "list": [1, null, true]}}),
    ];
    stored.started_at =
        Some(DateTime::from_timestamp_micros(1_800_000_011_123_456).expect("an instant"));
    stored.timeline = vec![
        TimelineEntry {
            at: at(10),
            phase: DeploymentStatus::Queued,
            message: "queued".to_owned(),
            resource: None,
        },
        TimelineEntry {
            at: at(10),
            phase: DeploymentStatus::Applying,
            message: "applied".to_owned(),
            resource: Some("Deployment/payments".to_owned()),
        },
        TimelineEntry {
            at: at(12),
            phase: DeploymentStatus::Failed,
            message: "crash loop".to_owned(),
            resource: Some("Deployment/payments".to_owned()),
        },
    ];
    stored.diagnostics = Some(diagnostics());
    stored.rollback_of = Some(earlier.id);
    harness.insert(&stored).await;

    assert_eq!(harness.find(stored.id).await, stored);
    assert_eq!(harness.find(earlier.id).await, earlier);

    let listed = harness
        .deployments
        .list(&DeploymentQuery::default(), 10)
        .await
        .expect("the listing succeeds");
    assert_eq!(listed, [as_listed(stored), as_listed(earlier)]);
}

pub async fn unknown_deployments_are_absent_not_errors<B: Backend>() {
    let harness = Harness::<B>::new();
    let unknown = DeploymentId::generate();

    let found = harness
        .deployments
        .find(unknown)
        .await
        .expect("the lookup succeeds");
    assert_eq!(found, None);
    let moved = harness
        .transition(
            unknown,
            &transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 1),
        )
        .await;
    assert!(!moved, "nothing moves");
    harness
        .deployments
        .append_timeline(
            unknown,
            None,
            &TimelineEntry {
                at: at(1),
                phase: DeploymentStatus::Queued,
                message: "lost".to_owned(),
                resource: None,
            },
        )
        .await
        .expect("a note about nothing is dropped, as the domain's reference does");
}

pub async fn a_second_active_deployment_to_a_target_names_the_active_one_until_it_has_a_verdict<
    B: Backend,
>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let first = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&first).await;

    let second = deployment(&release, target("eu", "shop"), 1);
    let outcome = harness
        .deployments
        .insert(&second, &requested(&second))
        .await;
    assert!(
        matches!(outcome, Err(InsertDeploymentError::ActiveExists { active }) if active == first.id),
        "{outcome:?}"
    );
    let second_found = harness
        .deployments
        .find(second.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(second_found, None, "the refused deployment stored nothing");
    let timeline_rows = harness.backend.count(&format!(
        "SELECT count(*) AS count FROM deployment_timeline WHERE deployment_id = '{}'",
        second.id
    ));
    assert_eq!(timeline_rows, 0, "nor any timeline entry");

    // Other namespaces, clusters and services are other targets.
    let other = harness.release("billing", "1.0.0").await;
    harness
        .insert(&deployment(&release, target("eu", "shop-staging"), 2))
        .await;
    harness
        .insert(&deployment(&release, target("us", "shop"), 3))
        .await;
    harness
        .insert(&deployment(&other, target("eu", "shop"), 4))
        .await;

    assert!(
        harness
            .transition(
                first.id,
                &transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Succeeded, 5)
            )
            .await
    );
    harness.insert(&second).await;
    let third = deployment(&release, target("eu", "shop"), 6);
    let outcome = harness.deployments.insert(&third, &requested(&third)).await;
    assert!(
        matches!(outcome, Err(InsertDeploymentError::ActiveExists { active }) if active == second.id),
        "{outcome:?}"
    );
}

pub async fn inserting_the_same_deployment_twice_is_a_repository_error<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let stored = finished(
        deployment(&release, target("eu", "shop"), 0),
        DeploymentStatus::Succeeded,
    );
    harness.insert(&stored).await;
    let again = harness
        .deployments
        .insert(&stored, &requested(&stored))
        .await;
    assert!(
        matches!(again, Err(InsertDeploymentError::Repository(_))),
        "{again:?}"
    );
}

pub async fn concurrent_deployments_to_one_target_let_exactly_one_win<B: Backend>() {
    const CONTENDERS: usize = 8;
    let harness = Harness::<B>::with_pool_size(u32::try_from(CONTENDERS).expect("a small number"));
    let release = harness.release("payments", "1.0.0").await;
    let repository = Arc::new(harness.deployments.clone());
    let start = Arc::new(tokio::sync::Barrier::new(CONTENDERS));

    let mut tasks = Vec::new();
    for n in 0..CONTENDERS {
        let repository = Arc::clone(&repository);
        let start = Arc::clone(&start);
        let contender = deployment(
            &release,
            target("eu", "shop"),
            i64::try_from(n).expect("a small number"),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            (
                contender.id,
                repository.insert(&contender, &requested(&contender)).await,
            )
        }));
    }
    let mut winners = Vec::new();
    let mut named = Vec::new();
    for task in tasks {
        match task.await.expect("the task finishes") {
            (id, Ok(())) => winners.push(id),
            (_, Err(InsertDeploymentError::ActiveExists { active })) => named.push(active),
            (_, Err(error)) => panic!("an insert failed: {error:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one insert wins");
    assert_eq!(named.len(), CONTENDERS - 1);
    assert!(
        named.iter().all(|active| *active == winners[0]),
        "every loser names the winner"
    );
    let active = harness
        .deployments
        .list_active()
        .await
        .expect("the listing succeeds");
    assert_eq!(ids(&active), winners);
}

pub async fn a_transition_moves_only_from_the_expected_statuses<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let stored = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&stored).await;

    let wrong = harness
        .transition(
            stored.id,
            &transition(
                &[DeploymentStatus::Applying, DeploymentStatus::RollingOut],
                DeploymentStatus::Succeeded,
                1,
            ),
        )
        .await;
    assert!(!wrong, "a queued deployment does not move from applying");
    assert_eq!(harness.find(stored.id).await, stored, "and nothing changed");

    let applying = harness
        .transition(
            stored.id,
            &transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 2),
        )
        .await;
    assert!(applying);
    let found = harness.find(stored.id).await;
    assert_eq!(found.status, DeploymentStatus::Applying);
    assert_eq!(found.started_at, Some(at(2)));
    assert_eq!(found.finished_at, None);

    for (from, to, seconds) in [
        (DeploymentStatus::Applying, DeploymentStatus::RollingOut, 3),
        // The same status again, as a resumed driver does.
        (
            DeploymentStatus::RollingOut,
            DeploymentStatus::RollingOut,
            4,
        ),
        // Entering `applying` again keeps the first start.
        (DeploymentStatus::RollingOut, DeploymentStatus::Applying, 5),
    ] {
        assert!(
            harness
                .transition(stored.id, &transition(&[from], to, seconds))
                .await,
            "{from} -> {to}"
        );
        let found = harness.find(stored.id).await;
        assert_eq!(found.status, to);
        assert_eq!(found.started_at, Some(at(2)), "{from} -> {to}");
        assert_eq!(found.finished_at, None);
    }

    let failed = harness
        .transition(
            stored.id,
            &Transition {
                diagnostics: Some(diagnostics()),
                ..transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Failed, 6)
            },
        )
        .await;
    assert!(failed);
    let verdict = harness.find(stored.id).await;
    assert_eq!(verdict.status, DeploymentStatus::Failed);
    assert_eq!(verdict.started_at, Some(at(2)));
    assert_eq!(verdict.finished_at, Some(at(6)));
    assert_eq!(verdict.diagnostics, Some(diagnostics()));

    let cancel = harness
        .transition(
            stored.id,
            &transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 7),
        )
        .await;
    assert!(!cancel, "a verdict is final for active-only transitions");
    assert_eq!(harness.find(stored.id).await, verdict);
}

pub async fn a_verdict_without_diagnostics_stores_none_and_its_time<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let stored = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&stored).await;

    assert!(
        harness
            .transition(
                stored.id,
                &transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 3),
            )
            .await
    );
    let found = harness.find(stored.id).await;
    assert_eq!(found.status, DeploymentStatus::Cancelled);
    assert_eq!(found.started_at, None, "it never started");
    assert_eq!(found.finished_at, Some(at(3)));
    assert_eq!(found.diagnostics, None);
}

pub async fn an_active_deployments_objects_read_back_on_their_own_until_its_verdict<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let mut stored = deployment(&release, target("eu", "shop"), 0);
    stored.objects = vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments"}, "spec": {"replicas": 3}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"n": 1.5, "list": [1, null, true], "text": "päyments \"core\""}}),
    ];
    harness.insert(&stored).await;
    let other = deployment(&release, target("eu", "billing"), 1);
    harness.insert(&other).await;

    let read = |id| {
        let deployments = &harness.deployments;
        async move {
            deployments
                .active_objects(id)
                .await
                .expect("the read succeeds")
        }
    };
    assert_eq!(read(stored.id).await, Some(stored.objects.clone()));
    assert_eq!(read(other.id).await, Some(other.objects.clone()));
    assert_eq!(read(DeploymentId::generate()).await, None, "unknown");

    // Applying and rolling out: still active.
    assert!(
        harness
            .transition(
                stored.id,
                &transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 1),
            )
            .await
    );
    assert_eq!(read(stored.id).await, Some(stored.objects.clone()));
    assert!(
        harness
            .transition(
                stored.id,
                &transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Succeeded, 2),
            )
            .await
    );
    assert_eq!(
        read(stored.id).await,
        None,
        "a verdict ends its driver's reads"
    );
    assert_eq!(
        harness.find(stored.id).await.objects,
        stored.objects,
        "the objects stay stored"
    );
}

pub async fn timeline_entries_read_back_in_the_order_they_were_appended<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let stored = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&stored).await;
    let mut expected = stored.timeline.clone();
    // Equal and even earlier times: the order written is the order read.
    for (n, seconds) in [(1, 5), (2, 5), (3, 1)] {
        let entry = TimelineEntry {
            at: at(seconds),
            phase: DeploymentStatus::RollingOut,
            message: format!("step {n}"),
            resource: (n % 2 == 1).then(|| format!("Deployment/step-{n}")),
        };
        harness
            .deployments
            .append_timeline(stored.id, None, &entry)
            .await
            .expect("the entry is appended");
        expected.push(entry);
    }

    assert_eq!(harness.find(stored.id).await.timeline, expected);
}

pub async fn the_listing_is_newest_first_filtered_and_limited<B: Backend>() {
    let harness = Harness::<B>::new();
    let payments = harness.release("payments", "1.0.0").await;
    let billing = harness.release("billing", "1.0.0").await;
    let p_eu_shop = finished(
        deployment(&payments, target("eu", "shop"), 10),
        DeploymentStatus::Succeeded,
    );
    let p_eu_staging = finished(
        deployment(&payments, target("eu", "staging"), 20),
        DeploymentStatus::Failed,
    );
    let b_us_shop = finished(
        deployment(&billing, target("us", "shop"), 30),
        DeploymentStatus::Succeeded,
    );
    let p_us_shop = deployment(&payments, target("us", "shop"), 40);
    // Equal times are ordered by id, descending.
    let mut tie_a = deployment(&billing, target("eu", "tie-a"), 25);
    let mut tie_b = deployment(&billing, target("eu", "tie-b"), 25);
    if tie_a.id < tie_b.id {
        std::mem::swap(&mut tie_a, &mut tie_b);
    }
    for deployment in [
        &tie_b,
        &p_us_shop,
        &p_eu_shop,
        &b_us_shop,
        &tie_a,
        &p_eu_staging,
    ] {
        harness.insert(deployment).await;
    }

    let all = harness.list(&DeploymentQuery::default(), 50).await;
    assert_eq!(
        all,
        [
            p_us_shop.id,
            b_us_shop.id,
            tie_a.id,
            tie_b.id,
            p_eu_staging.id,
            p_eu_shop.id
        ]
    );
    assert_eq!(
        harness.list(&DeploymentQuery::default(), 2).await,
        [p_us_shop.id, b_us_shop.id]
    );

    let cases = [
        (
            "service",
            DeploymentQuery {
                service: Some(service("payments")),
                ..DeploymentQuery::default()
            },
            vec![p_us_shop.id, p_eu_staging.id, p_eu_shop.id],
        ),
        (
            "cluster",
            DeploymentQuery {
                cluster: Some(ClusterName::parse("us").expect("a cluster")),
                ..DeploymentQuery::default()
            },
            vec![p_us_shop.id, b_us_shop.id],
        ),
        (
            "namespace",
            DeploymentQuery {
                namespace: Some(Namespace::parse("shop").expect("a namespace")),
                ..DeploymentQuery::default()
            },
            vec![p_us_shop.id, b_us_shop.id, p_eu_shop.id],
        ),
        (
            "status",
            DeploymentQuery {
                status: Some(DeploymentStatus::Succeeded),
                ..DeploymentQuery::default()
            },
            vec![b_us_shop.id, p_eu_shop.id],
        ),
        (
            "every filter",
            DeploymentQuery {
                service: Some(service("payments")),
                cluster: Some(ClusterName::parse("eu").expect("a cluster")),
                namespace: Some(Namespace::parse("shop").expect("a namespace")),
                status: Some(DeploymentStatus::Succeeded),
                ..DeploymentQuery::default()
            },
            vec![p_eu_shop.id],
        ),
        (
            "exclusive time bounds",
            DeploymentQuery {
                created_after: Some(p_eu_shop.created_at),
                created_before: Some(b_us_shop.created_at),
                ..DeploymentQuery::default()
            },
            vec![tie_a.id, tie_b.id, p_eu_staging.id],
        ),
        (
            "no match",
            DeploymentQuery {
                service: Some(service("unknown")),
                ..DeploymentQuery::default()
            },
            vec![],
        ),
        (
            "after a cursor",
            DeploymentQuery {
                after: Some(tie_a.cursor()),
                ..DeploymentQuery::default()
            },
            vec![tie_b.id, p_eu_staging.id, p_eu_shop.id],
        ),
    ];
    for (name, query, expected) in cases {
        assert_eq!(harness.list(&query, 50).await, expected, "{name}");
    }
}

/// Follows cursors from the first page to the last, returning every id seen in order.
async fn walk_pages(
    repository: &dyn DeploymentRepository,
    mut query: DeploymentQuery,
    page_size: usize,
) -> Vec<DeploymentId> {
    let mut seen = Vec::new();
    loop {
        let page = repository
            .list(&query, page_size)
            .await
            .expect("the page loads");
        assert!(page.len() <= page_size);
        seen.extend(ids(&page));
        match page.last() {
            Some(last) if page.len() == page_size => query.after = Some(last.cursor()),
            _ => return seen,
        }
    }
}

pub async fn keyset_pages_cover_every_deployment_once_in_order<B: Backend>() {
    let harness = Harness::<B>::new();
    let payments = harness.release("payments", "1.0.0").await;
    let billing = harness.release("billing", "1.0.0").await;
    let mut all = Vec::new();
    for n in 0..23_i64 {
        // Three deployments share each instant, so the id decides at a page boundary.
        let release = if n % 2 == 0 { &payments } else { &billing };
        let stored = finished(
            deployment(release, target("eu", "shop"), n / 3),
            DeploymentStatus::Succeeded,
        );
        harness.insert(&stored).await;
        all.push(stored);
    }
    all.sort_by_key(|deployment| std::cmp::Reverse((deployment.created_at, deployment.id)));
    let expected = ids(&all);

    for page_size in [1, 4, 5, 23, 50] {
        let seen = walk_pages(&*harness.deployments, DeploymentQuery::default(), page_size).await;
        assert_eq!(seen, expected, "pages of {page_size}");
    }

    let of_payments: Vec<DeploymentId> = all
        .iter()
        .filter(|deployment| deployment.service.as_str() == "payments")
        .map(|deployment| deployment.id)
        .collect();
    let query = DeploymentQuery {
        service: Some(service("payments")),
        ..DeploymentQuery::default()
    };
    assert_eq!(
        walk_pages(&*harness.deployments, query, 3).await,
        of_payments
    );
}

pub async fn the_active_deployments_are_listed_oldest_first_and_whole<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let queued = deployment(&release, target("eu", "a"), 30);
    let applying = deployment(&release, target("eu", "b"), 10);
    let rolling_out = deployment(&release, target("eu", "c"), 20);
    let done = finished(
        deployment(&release, target("eu", "d"), 0),
        DeploymentStatus::TimedOut,
    );
    for deployment in [&queued, &applying, &rolling_out, &done] {
        harness.insert(deployment).await;
    }
    assert!(
        harness
            .transition(
                applying.id,
                &transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 40)
            )
            .await
    );
    assert!(
        harness
            .transition(
                rolling_out.id,
                &transition(
                    &[DeploymentStatus::Queued],
                    DeploymentStatus::RollingOut,
                    41
                )
            )
            .await
    );
    let note = TimelineEntry {
        at: at(42),
        phase: DeploymentStatus::RollingOut,
        message: "1 of 2 replicas ready".to_owned(),
        resource: Some("Deployment/payments".to_owned()),
    };
    harness
        .deployments
        .append_timeline(rolling_out.id, None, &note)
        .await
        .expect("the entry is appended");

    let active = harness
        .deployments
        .list_active()
        .await
        .expect("the listing succeeds");

    assert_eq!(ids(&active), [applying.id, rolling_out.id, queued.id]);
    assert_eq!(active[0], harness.find(applying.id).await);
    assert_eq!(active[2], queued, "whole: manifest, objects and timeline");
    assert_eq!(active[1].timeline.len(), 2);
    assert_eq!(active[1].timeline[1], note);
}

pub async fn the_last_success_on_a_target_is_the_newest_one_of_another_release<B: Backend>() {
    let harness = Harness::<B>::new();
    let v1 = harness.release("payments", "1.0.0").await;
    let v2 = harness.release("payments", "2.0.0").await;
    let v3 = harness.release("payments", "3.0.0").await;
    let billing = harness.release("billing", "1.0.0").await;
    let shop = target("eu", "shop");
    let v1_ok = finished(
        deployment(&v1, shop.clone(), 0),
        DeploymentStatus::Succeeded,
    );
    let v2_ok = finished(
        deployment(&v2, shop.clone(), 10),
        DeploymentStatus::Succeeded,
    );
    let v2_failed = finished(deployment(&v2, shop.clone(), 15), DeploymentStatus::Failed);
    let elsewhere = finished(
        deployment(&v3, target("eu", "staging"), 20),
        DeploymentStatus::Succeeded,
    );
    let other_service = finished(
        deployment(&billing, shop.clone(), 25),
        DeploymentStatus::Succeeded,
    );
    let v3_active = deployment(&v3, shop.clone(), 30);
    for deployment in [
        &v1_ok,
        &v2_ok,
        &v2_failed,
        &elsewhere,
        &other_service,
        &v3_active,
    ] {
        harness.insert(deployment).await;
    }
    let last = |excluding| {
        let repository = harness.deployments.clone();
        let shop = shop.clone();
        async move {
            repository
                .last_succeeded(&service("payments"), &shop, excluding)
                .await
                .expect("the lookup succeeds")
        }
    };

    assert_eq!(
        last(None).await,
        Some(v2_ok.clone()),
        "whole, timeline and all"
    );
    assert_eq!(last(Some(v3.id)).await.map(|d| d.id), Some(v2_ok.id));
    assert_eq!(last(Some(v2.id)).await.map(|d| d.id), Some(v1_ok.id));
    let nowhere = harness
        .deployments
        .last_succeeded(&service("payments"), &target("us", "shop"), None)
        .await
        .expect("the lookup succeeds");
    assert_eq!(nowhere, None);
}

pub async fn the_listing_filters_by_release<B: Backend>() {
    let harness = Harness::<B>::new();
    let v1 = harness.release("payments", "1.0.0").await;
    let v2 = harness.release("payments", "2.0.0").await;
    let v1_shop = finished(
        deployment(&v1, target("eu", "shop"), 0),
        DeploymentStatus::Succeeded,
    );
    let v2_shop = finished(
        deployment(&v2, target("eu", "shop"), 10),
        DeploymentStatus::Succeeded,
    );
    let v1_staging = deployment(&v1, target("eu", "staging"), 20);
    for deployment in [&v1_shop, &v2_shop, &v1_staging] {
        harness.insert(deployment).await;
    }
    let of = |release: &Release| DeploymentQuery {
        release: Some(release.id),
        ..DeploymentQuery::default()
    };
    assert_eq!(
        harness.list(&of(&v1), 50).await,
        [v1_staging.id, v1_shop.id]
    );
    assert_eq!(harness.list(&of(&v2), 50).await, [v2_shop.id]);
}

pub async fn where_releases_went_is_their_newest_deployment_on_every_target<B: Backend>() {
    let harness = Harness::<B>::new();
    let v1 = harness.release("payments", "1.0.0").await;
    let v2 = harness.release("payments", "2.0.0").await;
    let never = harness.release("payments", "3.0.0").await;
    let shop = target("eu", "shop");
    let staging = target("eu", "staging");
    let v1_shop_old = finished(
        deployment(&v1, shop.clone(), 0),
        DeploymentStatus::Succeeded,
    );
    let v1_staging = finished(
        deployment(&v1, staging.clone(), 10),
        DeploymentStatus::Succeeded,
    );
    let v1_shop_new = finished(deployment(&v1, shop.clone(), 20), DeploymentStatus::Failed);
    let v2_shop = deployment(&v2, shop.clone(), 30);
    // Many newer deployments of v2 elsewhere do not push v1's targets out.
    let mut crowd = Vec::new();
    for index in 0..30 {
        crowd.push(finished(
            deployment(&v2, target("us", &format!("ns-{index:02}")), 40 + index),
            DeploymentStatus::Succeeded,
        ));
    }
    for deployment in [&v1_shop_old, &v1_staging, &v1_shop_new, &v2_shop]
        .into_iter()
        .chain(&crowd)
    {
        harness.insert(deployment).await;
    }

    let went = |releases: Vec<ReleaseId>| {
        let deployments = &harness.deployments;
        async move {
            deployments
                .newest_per_target(&releases)
                .await
                .expect("where the releases went is read")
        }
    };
    let of_v1 = went(vec![v1.id]).await;
    assert_eq!(
        of_v1
            .iter()
            .map(|d| (d.target.to_string(), d.id))
            .collect::<Vec<_>>(),
        [
            (shop.to_string(), v1_shop_new.id),
            (staging.to_string(), v1_staging.id),
        ],
        "the newest of any status on each target, ordered by target"
    );
    let both = went(vec![v1.id, v2.id, never.id]).await;
    assert_eq!(both.len(), 2 + 1 + 30, "every target of every release");
    let on_shop: Vec<_> = both
        .iter()
        .filter(|d| d.target == shop)
        .map(|d| (d.release_id, d.id))
        .collect();
    assert_eq!(
        on_shop.len(),
        2,
        "one per release on the same target: {on_shop:?}"
    );
    assert!(on_shop.contains(&(v1.id, v1_shop_new.id)));
    assert!(on_shop.contains(&(v2.id, v2_shop.id)));
    assert!(went(vec![never.id]).await.is_empty());
    assert!(went(Vec::new()).await.is_empty());
}

pub async fn placements_hold_the_newest_and_the_running_deployment_of_every_target<B: Backend>() {
    let harness = Harness::<B>::new();
    let v1 = harness.release("payments", "1.0.0").await;
    let v2 = harness.release("payments", "2.0.0").await;
    let billing = harness.release("billing", "1.0.0").await;
    let shop = target("eu", "shop");
    let staging = target("eu", "staging");
    let v1_ok = finished(
        deployment(&v1, shop.clone(), 0),
        DeploymentStatus::Succeeded,
    );
    let v2_failed = finished(deployment(&v2, shop.clone(), 10), DeploymentStatus::Failed);
    let staging_failed = finished(
        deployment(&v1, staging.clone(), 20),
        DeploymentStatus::Failed,
    );
    let billing_ok = finished(
        deployment(&billing, shop.clone(), 30),
        DeploymentStatus::Succeeded,
    );
    // Many newer deployments of another service elsewhere do not push these out.
    let mut crowd = Vec::new();
    for index in 0..30 {
        crowd.push(finished(
            deployment(
                &billing,
                target("us", &format!("ns-{index:02}")),
                40 + index,
            ),
            DeploymentStatus::Succeeded,
        ));
    }
    for deployment in [&v1_ok, &v2_failed, &staging_failed, &billing_ok]
        .into_iter()
        .chain(&crowd)
    {
        harness.insert(deployment).await;
    }

    let placements = harness
        .deployments
        .placements(&DeploymentQuery {
            service: Some(service("payments")),
            ..DeploymentQuery::default()
        })
        .await
        .expect("the placements are read");
    let seen: Vec<_> = placements
        .iter()
        .map(|p| {
            (
                p.last.target.to_string(),
                p.last.id,
                p.running.as_ref().map(|r| r.id),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (shop.to_string(), v2_failed.id, Some(v1_ok.id)),
            (staging.to_string(), staging_failed.id, None),
        ],
        "newest of any status, and the newest success running, per target"
    );

    let everywhere = harness
        .deployments
        .placements(&DeploymentQuery::default())
        .await
        .expect("the placements are read");
    assert_eq!(
        everywhere.len(),
        2 + 1 + 30,
        "every service on every target"
    );
    assert_eq!(
        everywhere[0].last.service,
        service("billing"),
        "ordered by service"
    );
    let on_shop = DeploymentQuery {
        cluster: Some(shop.cluster.clone()),
        namespace: Some(shop.namespace.clone()),
        ..DeploymentQuery::default()
    };
    let shop_placements = harness
        .deployments
        .placements(&on_shop)
        .await
        .expect("the placements are read");
    assert_eq!(
        shop_placements
            .iter()
            .map(|p| (p.last.id, p.running.as_ref().map(|r| r.id)))
            .collect::<Vec<_>>(),
        [
            (billing_ok.id, Some(billing_ok.id)),
            (v2_failed.id, Some(v1_ok.id))
        ]
    );
}

pub async fn a_stored_row_that_breaks_a_domain_rule_is_an_error_not_a_panic<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let stored = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&stored).await;

    for corruption in [
        "UPDATE deployments SET namespace = 'Not A Label'",
        "UPDATE deployments SET diagnostics = '{\"resources\": 7}'",
        "UPDATE deployments SET attributes = '[1, 2]'",
        "UPDATE deployments SET objects = '{\"not\": \"an array\"}'",
        "UPDATE deployment_timeline SET phase = 'exploded'",
    ] {
        harness.backend.execute("DELETE FROM deployment_timeline");
        harness.backend.execute("DELETE FROM deployments");
        harness.insert(&stored).await;
        assert!(
            harness.backend.execute(corruption) > 0,
            "{corruption}: a row is corrupted"
        );

        let found = harness.deployments.find(stored.id).await;
        assert!(found.is_err(), "{corruption}: {found:?}");
        let active = harness.deployments.list_active().await;
        assert!(active.is_err(), "{corruption}: {active:?}");
        if !corruption.contains("objects") && !corruption.contains("timeline") {
            let listed = harness
                .deployments
                .list(&DeploymentQuery::default(), 10)
                .await;
            assert!(listed.is_err(), "{corruption}: {listed:?}");
        }
    }
    // Still readable once repaired, so the errors above came from the corruption.
    harness
        .backend
        .execute("UPDATE deployment_timeline SET phase = 'queued'");
    assert_eq!(harness.find(stored.id).await, stored);
}

/// Every audit record of deployments, newest first.
async fn deployment_audit<B: Backend>(harness: &Harness<B>) -> Vec<AuditEntry> {
    harness
        .backend
        .audit()
        .list(
            &AuditQuery {
                target: Some("deployment/".to_owned()),
                ..AuditQuery::default()
            },
            500,
        )
        .await
        .expect("the audit trail lists")
}

pub async fn each_change_stores_its_audit_record_and_no_change_stores_none<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let first = deployment(&release, target("eu", "shop"), 1);
    let first_requested = requested(&first);
    harness
        .deployments
        .insert(&first, &first_requested)
        .await
        .expect("the deployment is stored");
    assert_eq!(
        deployment_audit(&harness).await,
        vec![first_requested.clone()]
    );

    // Refused: another is active on the target.
    let second = deployment(&release, target("eu", "shop"), 2);
    let outcome = harness
        .deployments
        .insert(&second, &requested(&second))
        .await;
    assert!(
        matches!(outcome, Err(InsertDeploymentError::ActiveExists { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        deployment_audit(&harness).await,
        vec![first_requested.clone()],
        "a refused insert is not audited"
    );

    // A transition that does not move stores nothing, one that moves stores its record,
    // and one without a record stores none.
    let cancelled = audit_for("deployment", first.id, AuditAction::DeploymentCancelled);
    let unmoved = harness
        .transition(
            first.id,
            &Transition {
                audit: Some(cancelled.clone()),
                ..transition(
                    &[DeploymentStatus::RollingOut],
                    DeploymentStatus::Cancelled,
                    3,
                )
            },
        )
        .await;
    assert!(!unmoved);
    assert!(
        harness
            .transition(
                first.id,
                &transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 4),
            )
            .await
    );
    assert_eq!(
        deployment_audit(&harness).await,
        vec![first_requested.clone()],
        "neither an unmoved transition nor one without a record is audited"
    );
    assert!(
        harness
            .transition(
                first.id,
                &Transition {
                    audit: Some(cancelled.clone()),
                    ..transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 5)
                },
            )
            .await
    );
    let again = harness
        .transition(
            first.id,
            &Transition {
                audit: Some(audit_for(
                    "deployment",
                    first.id,
                    AuditAction::DeploymentCancelled,
                )),
                ..transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 6)
            },
        )
        .await;
    assert!(!again);
    assert_eq!(
        deployment_audit(&harness).await,
        vec![cancelled, first_requested],
        "only the move that happened is audited"
    );
    assert_eq!(
        harness.find(first.id).await.status,
        DeploymentStatus::Cancelled
    );
}

pub async fn a_transition_whose_audit_record_fails_does_not_move<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let stored = deployment(&release, target("eu", "shop"), 1);
    let record = requested(&stored);
    harness
        .deployments
        .insert(&stored, &record)
        .await
        .expect("the deployment is stored");
    // The same audit id again violates audit_log's primary key.
    let outcome = harness
        .deployments
        .transition(
            stored.id,
            &Transition {
                audit: Some(record),
                ..transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 2)
            },
        )
        .await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(
        harness.find(stored.id).await.status,
        DeploymentStatus::Queued
    );
}

// Leases, fences and the change feed.

fn instance(name: &str) -> InstanceId {
    InstanceId::from_stored(name)
}

const TTL: Duration = Duration::from_secs(30);

pub async fn concurrent_claims_never_take_one_deployment_twice_and_fences_grow<B: Backend>() {
    let harness = Harness::<B>::with_pool_size(6);
    let release = harness.release("payments", "1.0.0").await;
    let mut stored = Vec::new();
    for n in 0..30 {
        let queued = deployment(&release, target("eu", &format!("ns-{n}")), n);
        harness.insert(&queued).await;
        stored.push(queued.id);
    }
    let done = finished(
        deployment(&release, target("eu", "done"), 100),
        DeploymentStatus::Succeeded,
    );
    harness.insert(&done).await;
    let leases = harness.backend.leases();
    // Three replicas claim at once, ten at a time, until nothing is left.
    let claimers = (0..3).map(|n| {
        let leases = leases.clone();
        tokio::spawn(async move {
            let me = instance(&format!("replica-{n}"));
            let mut mine = Vec::new();
            // Each claim that takes anything takes one of the 30 at least: more rounds
            // than that mean deployments were taken again (and would never run out).
            for _ in 0..=30 {
                let claimed = leases.claim(&me, TTL, 4, &[]).await.expect("claims run");
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed);
            }
            panic!("the claims never ran out: held leases were claimed again");
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("the claimer ends"));
    }
    let mut claimed_ids: Vec<DeploymentId> = all.iter().map(|c| c.deployment.id).collect();
    claimed_ids.sort();
    let mut expected = stored.clone();
    expected.sort();
    assert_eq!(claimed_ids, expected, "each active deployment exactly once");
    assert!(all.iter().all(|c| c.fence == Fence::new(1)));
    assert_eq!(
        all.iter()
            .find(|c| c.deployment.id == stored[0])
            .map(|c| c.deployment.timeline.len()),
        Some(1),
        "claimed deployments come whole"
    );
    // Held and not expired: nobody else gets them.
    assert!(
        leases
            .claim(&instance("late"), TTL, 100, &[])
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        leases
            .claim_one(stored[0], &instance("late"), TTL)
            .await
            .expect("claim"),
        None
    );
    // Expired leases are claimed again, but not those the claimer says it drives
    // already (it renews them instead).
    harness.backend.expire_leases();
    let retaken = leases
        .claim(&instance("late"), TTL, 100, &stored[..29])
        .await
        .expect("claim");
    assert_eq!(
        retaken.iter().map(|c| c.deployment.id).collect::<Vec<_>>(),
        [stored[29]],
        "all but the excepted"
    );
    assert_eq!(retaken[0].fence, Fence::new(2));
}

pub async fn an_expired_lease_is_taken_over_with_a_higher_fence_and_the_old_owner_is_fenced_off<
    B: Backend,
>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let queued = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&queued).await;
    let leases = harness.backend.leases();
    let (old, new) = (instance("old"), instance("new"));
    let first = leases
        .claim_one(queued.id, &old, Duration::from_millis(200))
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(first.fence, Fence::new(1));
    // The old owner's fenced writes go through while its lease is current.
    assert!(
        harness
            .transition(
                queued.id,
                &Transition {
                    fence: Some(first.fence),
                    ..transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 1)
                }
            )
            .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = leases
        .claim(&new, TTL, 10, &[])
        .await
        .expect("claim")
        .pop()
        .expect("an expired lease is free");
    assert_eq!(second.fence, Fence::new(2));
    assert_eq!(second.deployment.status, DeploymentStatus::Applying);

    // The old owner, back from a pause: its renewal, lines and moves are all refused.
    assert_eq!(
        leases
            .renew(&old, &[(queued.id, first.fence)], TTL)
            .await
            .expect("renew"),
        Vec::<DeploymentId>::new()
    );
    let line = TimelineEntry {
        at: at(5),
        phase: DeploymentStatus::RollingOut,
        message: "from the old owner".to_owned(),
        resource: None,
    };
    assert!(
        !harness
            .deployments
            .append_timeline(queued.id, Some(first.fence), &line)
            .await
            .expect("append runs")
    );
    let mut verdict = transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Succeeded, 6);
    verdict.fence = Some(first.fence);
    verdict.audit = Some(audit_for(
        "deployment",
        queued.id,
        AuditAction::DeploymentFinished,
    ));
    verdict.entries.push(line.clone());
    assert!(!harness.transition(queued.id, &verdict).await);
    let now = harness.find(queued.id).await;
    assert_eq!(now.status, DeploymentStatus::Applying);
    assert!(
        now.timeline
            .iter()
            .all(|e| e.message != "from the old owner")
    );
    assert!(
        deployment_audit(&harness)
            .await
            .iter()
            .all(|a| a.action != AuditAction::DeploymentFinished)
    );

    // The new owner's go through; then nobody's lines are taken any more.
    assert_eq!(
        leases
            .renew(&new, &[(queued.id, second.fence)], TTL)
            .await
            .expect("renew"),
        vec![queued.id]
    );
    assert!(
        harness
            .deployments
            .append_timeline(queued.id, Some(second.fence), &line)
            .await
            .expect("append runs")
    );
    verdict.fence = Some(second.fence);
    assert!(harness.transition(queued.id, &verdict).await);
    assert!(
        !harness
            .deployments
            .append_timeline(queued.id, Some(second.fence), &line)
            .await
            .expect("append runs"),
        "no line after a verdict"
    );
    let done = harness.find(queued.id).await;
    assert_eq!(
        done.timeline
            .iter()
            .filter(|e| e.message == "from the old owner")
            .count(),
        2,
        "the new owner's line and the verdict's own"
    );
}

pub async fn a_released_lease_is_free_at_once_and_a_finished_deployment_is_never_claimed<
    B: Backend,
>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "1.0.0").await;
    let queued = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&queued).await;
    let leases = harness.backend.leases();
    let leaving = instance("leaving");
    let claimed = leases
        .claim_one(queued.id, &leaving, TTL)
        .await
        .expect("claim")
        .expect("free");
    // Releasing with a wrong fence does nothing.
    leases
        .release(&leaving, &[(queued.id, Fence::new(7))])
        .await
        .expect("release");
    assert!(
        leases
            .claim(&instance("other"), TTL, 5, &[])
            .await
            .expect("claim")
            .is_empty()
    );
    leases
        .release(&leaving, &[(queued.id, claimed.fence)])
        .await
        .expect("release");
    let taken = leases
        .claim(&instance("other"), TTL, 5, &[])
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].fence, Fence::new(2));
    let mut cancel = transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 3);
    cancel.entries.push(TimelineEntry {
        at: at(3),
        phase: DeploymentStatus::Cancelled,
        message: "cancelled by bob".to_owned(),
        resource: None,
    });
    assert!(
        harness.transition(queued.id, &cancel).await,
        "a cancel needs no lease"
    );
    assert_eq!(
        harness
            .find(queued.id)
            .await
            .timeline
            .last()
            .map(|e| e.message.clone()),
        Some("cancelled by bob".to_owned())
    );
    leases
        .release(&instance("other"), &[(queued.id, taken[0].fence)])
        .await
        .expect("release");
    assert!(
        leases
            .claim(&instance("third"), TTL, 5, &[])
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        leases
            .renew(&instance("other"), &[(queued.id, taken[0].fence)], TTL)
            .await
            .expect("renew"),
        Vec::<DeploymentId>::new(),
        "an ended deployment's lease is lost"
    );
}

pub async fn a_verdict_and_the_rollback_it_starts_are_stored_together_or_not_at_all<B: Backend>() {
    let harness = Harness::<B>::new();
    let release = harness.release("payments", "2.0.0").await;
    let good = harness.release("payments", "1.0.0").await;
    let failing = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&failing).await;
    let leases = harness.backend.leases();
    let owner = instance("owner");
    let claimed = leases
        .claim_one(failing.id, &owner, TTL)
        .await
        .expect("claim")
        .expect("free");
    let mut rollback = deployment(&good, target("eu", "shop"), 10);
    rollback.rollback_of = Some(failing.id);
    let mut verdict = transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Failed, 9);
    verdict.fence = Some(claimed.fence);
    verdict.diagnostics = Some(diagnostics());
    verdict.audit = Some(audit_for(
        "deployment",
        failing.id,
        AuditAction::DeploymentFinished,
    ));
    verdict.entries.push(TimelineEntry {
        at: at(9),
        phase: DeploymentStatus::Failed,
        message: format!("rolling back in deployment {}", rollback.id),
        resource: None,
    });
    verdict.follow_up = Some(Box::new(NewDeployment {
        audit: requested(&rollback),
        deployment: rollback.clone(),
    }));

    // A stale fence: nothing of it is stored, no rollback either.
    let stale = Transition {
        fence: Some(Fence::new(0)),
        ..verdict.clone()
    };
    assert!(!harness.transition(failing.id, &stale).await);
    assert_eq!(
        harness.deployments.find(rollback.id).await.expect("lookup"),
        None
    );

    assert!(harness.transition(failing.id, &verdict).await);
    let stored = harness.find(rollback.id).await;
    assert_eq!(stored.status, DeploymentStatus::Queued);
    assert_eq!(stored.rollback_of, Some(failing.id));
    assert_eq!(
        harness.find(failing.id).await.status,
        DeploymentStatus::Failed
    );
    // The rollback is the target's active deployment, free to claim.
    let next = leases.claim(&owner, TTL, 5, &[]).await.expect("claim");
    assert_eq!(
        next.iter().map(|c| c.deployment.id).collect::<Vec<_>>(),
        [rollback.id]
    );
    // Applied once only: the same verdict again moves nothing and adds nothing.
    assert!(!harness.transition(failing.id, &verdict).await);
}
