//! [`ReleaseRepository`] on SQLite.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::AuditEntry;
use kubernaut_domain::ports::{
    InsertReleaseError, ReleaseRepository, RepositoryError, SoftDeleteOutcome,
};
use kubernaut_domain::release::{
    Attributes, ImageRef, Release, ReleaseContent, ReleaseId, ReleaseQuery, ReleaseSummary,
    ServiceName, Version,
};
use kubernaut_domain::template::ManifestTemplate;
use uuid::Uuid;

use crate::audit_repository::record_audit;
use crate::blocking::{query_failed, with_connection};
use crate::database::SqliteDatabase;
use crate::sql::{
    Bind, optional_time_text, parse_optional_time, parse_time, parse_uuid, statement, time_text,
    uuid_text,
};

/// The columns of a listed release: every one but the template's.
const SUMMARY_COLUMNS: &str =
    "id, service, version, image, attributes, comment, created_at, created_by, image_digest";

/// A release as listings show it.
#[derive(Debug, QueryableByName)]
struct ReleaseSummaryRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    image: String,
    #[diesel(sql_type = Text)]
    attributes: String,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Text)]
    created_by: String,
    #[diesel(sql_type = Nullable<Text>)]
    image_digest: Option<String>,
}

/// A whole release.
#[derive(Debug, QueryableByName)]
struct ReleaseRow {
    #[diesel(embed)]
    summary: ReleaseSummaryRow,
    #[diesel(sql_type = Text)]
    template: String,
    #[diesel(sql_type = Text)]
    required_variables: String,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_by: Option<String>,
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
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

impl ReleaseSummaryRow {
    fn into_summary(self) -> Result<ReleaseSummary, RepositoryError> {
        let id = parse_uuid(&self.id)?;
        Ok(ReleaseSummary {
            id: ReleaseId::from_uuid(id),
            service: stored(id, "service", ServiceName::parse(&self.service))?,
            version: stored(id, "version", Version::parse(&self.version))?,
            // Checked when stored.
            image: ImageRef::from_trusted(self.image),
            attributes: stored::<Attributes, _>(
                id,
                "attributes",
                serde_json::from_str(&self.attributes),
            )?,
            comment: self.comment,
            created_at: parse_time(&self.created_at)?,
            // Actors were normalised by `Actor::named` before they were stored.
            created_by: Actor::named(&self.created_by),
            image_digest: self.image_digest,
        })
    }
}

impl ReleaseRow {
    fn into_release(self) -> Result<Release, RepositoryError> {
        let summary = self.summary.into_summary()?;
        let id = summary.id.as_uuid();
        let required: BTreeSet<String> = stored(
            id,
            "required variables",
            serde_json::from_str(&self.required_variables),
        )?;
        Ok(Release {
            id: summary.id,
            service: summary.service,
            version: summary.version,
            content: ReleaseContent {
                image: summary.image,
                template: ManifestTemplate::from_trusted(self.template, required),
                attributes: summary.attributes,
            },
            comment: summary.comment,
            created_at: summary.created_at,
            created_by: summary.created_by,
            deleted_at: parse_optional_time(self.deleted_at.as_deref())?,
            deleted_by: self.deleted_by.as_deref().map(Actor::named),
            image_digest: summary.image_digest,
        })
    }
}

/// Releases in the `releases` table.
#[derive(Debug, Clone)]
pub struct SqliteReleaseRepository {
    database: SqliteDatabase,
}

impl SqliteReleaseRepository {
    pub(crate) fn new(database: SqliteDatabase) -> Self {
        Self { database }
    }
}

/// The binds of a new release's row, in the column order of the insert.
fn insert_binds(release: &Release) -> Result<Vec<Bind>, RepositoryError> {
    let unstorable = |error| {
        RepositoryError::caused_by(format!("release {} cannot be stored", release.id), error)
    };
    Ok(vec![
        uuid_text(release.id.as_uuid()).into(),
        release.service.as_str().into(),
        release.version.as_str().into(),
        release.image().as_str().into(),
        release.template().source().into(),
        serde_json::to_string(release.template().required_variables())
            .map_err(unstorable)?
            .into(),
        serde_json::to_string(release.attributes())
            .map_err(unstorable)?
            .into(),
        release.comment.clone().into(),
        time_text(release.created_at).into(),
        release.created_by.as_str().into(),
        optional_time_text(release.deleted_at).into(),
        release
            .deleted_by
            .as_ref()
            .map(|actor| actor.as_str().to_owned())
            .into(),
        release.image_digest.clone().into(),
    ])
}

#[async_trait]
impl ReleaseRepository for SqliteReleaseRepository {
    #[tracing::instrument(skip_all, fields(release.id = %release.id))]
    async fn insert(
        &self,
        release: &Release,
        audit: &AuditEntry,
    ) -> Result<(), InsertReleaseError> {
        let binds = insert_binds(release)?;
        let audit = audit.clone();
        with_connection(&self.database, move |connection| {
            let inserted = connection
                .immediate_transaction(|connection| {
                    // A conflict with an active release is skipped rather than raised.
                    let inserted = statement(
                        "INSERT INTO releases (id, service, version, image, template, \
                         required_variables, attributes, comment, created_at, created_by, \
                         deleted_at, deleted_by, image_digest) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                         ON CONFLICT (service, version) WHERE deleted_at IS NULL DO NOTHING",
                        binds,
                    )
                    .execute(connection)?;
                    if inserted > 0 {
                        record_audit(connection, &audit)?;
                    }
                    Ok(inserted)
                })
                .map_err(query_failed("inserting a release"))?;
            if inserted == 0 {
                Err(InsertReleaseError::Duplicate)
            } else {
                Ok(())
            }
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn find_active(&self, id: ReleaseId) -> Result<Option<Release>, RepositoryError> {
        with_connection(&self.database, move |connection| {
            statement(
                "SELECT * FROM releases WHERE id = ? AND deleted_at IS NULL",
                vec![uuid_text(id.as_uuid()).into()],
            )
            .get_result::<ReleaseRow>(connection)
            .optional()
            .map_err(query_failed("finding a release"))?
            .map(ReleaseRow::into_release)
            .transpose()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(%service, %version))]
    async fn find_active_by_version(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<Option<Release>, RepositoryError> {
        let binds = vec![service.as_str().into(), version.as_str().into()];
        with_connection(&self.database, move |connection| {
            statement(
                "SELECT * FROM releases WHERE service = ? AND version = ? AND deleted_at IS NULL",
                binds,
            )
            .get_result::<ReleaseRow>(connection)
            .optional()
            .map_err(query_failed("finding a release by version"))?
            .map(ReleaseRow::into_release)
            .transpose()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn list_active(
        &self,
        query: &ReleaseQuery,
        limit: usize,
    ) -> Result<Vec<ReleaseSummary>, RepositoryError> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM releases WHERE deleted_at IS NULL");
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(service) = &query.service {
            sql.push_str(" AND service = ?");
            binds.push(service.as_str().into());
        }
        if let Some(version) = &query.version {
            sql.push_str(" AND version = ?");
            binds.push(version.as_str().into());
        }
        if let Some(after) = query.created_after {
            sql.push_str(" AND created_at > ?");
            binds.push(time_text(after).into());
        }
        if let Some(before) = query.created_before {
            sql.push_str(" AND created_at < ?");
            binds.push(time_text(before).into());
        }
        if let Some(cursor) = &query.after {
            sql.push_str(" AND (created_at, id) < (?, ?)");
            binds.push(time_text(cursor.created_at).into());
            binds.push(uuid_text(cursor.id).into());
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
        binds.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        with_connection(&self.database, move |connection| {
            statement(sql, binds)
                .load::<ReleaseSummaryRow>(connection)
                .map_err(query_failed("listing releases"))?
                .into_iter()
                .map(ReleaseSummaryRow::into_summary)
                .collect()
        })
        .await
    }

    #[tracing::instrument(skip(self, actor, audit))]
    async fn soft_delete(
        &self,
        id: ReleaseId,
        actor: &Actor,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<SoftDeleteOutcome, RepositoryError> {
        let actor = actor.as_str().to_owned();
        let audit = audit.clone();
        let id = uuid_text(id.as_uuid());
        with_connection(&self.database, move |connection| {
            connection
                .immediate_transaction(|connection| {
                    let deleted = statement(
                        "UPDATE releases SET deleted_at = ?, deleted_by = ? \
                         WHERE id = ? AND deleted_at IS NULL",
                        vec![time_text(at).into(), actor.into(), id.clone().into()],
                    )
                    .execute(connection)?;
                    if deleted > 0 {
                        record_audit(connection, &audit)?;
                        return Ok(SoftDeleteOutcome::Deleted);
                    }
                    let known = statement(
                        "SELECT count(*) AS count FROM releases WHERE id = ?",
                        vec![id.into()],
                    )
                    .get_result::<Count>(connection)?
                    .count
                        > 0;
                    Ok(if known {
                        SoftDeleteOutcome::AlreadyDeleted
                    } else {
                        SoftDeleteOutcome::NotFound
                    })
                })
                .map_err(query_failed("deleting a release"))
        })
        .await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        with_connection(&self.database, |connection| {
            diesel::sql_query("SELECT 1")
                .execute(connection)
                .map(drop)
                .map_err(query_failed("pinging the database"))
        })
        .await
    }
}
