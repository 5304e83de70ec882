//! Notifications: what receivers hear of a deployment (its start, its verdict), the
//! rules that choose who hears what, and the outbox that delivers it at least once.
//!
//! The event is written to the outbox **in the transaction of the move it tells of**
//! ([`Transition::notifications`](crate::deployment::Transition::notifications), filled
//! by [`NotifyingDeployments`]), so a verdict is never stored without its
//! notifications, nor a notification without its verdict. The [`Dispatcher`] of every
//! replica then claims due deliveries for a while (a lease), sends them through the
//! [`NotificationSink`](crate::ports::NotificationSink) their rule names, records every
//! attempt, and retries failures with capped exponential backoff and jitter until the
//! receiver accepts or the policy gives up.

mod dispatcher;
mod recording;
mod rules;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::deployment::{Deployment, DeploymentId, DeploymentStatus};
use crate::release::ReleaseId;

pub use dispatcher::{DispatchSettings, Dispatcher, RetryPolicy};
pub use recording::NotifyingDeployments;
pub use rules::{InvalidRule, NotificationRule, NotificationRules, TargetFilter};

/// What a notification tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// The deployment started applying its objects.
    Started,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl NotificationEvent {
    pub const ALL: [Self; 5] = [
        Self::Started,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];
    /// The verdicts: what a rule that names no events is told of.
    pub const VERDICTS: [Self; 4] = [
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];

    /// The event a move to `status` is: entering `applying` is the start, a verdict its
    /// own event; queueing and rolling out are not told.
    pub fn of_status(status: DeploymentStatus) -> Option<Self> {
        match status {
            DeploymentStatus::Applying => Some(Self::Started),
            DeploymentStatus::Succeeded => Some(Self::Succeeded),
            DeploymentStatus::Failed => Some(Self::Failed),
            DeploymentStatus::TimedOut => Some(Self::TimedOut),
            DeploymentStatus::Cancelled => Some(Self::Cancelled),
            DeploymentStatus::Queued | DeploymentStatus::RollingOut => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == text)
    }
}

impl fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deployment as a notification tells of it, at the moment of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedDeployment {
    pub id: DeploymentId,
    pub release_id: ReleaseId,
    pub service: String,
    pub version: String,
    pub cluster: String,
    pub namespace: String,
    pub status: DeploymentStatus,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The deployment this one rolls back, when it is a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<DeploymentId>,
    /// Why it failed, in a line, for failures and timeouts that were diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request's own attributes (a commit, a ticket), for receivers that need
    /// them (GitHub's `ref`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// One event, as every receiver is told of it. `id` is the event's: the same for every
/// sink and every attempt, so receivers deduplicate on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: Uuid,
    pub event: NotificationEvent,
    pub occurred_at: DateTime<Utc>,
    pub deployment: NotifiedDeployment,
}

impl Notification {
    /// The notification of `event` about `deployment` as the move at `at` leaves it.
    pub fn of(
        deployment: &Deployment,
        event: NotificationEvent,
        status: DeploymentStatus,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> Self {
        let verdict = status.is_verdict();
        Self {
            id: Uuid::now_v7(),
            event,
            occurred_at: at,
            deployment: NotifiedDeployment {
                id: deployment.id,
                release_id: deployment.release_id,
                service: deployment.service.to_string(),
                version: deployment.version.to_string(),
                cluster: deployment.target.cluster.to_string(),
                namespace: deployment.target.namespace.to_string(),
                status,
                requested_by: deployment.requested_by.to_string(),
                created_at: deployment.created_at,
                started_at: deployment.started_at.or((!verdict).then_some(at)),
                finished_at: verdict.then_some(at),
                rollback_of: deployment.rollback_of,
                reason,
                attributes: deployment.attributes.clone(),
            },
        }
    }
}

/// A delivery to write to the outbox with a move: one notification for one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: Uuid,
    /// The sink's name, as the settings call it.
    pub sink: String,
    pub notification: Notification,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not accepted yet: due at `next_attempt_at`.
    Pending,
    /// A receiver accepted it (a 2xx answer).
    Delivered,
    /// The retry policy gave up on it (too many attempts, too old, or no such sink).
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Dead]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One try at a delivery, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    pub at: DateTime<Utc>,
    /// How long the receiver took to answer (or to fail).
    pub duration_ms: u64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong, when it did (a refusal, a timeout, a connection error).
    pub error: Option<String>,
    /// The replica that made it.
    pub replica: String,
}

impl Attempt {
    /// Whether the receiver accepted it.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// A delivery with its attempts, as the API and the UI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: Uuid,
    pub sink: String,
    pub notification: Notification,
    pub status: DeliveryStatus,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

/// A delivery a replica claimed: it may attempt it until its claim expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub sink: String,
    pub notification: Notification,
    pub created_at: DateTime<Utc>,
    /// Attempts recorded before this one.
    pub attempts: u32,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Accepted: delivered.
    Delivered,
    /// Try again once this much time has passed (on the storage's clock).
    RetryAfter(Duration),
    /// Give up: dead.
    GiveUp,
}

/// A sink's failure: the receiver's status, when it answered, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub status: Option<u16>,
    pub message: String,
}

impl SinkError {
    pub fn new(status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}
