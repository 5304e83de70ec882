//! Deployments as rows of the `deployments` and `deployment_timeline` tables, and the
//! conversions to and from the domain. Rows read back were written by us, so a value
//! that breaks a domain rule means the tables were changed behind Kubernaut's back: a
//! [`RepositoryError`], never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentOptions, DeploymentStatus, Diagnostics,
    Namespace, Target, TimelineEntry,
};
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::release::{ReleaseId, ServiceName, Version};
use uuid::Uuid;

use crate::schema::{deployment_timeline, deployments};

/// Every column of a deployment but the two large ones: what listings read.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = deployments, check_for_backend(diesel::pg::Pg))]
// `None` is written as NULL rather than DEFAULT: a DEFAULT keyword would make diesel
// refuse to keep the insert in its prepared statement cache.
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct DeploymentSummaryRow {
    pub id: Uuid,
    pub release_id: Uuid,
    pub service: String,
    pub version: String,
    pub cluster: String,
    pub namespace: String,
    pub requested_by: String,
    pub attributes: serde_json::Value,
    pub timeout_seconds: i64,
    pub prune: bool,
    pub rollback_on_failure: bool,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub diagnostics: Option<serde_json::Value>,
    pub rollback_of: Option<Uuid>,
}

/// A whole deployment row, as inserted and as read back by id.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = deployments, check_for_backend(diesel::pg::Pg))]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct DeploymentRow {
    #[diesel(embed)]
    pub summary: DeploymentSummaryRow,
    pub manifest: String,
    pub objects: serde_json::Value,
}

/// One timeline entry as inserted; `seq` is left to its sequence, which numbers the
/// entries in the order they were written.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = deployment_timeline, check_for_backend(diesel::pg::Pg))]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct NewTimelineRow {
    pub deployment_id: Uuid,
    pub at: DateTime<Utc>,
    pub phase: String,
    pub message: String,
    pub resource: Option<String>,
}

/// One timeline entry as read back.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deployment_timeline, check_for_backend(diesel::pg::Pg))]
pub(crate) struct TimelineRow {
    pub deployment_id: Uuid,
    pub at: DateTime<Utc>,
    pub phase: String,
    pub message: String,
    pub resource: Option<String>,
}

impl DeploymentRow {
    /// # Errors
    /// [`RepositoryError`] when a value cannot be stored: a timeout beyond `i64`
    /// seconds, or JSON that cannot be written (neither happens with valid domain
    /// values; the error exists so that no panic is needed to say so).
    pub(crate) fn from_deployment(deployment: &Deployment) -> Result<Self, RepositoryError> {
        let id = deployment.id;
        let unstorable = |column: &'static str| {
            move |error: serde_json::Error| {
                RepositoryError::caused_by(
                    format!("the {column} of deployment {id} cannot be stored"),
                    error,
                )
            }
        };
        let timeout_seconds =
            i64::try_from(deployment.options.timeout.as_secs()).map_err(|error| {
                RepositoryError::caused_by(
                    format!("the timeout of deployment {id} cannot be stored"),
                    error,
                )
            })?;
        Ok(Self {
            summary: DeploymentSummaryRow {
                id: id.as_uuid(),
                release_id: deployment.release_id.as_uuid(),
                service: deployment.service.as_str().to_owned(),
                version: deployment.version.as_str().to_owned(),
                cluster: deployment.target.cluster.as_str().to_owned(),
                namespace: deployment.target.namespace.as_str().to_owned(),
                requested_by: deployment.requested_by.as_str().to_owned(),
                attributes: serde_json::to_value(&deployment.attributes)
                    .map_err(unstorable("attributes"))?,
                timeout_seconds,
                prune: deployment.options.prune,
                rollback_on_failure: deployment.options.rollback_on_failure,
                status: deployment.status.as_str().to_owned(),
                created_at: deployment.created_at,
                started_at: deployment.started_at,
                finished_at: deployment.finished_at,
                diagnostics: diagnostics_json(id, deployment.diagnostics.as_ref())?,
                rollback_of: deployment.rollback_of.map(|of| of.as_uuid()),
            },
            manifest: deployment.manifest.clone(),
            objects: serde_json::Value::Array(deployment.objects.clone()),
        })
    }

    /// The deployment this row holds, with `timeline`.
    pub(crate) fn into_deployment(
        self,
        timeline: Vec<TimelineEntry>,
    ) -> Result<Deployment, RepositoryError> {
        let id = self.summary.id;
        let objects = stored_objects(id, self.objects)?;
        let mut deployment = self.summary.into_deployment(timeline)?;
        deployment.manifest = self.manifest;
        deployment.objects = objects;
        Ok(deployment)
    }
}

impl NewTimelineRow {
    pub(crate) fn from_entry(id: DeploymentId, entry: &TimelineEntry) -> Self {
        Self {
            deployment_id: id.as_uuid(),
            at: entry.at,
            phase: entry.phase.as_str().to_owned(),
            message: entry.message.clone(),
            resource: entry.resource.clone(),
        }
    }
}

impl DeploymentSummaryRow {
    /// The deployment this row holds, with `timeline` and without manifest and objects.
    pub(crate) fn into_deployment(
        self,
        timeline: Vec<TimelineEntry>,
    ) -> Result<Deployment, RepositoryError> {
        let id = self.id;
        let timeout = u64::try_from(self.timeout_seconds).map_err(|error| {
            RepositoryError::caused_by(
                format!("the stored timeout of deployment {id} is not valid"),
                error,
            )
        })?;
        let diagnostics = self
            .diagnostics
            .map(|json| stored::<Diagnostics, _>(id, "diagnostics", serde_json::from_value(json)))
            .transpose()?;
        Ok(Deployment {
            id: DeploymentId::from_uuid(id),
            release_id: ReleaseId::from_uuid(self.release_id),
            service: stored(id, "service", ServiceName::parse(&self.service))?,
            version: stored(id, "version", Version::parse(&self.version))?,
            target: Target {
                cluster: stored(id, "cluster", ClusterName::parse(&self.cluster))?,
                namespace: stored(id, "namespace", Namespace::parse(&self.namespace))?,
            },
            // Actors were normalised by `Actor::named` before they were stored, so naming
            // them again gives back the same actor.
            requested_by: Actor::named(&self.requested_by),
            attributes: stored::<BTreeMap<String, String>, _>(
                id,
                "attributes",
                serde_json::from_value(self.attributes),
            )?,
            options: DeploymentOptions {
                timeout: Duration::from_secs(timeout),
                prune: self.prune,
                rollback_on_failure: self.rollback_on_failure,
            },
            manifest: String::new(),
            objects: Vec::new(),
            status: stored_status(id, "status", &self.status)?,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            timeline,
            diagnostics,
            rollback_of: self.rollback_of.map(DeploymentId::from_uuid),
        })
    }
}

impl TimelineRow {
    pub(crate) fn into_entry(self) -> Result<TimelineEntry, RepositoryError> {
        Ok(TimelineEntry {
            at: self.at,
            phase: stored_status(self.deployment_id, "timeline phase", &self.phase)?,
            message: self.message,
            resource: self.resource,
        })
    }
}

/// Diagnostics as the `diagnostics` column stores them.
pub(crate) fn diagnostics_json(
    id: DeploymentId,
    diagnostics: Option<&Diagnostics>,
) -> Result<Option<serde_json::Value>, RepositoryError> {
    diagnostics
        .map(serde_json::to_value)
        .transpose()
        .map_err(|error| {
            RepositoryError::caused_by(
                format!("the diagnostics of deployment {id} cannot be stored"),
                error,
            )
        })
}

/// A stored value, or why the row holding it is corrupt.
/// Deployment `id`'s objects as stored in its `objects` column.
pub(crate) fn stored_objects(
    id: Uuid,
    objects: serde_json::Value,
) -> Result<Vec<serde_json::Value>, RepositoryError> {
    stored(id, "objects", serde_json::from_value(objects))
}

fn stored<T, E>(id: Uuid, column: &str, parsed: Result<T, E>) -> Result<T, RepositoryError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parsed.map_err(|error| {
        RepositoryError::caused_by(
            format!("the stored {column} of deployment {id} is not valid"),
            error,
        )
    })
}

fn stored_status(id: Uuid, column: &str, text: &str) -> Result<DeploymentStatus, RepositoryError> {
    DeploymentStatus::parse(text).ok_or_else(|| {
        RepositoryError::new(format!(
            "the stored {column} of deployment {id} is not a known status: {text:?}"
        ))
    })
}
