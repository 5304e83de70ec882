use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::access::{Caller, Grant, Principal, Role};
use crate::actor::Actor;
use crate::deployment::{DeploymentId, DeploymentOptions, Namespace};
use crate::ports::{MockDeploymentRepository, MockReleaseRepository};
use crate::release::{ReleaseId, Version};

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
        + chrono::Duration::minutes(minutes)
}

fn target(namespace: &str) -> Target {
    Target {
        cluster: ClusterName::parse("prod").expect("cluster"),
        namespace: Namespace::parse(namespace).expect("namespace"),
    }
}

/// A deployment of `service` to `prod/<namespace>` of `release`, requested at minute
/// `requested` and judged `status` at minute `finished`.
fn judged(
    service: &str,
    namespace: &str,
    release: ReleaseId,
    status: DeploymentStatus,
    requested: i64,
    finished: i64,
) -> Deployment {
    Deployment {
        id: DeploymentId::generate(),
        release_id: release,
        service: ServiceName::parse(service).expect("service"),
        version: Version::parse("1.0.0").expect("version"),
        target: target(namespace),
        requested_by: Actor::named("ci"),
        attributes: BTreeMap::new(),
        options: DeploymentOptions::default(),
        manifest: String::new(),
        objects: Vec::new(),
        status,
        created_at: at(requested),
        started_at: Some(at(requested)),
        finished_at: status.is_verdict().then(|| at(finished)),
        timeline: Vec::new(),
        diagnostics: None,
        rollback_of: None,
    }
}

fn rollback_of(mut deployment: Deployment, of: &Deployment) -> Deployment {
    deployment.rollback_of = Some(of.id);
    deployment
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn frequency_failure_rate_lead_time_and_restore_come_from_the_verdicts() {
    use DeploymentStatus::{Cancelled, Failed, RollingOut, Succeeded, TimedOut};
    let (r1, r2, r3) = (
        ReleaseId::generate(),
        ReleaseId::generate(),
        ReleaseId::generate(),
    );
    // Releases registered at minutes 0, 100 and 200.
    let registered = HashMap::from([(r1, at(0)), (r2, at(100)), (r3, at(200))]);
    let first = judged("web", "shop", r1, Succeeded, 10, 20); // lead 20
    let broken = judged("web", "shop", r2, Failed, 110, 120);
    let rollback = rollback_of(judged("web", "shop", r1, Succeeded, 121, 150), &broken); // restore 30
    let fixed = judged("web", "shop", r3, Succeeded, 210, 260); // lead 60
    let slow = judged("web", "shop", r3, TimedOut, 300, 310);
    let again = judged("web", "shop", r3, Failed, 320, 330); // same incident as `slow`
    let restored = judged("web", "shop", r3, Succeeded, 400, 410); // lead 210, restore 100
    let cancelled = judged("web", "shop", r3, Cancelled, 500, 505);
    let running = judged("web", "shop", r3, RollingOut, 600, 0);
    let deployments = vec![
        restored, again, slow, fixed, rollback, broken, first, cancelled, running,
    ];

    let figures = compute(&deployments, &registered, 10);

    assert_eq!(figures.len(), 1);
    let web = &figures[0];
    assert_eq!(web.service.as_str(), "web");
    assert_eq!(web.target, target("shop"));
    assert_eq!((web.deployments, web.successes, web.failures), (7, 4, 3));
    assert!(
        (web.deployment_frequency - 0.4).abs() < 1e-9,
        "{}",
        web.deployment_frequency
    );
    // Changes (not rollbacks): first, broken, fixed, slow, again, restored: 3 of 6 failed.
    assert_eq!(web.change_failure_rate, Some(0.5));
    // Lead times of the successful changes: 20, 60, 210 minutes.
    assert_eq!(web.lead_time, Some(60 * MINUTE));
    // Incidents: 120 -> 150 (30 min) and 310 -> 410 (100 min); median of two is the mean.
    assert_eq!(web.restored_incidents, 2);
    assert_eq!(web.time_to_restore, Some(65 * MINUTE));
    assert_eq!(web.failing_since, None);
}

#[test]
fn a_target_whose_last_verdict_failed_is_failing_since_the_first_failure_of_the_run() {
    let release = ReleaseId::generate();
    let registered = HashMap::new();
    let deployments = vec![
        judged("api", "shop", release, DeploymentStatus::Succeeded, 0, 5),
        judged("api", "shop", release, DeploymentStatus::Failed, 10, 15),
        judged("api", "shop", release, DeploymentStatus::TimedOut, 20, 40),
    ];

    let figures = compute(&deployments, &registered, 1);

    let api = &figures[0];
    assert_eq!(api.failing_since, Some(at(15)));
    assert_eq!(api.time_to_restore, None);
    assert_eq!(api.restored_incidents, 0);
    // The release is not registered (deleted): no lead time, but it still counts.
    assert_eq!(api.lead_time, None);
    assert!((api.change_failure_rate.expect("changes") - 2.0 / 3.0).abs() < 1e-9);
    assert!((api.deployment_frequency - 1.0).abs() < 1e-9);
}

#[test]
fn each_service_and_target_gets_figures_of_its_own_in_order() {
    let release = ReleaseId::generate();
    let registered = HashMap::from([(release, at(0))]);
    let deployments = vec![
        judged("web", "staging", release, DeploymentStatus::Succeeded, 0, 1),
        judged("web", "shop", release, DeploymentStatus::Failed, 0, 2),
        judged("api", "shop", release, DeploymentStatus::Succeeded, 0, 3),
        judged("api", "shop", release, DeploymentStatus::Cancelled, 4, 5),
    ];

    let figures = compute(&deployments, &registered, 30);

    let keys: Vec<String> = figures
        .iter()
        .map(|f| format!("{} {} {}", f.service, f.target, f.deployments))
        .collect();
    assert_eq!(
        keys,
        ["api prod/shop 1", "web prod/shop 1", "web prod/staging 1"]
    );
    assert_eq!(figures[1].change_failure_rate, Some(1.0));
    assert_eq!(figures[1].failing_since, Some(at(2)));
    assert_eq!(figures[2].lead_time, Some(MINUTE));
}

#[test]
fn only_cancelled_or_active_deployments_give_no_figures() {
    let release = ReleaseId::generate();
    let deployments = vec![
        judged("web", "shop", release, DeploymentStatus::Cancelled, 0, 1),
        judged("web", "shop", release, DeploymentStatus::Queued, 2, 0),
    ];
    assert!(compute(&deployments, &HashMap::new(), 30).is_empty());
}

fn reader() -> Caller {
    Caller::new(Principal {
        actor: Actor::named("reader"),
        grants: vec![Grant::global(Role::Viewer)],
    })
}

#[tokio::test]
async fn the_service_reads_every_page_of_the_window_and_the_releases_of_its_successes() {
    let release = ReleaseId::generate();
    let page_size = usize::from(PageLimit::MAX);
    // A full first page of successes, then a second page of one failure.
    let full: Vec<Deployment> = (0..page_size)
        .map(|i| {
            let minute = i64::try_from(i).expect("small");
            judged(
                "web",
                "shop",
                release,
                DeploymentStatus::Succeeded,
                1000 + minute,
                1000 + minute,
            )
        })
        .collect();
    let last = judged("web", "shop", release, DeploymentStatus::Failed, 2000, 2001);
    let now = at(3000);
    let mut deployments = MockDeploymentRepository::new();
    let first_page = full.clone();
    deployments
        .expect_list()
        .withf(move |query, limit| {
            query.after.is_none()
                && *limit == page_size
                && query.created_after == Some(now - chrono::Duration::days(7))
                && query.service.as_ref().map(ServiceName::as_str) == Some("web")
        })
        .times(1)
        .returning(move |_, _| Ok(first_page.clone()));
    let second_page = vec![last.clone()];
    deployments
        .expect_list()
        .withf(|query, _| query.after.is_some())
        .times(1)
        .returning(move |_, _| Ok(second_page.clone()));
    let mut releases = MockReleaseRepository::new();
    releases
        .expect_find_active()
        .times(1)
        .returning(move |_| Ok(None));
    let service = DoraService::new(Arc::new(releases), Arc::new(deployments));

    let figures = service
        .figures(
            &DoraQuery {
                service: Some(ServiceName::parse("web").expect("service")),
                cluster: None,
                namespace: None,
                days: 7,
            },
            &reader(),
            now,
        )
        .await
        .expect("figures");

    assert_eq!(figures.len(), 1);
    assert_eq!(
        figures[0].deployments,
        u32::try_from(page_size + 1).expect("small")
    );
    assert_eq!(figures[0].failing_since, Some(at(2001)));
}

#[tokio::test]
async fn a_caller_without_any_role_is_refused() {
    let service = DoraService::new(
        Arc::new(MockReleaseRepository::new()),
        Arc::new(MockDeploymentRepository::new()),
    );
    let nobody = Caller::new(Principal {
        actor: Actor::named("nobody"),
        grants: Vec::new(),
    });
    let refused = service
        .figures(
            &DoraQuery {
                service: None,
                cluster: None,
                namespace: None,
                days: 30,
            },
            &nobody,
            at(0),
        )
        .await;
    assert!(matches!(refused, Err(DeploymentLookupError::Forbidden(_))));
}

#[test]
fn deploys_per_day_counts_each_day_of_the_window_by_outcome() {
    use DeploymentStatus::{Cancelled, Failed, RollingOut, Succeeded, TimedOut};
    let release = ReleaseId::generate();
    let day = 24 * 60;
    let deployments = [
        judged("web", "shop", release, Succeeded, 10, 12),
        judged("web", "shop", release, Failed, 20, 25),
        judged("api", "shop", release, Succeeded, day + 5, day + 6),
        judged("api", "shop", release, TimedOut, day + 7, day + 30),
        judged("api", "shop", release, Cancelled, day + 8, day + 9),
        judged("api", "shop", release, RollingOut, 2 * day + 1, 0),
        // Before the window.
        judged("web", "shop", release, Failed, -3 * day, -3 * day + 1),
    ];
    let counts = deploys_per_day(&deployments, 3, at(2 * day + 60));
    let days: Vec<_> = counts.iter().map(|c| c.day).collect();
    assert_eq!(
        days,
        [
            at(0).date_naive(),
            at(day).date_naive(),
            at(2 * day).date_naive()
        ]
    );
    let outcomes: Vec<_> = counts
        .iter()
        .map(|c| (c.succeeded, c.failed, c.other))
        .collect();
    assert_eq!(outcomes, [(1, 1, 0), (1, 1, 1), (0, 0, 1)]);
    assert_eq!(counts.iter().map(DayCount::total).sum::<u32>(), 6);
}

#[test]
fn rollout_durations_run_from_start_to_verdict_for_judged_deployments_oldest_first() {
    use DeploymentStatus::{Cancelled, Failed, RollingOut, Succeeded};
    let release = ReleaseId::generate();
    let mut late_start = judged("web", "shop", release, Succeeded, 30, 45);
    late_start.started_at = Some(at(40));
    let deployments = [
        late_start,
        judged("web", "shop", release, Failed, 10, 13),
        judged("web", "shop", release, Cancelled, 50, 51),
        judged("web", "shop", release, RollingOut, 60, 0),
    ];
    let durations = rollout_durations(&deployments);
    let seen: Vec<_> = durations.iter().map(|d| (d.status, d.duration)).collect();
    assert_eq!(seen, [(Failed, 3 * MINUTE), (Succeeded, 5 * MINUTE)]);
}
