//! What is particular to PostgreSQL in the release repository (the migrations, query
//! plans, prepared statements), each test in a database of its own. The port's contract
//! is tested in `contract.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use kubernaut_domain::access::Caller;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry};
use kubernaut_domain::ports::ReleaseRepository as _;
use kubernaut_domain::release::{
    NewRelease, Release, ReleaseId, ReleaseQuery, ReleaseSummary, ServiceName, UnvalidatedRelease,
};
use kubernaut_postgres::{Database, PoolOptions, PostgresReleaseRepository};
use kubernaut_testkit::database::TestDatabase;

const TEMPLATE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
  namespace: {{ namespace }}
spec:
  replicas: {{ replicas | default(1) }}
  template:
    spec:
      containers:
        - name: app
          image: {{ image }}
";

struct Harness {
    repository: PostgresReleaseRepository,
    database: Database,
    // Dropped last, after the pool, so the database is gone once the test ends.
    test_database: TestDatabase,
}

impl Harness {
    fn new() -> Self {
        Self::with_pool_size(4)
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
            repository: database.release_repository(),
            database,
            test_database,
        }
    }

    fn sql(&self) -> PgConnection {
        PgConnection::establish(self.test_database.url()).expect("a direct connection")
    }

    async fn insert(&self, release: &Release) {
        self.repository
            .insert(release, &audit_of(release))
            .await
            .expect("the release is stored");
    }
}

fn release_with(
    service: &str,
    version: &str,
    attributes: &[(&str, &str)],
    comment: Option<&str>,
) -> Release {
    let new = NewRelease::parse(&UnvalidatedRelease {
        service: service.to_owned(),
        version: version.to_owned(),
        image: format!("registry.example.com/{service}:{version}"),
        template: TEMPLATE.to_owned(),
        attributes: attributes
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        comment: comment.map(str::to_owned),
    })
    .expect("a valid release");
    Release::register(new, Actor::named("jenkins"))
}

fn release(service: &str, version: &str) -> Release {
    release_with(service, version, &[], None)
}

/// A release created `seconds` after a fixed instant, so orderings are known.
fn release_at(service: &str, version: &str, seconds: i64) -> Release {
    let mut release = release(service, version);
    release.created_at = epoch() + TimeDelta::seconds(seconds);
    release
}

/// The audit record the release service writes with `release`.
fn audit_of(release: &Release) -> AuditEntry {
    Caller::system("jenkins").audit(
        AuditAction::ReleaseCreated,
        format!("release/{}", release.id),
        serde_json::json!({ "service": release.service.as_str(), "version": release.version.as_str() }),
    )
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid instant")
}

fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).expect("a valid service name")
}

fn ids(summaries: &[ReleaseSummary]) -> Vec<ReleaseId> {
    summaries.iter().map(|summary| summary.id).collect()
}

/// Follows cursors from the first page to the last, returning every id seen in order.
async fn walk_pages(
    repository: &PostgresReleaseRepository,
    mut query: ReleaseQuery,
    page_size: usize,
) -> Vec<ReleaseId> {
    let mut seen = Vec::new();
    loop {
        let page = repository
            .list_active(&query, page_size)
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
async fn every_migration_can_be_reverted_and_applied_again() {
    let harness = Harness::new();
    assert!(
        !harness
            .database
            .has_pending_migrations()
            .expect("the migrations can be read"),
        "the harness applied them all"
    );

    let reverted = harness
        .database
        .revert_all_migrations()
        .expect("every migration reverts");
    assert!(!reverted.is_empty());
    assert!(
        harness
            .database
            .has_pending_migrations()
            .expect("the migrations can be read")
    );
    let tables: i64 = {
        use diesel::prelude::*;
        use diesel::sql_types::BigInt;
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        diesel::sql_query(
            "SELECT count(*) AS count FROM pg_tables WHERE schemaname = 'public' \
             AND tablename <> '__diesel_schema_migrations'",
        )
        .get_result::<Count>(&mut harness.sql())
        .expect("the catalog answers")
        .count
    };
    assert_eq!(tables, 0, "reverting leaves no table behind");

    let reapplied = harness
        .database
        .run_migrations()
        .expect("every migration applies again");
    assert_eq!(reapplied.len(), reverted.len());
    harness.insert(&release("payments", "1.0.0")).await;
}

#[tokio::test]
async fn the_first_and_a_deep_page_of_the_listing_are_index_seeks() {
    let harness = Harness::new();
    let mut sql = harness.sql();
    diesel::sql_query(
        "INSERT INTO releases (id, service, version, image, template, created_at, created_by) \
         SELECT gen_random_uuid(), 'service-' || (n % 20), n::text, 'nginx:1', 'kind: x', \
                timestamptz '2027-01-01' + n * interval '1 second', 'ci' \
         FROM generate_series(1, 5000) AS n",
    )
    .execute(&mut sql)
    .expect("the rows are inserted");
    diesel::sql_query(
        "UPDATE releases SET deleted_at = now(), deleted_by = 'ci' WHERE version::int % 10 = 0",
    )
    .execute(&mut sql)
    .expect("some rows are deleted");
    diesel::sql_query("ANALYZE releases")
        .execute(&mut sql)
        .expect("statistics are gathered");

    let deep = harness
        .repository
        .list_active(&ReleaseQuery::default(), 4000)
        .await
        .expect("the listing succeeds")
        .last()
        .expect("thousands of releases")
        .cursor();
    let queries = [
        ("first page", ReleaseQuery::default()),
        (
            "deep page",
            ReleaseQuery {
                after: Some(deep),
                ..ReleaseQuery::default()
            },
        ),
        (
            "first page of a service",
            ReleaseQuery {
                service: Some(service("service-7")),
                ..ReleaseQuery::default()
            },
        ),
        (
            "deep page of a service",
            ReleaseQuery {
                service: Some(service("service-7")),
                after: Some(deep),
                ..ReleaseQuery::default()
            },
        ),
    ];
    for (name, query) in queries {
        let plan = harness
            .repository
            .explain_list_active(&query, 50)
            .await
            .expect("the plan is explained");
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans the table:\n{plan}"
        );
        // With a service filter only a few hundred rows match here, and a bitmap scan
        // of the service index plus a small sort is the planner's right call.
        if query.service.is_none() {
            assert!(
                !plan.contains("Sort"),
                "{name} sorts instead of reading in order:\n{plan}"
            );
        }
        if query.after.is_some() {
            assert!(
                plan.contains("Index Cond") && plan.contains("ROW("),
                "{name} does not seek to the cursor:\n{plan}"
            );
        }
    }

    let distinct: HashSet<ReleaseId> =
        walk_pages(&harness.repository, ReleaseQuery::default(), 500)
            .await
            .into_iter()
            .collect();
    assert_eq!(distinct.len(), 4500, "every active release is listed once");
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
    let exercise = |round: i64| {
        let repository = harness.repository.clone();
        async move {
            let stored = release_at("payments", &round.to_string(), round);
            repository
                .insert(&stored, &audit_of(&stored))
                .await
                .expect("the release is stored");
            repository
                .find_active(stored.id)
                .await
                .expect("the lookup succeeds");
            repository
                .find_active_by_version(&stored.service, &stored.version)
                .await
                .expect("the lookup succeeds");
            for query in [
                ReleaseQuery::default(),
                ReleaseQuery {
                    service: Some(service("payments")),
                    after: Some(stored.cursor()),
                    ..ReleaseQuery::default()
                },
            ] {
                repository
                    .list_active(&query, 10)
                    .await
                    .expect("the listing succeeds");
            }
        }
    };

    exercise(1).await;
    let after_first_round = prepared_statements(&harness.database);
    exercise(2).await;
    let after_second_round = prepared_statements(&harness.database);

    let inserts = after_first_round
        .iter()
        .filter(|statement| statement.starts_with("INSERT INTO \"releases\""))
        .count();
    let selects = after_first_round
        .iter()
        .filter(|statement| statement.contains("FROM \"releases\""))
        .count();
    assert_eq!(inserts, 1, "{after_first_round:#?}");
    assert_eq!(selects, 4, "{after_first_round:#?}");
    assert_eq!(
        after_second_round, after_first_round,
        "the second round reuses the statements of the first"
    );
}

/// Replicas that start together on a fresh database all migrate it: they take turns,
/// the first applies every migration and the others find nothing left to do.
#[test]
fn replicas_starting_together_migrate_a_fresh_database_once() {
    let test_database = TestDatabase::create().expect("a fresh test database");
    let replicas: Vec<Database> = (0..4)
        .map(|_| {
            Database::connect(
                test_database.url(),
                PoolOptions {
                    max_size: 2,
                    connection_timeout: Duration::from_secs(30),
                },
            )
            .expect("a pool on the test database")
        })
        .collect();
    let barrier = std::sync::Barrier::new(replicas.len());
    let applied: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|replica| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    replica
                        .run_migrations()
                        .expect("every replica's start migrates")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("the replica's thread"))
            .collect()
    });
    let non_empty: Vec<&Vec<String>> = applied.iter().filter(|a| !a.is_empty()).collect();
    assert_eq!(non_empty.len(), 1, "one replica applied them: {applied:?}");
    assert!(
        !replicas[0]
            .has_pending_migrations()
            .expect("the migrations can be read")
    );
}
