//! The release repository against a real PostgreSQL, each test in a database of its own.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use kubernaut_domain::access::Caller;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::pagination::Cursor;
use kubernaut_domain::ports::{
    AuditRepository as _, InsertReleaseError, ReleaseRepository as _, SoftDeleteOutcome,
};
use kubernaut_domain::release::{
    NewRelease, Release, ReleaseId, ReleaseQuery, ReleaseSummary, ServiceName, UnvalidatedRelease,
    Version,
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

/// The audit record of deleting release `id`.
fn deleted_audit(id: ReleaseId) -> AuditEntry {
    Caller::system("alice").audit(
        AuditAction::ReleaseDeleted,
        format!("release/{id}"),
        serde_json::Value::Null,
    )
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid instant")
}

fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).expect("a valid service name")
}

fn version(text: &str) -> Version {
    Version::parse(text).expect("a valid version")
}

fn ids(summaries: &[ReleaseSummary]) -> Vec<ReleaseId> {
    summaries.iter().map(|summary| summary.id).collect()
}

#[tokio::test]
async fn a_release_reads_back_exactly_as_it_was_stored() {
    let harness = Harness::new();
    let stored = release_with(
        "payments",
        "1.2.3",
        &[("replicas", "3"), ("team.name", "päyments \"core\"")],
        Some("built by job #42"),
    );
    assert!(
        stored.template().required_variables().contains("namespace"),
        "the fixture needs a deploy-time variable to prove it is stored"
    );
    harness.insert(&stored).await;

    let by_id = harness
        .repository
        .find_active(stored.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(by_id.as_ref(), Some(&stored));

    let by_version = harness
        .repository
        .find_active_by_version(&service("payments"), &version("1.2.3"))
        .await
        .expect("the lookup succeeds");
    assert_eq!(by_version, Some(stored));
}

#[tokio::test]
async fn a_release_without_comment_or_attributes_reads_back_without_them() {
    let harness = Harness::new();
    let stored = release("payments", "1.0.0");
    harness.insert(&stored).await;

    let found = harness
        .repository
        .find_active(stored.id)
        .await
        .expect("the lookup succeeds")
        .expect("the release exists");
    assert_eq!(found.comment, None);
    assert!(found.attributes().is_empty());
    assert_eq!(found, stored);
}

#[tokio::test]
async fn the_image_digest_reads_back_by_id_and_in_listings() {
    let harness = Harness::new();
    let mut stored = release("payments", "1.0.0");
    stored.image_digest = Some(format!("sha256:{}", "c".repeat(64)));
    harness.insert(&stored).await;

    let found = harness
        .repository
        .find_active(stored.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(found.as_ref(), Some(&stored));
    let listed = harness
        .repository
        .list_active(&ReleaseQuery::default(), 10)
        .await
        .expect("the listing succeeds");
    assert_eq!(listed, vec![ReleaseSummary::from(stored)]);
}

#[tokio::test]
async fn unknown_ids_and_versions_are_absent_not_errors() {
    let harness = Harness::new();
    harness.insert(&release("payments", "1.0.0")).await;

    let by_id = harness
        .repository
        .find_active(ReleaseId::generate())
        .await
        .expect("the lookup succeeds");
    assert_eq!(by_id, None);
    let by_version = harness
        .repository
        .find_active_by_version(&service("payments"), &version("2.0.0"))
        .await
        .expect("the lookup succeeds");
    assert_eq!(by_version, None);
}

#[tokio::test]
async fn a_second_active_release_of_the_same_service_and_version_is_a_duplicate() {
    let harness = Harness::new();
    let first = release("payments", "1.0.0");
    harness.insert(&first).await;

    let second = release_with("payments", "1.0.0", &[("replicas", "9")], None);
    let outcome = harness.repository.insert(&second, &audit_of(&second)).await;
    assert!(
        matches!(outcome, Err(InsertReleaseError::Duplicate)),
        "{outcome:?}"
    );

    let second_found = harness
        .repository
        .find_active(second.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(second_found, None, "the duplicate stored nothing");
    let active = harness
        .repository
        .find_active_by_version(&service("payments"), &version("1.0.0"))
        .await
        .expect("the lookup succeeds");
    assert_eq!(active, Some(first));
}

#[tokio::test]
async fn the_same_version_of_another_service_is_not_a_duplicate() {
    let harness = Harness::new();
    harness.insert(&release("payments", "1.0.0")).await;
    harness.insert(&release("billing", "1.0.0")).await;
}

#[tokio::test]
async fn a_deleted_release_frees_its_service_and_version_for_a_new_one() {
    let harness = Harness::new();
    let old = release("payments", "1.0.0");
    harness.insert(&old).await;
    let outcome = harness
        .repository
        .soft_delete(
            old.id,
            &Actor::named("alice"),
            Utc::now(),
            &deleted_audit(old.id),
        )
        .await
        .expect("the delete succeeds");
    assert_eq!(outcome, SoftDeleteOutcome::Deleted);

    let new = release("payments", "1.0.0");
    harness.insert(&new).await;

    let old_found = harness
        .repository
        .find_active(old.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(old_found, None, "deleted releases are not active");
    let active = harness
        .repository
        .find_active_by_version(&service("payments"), &version("1.0.0"))
        .await
        .expect("the lookup succeeds");
    assert_eq!(active, Some(new));
}

#[tokio::test]
async fn soft_delete_tells_deleted_from_already_deleted_from_not_found() {
    let harness = Harness::new();
    let stored = release("payments", "1.0.0");
    harness.insert(&stored).await;
    let alice = Actor::named("alice");
    let deleted_at = Utc::now().trunc_subsecs(6);

    let first = harness
        .repository
        .soft_delete(stored.id, &alice, deleted_at, &deleted_audit(stored.id))
        .await
        .expect("the delete succeeds");
    let again = harness
        .repository
        .soft_delete(
            stored.id,
            &Actor::named("bob"),
            Utc::now(),
            &deleted_audit(stored.id),
        )
        .await
        .expect("the delete succeeds");
    let unknown = harness
        .repository
        .soft_delete(
            ReleaseId::generate(),
            &alice,
            Utc::now(),
            &deleted_audit(ReleaseId::generate()),
        )
        .await
        .expect("the delete succeeds");

    assert_eq!(first, SoftDeleteOutcome::Deleted);
    assert_eq!(again, SoftDeleteOutcome::AlreadyDeleted);
    assert_eq!(unknown, SoftDeleteOutcome::NotFound);

    let (at, by): (Option<DateTime<Utc>>, Option<String>) = {
        use diesel::prelude::*;
        diesel::table! { releases (id) { id -> Uuid, deleted_at -> Nullable<Timestamptz>, deleted_by -> Nullable<Text>, } }
        releases::table
            .find(stored.id.as_uuid())
            .select((releases::deleted_at, releases::deleted_by))
            .first(&mut harness.sql())
            .expect("the row is still there")
    };
    assert_eq!(at, Some(deleted_at), "the first delete is the one recorded");
    assert_eq!(by.as_deref(), Some("alice"));
}

#[tokio::test]
async fn the_listing_is_newest_first_and_leaves_out_deleted_releases() {
    let harness = Harness::new();
    let oldest = release_at("payments", "1", 0);
    let deleted = release_at("payments", "2", 10);
    let newest = release_at("billing", "1", 20);
    // Equal times are ordered by id, descending.
    let mut tie_a = release_at("search", "1", 15);
    let mut tie_b = release_at("search", "2", 15);
    if tie_a.id < tie_b.id {
        std::mem::swap(&mut tie_a, &mut tie_b);
    }
    for release in [&tie_b, &newest, &oldest, &deleted, &tie_a] {
        harness.insert(release).await;
    }
    harness
        .repository
        .soft_delete(
            deleted.id,
            &Actor::named("alice"),
            Utc::now(),
            &deleted_audit(deleted.id),
        )
        .await
        .expect("the delete succeeds");

    let listed = harness
        .repository
        .list_active(&ReleaseQuery::default(), 50)
        .await
        .expect("the listing succeeds");

    assert_eq!(ids(&listed), [newest.id, tie_a.id, tie_b.id, oldest.id]);
    assert_eq!(listed[0], ReleaseSummary::from(newest));
}

#[tokio::test]
async fn the_listing_stops_at_the_limit() {
    let harness = Harness::new();
    for n in 0..5 {
        harness
            .insert(&release_at("payments", &n.to_string(), n))
            .await;
    }
    let listed = harness
        .repository
        .list_active(&ReleaseQuery::default(), 2)
        .await
        .expect("the listing succeeds");
    let versions: Vec<&str> = listed.iter().map(|s| s.version.as_str()).collect();
    assert_eq!(versions, ["4", "3"]);
}

#[tokio::test]
async fn the_listing_filters_by_service_version_and_strict_creation_bounds() {
    let harness = Harness::new();
    let p1 = release_at("payments", "1", 10);
    let p2 = release_at("payments", "2", 20);
    let p3 = release_at("payments", "3", 30);
    let b2 = release_at("billing", "2", 25);
    for release in [&p1, &p2, &p3, &b2] {
        harness.insert(release).await;
    }
    let list = |query: ReleaseQuery| {
        let repository = harness.repository.clone();
        async move {
            ids(&repository
                .list_active(&query, 50)
                .await
                .expect("the listing succeeds"))
        }
    };

    let by_service = list(ReleaseQuery {
        service: Some(service("payments")),
        ..ReleaseQuery::default()
    })
    .await;
    assert_eq!(by_service, [p3.id, p2.id, p1.id]);

    let by_version = list(ReleaseQuery {
        version: Some(version("2")),
        ..ReleaseQuery::default()
    })
    .await;
    assert_eq!(by_version, [b2.id, p2.id]);

    let by_both = list(ReleaseQuery {
        service: Some(service("billing")),
        version: Some(version("2")),
        ..ReleaseQuery::default()
    })
    .await;
    assert_eq!(by_both, [b2.id]);

    let between = list(ReleaseQuery {
        created_after: Some(p1.created_at),
        created_before: Some(p3.created_at),
        ..ReleaseQuery::default()
    })
    .await;
    assert_eq!(between, [b2.id, p2.id], "both bounds are exclusive");

    let none = list(ReleaseQuery {
        service: Some(service("unknown")),
        ..ReleaseQuery::default()
    })
    .await;
    assert!(none.is_empty());
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
async fn keyset_pages_cover_every_release_once_in_order() {
    let harness = Harness::new();
    let mut releases = Vec::new();
    for n in 0..23_i64 {
        // Three releases share each instant, so the id decides within a page boundary.
        let release = release_at(
            if n % 2 == 0 { "payments" } else { "billing" },
            &n.to_string(),
            n / 3,
        );
        harness.insert(&release).await;
        releases.push(release);
    }
    releases.sort_by_key(|release| std::cmp::Reverse((release.created_at, release.id)));
    let expected: Vec<ReleaseId> = releases.iter().map(|release| release.id).collect();

    for page_size in [1, 4, 5, 23, 50] {
        let seen = walk_pages(&harness.repository, ReleaseQuery::default(), page_size).await;
        assert_eq!(seen, expected, "pages of {page_size}");
    }

    let payments: Vec<ReleaseId> = releases
        .iter()
        .filter(|release| release.service.as_str() == "payments")
        .map(|release| release.id)
        .collect();
    let query = ReleaseQuery {
        service: Some(service("payments")),
        ..ReleaseQuery::default()
    };
    assert_eq!(walk_pages(&harness.repository, query, 3).await, payments);
}

#[tokio::test]
async fn a_cursor_resumes_strictly_after_its_position() {
    let harness = Harness::new();
    let newer = release_at("payments", "2", 20);
    let older = release_at("payments", "1", 10);
    harness.insert(&newer).await;
    harness.insert(&older).await;

    let after_newer = harness
        .repository
        .list_active(
            &ReleaseQuery {
                after: Some(newer.cursor()),
                ..ReleaseQuery::default()
            },
            50,
        )
        .await
        .expect("the listing succeeds");
    assert_eq!(ids(&after_newer), [older.id]);

    let after_everything = harness
        .repository
        .list_active(
            &ReleaseQuery {
                after: Some(Cursor {
                    created_at: epoch(),
                    id: uuid::Uuid::nil(),
                }),
                ..ReleaseQuery::default()
            },
            50,
        )
        .await
        .expect("the listing succeeds");
    assert!(after_everything.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_of_one_version_let_exactly_one_win() {
    const CONTENDERS: usize = 8;
    let harness = Harness::with_pool_size(u32::try_from(CONTENDERS).expect("a small number"));
    let repository = Arc::new(harness.repository.clone());
    let start = Arc::new(tokio::sync::Barrier::new(CONTENDERS));

    let mut tasks = Vec::new();
    for n in 0..CONTENDERS {
        let repository = Arc::clone(&repository);
        let start = Arc::clone(&start);
        let release = release_with("payments", "1.0.0", &[("attempt", &n.to_string())], None);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            (
                release.id,
                repository.insert(&release, &audit_of(&release)).await,
            )
        }));
    }
    let mut winners = Vec::new();
    let mut duplicates = 0;
    for task in tasks {
        match task.await.expect("the task finishes") {
            (id, Ok(())) => winners.push(id),
            (_, Err(InsertReleaseError::Duplicate)) => duplicates += 1,
            (_, Err(error)) => panic!("an insert failed: {error:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one insert wins");
    assert_eq!(duplicates, CONTENDERS - 1);
    let listed = harness
        .repository
        .list_active(&ReleaseQuery::default(), 50)
        .await
        .expect("the listing succeeds");
    assert_eq!(ids(&listed), winners);
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
async fn the_repository_answers_pings() {
    let harness = Harness::new();
    harness
        .repository
        .ping()
        .await
        .expect("the database answers");
}

#[tokio::test]
async fn a_stored_row_that_breaks_a_domain_rule_is_an_error_not_a_panic() {
    let harness = Harness::new();
    let stored = release("payments", "1.0.0");
    harness.insert(&stored).await;
    diesel::sql_query("UPDATE releases SET service = 'Not A DNS Label'")
        .execute(&mut harness.sql())
        .expect("the row is corrupted");

    let found = harness.repository.find_active(stored.id).await;
    assert!(found.is_err(), "{found:?}");
    let listed = harness
        .repository
        .list_active(&ReleaseQuery::default(), 50)
        .await;
    assert!(listed.is_err(), "{listed:?}");
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

/// Every audit record, newest first.
async fn audit_trail(harness: &Harness) -> Vec<AuditEntry> {
    harness
        .database
        .audit_repository()
        .list(&AuditQuery::default(), 500)
        .await
        .expect("the audit trail lists")
}

#[tokio::test]
async fn each_change_stores_its_audit_record_and_no_change_stores_none() {
    let harness = Harness::new();
    let stored = release("payments", "1.0.0");
    let created = Caller::system("jenkins")
        .with_request(Some("req-42".to_owned()), Some("198.51.100.4".to_owned()))
        .audit(
            AuditAction::ReleaseCreated,
            format!("release/{}", stored.id),
            serde_json::json!({ "service": "payments", "version": "1.0.0" }),
        );
    harness
        .repository
        .insert(&stored, &created)
        .await
        .expect("the release is stored");
    assert_eq!(audit_trail(&harness).await, vec![created.clone()]);

    let duplicate = release("payments", "1.0.0");
    let outcome = harness
        .repository
        .insert(&duplicate, &audit_of(&duplicate))
        .await;
    assert!(
        matches!(outcome, Err(InsertReleaseError::Duplicate)),
        "{outcome:?}"
    );
    assert_eq!(
        audit_trail(&harness).await,
        vec![created.clone()],
        "a duplicate is not audited"
    );

    let deleted = deleted_audit(stored.id);
    let outcome = harness
        .repository
        .soft_delete(stored.id, &Actor::named("alice"), Utc::now(), &deleted)
        .await
        .expect("the delete succeeds");
    assert_eq!(outcome, SoftDeleteOutcome::Deleted);
    for id in [stored.id, ReleaseId::generate()] {
        let outcome = harness
            .repository
            .soft_delete(id, &Actor::named("bob"), Utc::now(), &deleted_audit(id))
            .await
            .expect("the delete succeeds");
        assert_ne!(outcome, SoftDeleteOutcome::Deleted);
    }
    assert_eq!(
        audit_trail(&harness).await,
        vec![deleted, created],
        "only the delete that happened is audited"
    );
}

#[tokio::test]
async fn a_change_whose_audit_record_fails_is_rolled_back() {
    let harness = Harness::new();
    let first = release("payments", "1.0.0");
    let record = audit_of(&first);
    harness
        .repository
        .insert(&first, &record)
        .await
        .expect("the release is stored");
    // The same audit id again violates audit_log's primary key: the release must go too.
    let second = release("payments", "2.0.0");
    let outcome = harness.repository.insert(&second, &record).await;
    assert!(
        matches!(outcome, Err(InsertReleaseError::Repository(_))),
        "{outcome:?}"
    );
    let found = harness
        .repository
        .find_active(second.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(found, None, "the release went with its audit record");

    let outcome = harness
        .repository
        .soft_delete(first.id, &Actor::named("alice"), Utc::now(), &record)
        .await;
    assert!(outcome.is_err(), "{outcome:?}");
    let found = harness
        .repository
        .find_active(first.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(found, Some(first), "not deleted without its audit record");
}
