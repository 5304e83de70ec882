//! The audit trail's listing contract, each test on a fresh store. Records are
//! written the only way they can be: with a change (here, a new account per record).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use kubernaut_domain::access::{Account, AccountKind, AccountName};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::ports::AuditRepository;
use uuid::Uuid;

use crate::contract::Backend;

struct Harness<B> {
    audit: Arc<dyn AuditRepository>,
    backend: B,
}

impl<B: Backend> Harness<B> {
    fn new() -> Self {
        let backend = B::create(2);
        Self {
            audit: backend.audit(),
            backend,
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
        self.backend
            .access()
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

async fn stored<B: Backend>(harness: &Harness<B>) -> Vec<AuditEntry> {
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

pub async fn records_round_trip_newest_first_with_ties_broken_by_id<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn each_filter_lists_exactly_its_records<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn pages_follow_one_another_without_gaps_or_duplicates<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn an_empty_trail_lists_nothing<B: Backend>() {
    let harness = Harness::<B>::new();
    assert!(harness.list(&AuditQuery::default(), 50).await.is_empty());
}
