//! What the pages share: how times, statuses and deployments are shown, how the query
//! strings of the filter forms are read, and how deployments are gathered.

use chrono::{DateTime, Utc};
use kubernaut_domain::deployment::{Deployment, DeploymentQuery, DeploymentStatus, Diagnostics};
use kubernaut_domain::deployment_service::{DeploymentLookupError, DeploymentService};
use kubernaut_domain::{Caller, Cursor, PageLimit};

use super::PageError;

/// The most deployments a page looks through to tell what runs where.
pub const MAX_SCANNED: usize = 5000;

/// A time as a page shows it, with its machine-readable form for `<time datetime>`.
#[derive(Debug, Clone)]
pub struct When {
    pub text: String,
    pub iso: String,
}

impl From<DateTime<Utc>> for When {
    fn from(at: DateTime<Utc>) -> Self {
        Self {
            text: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            iso: at.to_rfc3339(),
        }
    }
}

/// The words for a status: `rolling_out` reads "rolling out".
pub fn status_label(status: DeploymentStatus) -> String {
    status.as_str().replace('_', " ")
}

/// A deployment in a table.
#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub id: String,
    /// The last eight characters of the id: random in a UUID v7, so enough to tell
    /// deployments apart (the first ones are the time, shared by neighbours).
    pub short_id: String,
    pub service: String,
    pub version: String,
    pub release_id: String,
    pub cluster: String,
    pub namespace: String,
    /// `succeeded`, `failed`, ...: the CSS class of the status badge.
    pub status: String,
    pub status_label: String,
    /// The headline of a failure (`crash_loop`).
    pub reason: Option<String>,
    pub created_at: When,
    pub requested_by: String,
}

impl From<&Deployment> for DeploymentRow {
    fn from(deployment: &Deployment) -> Self {
        Self {
            id: deployment.id.to_string(),
            short_id: short_id(&deployment.id.to_string()),
            service: deployment.service.to_string(),
            version: deployment.version.to_string(),
            release_id: deployment.release_id.to_string(),
            cluster: deployment.target.cluster.to_string(),
            namespace: deployment.target.namespace.to_string(),
            status: deployment.status.as_str().to_owned(),
            status_label: status_label(deployment.status),
            reason: deployment
                .diagnostics
                .as_ref()
                .and_then(Diagnostics::primary_reason)
                .map(|reason| reason.as_str().replace('_', " ")),
            created_at: deployment.created_at.into(),
            requested_by: deployment.requested_by.to_string(),
        }
    }
}

/// A form field as sent: absent and blank both mean "no filter".
pub fn filled(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// One rejected filter, shown above the form.
#[derive(Debug, Clone)]
pub struct FilterError {
    pub field: &'static str,
    pub message: String,
}

/// Parses a filter field, recording why it is bad.
pub fn parse_filter<T, E: std::fmt::Display>(
    errors: &mut Vec<FilterError>,
    field: &'static str,
    value: Option<&String>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    let text = filled(value)?;
    match parse(text) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            errors.push(FilterError {
                field,
                message: error.to_string(),
            });
            None
        }
    }
}

/// The page position of a listing: `cursor` as the previous page handed it out.
pub fn parse_cursor(errors: &mut Vec<FilterError>, value: Option<&String>) -> Option<Cursor> {
    parse_filter(errors, "cursor", value, |text| {
        Cursor::decode(text).map_err(|_| "is not a page position this server handed out")
    })
}

/// The biggest page the domain gives out.
pub fn largest_page() -> PageLimit {
    PageLimit::new(i64::from(PageLimit::MAX)).unwrap_or_default()
}

/// The deployments matching `query`, newest first, at most `max` of them.
///
/// # Errors
/// [`PageError::Forbidden`] for callers without a role, [`PageError::Internal`] when
/// the storage fails.
pub async fn deployments_matching(
    service: &DeploymentService,
    mut query: DeploymentQuery,
    max: usize,
    caller: &Caller,
) -> Result<Vec<Deployment>, PageError> {
    query.limit = largest_page();
    let mut found = Vec::new();
    loop {
        let page = service.list(&query, caller).await.map_err(lookup_error)?;
        found.extend(page.items);
        match page.next_cursor {
            Some(next) if found.len() < max => query.after = Some(next),
            _ => break,
        }
    }
    found.truncate(max);
    Ok(found)
}

/// A failed deployment lookup as a page tells it: a refusal names what is missing.
pub fn lookup_error(error: DeploymentLookupError) -> PageError {
    match error {
        DeploymentLookupError::Forbidden(denied) => PageError::from(denied),
        other => PageError::internal(&other),
    }
}

/// The last eight characters of an id.
pub fn short_id(id: &str) -> String {
    id.get(id.len().saturating_sub(8)..)
        .unwrap_or(id)
        .to_owned()
}
