//! Releases as rows of the `releases` table, and the conversions to and from the
//! domain. Rows read back were written by us, so a value that breaks a domain rule
//! means the table was changed behind Kubernaut's back: a [`RepositoryError`], never a
//! panic.

use std::collections::BTreeSet;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Jsonb;
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
#[diesel(table_name = releases, check_for_backend(Pg))]
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
    pub attributes: StoredAttributes,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<String>,
    pub image_digest: Option<String>,
}

/// A release as listings show it: every column but the template's.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = releases, check_for_backend(Pg))]
pub(crate) struct ReleaseSummaryRow {
    pub id: Uuid,
    pub service: String,
    pub version: String,
    pub image: String,
    pub attributes: StoredAttributes,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub image_digest: Option<String>,
}

/// The `attributes` column, read from JSONB straight into [`Attributes`] (each name
/// checked as it is read) and written straight from them: no `serde_json::Value` in
/// between, which cost listings a seventh of their CPU. A stored value that is not an
/// object of valid names and strings fails the row's query, a [`RepositoryError`].
#[derive(Debug, Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Jsonb)]
pub(crate) struct StoredAttributes(pub Attributes);

/// The version byte PostgreSQL puts before the JSON text of a binary JSONB value.
const JSONB_VERSION: u8 = 1;

impl FromSql<Jsonb, Pg> for StoredAttributes {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((&JSONB_VERSION, json)) => Ok(Self(serde_json::from_slice(json)?)),
            _ => Err("the stored attributes are not JSONB of version 1".into()),
        }
    }
}

impl ToSql<Jsonb, Pg> for StoredAttributes {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[JSONB_VERSION])?;
        serde_json::to_writer(out, &self.0)?;
        Ok(IsNull::No)
    }
}

impl ReleaseRow {
    pub(crate) fn from_release(release: &Release) -> Self {
        Self {
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
            attributes: StoredAttributes(release.attributes().clone()),
            comment: release.comment.clone(),
            created_at: release.created_at,
            created_by: release.created_by.as_str().to_owned(),
            deleted_at: release.deleted_at,
            deleted_by: release
                .deleted_by
                .as_ref()
                .map(|actor| actor.as_str().to_owned()),
            image_digest: release.image_digest.clone(),
        }
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
                // Checked when stored, as the template was; GET by id spent half its
                // CPU in the image grammar.
                image: ImageRef::from_trusted(row.image),
                template: ManifestTemplate::from_trusted(
                    row.template,
                    row.required_variables.into_iter().collect::<BTreeSet<_>>(),
                ),
                attributes: row.attributes.0,
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
            attributes: row.attributes.0,
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

/// Actors were normalised by [`Actor::named`] before they were stored, so naming them
/// again gives back the same actor.
fn stored_actor(name: &str) -> Actor {
    Actor::named(name)
}
