//! What is particular to PostgreSQL in the deployment repository (query plans, prepared
//! statements, LISTEN/NOTIFY), each test in a database of its own. The port's contract
//! is tested in `contract.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::AuditAction;
use kubernaut_domain::changes::{Change, ChangeFeed as _};
use kubernaut_domain::deployment::{
    Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, TimelineEntry, Transition,
};
use kubernaut_domain::ports::{DeploymentRepository as _, ReleaseRepository as _};
use kubernaut_domain::release::{NewRelease, Release, UnvalidatedRelease};
use kubernaut_postgres::{Database, PoolOptions, PostgresChanges, PostgresDeploymentRepository};
use kubernaut_testkit::contract::deployment::{
    at, audit_for, deployment, diagnostics, ids, requested, service, target, transition,
};
use kubernaut_testkit::database::TestDatabase;

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

struct Harness {
    deployments: PostgresDeploymentRepository,
    database: Database,
    // Dropped last, after the pool, so the database is gone once the test ends.
    test_database: TestDatabase,
}

impl Harness {
    fn new() -> Self {
        Self::with_pool_size(2)
    }

    fn with_pool_size(max_size: u32) -> Self {
        let test_database = TestDatabase::create().expect("a fresh test database");
        let database = Database::connect(
            test_database.url(),
            PoolOptions {
                max_size,
                connection_timeout: Duration::from_secs(5),
            },
        )
        .expect("a pool on the test database");
        database.run_migrations().expect("the migrations apply");
        Self {
            deployments: database.deployment_repository(),
            database,
            test_database,
        }
    }

    fn sql(&self) -> PgConnection {
        PgConnection::establish(self.test_database.url()).expect("a direct connection")
    }

    /// A stored release: deployments refer to one.
    async fn release(&self, service: &str, version: &str) -> Release {
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
        self.database
            .release_repository()
            .insert(
                &release,
                &audit_for("release", release.id, AuditAction::ReleaseCreated),
            )
            .await
            .expect("the release is stored");
        release
    }

    async fn insert(&self, deployment: &Deployment) {
        self.deployments
            .insert(deployment, &requested(deployment))
            .await
            .expect("the deployment is stored");
    }

    async fn transition(&self, id: DeploymentId, transition: &Transition) -> bool {
        self.deployments
            .transition(id, transition)
            .await
            .expect("the transition runs")
    }
}

// The fixtures are the repository contract's (kubernaut_testkit::contract::deployment).

/// Follows cursors from the first page to the last, returning every id seen in order.
async fn walk_pages(
    repository: &PostgresDeploymentRepository,
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

#[tokio::test]
async fn the_first_and_a_deep_page_of_the_listing_are_index_seeks() {
    let harness = Harness::new();
    let release = harness.release("payments", "1.0.0").await;
    let mut sql = harness.sql();
    diesel::sql_query(format!(
        "INSERT INTO deployments (id, release_id, service, version, cluster, namespace, \
             requested_by, timeout_seconds, prune, rollback_on_failure, manifest, objects, \
             status, created_at, started_at, finished_at) \
         SELECT gen_random_uuid(), '{release}', 'service-' || (n % 20), '1.0.0', 'eu', \
                'shop', 'ci', 600, true, false, 'kind: x', '[]', 'succeeded', \
                timestamptz '2027-01-01' + n * interval '1 second', \
                timestamptz '2027-01-01' + n * interval '1 second', \
                timestamptz '2027-01-01' + n * interval '1 second' \
         FROM generate_series(1, 5000) AS n",
        release = release.id.as_uuid()
    ))
    .execute(&mut sql)
    .expect("the rows are inserted");
    diesel::sql_query("ANALYZE deployments")
        .execute(&mut sql)
        .expect("statistics are gathered");

    let deep = harness
        .deployments
        .list(&DeploymentQuery::default(), 4000)
        .await
        .expect("the listing succeeds")
        .last()
        .expect("thousands of deployments")
        .cursor();
    let queries = [
        ("first page", DeploymentQuery::default()),
        (
            "deep page",
            DeploymentQuery {
                after: Some(deep),
                ..DeploymentQuery::default()
            },
        ),
    ];
    for (name, query) in queries {
        let plan = harness
            .deployments
            .explain_list(&query, 50)
            .await
            .expect("the plan is explained");
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans the table:\n{plan}"
        );
        assert!(
            !plan.contains("Sort"),
            "{name} sorts instead of reading in order:\n{plan}"
        );
        if query.after.is_some() {
            assert!(
                plan.contains("Index Cond") && plan.contains("ROW("),
                "{name} does not seek to the cursor:\n{plan}"
            );
        }
    }

    let distinct: HashSet<DeploymentId> =
        walk_pages(&harness.deployments, DeploymentQuery::default(), 500)
            .await
            .into_iter()
            .collect();
    assert_eq!(distinct.len(), 5000, "every deployment is listed once");
}

/// The statements the connection holds prepared, from PostgreSQL's point of view.
fn prepared_statements(database: &Database) -> Vec<String> {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Prepared {
        #[diesel(sql_type = Text)]
        statement: String,
    }
    let mut connection = database.pool().get().expect("the pooled connection");
    diesel::sql_query("SELECT statement FROM pg_prepared_statements ORDER BY statement")
        .load::<Prepared>(&mut connection)
        .expect("the catalog answers")
        .into_iter()
        .map(|prepared| prepared.statement)
        .collect()
}

#[tokio::test]
async fn the_hot_queries_are_prepared_once_per_connection_and_reused() {
    // One connection, so every call below runs on the session inspected afterwards.
    let harness = Harness::with_pool_size(1);
    let release = harness.release("payments", "1.0.0").await;
    let exercise = |round: i64| {
        let repository = harness.deployments.clone();
        let release = release.clone();
        async move {
            let stored = deployment(&release, target("eu", "shop"), round);
            repository
                .insert(&stored, &requested(&stored))
                .await
                .expect("the deployment is stored");
            for (from, to) in [
                (DeploymentStatus::Queued, DeploymentStatus::Applying),
                (DeploymentStatus::Applying, DeploymentStatus::RollingOut),
                (DeploymentStatus::RollingOut, DeploymentStatus::Failed),
            ] {
                let moved = repository
                    .transition(
                        stored.id,
                        &Transition {
                            diagnostics: to.is_verdict().then(diagnostics),
                            ..transition(&[from], to, round)
                        },
                    )
                    .await
                    .expect("the transition runs");
                assert!(moved);
                repository
                    .append_timeline(
                        stored.id,
                        None,
                        &TimelineEntry {
                            at: at(round),
                            phase: to,
                            message: format!("{to}"),
                            resource: None,
                        },
                    )
                    .await
                    .expect("the entry is appended");
                repository
                    .find(stored.id)
                    .await
                    .expect("the lookup succeeds");
            }
            for query in [
                DeploymentQuery::default(),
                DeploymentQuery {
                    service: Some(service("payments")),
                    after: Some(stored.cursor()),
                    ..DeploymentQuery::default()
                },
            ] {
                repository
                    .list(&query, 10)
                    .await
                    .expect("the listing succeeds");
            }
            repository
                .list_active()
                .await
                .expect("the listing succeeds");
            repository
                .last_succeeded(&release.service, &stored.target, Some(release.id))
                .await
                .expect("the lookup succeeds");
        }
    };

    exercise(1).await;
    let after_first_round = prepared_statements(&harness.database);
    exercise(2).await;
    let after_second_round = prepared_statements(&harness.database);

    let updates = after_first_round
        .iter()
        .filter(|statement| statement.starts_with("UPDATE \"deployments\""))
        .count();
    let timeline_inserts = after_first_round
        .iter()
        .filter(|statement| statement.starts_with("INSERT INTO \"deployment_timeline\""))
        .count();
    assert_eq!(updates, 1, "every transition: {after_first_round:#?}");
    assert_eq!(timeline_inserts, 1, "{after_first_round:#?}");
    assert_eq!(
        after_second_round, after_first_round,
        "the second round reuses the statements of the first"
    );
}

// Leases, fences and the change feed.

#[tokio::test]
async fn every_replica_hears_of_changes_through_listen_and_notify() {
    let harness = Harness::new();
    let release = harness.release("payments", "1.0.0").await;
    let feed = PostgresChanges::listen(harness.test_database.url()).expect("listening");
    let mut changes = feed.subscribe();
    // The first thing a listener says is that it (re)connected.
    let first = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("the listener connects")
        .expect("a change");
    assert_eq!(first, Change::Resync);

    let queued = deployment(&release, target("eu", "shop"), 0);
    harness.insert(&queued).await;
    let mut cancel = transition(&DeploymentStatus::ACTIVE, DeploymentStatus::Cancelled, 1);
    cancel.entries.push(TimelineEntry {
        at: at(1),
        phase: DeploymentStatus::Cancelled,
        message: "cancelled".to_owned(),
        resource: None,
    });
    assert!(harness.transition(queued.id, &cancel).await);
    let mut heard = Vec::new();
    while heard.len() < 3 {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("notified")
            .expect("a change");
        heard.push(change);
    }
    assert_eq!(
        heard,
        [
            Change::Deployment {
                id: queued.id,
                status: Some(DeploymentStatus::Queued)
            },
            Change::Deployment {
                id: queued.id,
                status: None
            },
            Change::Deployment {
                id: queued.id,
                status: Some(DeploymentStatus::Cancelled)
            },
        ],
        "the insert, its timeline line (once per transaction) and the cancel"
    );
}
