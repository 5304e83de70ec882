//! [`ReleaseRepository`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::dsl::{AsSelect, SqlTypeOf, exists};
use diesel::pg::Pg;
use diesel::prelude::*;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::AuditEntry;
use kubernaut_domain::ports::{
    InsertReleaseError, ReleaseRepository, RepositoryError, SoftDeleteOutcome,
};
use kubernaut_domain::release::{
    Release, ReleaseId, ReleaseQuery, ReleaseSummary, ServiceName, Version,
};

use crate::audit_repository::record_audit;
use crate::blocking::{query_failed, with_connection, with_connection_read};
use crate::database::PgPool;
use crate::explain::explain_plan;
use crate::keyset::OlderThan;
use crate::release_row::{ReleaseRow, ReleaseSummaryRow};
use crate::schema::releases;

/// Releases in the `releases` table. Every query runs on tokio's blocking pool, so the
/// async executor never waits on the database.
#[derive(Debug, Clone)]
pub struct PostgresReleaseRepository {
    pool: PgPool,
}

impl PostgresReleaseRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The plan PostgreSQL chooses for [`ReleaseRepository::list_active`] with these
    /// arguments, as `EXPLAIN` prints it: to check that every page is an index seek.
    ///
    /// # Errors
    /// [`RepositoryError`] when the storage fails.
    pub async fn explain_list_active(
        &self,
        query: &ReleaseQuery,
        limit: usize,
    ) -> Result<String, RepositoryError> {
        let query = query.clone();
        explain_plan(&self.pool, "explaining the release listing", move || {
            list_active_query(&query, limit)
        })
        .await
    }
}

type ListActiveQuery =
    releases::BoxedQuery<'static, Pg, SqlTypeOf<AsSelect<ReleaseSummaryRow, Pg>>>;

/// The newest-first listing: the summary columns only (templates can be large), the
/// filters that are set, and the keyset condition as a row comparison so that the
/// `(created_at DESC, id DESC)` indexes serve every page by a seek.
fn list_active_query(query: &ReleaseQuery, limit: usize) -> ListActiveQuery {
    let mut select = releases::table
        .filter(releases::deleted_at.is_null())
        .select(ReleaseSummaryRow::as_select())
        .into_boxed();
    if let Some(service) = &query.service {
        select = select.filter(releases::service.eq(service.as_str().to_owned()));
    }
    if let Some(version) = &query.version {
        select = select.filter(releases::version.eq(version.as_str().to_owned()));
    }
    if let Some(after) = query.created_after {
        select = select.filter(releases::created_at.gt(after));
    }
    if let Some(before) = query.created_before {
        select = select.filter(releases::created_at.lt(before));
    }
    if let Some(cursor) = &query.after {
        select = select.filter(OlderThan::cursor(
            (releases::created_at, releases::id),
            cursor,
        ));
    }
    select
        .order((releases::created_at.desc(), releases::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
}

#[async_trait]
impl ReleaseRepository for PostgresReleaseRepository {
    #[tracing::instrument(skip_all, fields(release.id = %release.id))]
    async fn insert(
        &self,
        release: &Release,
        audit: &AuditEntry,
    ) -> Result<(), InsertReleaseError> {
        let row = ReleaseRow::from_release(release);
        let audit = audit.clone();
        with_connection(&self.pool, move |connection| {
            let inserted = connection
                .transaction(|connection| {
                    // Conflicts with an active release are skipped rather than raised, so
                    // a CI retry leaves no unique-violation error in the server's log.
                    let inserted = diesel::insert_into(releases::table)
                        .values(&row)
                        .on_conflict((releases::service, releases::version))
                        .filter_target(releases::deleted_at.is_null())
                        .do_nothing()
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
        with_connection_read(&self.pool, move |connection| {
            releases::table
                .find(id.as_uuid())
                .filter(releases::deleted_at.is_null())
                .select(ReleaseRow::as_select())
                .first(connection)
                .optional()
                .map_err(query_failed("finding a release"))?
                .map(Release::try_from)
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
        let service = service.as_str().to_owned();
        let version = version.as_str().to_owned();
        with_connection_read(&self.pool, move |connection| {
            releases::table
                .filter(releases::service.eq(&service))
                .filter(releases::version.eq(&version))
                .filter(releases::deleted_at.is_null())
                .select(ReleaseRow::as_select())
                .first(connection)
                .optional()
                .map_err(query_failed("finding a release by version"))?
                .map(Release::try_from)
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
        let query = query.clone();
        with_connection_read(&self.pool, move |connection| {
            list_active_query(&query, limit)
                .load(connection)
                .map_err(query_failed("listing releases"))?
                .into_iter()
                .map(ReleaseSummary::try_from)
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
        with_connection(&self.pool, move |connection| {
            connection
                .transaction(|connection| {
                    let active = releases::table
                        .find(id.as_uuid())
                        .filter(releases::deleted_at.is_null());
                    let deleted = diesel::update(active)
                        .set((releases::deleted_at.eq(at), releases::deleted_by.eq(actor)))
                        .execute(connection)?;
                    if deleted > 0 {
                        record_audit(connection, &audit)?;
                        return Ok(SoftDeleteOutcome::Deleted);
                    }
                    // Nothing active had this id: either it was deleted before, or it
                    // never was.
                    let known = diesel::select(exists(releases::table.find(id.as_uuid())))
                        .get_result::<bool>(connection)?;
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
        with_connection_read(&self.pool, |connection| {
            diesel::sql_query("SELECT 1")
                .execute(connection)
                .map(drop)
                .map_err(query_failed("pinging the database"))
        })
        .await
    }
}
