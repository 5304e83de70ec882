//! The release repository's contract, each test on a fresh store.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use kubernaut_domain::access::Caller;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::pagination::Cursor;
use kubernaut_domain::ports::{InsertReleaseError, ReleaseRepository, SoftDeleteOutcome};
use kubernaut_domain::release::{
    NewRelease, Release, ReleaseId, ReleaseQuery, ReleaseSummary, ServiceName, UnvalidatedRelease,
    Version,
};

use crate::contract::{Backend, time_literal};

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

struct Harness<B> {
    repository: Arc<dyn ReleaseRepository>,
    backend: B,
}

impl<B: Backend> Harness<B> {
    fn new() -> Self {
        Self::with_pool_size(4)
    }

    fn with_pool_size(max_size: u32) -> Self {
        let backend = B::create(max_size);
        Self {
            repository: backend.releases(),
            backend,
        }
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

pub async fn a_release_reads_back_exactly_as_it_was_stored<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn a_release_without_comment_or_attributes_reads_back_without_them<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn the_image_digest_reads_back_by_id_and_in_listings<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn unknown_ids_and_versions_are_absent_not_errors<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn a_second_active_release_of_the_same_service_and_version_is_a_duplicate<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn the_same_version_of_another_service_is_not_a_duplicate<B: Backend>() {
    let harness = Harness::<B>::new();
    harness.insert(&release("payments", "1.0.0")).await;
    harness.insert(&release("billing", "1.0.0")).await;
}

pub async fn a_deleted_release_frees_its_service_and_version_for_a_new_one<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn soft_delete_tells_deleted_from_already_deleted_from_not_found<B: Backend>() {
    let harness = Harness::<B>::new();
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

    let recorded = harness.backend.count(&format!(
        "SELECT count(*) AS count FROM releases WHERE id = '{}' AND deleted_at = {} \
         AND deleted_by = 'alice'",
        stored.id,
        time_literal(deleted_at)
    ));
    assert_eq!(recorded, 1, "the first delete is the one recorded");
}

pub async fn the_listing_is_newest_first_and_leaves_out_deleted_releases<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn the_listing_stops_at_the_limit<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn the_listing_filters_by_service_version_and_strict_creation_bounds<B: Backend>() {
    let harness = Harness::<B>::new();
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
    repository: &dyn ReleaseRepository,
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

pub async fn keyset_pages_cover_every_release_once_in_order<B: Backend>() {
    let harness = Harness::<B>::new();
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
        let seen = walk_pages(&*harness.repository, ReleaseQuery::default(), page_size).await;
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
    assert_eq!(walk_pages(&*harness.repository, query, 3).await, payments);
}

pub async fn a_cursor_resumes_strictly_after_its_position<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn concurrent_inserts_of_one_version_let_exactly_one_win<B: Backend>() {
    const CONTENDERS: usize = 8;
    let harness = Harness::<B>::with_pool_size(u32::try_from(CONTENDERS).expect("a small number"));
    let repository = Arc::clone(&harness.repository);
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

pub async fn the_repository_answers_pings<B: Backend>() {
    let harness = Harness::<B>::new();
    harness
        .repository
        .ping()
        .await
        .expect("the database answers");
}

pub async fn a_stored_row_that_breaks_a_domain_rule_is_an_error_not_a_panic<B: Backend>() {
    let harness = Harness::<B>::new();
    let stored = release("payments", "1.0.0");
    harness.insert(&stored).await;
    harness
        .backend
        .execute("UPDATE releases SET service = 'Not A DNS Label'");

    let found = harness.repository.find_active(stored.id).await;
    assert!(found.is_err(), "{found:?}");
    let listed = harness
        .repository
        .list_active(&ReleaseQuery::default(), 50)
        .await;
    assert!(listed.is_err(), "{listed:?}");
}

/// Every audit record, newest first.
async fn audit_trail<B: Backend>(harness: &Harness<B>) -> Vec<AuditEntry> {
    harness
        .backend
        .audit()
        .list(&AuditQuery::default(), 500)
        .await
        .expect("the audit trail lists")
}

pub async fn each_change_stores_its_audit_record_and_no_change_stores_none<B: Backend>() {
    let harness = Harness::<B>::new();
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

pub async fn a_change_whose_audit_record_fails_is_rolled_back<B: Backend>() {
    let harness = Harness::<B>::new();
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
