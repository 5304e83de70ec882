//! What is particular to PostgreSQL in the audit trail's listing (its query plans), in
//! a database of its own. The port's contract is tested in `contract.rs`.

use std::time::Duration;

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::ports::AuditRepository as _;
use kubernaut_postgres::{Database, PoolOptions, PostgresAuditRepository};
use kubernaut_testkit::database::TestDatabase;

struct Harness {
    audit: PostgresAuditRepository,
    // Dropped last, after the pool, so the database is gone once the test ends.
    test_database: TestDatabase,
}

impl Harness {
    fn new() -> Self {
        let test_database = TestDatabase::create().expect("a fresh test database");
        let database = Database::connect(
            test_database.url(),
            PoolOptions {
                max_size: 2,
                connection_timeout: Duration::from_secs(5),
            },
        )
        .expect("a pool on the test database");
        database.run_migrations().expect("the migrations apply");
        Self {
            audit: database.audit_repository(),
            test_database,
        }
    }

    async fn list(&self, query: &AuditQuery, limit: usize) -> Vec<AuditEntry> {
        self.audit
            .list(query, limit)
            .await
            .expect("the listing succeeds")
    }
}

#[tokio::test]
async fn every_page_seeks_an_index_however_deep() {
    let harness = Harness::new();
    let mut sql =
        PgConnection::establish(harness.test_database.url()).expect("a direct connection");
    diesel::sql_query(
        "INSERT INTO audit_log (id, at, actor, action, target, details)
         SELECT gen_random_uuid(),
                timestamptz '2027-01-01' + n * interval '1 second',
                'actor-' || (n % 50),
                (ARRAY['release.created', 'release.deleted', 'deployment.requested',
                       'deployment.cancelled', 'deployment.rolled_back',
                       'deployment.finished', 'account.created', 'role.granted',
                       'role.revoked', 'token.created', 'token.revoked'])[n % 11 + 1],
                CASE WHEN n % 20 = 0 THEN 'deployment/' ELSE 'release/' END || n,
                '{}'
         FROM generate_series(1, 20000) AS n",
    )
    .execute(&mut sql)
    .expect("the rows are inserted");
    diesel::sql_query("ANALYZE audit_log")
        .execute(&mut sql)
        .expect("statistics are gathered");

    let deep = harness
        .list(&AuditQuery::default(), 500)
        .await
        .last()
        .expect("thousands of records")
        .cursor();
    let deeper = harness
        .list(
            &AuditQuery {
                after: Some(deep),
                ..AuditQuery::default()
            },
            500,
        )
        .await
        .last()
        .expect("thousands of records")
        .cursor();
    let queries = [
        ("first page", AuditQuery::default(), true),
        (
            "deep page",
            AuditQuery {
                after: Some(deeper),
                ..AuditQuery::default()
            },
            true,
        ),
        (
            "an actor's deep page",
            AuditQuery {
                actor: Some(Actor::named("actor-7")),
                after: Some(deeper),
                ..AuditQuery::default()
            },
            false,
        ),
        (
            "an action",
            AuditQuery {
                action: Some(AuditAction::RoleGranted),
                ..AuditQuery::default()
            },
            false,
        ),
        (
            "an exact target",
            AuditQuery {
                target: Some("release/77".to_owned()),
                ..AuditQuery::default()
            },
            false,
        ),
        (
            "a kind of target",
            AuditQuery {
                target: Some("deployment/".to_owned()),
                ..AuditQuery::default()
            },
            false,
        ),
    ];
    for (name, query, in_order) in queries {
        let plan = harness
            .audit
            .explain_list(&query, 50)
            .await
            .expect("the plan is explained");
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans the table:\n{plan}"
        );
        if in_order {
            assert!(
                !plan.contains("Sort"),
                "{name} sorts instead of reading in order:\n{plan}"
            );
        }
        if query.after.is_some() && query.actor.is_none() {
            assert!(
                plan.contains("Index Cond") && plan.contains("ROW("),
                "{name} does not seek to the cursor:\n{plan}"
            );
        }
    }
}
