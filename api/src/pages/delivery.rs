//! How deploys go, as charts: deploys per day with failures marked, rollout
//! durations, and the DORA four per target (from `kubernaut_domain::dora`).

use chrono::{DateTime, Utc};
use kubernaut_domain::Caller;
use kubernaut_domain::deployment::{Deployment, DeploymentQuery, DeploymentStatus};
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::dora::{self, DoraFigures, DoraQuery};

use super::PageError;
use super::charts::{
    Bar, Chart, ChartTable, Frame, Part, bar_chart, count_text, duration_text, seconds_text,
};
use super::view::{MAX_SCANNED, deployments_matching, lookup_error, short_id, status_label};

/// The deployments created in the `days` days up to `now` matching `query` (at most
/// [`MAX_SCANNED`], newest first).
pub async fn recent_deployments(
    service: &DeploymentService,
    mut query: DeploymentQuery,
    days: u32,
    now: DateTime<Utc>,
    caller: &Caller,
) -> Result<Vec<Deployment>, PageError> {
    query.created_after = Some(day_start(now, days));
    deployments_matching(service, query, MAX_SCANNED, caller).await
}

/// Midnight (UTC) of the first day of a window of `days` days ending today.
fn day_start(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    let first = now.date_naive() - chrono::Days::new(u64::from(days.saturating_sub(1)));
    first.and_time(chrono::NaiveTime::MIN).and_utc() - chrono::Duration::milliseconds(1)
}

/// Deploys per day of `deployments` over `days` days, stacked by outcome, failures
/// marked; `whose` names them ("across the fleet", "of web").
pub fn deploys_per_day(
    id: &str,
    deployments: &[Deployment],
    days: u32,
    now: DateTime<Utc>,
    whose: &str,
) -> Chart {
    let counts = dora::deploys_per_day(deployments, days, now);
    let total: u32 = counts.iter().map(|c| c.total()).sum();
    let failed: u32 = counts.iter().map(|c| c.failed).sum();
    let bars: Vec<Bar> = counts
        .iter()
        .map(|c| Bar {
            label: c.day.format("%m-%d").to_string(),
            parts: vec![
                Part {
                    value: f64::from(c.succeeded),
                    kind: "succeeded",
                },
                Part {
                    value: f64::from(c.failed),
                    kind: "failed",
                },
                Part {
                    value: f64::from(c.other),
                    kind: "other",
                },
            ],
            note: format!(
                "{}: {} deploys, {} succeeded, {} failed, {} cancelled or running",
                c.day,
                c.total(),
                c.succeeded,
                c.failed,
                c.other
            ),
        })
        .collect();
    let table = ChartTable {
        caption: format!("Deploys per day {whose}, last {days} days"),
        headers: [
            "Day",
            "Deploys",
            "Succeeded",
            "Failed",
            "Cancelled or running",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows: counts
            .iter()
            .rev()
            .filter(|c| c.total() > 0)
            .map(|c| {
                vec![
                    c.day.to_string(),
                    c.total().to_string(),
                    c.succeeded.to_string(),
                    c.failed.to_string(),
                    c.other.to_string(),
                ]
            })
            .collect(),
    };
    bar_chart(
        id,
        format!("Deploys per day {whose}"),
        format!(
            "{total} deploys over the last {days} days, {failed} of them failed or timed out; one bar a day, failures hatched and marked with a cross."
        ),
        &bars,
        &count_text,
        Frame::WIDE,
        table,
    )
}

/// How long each judged rollout among `deployments` took, oldest first, failures
/// marked.
pub fn rollout_durations(id: &str, deployments: &[Deployment], whose: &str) -> Chart {
    let durations = dora::rollout_durations(deployments);
    let bars: Vec<Bar> = durations
        .iter()
        .map(|d| {
            let failed = d.status != DeploymentStatus::Succeeded;
            Bar {
                label: d.created_at.format("%m-%d").to_string(),
                parts: vec![Part {
                    value: d.duration.as_secs_f64(),
                    kind: if failed { "failed" } else { "succeeded" },
                }],
                note: format!(
                    "{} to {}: {} in {}",
                    d.version,
                    d.target,
                    status_label(d.status),
                    duration_text(d.duration)
                ),
            }
        })
        .collect();
    let longest = durations.iter().map(|d| d.duration).max();
    let table = ChartTable {
        caption: format!("Rollout durations {whose}, oldest first"),
        headers: [
            "Deployment",
            "Version",
            "Target",
            "Requested",
            "Verdict",
            "Duration",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows: durations
            .iter()
            .map(|d| {
                vec![
                    short_id(&d.deployment.to_string()),
                    d.version.to_string(),
                    d.target.to_string(),
                    d.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    status_label(d.status),
                    duration_text(d.duration),
                ]
            })
            .collect(),
    };
    bar_chart(
        id,
        format!("Rollout durations {whose}"),
        format!(
            "{} rollouts from start to verdict, oldest first{}; failures hatched and marked with a cross.",
            durations.len(),
            longest
                .map(|l| format!(", the longest {}", duration_text(l)))
                .unwrap_or_default()
        ),
        &bars,
        &seconds_text,
        Frame::WIDE,
        table,
    )
}

/// A target's DORA figures in words.
#[derive(Debug, Clone)]
pub struct DoraRow {
    pub target: String,
    pub deployments: u32,
    pub frequency: String,
    pub failure_rate: String,
    pub lead_time: String,
    pub time_to_restore: String,
    pub failing_since: Option<String>,
}

/// The DORA four of a service per target: a table row each, and a chart per figure
/// with a bar per target.
pub struct DoraView {
    pub rows: Vec<DoraRow>,
    pub charts: Vec<Chart>,
}

/// The figures of `query`.
pub async fn dora_view(
    service: &DeploymentService,
    query: &DoraQuery,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<DoraView, PageError> {
    let figures = service
        .dora()
        .figures(query, caller, now)
        .await
        .map_err(lookup_error)?;
    Ok(DoraView {
        rows: figures.iter().map(row_of).collect(),
        charts: charts_of(&figures, query.days),
    })
}

fn row_of(figures: &DoraFigures) -> DoraRow {
    DoraRow {
        target: figures.target.to_string(),
        deployments: figures.deployments,
        frequency: format!("{:.2} a day", figures.deployment_frequency),
        failure_rate: figures
            .change_failure_rate
            .map_or_else(|| "no change".to_owned(), |r| format!("{:.0} %", r * 100.0)),
        lead_time: figures
            .lead_time
            .map_or_else(|| "none".to_owned(), duration_text),
        time_to_restore: figures
            .time_to_restore
            .map_or_else(|| "none".to_owned(), duration_text),
        failing_since: figures
            .failing_since
            .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
    }
}

fn charts_of(figures: &[DoraFigures], days: u32) -> Vec<Chart> {
    let rows: Vec<DoraRow> = figures.iter().map(row_of).collect();
    let chart = |id: &str,
                 title: &str,
                 what: &str,
                 value: &dyn Fn(&DoraFigures) -> Option<f64>,
                 text: &dyn Fn(&DoraRow) -> String,
                 unit: &dyn Fn(f64) -> String,
                 at_least: f64| {
        let bars: Vec<Bar> = figures
            .iter()
            .zip(&rows)
            .map(|(f, row)| Bar {
                label: f.target.to_string(),
                parts: vec![Part {
                    value: value(f).unwrap_or(0.0),
                    kind: "figure",
                }],
                note: format!("{}: {}", f.target, text(row)),
            })
            .collect();
        bar_chart(
            id,
            title.to_owned(),
            format!(
                "{what} over the last {days} days, a bar per target: {}.",
                rows.iter()
                    .map(|r| format!("{} {}", r.target, text(r)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            &bars,
            unit,
            Frame {
                width: super::charts::NARROW,
                at_least,
            },
            ChartTable {
                caption: format!("{title} per target"),
                headers: vec!["Target".to_owned(), title.to_owned()],
                rows: rows
                    .iter()
                    .map(|r| vec![r.target.clone(), text(r)])
                    .collect(),
            },
        )
    };
    vec![
        chart(
            "dora-frequency",
            "Deployment frequency",
            "Successful deploys a day",
            &|f| Some(f.deployment_frequency),
            &|r| r.frequency.clone(),
            &|v| format!("{v:.2}"),
            0.1,
        ),
        chart(
            "dora-failure-rate",
            "Change failure rate",
            "The share of changes that failed",
            &|f| f.change_failure_rate.map(|r| r * 100.0),
            &|r| r.failure_rate.clone(),
            &|v| format!("{v:.0} %"),
            100.0,
        ),
        chart(
            "dora-lead-time",
            "Lead time",
            "The median time from a release's registration to its successful deploy",
            &|f| f.lead_time.map(|d| d.as_secs_f64()),
            &|r| r.lead_time.clone(),
            &seconds_text,
            1.0,
        ),
        chart(
            "dora-restore",
            "Time to restore",
            "The median time from a failure to the next success",
            &|f| f.time_to_restore.map(|d| d.as_secs_f64()),
            &|r| r.time_to_restore.clone(),
            &seconds_text,
            1.0,
        ),
    ]
}
