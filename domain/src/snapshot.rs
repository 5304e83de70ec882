//! Everything a Kubernaut database holds, as plain records: what `kubernaut db copy`
//! reads out of one database and writes into another, ids and times unchanged. The
//! engine's leases are not records: a copied deployment that is still active is claimed
//! afresh by the engine that serves the new database.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A release, deleted or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub id: Uuid,
    pub service: String,
    pub version: String,
    pub image: String,
    pub template: String,
    pub required_variables: Vec<String>,
    pub attributes: Value,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<String>,
    pub image_digest: Option<String>,
}

/// A deployment with its timeline, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: Uuid,
    pub release_id: Uuid,
    pub service: String,
    pub version: String,
    pub cluster: String,
    pub namespace: String,
    pub requested_by: String,
    pub attributes: Value,
    pub timeout_seconds: i64,
    pub prune: bool,
    pub rollback_on_failure: bool,
    pub manifest: String,
    pub objects: Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub diagnostics: Option<Value>,
    pub rollback_of: Option<Uuid>,
    pub timeline: Vec<TimelineRecord>,
}

/// One line of a deployment's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineRecord {
    pub at: DateTime<Utc>,
    pub phase: String,
    pub message: String,
    pub resource: Option<String>,
}

/// An account with its grants (role, scope), in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub grants: Vec<(String, String)>,
}

/// An API token: its hash, never a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: Uuid,
    pub account: String,
    pub name: String,
    pub hint: String,
    pub token_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

/// An entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    pub source: Option<String>,
    pub details: Value,
}

/// Records of one kind. A database is read, and written back, in the order of the
/// variants (accounts before the tokens that name them, releases before their
/// deployments, each kind oldest first), so every reference finds what it names.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotBatch {
    Accounts(Vec<AccountRecord>),
    Tokens(Vec<TokenRecord>),
    Releases(Vec<ReleaseRecord>),
    Deployments(Vec<DeploymentRecord>),
    Audit(Vec<AuditRecord>),
}

/// How many records of each kind were read or written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotCounts {
    pub accounts: usize,
    pub grants: usize,
    pub tokens: usize,
    pub releases: usize,
    pub deployments: usize,
    pub timeline_entries: usize,
    pub audit_entries: usize,
}

impl SnapshotCounts {
    /// Counts `batch` in.
    pub fn add(&mut self, batch: &SnapshotBatch) {
        match batch {
            SnapshotBatch::Accounts(accounts) => {
                self.accounts += accounts.len();
                self.grants += accounts.iter().map(|a| a.grants.len()).sum::<usize>();
            }
            SnapshotBatch::Tokens(tokens) => self.tokens += tokens.len(),
            SnapshotBatch::Releases(releases) => self.releases += releases.len(),
            SnapshotBatch::Deployments(deployments) => {
                self.deployments += deployments.len();
                self.timeline_entries +=
                    deployments.iter().map(|d| d.timeline.len()).sum::<usize>();
            }
            SnapshotBatch::Audit(entries) => self.audit_entries += entries.len(),
        }
    }
}

impl fmt::Display for SnapshotCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accounts ({} grants), {} tokens, {} releases, {} deployments ({} timeline entries), {} audit entries",
            self.accounts,
            self.grants,
            self.tokens,
            self.releases,
            self.deployments,
            self.timeline_entries,
            self.audit_entries
        )
    }
}

/// Why records could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The target already holds data (`table` is the first non-empty table): a copy goes
    /// into an empty database only, so nothing is merged or overwritten.
    #[error(
        "the target database is not empty (its {table} table has rows): copy into a new, empty database"
    )]
    NotEmpty { table: &'static str },
    /// The records could not be read from their source.
    #[error("reading the source failed: {0}")]
    Source(String),
    /// The target failed; nothing was written (one transaction).
    #[error(transparent)]
    Repository(#[from] crate::ports::RepositoryError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_every_kind_and_what_it_carries() {
        let at = Utc::now();
        let mut counts = SnapshotCounts::default();
        counts.add(&SnapshotBatch::Accounts(vec![AccountRecord {
            name: "ci".into(),
            kind: "robot".into(),
            created_at: at,
            created_by: "admin".into(),
            grants: vec![
                ("deployer".into(), "staging/*".into()),
                ("releaser".into(), "*/*".into()),
            ],
        }]));
        counts.add(&SnapshotBatch::Deployments(vec![DeploymentRecord {
            id: Uuid::nil(),
            release_id: Uuid::nil(),
            service: "web".into(),
            version: "1".into(),
            cluster: "eu".into(),
            namespace: "shop".into(),
            requested_by: "ci".into(),
            attributes: Value::Object(serde_json::Map::new()),
            timeout_seconds: 600,
            prune: true,
            rollback_on_failure: false,
            manifest: String::new(),
            objects: Value::Array(vec![]),
            status: "succeeded".into(),
            created_at: at,
            started_at: Some(at),
            finished_at: Some(at),
            diagnostics: None,
            rollback_of: None,
            timeline: vec![
                TimelineRecord {
                    at,
                    phase: "queued".into(),
                    message: "m".into(),
                    resource: None
                };
                3
            ],
        }]));
        assert_eq!((counts.accounts, counts.grants), (1, 2));
        assert_eq!((counts.deployments, counts.timeline_entries), (1, 3));
        assert_eq!(
            counts.to_string(),
            "1 accounts (2 grants), 0 tokens, 0 releases, 1 deployments (3 timeline entries), 0 audit entries"
        );
    }
}
