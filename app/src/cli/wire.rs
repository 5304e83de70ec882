//! What the client reads from the server's JSON. Lenient on purpose: unknown fields
//! are ignored and unknown statuses kept, so an older client can talk to a newer server.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// An `application/problem+json` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub errors: Vec<FieldError>,
    #[serde(default)]
    pub existing_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// An API token as the server lists it (never with its secret).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiToken {
    pub id: String,
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub name: String,
    /// The first characters of the secret, to tell tokens apart.
    #[serde(default)]
    pub hint: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just issued, with its secret: the server shows it this once.
#[derive(Clone, Deserialize)]
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub id: String,
    pub service: String,
    pub version: String,
    pub image: String,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub required_variables: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub created_by: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Applying,
    RollingOut,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    #[serde(other)]
    Unknown,
}

impl Status {
    pub fn is_verdict(self) -> bool {
        !matches!(self, Self::Queued | Self::Applying | Self::RollingOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Applying => "applying",
            Self::RollingOut => "rolling_out",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub service: String,
    pub version: String,
    pub cluster: String,
    pub namespace: String,
    pub status: Status,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub rollback_of: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub requested_by: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub diagnostics: Option<Diagnostics>,
    #[serde(default)]
    pub timeline: Option<Vec<TimelineEntry>>,
}

/// Where a service stands on one target, as `GET /api/placements` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Placement {
    pub cluster: String,
    pub namespace: String,
    #[serde(default)]
    pub running: Option<Deployment>,
    pub last: Deployment,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub phase: Status,
    pub message: String,
    #[serde(default)]
    pub resource: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Diagnostics {
    #[serde(default)]
    pub resources: Vec<ResourceDiagnosis>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceDiagnosis {
    pub resource: ResourceRef,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub events: Vec<EventRecord>,
    #[serde(default)]
    pub logs: Vec<ContainerLogs>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceRef {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventRecord {
    #[serde(rename = "type", default)]
    pub event_type: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub count: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerLogs {
    pub pod: String,
    pub container: String,
    #[serde(default)]
    pub lines: Vec<String>,
}

/// The data of a `status` server-sent event.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusEvent {
    pub status: Status,
}
