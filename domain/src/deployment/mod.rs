//! Deployments: a release rendered for a target, applied, watched to a verdict.

mod diagnostics;
mod target;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use diagnostics::{
    ContainerLogs, Diagnostics, EventRecord, FailureReason, ResourceDiagnosis, ResourceRef,
};
pub use target::{ClusterName, InvalidClusterName, InvalidNamespace, Namespace, Target};

use crate::actor::Actor;
use crate::audit::AuditEntry;
pub use crate::lease::Fence;
use crate::pagination::{Cursor, PageLimit};
use crate::release::{ReleaseId, ServiceName, Version};

/// A deployment's identity: a UUID v7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeploymentId(Uuid);

impl DeploymentId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a deployment is in its life. The first three are active; the rest are verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Queued,
    Applying,
    RollingOut,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl DeploymentStatus {
    pub const ACTIVE: [Self; 3] = [Self::Queued, Self::Applying, Self::RollingOut];
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Applying,
        Self::RollingOut,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    pub fn is_verdict(self) -> bool {
        !self.is_active()
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
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a deployment's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// The deployment's status when this happened.
    pub phase: DeploymentStatus,
    pub message: String,
    /// The resource concerned, as `Kind/name`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// How a deployment should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentOptions {
    /// The whole rollout must reach a verdict within this time, or it is `timed_out`.
    #[serde(with = "seconds")]
    pub timeout: Duration,
    /// Delete our objects of this service in this namespace that the manifest no longer
    /// holds, after a successful rollout.
    pub prune: bool,
    /// On failure or timeout, deploy the last release that succeeded on the target.
    pub rollback_on_failure: bool,
}

impl DeploymentOptions {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
}

impl Default for DeploymentOptions {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            prune: true,
            rollback_on_failure: false,
        }
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// A deployment of a release to a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: DeploymentId,
    pub release_id: ReleaseId,
    pub service: ServiceName,
    pub version: Version,
    pub target: Target,
    pub requested_by: Actor,
    /// The request's own attributes (the highest-priority template variables).
    pub attributes: BTreeMap<String, String>,
    pub options: DeploymentOptions,
    /// The manifest as rendered from the template, before Kubernaut's labels.
    pub manifest: String,
    /// The objects applied: the manifest with Kubernaut's labels, annotations and
    /// namespace.
    pub objects: Vec<Value>,
    pub status: DeploymentStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub timeline: Vec<TimelineEntry>,
    pub diagnostics: Option<Diagnostics>,
    /// The deployment this one rolls back, when it is a rollback.
    pub rollback_of: Option<DeploymentId>,
}

impl Deployment {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id.as_uuid(),
        }
    }

    /// When the rollout must have reached a verdict: the timeout counted from the start
    /// (or from creation while it has not started).
    pub fn deadline(&self) -> DateTime<Utc> {
        let start = self.started_at.unwrap_or(self.created_at);
        start
            + chrono::Duration::from_std(self.options.timeout)
                .unwrap_or_else(|_| chrono::Duration::seconds(600))
    }
}

/// Which deployments to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentQuery {
    pub service: Option<ServiceName>,
    /// Only deployments of this release.
    pub release: Option<ReleaseId>,
    pub cluster: Option<ClusterName>,
    pub namespace: Option<Namespace>,
    pub status: Option<DeploymentStatus>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub after: Option<Cursor>,
    pub limit: PageLimit,
}

/// Where a service stands on one target (cluster and namespace).
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The newest deployment of the service to the target, of any status.
    pub last: Deployment,
    /// The newest one that succeeded: the version running there now.
    pub running: Option<Deployment>,
}

/// A change of status, applied only when the deployment is in one of `from` (and, with
/// a `fence`, only while that lease is the deployment's current one). Everything it
/// carries is stored in one transaction with the move, and nothing of it when the
/// deployment does not move.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: Vec<DeploymentStatus>,
    pub to: DeploymentStatus,
    pub at: DateTime<Utc>,
    /// Stored with a verdict of failure or timeout.
    pub diagnostics: Option<Diagnostics>,
    /// The audit record of this change, stored with it when it happens.
    pub audit: Option<AuditEntry>,
    /// The lease the mover holds: the move happens only while it is current.
    pub fence: Option<Fence>,
    /// Timeline lines written with the move, after the deployment's earlier ones.
    pub entries: Vec<TimelineEntry>,
    /// A deployment this move starts (an automatic rollback), inserted with it.
    pub follow_up: Option<Box<NewDeployment>>,
    /// Notifications of this move, written to the outbox with it (see
    /// [`crate::notification`]).
    pub notifications: Vec<crate::notification::NewDelivery>,
}

impl Transition {
    /// A move from one of `from` to `to` at `at`, carrying nothing else yet.
    pub fn new(from: &[DeploymentStatus], to: DeploymentStatus, at: DateTime<Utc>) -> Self {
        Self {
            from: from.to_vec(),
            to,
            at,
            diagnostics: None,
            audit: None,
            fence: None,
            entries: Vec::new(),
            follow_up: None,
            notifications: Vec::new(),
        }
    }
}

/// A deployment to store, with the audit record of its request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeployment {
    pub deployment: Deployment,
    pub audit: AuditEntry,
}
