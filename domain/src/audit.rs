//! The audit trail: one record for every change, written by the repository in the same
//! transaction as the change itself, so a change without its record (or a record of a
//! change that did not happen) cannot be stored. Reads are not audited.

use std::fmt;

use chrono::{DateTime, SubsecRound as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actor::Actor;
use crate::pagination::{Cursor, PageLimit};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditAction {
    #[serde(rename = "release.created")]
    ReleaseCreated,
    #[serde(rename = "release.deleted")]
    ReleaseDeleted,
    #[serde(rename = "deployment.requested")]
    DeploymentRequested,
    #[serde(rename = "deployment.cancelled")]
    DeploymentCancelled,
    #[serde(rename = "deployment.rolled_back")]
    DeploymentRolledBack,
    #[serde(rename = "deployment.finished")]
    DeploymentFinished,
    #[serde(rename = "account.created")]
    AccountCreated,
    #[serde(rename = "role.granted")]
    RoleGranted,
    #[serde(rename = "role.revoked")]
    RoleRevoked,
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
}

impl AuditAction {
    pub const ALL: [Self; 11] = [
        Self::ReleaseCreated,
        Self::ReleaseDeleted,
        Self::DeploymentRequested,
        Self::DeploymentCancelled,
        Self::DeploymentRolledBack,
        Self::DeploymentFinished,
        Self::AccountCreated,
        Self::RoleGranted,
        Self::RoleRevoked,
        Self::TokenCreated,
        Self::TokenRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReleaseCreated => "release.created",
            Self::ReleaseDeleted => "release.deleted",
            Self::DeploymentRequested => "deployment.requested",
            Self::DeploymentCancelled => "deployment.cancelled",
            Self::DeploymentRolledBack => "deployment.rolled_back",
            Self::DeploymentFinished => "deployment.finished",
            Self::AccountCreated => "account.created",
            Self::RoleGranted => "role.granted",
            Self::RoleRevoked => "role.revoked",
            Self::TokenCreated => "token.created",
            Self::TokenRevoked => "token.revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change: who did what to which object, when, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    /// The object changed: `release/<id>`, `deployment/<id>`, `account/<name>`,
    /// `token/<id>`.
    pub target: String,
    pub request_id: Option<String>,
    /// The address the request came from.
    pub source: Option<String>,
    /// What else is worth knowing: service and version, target, verdict, role...
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        actor: Actor,
        action: AuditAction,
        target: String,
        request_id: Option<String>,
        source: Option<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            at: Utc::now().trunc_subsecs(6),
            actor,
            action,
            target,
            request_id,
            source,
            details,
        }
    }

    /// Where this record sits in the newest-first order.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.at,
            id: self.id,
        }
    }
}

/// Which audit records to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<Actor>,
    pub action: Option<AuditAction>,
    /// An exact target (`release/<id>`) or, ending in `/`, every target of a kind
    /// (`deployment/`).
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after: Option<Cursor>,
    pub limit: PageLimit,
}
