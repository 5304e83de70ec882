//! The four DORA figures of each service on each target, computed from the stored
//! deployments of a window of days (what `/api/dora` serves for the UI).
//!
//! Over the deployments **created** in the window that reached a verdict (`succeeded`,
//! `failed`, `timed_out`; cancelled and active ones are left out):
//! - **Deployment frequency**: successful deployments per day (`successes / days`).
//! - **Change failure rate**: the share of changes (deployments that are not rollbacks)
//!   whose verdict is `failed` or `timed_out`; `None` without any change.
//! - **Lead time**: the median, over successful changes, of the time from the release's
//!   registration to the deployment's verdict; releases deleted since are left out.
//! - **Time to restore**: an incident starts at the verdict of a failed deployment that
//!   follows a success (or opens the window) and ends at the next successful verdict
//!   (a rollback or a fix); the figure is the median length of the incidents that
//!   ended. One still open is reported as `failing_since`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use crate::access::{Caller, Permission};
use crate::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, Namespace, Target,
};
use crate::deployment_service::DeploymentLookupError;
use crate::pagination::PageLimit;
use crate::ports::{DeploymentRepository, ReleaseRepository};
use crate::release::{ReleaseId, ServiceName, Version};

/// The longest window, in days.
pub const MAX_DAYS: u32 = 365;

/// Whose figures, over how many days up to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoraQuery {
    pub service: Option<ServiceName>,
    pub cluster: Option<ClusterName>,
    pub namespace: Option<Namespace>,
    /// 1 to [`MAX_DAYS`].
    pub days: u32,
}

/// The figures of one service on one target.
#[derive(Debug, Clone, PartialEq)]
pub struct DoraFigures {
    pub service: ServiceName,
    pub target: Target,
    /// Deployments with a verdict in the window.
    pub deployments: u32,
    pub successes: u32,
    /// `failed` or `timed_out`, rollbacks included.
    pub failures: u32,
    /// Successful deployments per day.
    pub deployment_frequency: f64,
    /// Failed changes over changes (rollbacks are not changes); `None` without any.
    pub change_failure_rate: Option<f64>,
    /// Median time from a release's registration to its successful deployment.
    pub lead_time: Option<Duration>,
    /// Median length of the incidents that ended in the window.
    pub time_to_restore: Option<Duration>,
    /// Incidents (runs of failures up to the next success) that ended in the window.
    pub restored_incidents: u32,
    /// When the incident still open began: the last verdict was a failure.
    pub failing_since: Option<DateTime<Utc>>,
}

/// The figures of every service and target with a verdict among `deployments`,
/// ordered by service, cluster and namespace. `registered` gives each release's
/// registration time (releases missing from it are left out of the lead time).
pub fn compute(
    deployments: &[Deployment],
    registered: &HashMap<ReleaseId, DateTime<Utc>>,
    days: u32,
) -> Vec<DoraFigures> {
    let mut groups: BTreeMap<(String, String, String), Vec<&Deployment>> = BTreeMap::new();
    for deployment in deployments {
        if !is_judged(deployment.status) || deployment.finished_at.is_none() {
            continue;
        }
        groups
            .entry((
                deployment.service.to_string(),
                deployment.target.cluster.to_string(),
                deployment.target.namespace.to_string(),
            ))
            .or_default()
            .push(deployment);
    }
    groups
        .into_values()
        .filter_map(|mut group| {
            group.sort_by_key(|d| (d.finished_at, d.created_at));
            let first = group.first()?;
            Some(figures_of(
                first.service.clone(),
                first.target.clone(),
                &group,
                registered,
                days,
            ))
        })
        .collect()
}

fn is_judged(status: DeploymentStatus) -> bool {
    matches!(
        status,
        DeploymentStatus::Succeeded | DeploymentStatus::Failed | DeploymentStatus::TimedOut
    )
}

fn is_failure(status: DeploymentStatus) -> bool {
    matches!(
        status,
        DeploymentStatus::Failed | DeploymentStatus::TimedOut
    )
}

/// `group`: one service's judged deployments to one target, by verdict time.
fn figures_of(
    service: ServiceName,
    target: Target,
    group: &[&Deployment],
    registered: &HashMap<ReleaseId, DateTime<Utc>>,
    days: u32,
) -> DoraFigures {
    let count = |keep: &dyn Fn(&Deployment) -> bool| -> u32 {
        u32::try_from(group.iter().filter(|d| keep(d)).count()).unwrap_or(u32::MAX)
    };
    let successes = count(&|d| d.status == DeploymentStatus::Succeeded);
    let failures = count(&|d| is_failure(d.status));
    let changes = count(&|d| d.rollback_of.is_none());
    let failed_changes = count(&|d| d.rollback_of.is_none() && is_failure(d.status));

    let lead_times: Vec<Duration> = group
        .iter()
        .filter(|d| d.status == DeploymentStatus::Succeeded && d.rollback_of.is_none())
        .filter_map(|d| {
            let registered_at = registered.get(&d.release_id)?;
            (d.finished_at? - *registered_at).to_std().ok()
        })
        .collect();

    let mut restores = Vec::new();
    let mut failing_since: Option<DateTime<Utc>> = None;
    for deployment in group {
        let Some(at) = deployment.finished_at else {
            continue;
        };
        if is_failure(deployment.status) {
            failing_since.get_or_insert(at);
        } else if let Some(since) = failing_since.take() {
            restores.push((at - since).to_std().unwrap_or_default());
        }
    }

    DoraFigures {
        service,
        target,
        deployments: u32::try_from(group.len()).unwrap_or(u32::MAX),
        successes,
        failures,
        deployment_frequency: f64::from(successes) / f64::from(days.max(1)),
        change_failure_rate: (changes > 0).then(|| f64::from(failed_changes) / f64::from(changes)),
        lead_time: median(lead_times),
        restored_incidents: u32::try_from(restores.len()).unwrap_or(u32::MAX),
        time_to_restore: median(restores),
        failing_since,
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort_unstable();
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2),
    }
}

/// The deployments created on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    pub day: NaiveDate,
    pub succeeded: u32,
    /// `failed` or `timed_out`.
    pub failed: u32,
    /// Cancelled, or still running.
    pub other: u32,
}

impl DayCount {
    pub fn total(&self) -> u32 {
        self.succeeded + self.failed + self.other
    }
}

/// How many deployments were created on each of the `days` days up to `now` (today
/// last, days without any included), by outcome. Deployments created before the
/// first day are left out.
pub fn deploys_per_day(deployments: &[Deployment], days: u32, now: DateTime<Utc>) -> Vec<DayCount> {
    let today = now.date_naive();
    let days = days.clamp(1, MAX_DAYS);
    let mut counts: Vec<DayCount> = (0..days)
        .rev()
        .map(|back| DayCount {
            day: today - chrono::Days::new(u64::from(back)),
            succeeded: 0,
            failed: 0,
            other: 0,
        })
        .collect();
    for deployment in deployments {
        let day = deployment.created_at.date_naive();
        let Some(count) = counts.iter_mut().find(|c| c.day == day) else {
            continue;
        };
        match deployment.status {
            DeploymentStatus::Succeeded => count.succeeded += 1,
            status if is_failure(status) => count.failed += 1,
            _ => count.other += 1,
        }
    }
    counts
}

/// How long one rollout took: from the moment Kubernaut started it to its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutDuration {
    pub deployment: DeploymentId,
    pub version: Version,
    pub target: Target,
    pub created_at: DateTime<Utc>,
    pub status: DeploymentStatus,
    pub duration: Duration,
}

/// The rollout durations of the judged deployments among `deployments` (succeeded,
/// failed or timed out, with start and verdict times), oldest first.
pub fn rollout_durations(deployments: &[Deployment]) -> Vec<RolloutDuration> {
    let mut durations: Vec<RolloutDuration> = deployments
        .iter()
        .filter(|d| is_judged(d.status))
        .filter_map(|d| {
            let duration = (d.finished_at? - d.started_at?).to_std().ok()?;
            Some(RolloutDuration {
                deployment: d.id,
                version: d.version.clone(),
                target: d.target.clone(),
                created_at: d.created_at,
                status: d.status,
                duration,
            })
        })
        .collect();
    durations.sort_by_key(|d| (d.created_at, d.deployment));
    durations
}

/// The figures from the repositories.
#[derive(Clone)]
pub struct DoraService {
    releases: Arc<dyn ReleaseRepository>,
    deployments: Arc<dyn DeploymentRepository>,
}

impl std::fmt::Debug for DoraService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoraService").finish_non_exhaustive()
    }
}

impl DoraService {
    pub fn new(
        releases: Arc<dyn ReleaseRepository>,
        deployments: Arc<dyn DeploymentRepository>,
    ) -> Self {
        Self {
            releases,
            deployments,
        }
    }

    /// The figures over the `query.days` days up to `now` (see the module's
    /// definitions), for any caller that may read.
    ///
    /// # Errors
    /// [`DeploymentLookupError::Forbidden`] when the caller may not read;
    /// [`DeploymentLookupError::Repository`] when the storage fails.
    pub async fn figures(
        &self,
        query: &DoraQuery,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Vec<DoraFigures>, DeploymentLookupError> {
        caller.require(Permission::Read)?;
        let days = query.days.clamp(1, MAX_DAYS);
        let limit = PageLimit::default();
        let page_size = usize::from(PageLimit::MAX);
        let mut listing = DeploymentQuery {
            service: query.service.clone(),
            cluster: query.cluster.clone(),
            namespace: query.namespace.clone(),
            created_after: Some(now - chrono::Duration::days(i64::from(days))),
            limit,
            ..DeploymentQuery::default()
        };
        let mut deployments = Vec::new();
        loop {
            let page = self.deployments.list(&listing, page_size).await?;
            let full = page.len() == page_size;
            listing.after = page.last().map(Deployment::cursor);
            deployments.extend(page);
            if !full {
                break;
            }
        }
        let wanted: HashSet<ReleaseId> = deployments
            .iter()
            .filter(|d| d.status == DeploymentStatus::Succeeded && d.rollback_of.is_none())
            .map(|d| d.release_id)
            .collect();
        let mut registered = HashMap::new();
        for id in wanted {
            if let Some(release) = self.releases.find_active(id).await? {
                registered.insert(id, release.created_at);
            }
        }
        Ok(compute(&deployments, &registered, days))
    }
}

#[cfg(test)]
#[path = "dora_tests.rs"]
mod tests;
