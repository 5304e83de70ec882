//! Releases as rows of the `releases` table, and the conversions to and from the
//! domain. Rows read back were written by us, so a value that breaks a domain rule
//! means the table was changed behind Kubernaut's back: a [`RepositoryError`], never a
//! panic.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::release::{
    Attributes, ImageRef, Release, ReleaseContent, ReleaseId, ReleaseSummary, ServiceName, Version,
};
use kubernaut_domain::template::ManifestTemplate;
use uuid::Uuid;

use crate::schema::releases;

/// A whole release, as inserted and as read back by id.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = releases, check_for_backend(diesel::pg::Pg))]
// `None` is written as NULL rather than DEFAULT: a DEFAULT keyword would make diesel
// refuse to keep the insert in its prepared statement cache.
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct ReleaseRow {
    pub id: Uuid,
    pub service: String,
    pub version: String,
    pub image: String,
    pub template: String,
    pub required_variables: Vec<String>,
    pub attributes: serde_json::Value,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<String>,
    pub image_digest: Option<String>,
}

/// A release as listings show it: every column but the template's.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = releases, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ReleaseSummaryRow {
    pub id: Uuid,
    pub service: String,
    pub version: String,
    pub image: String,
    pub attributes: serde_json::Value,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub image_digest: Option<String>,
}

impl ReleaseRow {
    /// # Errors
    /// [`RepositoryError`] when the attributes cannot be written as JSON (they always
    /// can; the error exists so that no panic is needed to say so).
    pub(crate) fn from_release(release: &Release) -> Result<Self, RepositoryError> {
        let attributes = serde_json::to_value(release.attributes()).map_err(|error| {
            RepositoryError::caused_by(
                format!("the attributes of release {} cannot be stored", release.id),
                error,
            )
        })?;
        Ok(Self {
            id: release.id.as_uuid(),
            service: release.service.as_str().to_owned(),
            version: release.version.as_str().to_owned(),
            image: release.image().as_str().to_owned(),
            template: release.template().source().to_owned(),
            required_variables: release
                .template()
                .required_variables()
                .iter()
                .cloned()
                .collect(),
            attributes,
            comment: release.comment.clone(),
            created_at: release.created_at,
            created_by: release.created_by.as_str().to_owned(),
            deleted_at: release.deleted_at,
            deleted_by: release
                .deleted_by
                .as_ref()
                .map(|actor| actor.as_str().to_owned()),
            image_digest: release.image_digest.clone(),
        })
    }
}

impl TryFrom<ReleaseRow> for Release {
    type Error = RepositoryError;

    fn try_from(row: ReleaseRow) -> Result<Self, Self::Error> {
        let id = row.id;
        let deleted_by = row.deleted_by.as_deref().map(stored_actor);
        Ok(Self {
            id: ReleaseId::from_uuid(id),
            service: stored(id, "service", ServiceName::parse(&row.service))?,
            version: stored(id, "version", Version::parse(&row.version))?,
            content: ReleaseContent {
                image: stored(id, "image", ImageRef::parse(&row.image))?,
                template: ManifestTemplate::from_trusted(
                    row.template,
                    row.required_variables.into_iter().collect::<BTreeSet<_>>(),
                ),
                attributes: stored_attributes(id, row.attributes)?,
            },
            comment: row.comment,
            created_at: row.created_at,
            created_by: stored_actor(&row.created_by),
            deleted_at: row.deleted_at,
            deleted_by,
            image_digest: row.image_digest,
        })
    }
}

impl TryFrom<ReleaseSummaryRow> for ReleaseSummary {
    type Error = RepositoryError;

    fn try_from(row: ReleaseSummaryRow) -> Result<Self, Self::Error> {
        let id = row.id;
        Ok(Self {
            id: ReleaseId::from_uuid(id),
            service: stored(id, "service", ServiceName::parse(&row.service))?,
            version: stored(id, "version", Version::parse(&row.version))?,
            // Checked when stored; listings skip the grammar (a quarter of their CPU).
            image: ImageRef::from_trusted(row.image),
            attributes: stored_attributes(id, row.attributes)?,
            comment: row.comment,
            created_at: row.created_at,
            created_by: stored_actor(&row.created_by),
            image_digest: row.image_digest,
        })
    }
}

/// A stored value, or why the row holding it is corrupt.
fn stored<T, E>(id: Uuid, column: &str, parsed: Result<T, E>) -> Result<T, RepositoryError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parsed.map_err(|error| {
        RepositoryError::caused_by(
            format!("the stored {column} of release {id} is not valid"),
            error,
        )
    })
}

fn stored_attributes(id: Uuid, json: serde_json::Value) -> Result<Attributes, RepositoryError> {
    stored(id, "attributes", serde_json::from_value(json))
}

/// Actors were normalised by [`Actor::named`] before they were stored, so naming them
/// again gives back the same actor.
fn stored_actor(name: &str) -> Actor {
    Actor::named(name)
}
