//! The whole database as records ([`kubernaut_domain::snapshot`]): read out in batches,
//! and written into an empty database in one transaction, ids and times unchanged.
//! `kubernaut db copy` moves an embedded database here with it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::snapshot::{
    AccountRecord, AuditRecord, DeploymentRecord, ImportError, ReleaseRecord, SnapshotBatch,
    SnapshotCounts, TimelineRecord, TokenRecord,
};
use serde_json::Value;
use uuid::Uuid;

use crate::Database;
use crate::schema::{
    account_grants, accounts, api_tokens, audit_log, deployment_timeline, deployments, releases,
};

fn failed(what: &str) -> impl Fn(diesel::result::Error) -> RepositoryError + '_ {
    move |error| RepositoryError::caused_by(format!("could not {what}"), error)
}

impl Database {
    fn snapshot_connection(
        &self,
    ) -> Result<diesel::r2d2::PooledConnection<crate::PgConnectionManager>, RepositoryError> {
        self.pool()
            .get()
            .map_err(|error| RepositoryError::unavailable("no database connection", error))
    }

    /// The first table that holds rows, if any: a copy goes into an empty database only.
    ///
    /// # Errors
    /// When the database fails.
    pub fn first_non_empty_table(&self) -> Result<Option<&'static str>, RepositoryError> {
        let mut connection = self.snapshot_connection()?;
        let exists = |connection: &mut PgConnection, table: &str| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                "EXISTS (SELECT 1 FROM {table})"
            )))
            .get_result::<bool>(connection)
            .map_err(failed("look into the tables"))
        };
        for table in [
            "accounts",
            "api_tokens",
            "releases",
            "deployments",
            "audit_log",
        ] {
            if exists(&mut connection, table)? {
                return Ok(Some(table));
            }
        }
        Ok(None)
    }

    /// Reads every record, kind by kind in [`SnapshotBatch`] order, each kind oldest
    /// first, in batches of at most `batch` records handed to `sink` (blocking).
    ///
    /// # Errors
    /// When the database fails, or `sink` does.
    pub fn export(
        &self,
        batch: usize,
        sink: &mut dyn FnMut(SnapshotBatch) -> Result<(), RepositoryError>,
    ) -> Result<SnapshotCounts, RepositoryError> {
        let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut connection = self.snapshot_connection()?;
        let connection = &mut *connection;
        let mut counts = SnapshotCounts::default();
        let mut send = |batch: SnapshotBatch| {
            counts.add(&batch);
            sink(batch)
        };

        let mut after: Option<String> = None;
        loop {
            let mut query = accounts::table
                .select((
                    accounts::name,
                    accounts::kind,
                    accounts::created_at,
                    accounts::created_by,
                ))
                .order(accounts::name)
                .limit(limit)
                .into_boxed();
            if let Some(after) = &after {
                query = query.filter(accounts::name.gt(after.clone()));
            }
            let rows: Vec<(String, String, DateTime<Utc>, String)> = query
                .load(connection)
                .map_err(failed("read the accounts"))?;
            let Some(last) = rows.last() else { break };
            after = Some(last.0.clone());
            let names: Vec<&String> = rows.iter().map(|r| &r.0).collect();
            let grants: Vec<(String, String, String)> = account_grants::table
                .filter(account_grants::account.eq_any(names))
                .order((
                    account_grants::account,
                    account_grants::role,
                    account_grants::scope,
                ))
                .load(connection)
                .map_err(failed("read the grants"))?;
            send(SnapshotBatch::Accounts(
                rows.into_iter()
                    .map(|(name, kind, created_at, created_by)| AccountRecord {
                        grants: grants
                            .iter()
                            .filter(|g| g.0 == name)
                            .map(|g| (g.1.clone(), g.2.clone()))
                            .collect(),
                        name,
                        kind,
                        created_at,
                        created_by,
                    })
                    .collect(),
            ))?;
        }

        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let mut query = api_tokens::table
                .order((api_tokens::created_at, api_tokens::id))
                .limit(limit)
                .into_boxed();
            if let Some((at, id)) = after {
                query = query.filter(
                    api_tokens::created_at
                        .gt(at)
                        .or(api_tokens::created_at.eq(at).and(api_tokens::id.gt(id))),
                );
            }
            let rows: Vec<TokenRow> = query.load(connection).map_err(failed("read the tokens"))?;
            let Some(last) = rows.last() else { break };
            after = Some((last.created_at, last.id));
            send(SnapshotBatch::Tokens(
                rows.into_iter().map(TokenRow::into_record).collect(),
            ))?;
        }

        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let mut query = releases::table
                .order((releases::created_at, releases::id))
                .limit(limit)
                .into_boxed();
            if let Some((at, id)) = after {
                query = query.filter(
                    releases::created_at
                        .gt(at)
                        .or(releases::created_at.eq(at).and(releases::id.gt(id))),
                );
            }
            let rows: Vec<ReleaseRow> = query
                .load(connection)
                .map_err(failed("read the releases"))?;
            let Some(last) = rows.last() else { break };
            after = Some((last.created_at, last.id));
            send(SnapshotBatch::Releases(
                rows.into_iter().map(ReleaseRow::into_record).collect(),
            ))?;
        }

        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let mut query = deployments::table
                .select(DeploymentRow::as_select())
                .order((deployments::created_at, deployments::id))
                .limit(limit)
                .into_boxed();
            if let Some((at, id)) = after {
                query = query.filter(
                    deployments::created_at
                        .gt(at)
                        .or(deployments::created_at.eq(at).and(deployments::id.gt(id))),
                );
            }
            let rows: Vec<DeploymentRow> = query
                .load(connection)
                .map_err(failed("read the deployments"))?;
            let Some(last) = rows.last() else { break };
            after = Some((last.created_at, last.id));
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let timeline: Vec<TimelineRow> = deployment_timeline::table
                .filter(deployment_timeline::deployment_id.eq_any(&ids))
                .order((deployment_timeline::deployment_id, deployment_timeline::seq))
                .select((
                    deployment_timeline::deployment_id,
                    deployment_timeline::at,
                    deployment_timeline::phase,
                    deployment_timeline::message,
                    deployment_timeline::resource,
                ))
                .load(connection)
                .map_err(failed("read the timelines"))?;
            send(SnapshotBatch::Deployments(
                rows.into_iter()
                    .map(|row| {
                        let entries = timeline
                            .iter()
                            .filter(|t| t.0 == row.id)
                            .map(|t| TimelineRecord {
                                at: t.1,
                                phase: t.2.clone(),
                                message: t.3.clone(),
                                resource: t.4.clone(),
                            })
                            .collect();
                        row.into_record(entries)
                    })
                    .collect(),
            ))?;
        }

        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let mut query = audit_log::table
                .order((audit_log::at, audit_log::id))
                .limit(limit)
                .into_boxed();
            if let Some((at, id)) = after {
                query = query.filter(
                    audit_log::at
                        .gt(at)
                        .or(audit_log::at.eq(at).and(audit_log::id.gt(id))),
                );
            }
            let rows: Vec<AuditRow> = query
                .load(connection)
                .map_err(failed("read the audit trail"))?;
            let Some(last) = rows.last() else { break };
            after = Some((last.at, last.id));
            send(SnapshotBatch::Audit(
                rows.into_iter().map(AuditRow::into_record).collect(),
            ))?;
        }
        Ok(counts)
    }

    /// Writes `batches` (in [`SnapshotBatch`] order) into this database, which must be
    /// empty, in one transaction: all of it or, on any failure, nothing.
    ///
    /// # Errors
    /// [`ImportError::NotEmpty`] when a table holds rows; [`ImportError::Source`] when
    /// an item of `batches` says reading failed; else the database's failure.
    pub fn import(
        &self,
        batches: &mut dyn Iterator<Item = Result<SnapshotBatch, String>>,
    ) -> Result<SnapshotCounts, ImportError> {
        if let Some(table) = self.first_non_empty_table()? {
            return Err(ImportError::NotEmpty { table });
        }
        let mut connection = self.snapshot_connection()?;
        connection
            .transaction(|connection| {
                // Nobody writes while the copy does.
                diesel::sql_query(
                    "LOCK TABLE accounts, api_tokens, releases, deployments, audit_log IN EXCLUSIVE MODE",
                )
                .execute(connection)
                .map_err(|e| Failed(failed("lock the tables")(e).into()))?;
                let mut counts = SnapshotCounts::default();
                for batch in batches {
                    let batch = batch.map_err(|e| Failed(ImportError::Source(e)))?;
                    counts.add(&batch);
                    write(connection, batch).map_err(Failed)?;
                }
                Ok(counts)
            })
            .map_err(|Failed(error)| error)
    }
}

/// A timeline entry with its deployment's id.
type TimelineRow = (Uuid, DateTime<Utc>, String, String, Option<String>);

/// An import's failure inside its transaction (diesel's transactions need errors it can
/// make from its own).
struct Failed(ImportError);

impl From<diesel::result::Error> for Failed {
    fn from(error: diesel::result::Error) -> Self {
        Self(failed("write the records")(error).into())
    }
}

fn write(connection: &mut PgConnection, batch: SnapshotBatch) -> Result<(), ImportError> {
    match batch {
        SnapshotBatch::Accounts(records) => {
            let rows: Vec<_> = records
                .iter()
                .map(|a| {
                    (
                        accounts::name.eq(&a.name),
                        accounts::kind.eq(&a.kind),
                        accounts::created_at.eq(a.created_at),
                        accounts::created_by.eq(&a.created_by),
                    )
                })
                .collect();
            diesel::insert_into(accounts::table)
                .values(&rows)
                .execute(connection)
                .map_err(failed("write the accounts"))?;
            let grants: Vec<_> = records
                .iter()
                .flat_map(|a| {
                    a.grants.iter().map(|(role, scope)| {
                        (
                            account_grants::account.eq(&a.name),
                            account_grants::role.eq(role),
                            account_grants::scope.eq(scope),
                        )
                    })
                })
                .collect();
            if !grants.is_empty() {
                diesel::insert_into(account_grants::table)
                    .values(&grants)
                    .execute(connection)
                    .map_err(failed("write the grants"))?;
            }
        }
        SnapshotBatch::Tokens(records) => {
            let rows: Vec<TokenRow> = records.into_iter().map(TokenRow::from).collect();
            diesel::insert_into(api_tokens::table)
                .values(&rows)
                .execute(connection)
                .map_err(failed("write the tokens"))?;
        }
        SnapshotBatch::Releases(records) => {
            let rows: Vec<ReleaseRow> = records.into_iter().map(ReleaseRow::from).collect();
            diesel::insert_into(releases::table)
                .values(&rows)
                .execute(connection)
                .map_err(failed("write the releases"))?;
        }
        SnapshotBatch::Deployments(records) => {
            // A rollback names an older deployment, which came in an earlier batch or
            // earlier in this one: insert in order.
            let mut timeline = Vec::new();
            let mut rows = Vec::with_capacity(records.len());
            for record in records {
                for entry in &record.timeline {
                    timeline.push((
                        deployment_timeline::deployment_id.eq(record.id),
                        deployment_timeline::at.eq(entry.at),
                        deployment_timeline::phase.eq(entry.phase.clone()),
                        deployment_timeline::message.eq(entry.message.clone()),
                        deployment_timeline::resource.eq(entry.resource.clone()),
                    ));
                }
                rows.push(DeploymentRow::from(record));
            }
            diesel::insert_into(deployments::table)
                .values(&rows)
                .execute(connection)
                .map_err(failed("write the deployments"))?;
            for chunk in timeline.chunks(1000) {
                diesel::insert_into(deployment_timeline::table)
                    .values(chunk)
                    .execute(connection)
                    .map_err(failed("write the timelines"))?;
            }
        }
        SnapshotBatch::Audit(records) => {
            let rows: Vec<AuditRow> = records.into_iter().map(AuditRow::from).collect();
            diesel::insert_into(audit_log::table)
                .values(&rows)
                .execute(connection)
                .map_err(failed("write the audit trail"))?;
        }
    }
    Ok(())
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = api_tokens)]
struct TokenRow {
    id: Uuid,
    account: String,
    name: String,
    hint: String,
    token_hash: Vec<u8>,
    created_at: DateTime<Utc>,
    created_by: String,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<String>,
}

impl TokenRow {
    fn into_record(self) -> TokenRecord {
        TokenRecord {
            id: self.id,
            account: self.account,
            name: self.name,
            hint: self.hint,
            token_hash: self.token_hash,
            created_at: self.created_at,
            created_by: self.created_by,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by,
        }
    }
}

impl From<TokenRecord> for TokenRow {
    fn from(r: TokenRecord) -> Self {
        Self {
            id: r.id,
            account: r.account,
            name: r.name,
            hint: r.hint,
            token_hash: r.token_hash,
            created_at: r.created_at,
            created_by: r.created_by,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
        }
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = releases)]
struct ReleaseRow {
    id: Uuid,
    service: String,
    version: String,
    image: String,
    template: String,
    required_variables: Vec<String>,
    attributes: Value,
    comment: Option<String>,
    created_at: DateTime<Utc>,
    created_by: String,
    deleted_at: Option<DateTime<Utc>>,
    deleted_by: Option<String>,
    image_digest: Option<String>,
}

impl ReleaseRow {
    fn into_record(self) -> ReleaseRecord {
        ReleaseRecord {
            id: self.id,
            service: self.service,
            version: self.version,
            image: self.image,
            template: self.template,
            required_variables: self.required_variables,
            attributes: self.attributes,
            comment: self.comment,
            created_at: self.created_at,
            created_by: self.created_by,
            deleted_at: self.deleted_at,
            deleted_by: self.deleted_by,
            image_digest: self.image_digest,
        }
    }
}

impl From<ReleaseRecord> for ReleaseRow {
    fn from(r: ReleaseRecord) -> Self {
        Self {
            id: r.id,
            service: r.service,
            version: r.version,
            image: r.image,
            template: r.template,
            required_variables: r.required_variables,
            attributes: r.attributes,
            comment: r.comment,
            created_at: r.created_at,
            created_by: r.created_by,
            deleted_at: r.deleted_at,
            deleted_by: r.deleted_by,
            image_digest: r.image_digest,
        }
    }
}

/// A deployment's row without the engine's lease (not copied: a fresh lease is taken).
#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = deployments, check_for_backend(diesel::pg::Pg))]
struct DeploymentRow {
    id: Uuid,
    release_id: Uuid,
    service: String,
    version: String,
    cluster: String,
    namespace: String,
    requested_by: String,
    attributes: Value,
    timeout_seconds: i64,
    prune: bool,
    rollback_on_failure: bool,
    manifest: String,
    objects: Value,
    status: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    diagnostics: Option<Value>,
    rollback_of: Option<Uuid>,
}

impl DeploymentRow {
    fn into_record(self, timeline: Vec<TimelineRecord>) -> DeploymentRecord {
        DeploymentRecord {
            id: self.id,
            release_id: self.release_id,
            service: self.service,
            version: self.version,
            cluster: self.cluster,
            namespace: self.namespace,
            requested_by: self.requested_by,
            attributes: self.attributes,
            timeout_seconds: self.timeout_seconds,
            prune: self.prune,
            rollback_on_failure: self.rollback_on_failure,
            manifest: self.manifest,
            objects: self.objects,
            status: self.status,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            diagnostics: self.diagnostics,
            rollback_of: self.rollback_of,
            timeline,
        }
    }
}

impl From<DeploymentRecord> for DeploymentRow {
    fn from(r: DeploymentRecord) -> Self {
        Self {
            id: r.id,
            release_id: r.release_id,
            service: r.service,
            version: r.version,
            cluster: r.cluster,
            namespace: r.namespace,
            requested_by: r.requested_by,
            attributes: r.attributes,
            timeout_seconds: r.timeout_seconds,
            prune: r.prune,
            rollback_on_failure: r.rollback_on_failure,
            manifest: r.manifest,
            objects: r.objects,
            status: r.status,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            diagnostics: r.diagnostics,
            rollback_of: r.rollback_of,
        }
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = audit_log)]
struct AuditRow {
    id: Uuid,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    request_id: Option<String>,
    source: Option<String>,
    details: Value,
}

impl AuditRow {
    fn into_record(self) -> AuditRecord {
        AuditRecord {
            id: self.id,
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            request_id: self.request_id,
            source: self.source,
            details: self.details,
        }
    }
}

impl From<AuditRecord> for AuditRow {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            request_id: r.request_id,
            source: r.source,
            details: r.details,
        }
    }
}
