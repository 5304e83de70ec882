//! The repository contract: one suite of tests of the domain's repository ports
//! (`kubernaut_domain::ports`), run against every storage backend.
//!
//! Each test is an `async fn` generic over a [`Backend`], which makes a fresh, empty,
//! migrated store and hands out its repositories. An adapter's `tests/contract.rs`
//! implements [`Backend`] and calls [`repository_contract_tests!`](crate::repository_contract_tests),
//! which expands to one `#[tokio::test]` per contract test, named after it, so that
//! `cargo test -- --list` shows every test for every backend:
//!
//! ```rust,ignore
//! struct Sqlite { /* the database and its temporary directory */ }
//! impl kubernaut_testkit::contract::Backend for Sqlite { /* ... */ }
//! kubernaut_testkit::repository_contract_tests!(Sqlite);
//! ```
//!
//! Tests about one backend itself (its query plans, its prepared statements, a server
//! restart, `LISTEN`/`NOTIFY`) stay in that adapter's crate.

pub mod access;
pub mod audit;
pub mod deployment;
pub mod notification;
pub mod release;

use std::sync::Arc;

use kubernaut_domain::ports::{
    AccessRepository, AuditRepository, DeploymentRepository, LeaseRepository, NotificationOutbox,
    ReleaseRepository,
};

/// A storage backend under test: a fresh store per value, dropped (and deleted) when
/// the value is.
pub trait Backend: Send + Sync + Sized + 'static {
    /// A fresh, empty, migrated store able to serve at least `connections` concurrent
    /// queries (the concurrency tests start that many at once).
    fn create(connections: u32) -> Self;

    fn releases(&self) -> Arc<dyn ReleaseRepository>;
    fn deployments(&self) -> Arc<dyn DeploymentRepository>;
    fn leases(&self) -> Arc<dyn LeaseRepository>;
    fn access(&self) -> Arc<dyn AccessRepository>;
    fn audit(&self) -> Arc<dyn AuditRepository>;
    fn notifications(&self) -> Arc<dyn NotificationOutbox>;

    /// Runs `sql` on the store behind the repositories' back (to corrupt or repair a
    /// row) and returns how many rows it changed. The suite writes SQL that both
    /// PostgreSQL and SQLite accept; times as `'YYYY-MM-DDTHH:MM:SS.ffffffZ'` literals.
    fn execute(&self, sql: &str) -> usize;

    /// The `count` column of the one row `sql` selects (`SELECT count(*) AS count ...`).
    fn count(&self, sql: &str) -> i64;

    /// Makes every held lease expired, as if its time-to-live had passed (on the
    /// store's clock).
    fn expire_leases(&self);
}

/// A time as the suite writes it in SQL literals (see [`Backend::execute`]).
pub fn time_literal(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("'{}'", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// Expands to one `#[tokio::test]` per contract test, run against `$backend` (a type
/// implementing [`Backend`]), in modules named after the ports (`release::...`).
#[macro_export]
macro_rules! repository_contract_tests {
    ($backend:ty) => {
        type ContractBackend = $backend;
        $crate::repository_contract_tests!(@module release;
            a_release_reads_back_exactly_as_it_was_stored,
            a_release_without_comment_or_attributes_reads_back_without_them,
            the_image_digest_reads_back_by_id_and_in_listings,
            unknown_ids_and_versions_are_absent_not_errors,
            a_second_active_release_of_the_same_service_and_version_is_a_duplicate,
            the_same_version_of_another_service_is_not_a_duplicate,
            a_deleted_release_frees_its_service_and_version_for_a_new_one,
            soft_delete_tells_deleted_from_already_deleted_from_not_found,
            the_listing_is_newest_first_and_leaves_out_deleted_releases,
            the_listing_stops_at_the_limit,
            the_listing_filters_by_service_version_and_strict_creation_bounds,
            keyset_pages_cover_every_release_once_in_order,
            a_cursor_resumes_strictly_after_its_position,
            concurrent_inserts_of_one_version_let_exactly_one_win,
            the_repository_answers_pings,
            a_stored_row_that_breaks_a_domain_rule_is_an_error_not_a_panic,
            each_change_stores_its_audit_record_and_no_change_stores_none,
            a_change_whose_audit_record_fails_is_rolled_back,
        );
        $crate::repository_contract_tests!(@module deployment;
            a_deployment_reads_back_exactly_as_it_was_stored,
            unknown_deployments_are_absent_not_errors,
            a_second_active_deployment_to_a_target_names_the_active_one_until_it_has_a_verdict,
            inserting_the_same_deployment_twice_is_a_repository_error,
            concurrent_deployments_to_one_target_let_exactly_one_win,
            a_transition_moves_only_from_the_expected_statuses,
            a_verdict_without_diagnostics_stores_none_and_its_time,
            an_active_deployments_objects_read_back_on_their_own_until_its_verdict,
            timeline_entries_read_back_in_the_order_they_were_appended,
            the_listing_is_newest_first_filtered_and_limited,
            keyset_pages_cover_every_deployment_once_in_order,
            the_active_deployments_are_listed_oldest_first_and_whole,
            the_last_success_on_a_target_is_the_newest_one_of_another_release,
            the_listing_filters_by_release,
            where_releases_went_is_their_newest_deployment_on_every_target,
            placements_hold_the_newest_and_the_running_deployment_of_every_target,
            a_stored_row_that_breaks_a_domain_rule_is_an_error_not_a_panic,
            each_change_stores_its_audit_record_and_no_change_stores_none,
            a_transition_whose_audit_record_fails_does_not_move,
            concurrent_claims_never_take_one_deployment_twice_and_fences_grow,
            an_expired_lease_is_taken_over_with_a_higher_fence_and_the_old_owner_is_fenced_off,
            a_released_lease_is_free_at_once_and_a_finished_deployment_is_never_claimed,
            a_verdict_and_the_rollback_it_starts_are_stored_together_or_not_at_all,
        );
        $crate::repository_contract_tests!(@module access;
            accounts_and_their_grants_round_trip,
            a_taken_name_is_a_duplicate_and_stores_nothing,
            grants_are_added_and_removed_once_and_audited_only_when_they_change,
            tokens_are_stored_found_by_hash_and_by_id_and_listed_newest_first,
            a_token_of_a_missing_account_is_refused_and_stores_nothing,
            a_token_is_revoked_once_and_its_use_only_moves_forward,
        );
        $crate::repository_contract_tests!(@module notification;
            notifications_are_stored_with_the_move_and_only_when_it_happens,
            a_move_whose_notifications_cannot_be_stored_does_not_happen,
            a_claim_is_held_by_one_replica_and_every_attempt_is_recorded,
            an_expired_claim_passes_to_another_replica_and_a_dead_delivery_rests,
            concurrent_claimers_never_share_a_delivery,
        );
        $crate::repository_contract_tests!(@module audit;
            records_round_trip_newest_first_with_ties_broken_by_id,
            each_filter_lists_exactly_its_records,
            pages_follow_one_another_without_gaps_or_duplicates,
            an_empty_trail_lists_nothing,
        );
    };
    (@module $module:ident; $($test:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    $crate::contract::$module::$test::<super::ContractBackend>().await;
                }
            )*
        }
    };
}
