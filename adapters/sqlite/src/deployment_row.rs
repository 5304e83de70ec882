//! Deployments as rows of the `deployments` and `deployment_timeline` tables, and the
//! conversions to and from the domain. Rows read back were written by us, so a value
//! that breaks a domain rule means the tables were changed behind Kubernaut's back: a
//! [`RepositoryError`], never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentOptions, DeploymentStatus, Diagnostics,
    Namespace, Target, TimelineEntry,
};
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::release::{ReleaseId, ServiceName, Version};
use uuid::Uuid;

use crate::sql::{
    Bind, optional_time_text, parse_optional_time, parse_time, parse_uuid, time_text, uuid_text,
};

/// The columns listings read: every one but the manifest and the objects.
pub(crate) const SUMMARY_COLUMNS: &str = "id, release_id, service, version, cluster, namespace, \
     requested_by, attributes, timeout_seconds, prune, rollback_on_failure, status, created_at, \
     started_at, finished_at, diagnostics, rollback_of";

/// Every column of a deployment but the two large ones: what listings read.
#[derive(Debug, QueryableByName)]
pub(crate) struct DeploymentSummaryRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub release_id: String,
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = Text)]
    pub version: String,
    #[diesel(sql_type = Text)]
    pub cluster: String,
    #[diesel(sql_type = Text)]
    pub namespace: String,
    #[diesel(sql_type = Text)]
    pub requested_by: String,
    #[diesel(sql_type = Text)]
    pub attributes: String,
    #[diesel(sql_type = BigInt)]
    pub timeout_seconds: i64,
    #[diesel(sql_type = BigInt)]
    pub prune: i64,
    #[diesel(sql_type = BigInt)]
    pub rollback_on_failure: i64,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Text)]
    pub created_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub started_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub finished_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub diagnostics: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub rollback_of: Option<String>,
}

/// A whole deployment row.
#[derive(Debug, QueryableByName)]
pub(crate) struct DeploymentRow {
    #[diesel(embed)]
    pub summary: DeploymentSummaryRow,
    #[diesel(sql_type = Text)]
    pub manifest: String,
    #[diesel(sql_type = Text)]
    pub objects: String,
}

/// One timeline entry as read back.
#[derive(Debug, QueryableByName)]
pub(crate) struct TimelineRow {
    #[diesel(sql_type = Text)]
    pub deployment_id: String,
    #[diesel(sql_type = Text)]
    pub at: String,
    #[diesel(sql_type = Text)]
    pub phase: String,
    #[diesel(sql_type = Text)]
    pub message: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub resource: Option<String>,
}

/// The insert of a whole deployment row, its binds in [`deployment_binds`]' order.
pub(crate) const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments (id, release_id, service, \
     version, cluster, namespace, requested_by, attributes, timeout_seconds, prune, \
     rollback_on_failure, manifest, objects, status, created_at, started_at, finished_at, \
     diagnostics, rollback_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The insert of a timeline entry, its binds in [`timeline_binds`]' order.
pub(crate) const INSERT_TIMELINE: &str = "INSERT INTO deployment_timeline \
     (deployment_id, at, phase, message, resource) VALUES (?, ?, ?, ?, ?)";

/// The binds of [`INSERT_DEPLOYMENT`] for `deployment`.
///
/// # Errors
/// [`RepositoryError`] when a value cannot be stored: a timeout beyond `i64` seconds,
/// or JSON that cannot be written (neither happens with valid domain values).
pub(crate) fn deployment_binds(deployment: &Deployment) -> Result<Vec<Bind>, RepositoryError> {
    let id = deployment.id;
    let unstorable = |column: &'static str| {
        move |error: serde_json::Error| {
            RepositoryError::caused_by(
                format!("the {column} of deployment {id} cannot be stored"),
                error,
            )
        }
    };
    let timeout_seconds = i64::try_from(deployment.options.timeout.as_secs()).map_err(|error| {
        RepositoryError::caused_by(
            format!("the timeout of deployment {id} cannot be stored"),
            error,
        )
    })?;
    Ok(vec![
        uuid_text(id.as_uuid()).into(),
        uuid_text(deployment.release_id.as_uuid()).into(),
        deployment.service.as_str().into(),
        deployment.version.as_str().into(),
        deployment.target.cluster.as_str().into(),
        deployment.target.namespace.as_str().into(),
        deployment.requested_by.as_str().into(),
        serde_json::to_string(&deployment.attributes)
            .map_err(unstorable("attributes"))?
            .into(),
        timeout_seconds.into(),
        deployment.options.prune.into(),
        deployment.options.rollback_on_failure.into(),
        deployment.manifest.clone().into(),
        serde_json::to_string(&deployment.objects)
            .map_err(unstorable("objects"))?
            .into(),
        deployment.status.as_str().into(),
        time_text(deployment.created_at).into(),
        optional_time_text(deployment.started_at).into(),
        optional_time_text(deployment.finished_at).into(),
        diagnostics_json(id, deployment.diagnostics.as_ref())?.into(),
        deployment
            .rollback_of
            .map(|of| uuid_text(of.as_uuid()))
            .into(),
    ])
}

/// The binds of [`INSERT_TIMELINE`] for `entry` of deployment `id`.
pub(crate) fn timeline_binds(id: DeploymentId, entry: &TimelineEntry) -> Vec<Bind> {
    vec![
        uuid_text(id.as_uuid()).into(),
        time_text(entry.at).into(),
        entry.phase.as_str().into(),
        entry.message.clone().into(),
        entry.resource.clone().into(),
    ]
}

/// Diagnostics as the `diagnostics` column stores them.
pub(crate) fn diagnostics_json(
    id: DeploymentId,
    diagnostics: Option<&Diagnostics>,
) -> Result<Option<String>, RepositoryError> {
    diagnostics
        .map(serde_json::to_string)
        .transpose()
        .map_err(|error| {
            RepositoryError::caused_by(
                format!("the diagnostics of deployment {id} cannot be stored"),
                error,
            )
        })
}

impl DeploymentRow {
    /// The deployment this row holds, with `timeline`.
    pub(crate) fn into_deployment(
        self,
        timeline: Vec<TimelineEntry>,
    ) -> Result<Deployment, RepositoryError> {
        let id = parse_uuid(&self.summary.id)?;
        let objects = stored_objects(id, &self.objects)?;
        let mut deployment = self.summary.into_deployment(timeline)?;
        deployment.manifest = self.manifest;
        deployment.objects = objects;
        Ok(deployment)
    }
}

impl DeploymentSummaryRow {
    /// The deployment this row holds, with `timeline` and without manifest and objects.
    pub(crate) fn into_deployment(
        self,
        timeline: Vec<TimelineEntry>,
    ) -> Result<Deployment, RepositoryError> {
        let id = parse_uuid(&self.id)?;
        let timeout = u64::try_from(self.timeout_seconds).map_err(|error| {
            RepositoryError::caused_by(
                format!("the stored timeout of deployment {id} is not valid"),
                error,
            )
        })?;
        let diagnostics = self
            .diagnostics
            .map(|json| stored::<Diagnostics, _>(id, "diagnostics", serde_json::from_str(&json)))
            .transpose()?;
        Ok(Deployment {
            id: DeploymentId::from_uuid(id),
            release_id: ReleaseId::from_uuid(parse_uuid(&self.release_id)?),
            service: stored(id, "service", ServiceName::parse(&self.service))?,
            version: stored(id, "version", Version::parse(&self.version))?,
            target: Target {
                cluster: stored(id, "cluster", ClusterName::parse(&self.cluster))?,
                namespace: stored(id, "namespace", Namespace::parse(&self.namespace))?,
            },
            // Actors were normalised by `Actor::named` before they were stored.
            requested_by: Actor::named(&self.requested_by),
            attributes: stored::<BTreeMap<String, String>, _>(
                id,
                "attributes",
                serde_json::from_str(&self.attributes),
            )?,
            options: DeploymentOptions {
                timeout: Duration::from_secs(timeout),
                prune: self.prune != 0,
                rollback_on_failure: self.rollback_on_failure != 0,
            },
            manifest: String::new(),
            objects: Vec::new(),
            status: stored_status(id, "status", &self.status)?,
            created_at: parse_time(&self.created_at)?,
            started_at: parse_optional_time(self.started_at.as_deref())?,
            finished_at: parse_optional_time(self.finished_at.as_deref())?,
            timeline,
            diagnostics,
            rollback_of: self
                .rollback_of
                .as_deref()
                .map(parse_uuid)
                .transpose()?
                .map(DeploymentId::from_uuid),
        })
    }
}

impl TimelineRow {
    pub(crate) fn into_entry(self) -> Result<TimelineEntry, RepositoryError> {
        let id = parse_uuid(&self.deployment_id)?;
        Ok(TimelineEntry {
            at: parse_time(&self.at)?,
            phase: stored_status(id, "timeline phase", &self.phase)?,
            message: self.message,
            resource: self.resource,
        })
    }
}

/// A stored value, or why the row holding it is corrupt.
/// Deployment `id`'s objects as stored in its `objects` column (JSON text).
pub(crate) fn stored_objects(
    id: Uuid,
    objects: &str,
) -> Result<Vec<serde_json::Value>, RepositoryError> {
    stored(id, "objects", serde_json::from_str(objects))
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
