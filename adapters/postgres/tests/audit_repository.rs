//! The audit trail's listing against a real PostgreSQL, each test in a database of its
//! own. Records are written the only way they can be: with a change (here, a new
//! account per record).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use kubernaut_domain::access::{Account, AccountKind, AccountName};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::ports::{AccessRepository as _, AuditRepository as _};
use kubernaut_postgres::{Database, PoolOptions, PostgresAuditRepository};
use kubernaut_testkit::database::TestDatabase;
use uuid::Uuid;

struct Harness {
    audit: PostgresAuditRepository,
    database: Database,
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
            database,
            test_database,
        }
    }

    /// Stores `entry` with a change of its own: a new account.
    async fn record(&self, n: usize, entry: &AuditEntry) {
        let account = Account {
            name: AccountName::parse(&format!("account-{n}")).expect("an account name"),
            kind: AccountKind::Robot,
            grants: Vec::new(),
            created_at: entry.at,
            created_by: entry.actor.clone(),
        };
        self.database
            .access_repository()
            .insert_account(&account, entry)
            .await
            .expect("the account and its record are stored");
    }

    async fn list(&self, query: &AuditQuery, limit: usize) -> Vec<AuditEntry> {
        self.audit
            .list(query, limit)
            .await
            .expect("the listing succeeds")
    }

    /// Every page of `query`, `limit` at a time, following the cursor.
    async fn all_pages(&self, query: &AuditQuery, limit: usize) -> Vec<AuditEntry> {
        let mut query = query.clone();
        let mut listed = Vec::new();
        loop {
            let page = self.list(&query, limit).await;
            assert!(page.len() <= limit);
            let Some(last) = page.last() else {
                return listed;
            };
            query.after = Some(last.cursor());
            let full = page.len() == limit;
            listed.extend(page);
            if !full {
                return listed;
            }
        }
    }
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid instant")
}

const ACTORS: [&str; 3] = ["alice", "bob", "jenkins"];
const ACTIONS: [AuditAction; 4] = [
    AuditAction::ReleaseCreated,
    AuditAction::DeploymentRequested,
    AuditAction::DeploymentCancelled,
    AuditAction::TokenRevoked,
];
const TARGETS: [&str; 6] = [
    "release/1",
    "deployment/1",
    "deployment/2",
    "deployments/3",
    "a_b/1",
    "axb/1",
];

/// Forty records over twelve instants (so many share one), with random ids, in no
/// particular order.
fn records() -> Vec<AuditEntry> {
    (0..40_usize)
        .map(|n| AuditEntry {
            id: Uuid::new_v4(),
            at: epoch() + TimeDelta::seconds(i64::try_from((n * 7) % 12).expect("small")),
            actor: Actor::named(ACTORS[n % ACTORS.len()]),
            action: ACTIONS[n % ACTIONS.len()],
            target: TARGETS[n % TARGETS.len()].to_owned(),
            request_id: (n % 2 == 0).then(|| format!("req-{n}")),
            source: (n % 3 == 0).then(|| "203.0.113.9".to_owned()),
            details: serde_json::json!({ "n": n }),
        })
        .collect()
}

/// What `query` must list, worked out in memory: newest first, ties by id.
fn expected(records: &[AuditEntry], query: &AuditQuery) -> Vec<AuditEntry> {
    let mut matching: Vec<AuditEntry> = records
        .iter()
        .filter(|entry| {
            query
                .actor
                .as_ref()
                .is_none_or(|actor| &entry.actor == actor)
        })
        .filter(|entry| query.action.is_none_or(|action| entry.action == action))
        .filter(|entry| {
            query.target.as_ref().is_none_or(|target| {
                if target.ends_with('/') {
                    entry.target.starts_with(target.as_str())
                } else {
                    &entry.target == target
                }
            })
        })
        .filter(|entry| query.since.is_none_or(|since| entry.at >= since))
        .filter(|entry| query.until.is_none_or(|until| entry.at < until))
        .cloned()
        .collect();
    matching.sort_by_key(|entry| std::cmp::Reverse((entry.at, entry.id)));
    matching
}

async fn stored(harness: &Harness) -> Vec<AuditEntry> {
    let records = records();
    for (n, entry) in records.iter().enumerate() {
        harness.record(n, entry).await;
    }
    records
}

fn queries() -> Vec<(&'static str, AuditQuery)> {
    vec![
        ("everything", AuditQuery::default()),
        (
            "an actor",
            AuditQuery {
                actor: Some(Actor::named("bob")),
                ..AuditQuery::default()
            },
        ),
        (
            "an action",
            AuditQuery {
                action: Some(AuditAction::DeploymentRequested),
                ..AuditQuery::default()
            },
        ),
        (
            "an exact target",
            AuditQuery {
                target: Some("deployment/1".to_owned()),
                ..AuditQuery::default()
            },
        ),
        (
            "a kind of target",
            AuditQuery {
                target: Some("deployment/".to_owned()),
                ..AuditQuery::default()
            },
        ),
        (
            "a kind of target with a LIKE wildcard in it",
            AuditQuery {
                target: Some("a_b/".to_owned()),
                ..AuditQuery::default()
            },
        ),
        (
            "a time range",
            AuditQuery {
                since: Some(epoch() + TimeDelta::seconds(3)),
                until: Some(epoch() + TimeDelta::seconds(9)),
                ..AuditQuery::default()
            },
        ),
        (
            "everything at once",
            AuditQuery {
                actor: Some(Actor::named("bob")),
                target: Some("deployment/".to_owned()),
                since: Some(epoch() + TimeDelta::seconds(1)),
                ..AuditQuery::default()
            },
        ),
    ]
}

#[tokio::test]
async fn records_round_trip_newest_first_with_ties_broken_by_id() {
    let harness = Harness::new();
    let records = stored(&harness).await;
    let listed = harness.list(&AuditQuery::default(), 500).await;
    assert_eq!(listed.len(), records.len());
    assert_eq!(listed, expected(&records, &AuditQuery::default()));
    assert_eq!(
        harness.list(&AuditQuery::default(), 5).await,
        listed[..5],
        "the limit cuts the newest"
    );
}

#[tokio::test]
async fn each_filter_lists_exactly_its_records() {
    let harness = Harness::new();
    let records = stored(&harness).await;
    for (what, query) in queries() {
        let want = expected(&records, &query);
        assert!(!want.is_empty(), "{what}: the data covers the filter");
        if query != AuditQuery::default() {
            assert!(want.len() < records.len(), "{what}: the filter filters");
        }
        assert_eq!(harness.list(&query, 500).await, want, "{what}");
    }
    // `a_b/` is a prefix, not a LIKE pattern: `axb/1` is not listed.
    let like = harness
        .list(
            &AuditQuery {
                target: Some("a_b/".to_owned()),
                ..AuditQuery::default()
            },
            500,
        )
        .await;
    assert!(like.iter().all(|entry| entry.target == "a_b/1"));
    // `deployment/` does not take in `deployments/3`.
    let kind = harness
        .list(
            &AuditQuery {
                target: Some("deployment/".to_owned()),
                ..AuditQuery::default()
            },
            500,
        )
        .await;
    assert!(
        kind.iter()
            .all(|entry| entry.target.starts_with("deployment/"))
    );
}

#[tokio::test]
async fn pages_follow_one_another_without_gaps_or_duplicates() {
    let harness = Harness::new();
    let records = stored(&harness).await;
    for limit in [1, 3, 7, 40] {
        for (what, query) in queries() {
            let paged = harness.all_pages(&query, limit).await;
            let unique: HashSet<Uuid> = paged.iter().map(|entry| entry.id).collect();
            assert_eq!(
                unique.len(),
                paged.len(),
                "{what}, {limit} a page: duplicates"
            );
            assert_eq!(paged, expected(&records, &query), "{what}, {limit} a page");
        }
    }
    // After the oldest record there is nothing.
    let all = harness.list(&AuditQuery::default(), 500).await;
    let oldest = all.last().expect("records");
    let after = harness
        .list(
            &AuditQuery {
                after: Some(oldest.cursor()),
                ..AuditQuery::default()
            },
            500,
        )
        .await;
    assert!(after.is_empty());
}

#[tokio::test]
async fn an_empty_trail_lists_nothing() {
    let harness = Harness::new();
    assert!(harness.list(&AuditQuery::default(), 50).await.is_empty());
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
