//! The whole database as records ([`kubernaut_domain::snapshot`]), read out in batches:
//! what `kubernaut db copy` moves to PostgreSQL when one process is no longer enough.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::snapshot::{
    AccountRecord, AuditRecord, DeploymentRecord, ReleaseRecord, SnapshotBatch, SnapshotCounts,
    TimelineRecord, TokenRecord,
};
use serde_json::Value;

use crate::access_repository::TokenRow;
use crate::audit_repository::AuditRow;
use crate::blocking::query_failed;
use crate::database::SqliteDatabase;
use crate::sql::{Bind, json_list, parse_optional_time, parse_time, parse_uuid, statement};

fn json(text: &str) -> Result<Value, RepositoryError> {
    serde_json::from_str(text).map_err(|error| {
        RepositoryError::caused_by(format!("stored JSON {text:?} is not valid"), error)
    })
}

fn optional_uuid(text: Option<String>) -> Result<Option<uuid::Uuid>, RepositoryError> {
    text.as_deref().map(parse_uuid).transpose()
}

#[derive(QueryableByName)]
struct AccountRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Text)]
    created_by: String,
}

#[derive(QueryableByName)]
struct GrantRow {
    #[diesel(sql_type = Text)]
    account: String,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    scope: String,
}

#[derive(QueryableByName)]
struct ReleaseRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    image: String,
    #[diesel(sql_type = Text)]
    template: String,
    #[diesel(sql_type = Text)]
    required_variables: String,
    #[diesel(sql_type = Text)]
    attributes: String,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Text)]
    created_by: String,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    image_digest: Option<String>,
}

#[derive(QueryableByName)]
struct DeploymentRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    release_id: String,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    cluster: String,
    #[diesel(sql_type = Text)]
    namespace: String,
    #[diesel(sql_type = Text)]
    requested_by: String,
    #[diesel(sql_type = Text)]
    attributes: String,
    #[diesel(sql_type = BigInt)]
    timeout_seconds: i64,
    #[diesel(sql_type = BigInt)]
    prune: i64,
    #[diesel(sql_type = BigInt)]
    rollback_on_failure: i64,
    #[diesel(sql_type = Text)]
    manifest: String,
    #[diesel(sql_type = Text)]
    objects: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    started_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    finished_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    diagnostics: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    rollback_of: Option<String>,
}

#[derive(QueryableByName)]
struct TimelineRow {
    #[diesel(sql_type = Text)]
    deployment_id: String,
    #[diesel(sql_type = Text)]
    at: String,
    #[diesel(sql_type = Text)]
    phase: String,
    #[diesel(sql_type = Text)]
    message: String,
    #[diesel(sql_type = Nullable<Text>)]
    resource: Option<String>,
}

/// `SELECT columns FROM table`, keyset-paged on `(time, id)` after `after`, oldest first.
fn page_sql(columns: &str, table: &str, time: &str, after: bool) -> String {
    let filter = if after {
        format!(" WHERE ({time}, id) > (?, ?)")
    } else {
        String::new()
    };
    format!("SELECT {columns} FROM {table}{filter} ORDER BY {time}, id LIMIT ?")
}

impl SqliteDatabase {
    /// Reads every record, kind by kind in [`SnapshotBatch`] order, each kind oldest
    /// first, in batches of at most `batch` records handed to `sink` (blocking; in one
    /// read transaction, so the records are one consistent state).
    ///
    /// # Errors
    /// When the database fails, or `sink` does.
    pub fn export(
        &self,
        batch: usize,
        sink: &mut dyn FnMut(SnapshotBatch) -> Result<(), RepositoryError>,
    ) -> Result<SnapshotCounts, RepositoryError> {
        let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut connection = self.connections().get().map_err(|error| {
            RepositoryError::unavailable("no database connection is available", error)
        })?;
        let mut counts = SnapshotCounts::default();
        connection
            .transaction(|connection| -> Result<(), Failed> {
            let mut send = |batch: SnapshotBatch| {
                counts.add(&batch);
                sink(batch)
            };

            let mut after: Option<String> = None;
            loop {
                let (sql, mut binds) = match &after {
                    Some(name) => (
                        "SELECT name, kind, created_at, created_by FROM accounts WHERE name > ? ORDER BY name LIMIT ?",
                        vec![Bind::from(name.as_str())],
                    ),
                    None => (
                        "SELECT name, kind, created_at, created_by FROM accounts ORDER BY name LIMIT ?",
                        vec![],
                    ),
                };
                binds.push(Bind::from(limit));
                let rows: Vec<AccountRow> = statement(sql, binds)
                    .load(connection)
                    .map_err(query_failed("reading the accounts"))?;
                let Some(last) = rows.last() else { break };
                after = Some(last.name.clone());
                let grants: Vec<GrantRow> = statement(
                    "SELECT account, role, scope FROM account_grants WHERE account IN (SELECT value FROM json_each(?)) ORDER BY account, role, scope",
                    vec![Bind::from(json_list(rows.iter().map(|r| r.name.clone())))],
                )
                .load(connection)
                .map_err(query_failed("reading the grants"))?;
                let accounts = rows
                    .into_iter()
                    .map(|row| {
                        Ok(AccountRecord {
                            grants: grants
                                .iter()
                                .filter(|g| g.account == row.name)
                                .map(|g| (g.role.clone(), g.scope.clone()))
                                .collect(),
                            created_at: parse_time(&row.created_at)?,
                            name: row.name,
                            kind: row.kind,
                            created_by: row.created_by,
                        })
                    })
                    .collect::<Result<_, RepositoryError>>()?;
                send(SnapshotBatch::Accounts(accounts))?;
            }

            let mut after: Option<(String, String)> = None;
            loop {
                let rows: Vec<TokenRow> = paged(
                    connection,
                    "id, account, name, hint, token_hash, created_at, created_by, expires_at, last_used_at, revoked_at, revoked_by",
                    "api_tokens",
                    "created_at",
                    after.as_ref(),
                    limit,
                )?;
                let Some(last) = rows.last() else { break };
                after = Some((last.created_at.clone(), last.id.clone()));
                let tokens = rows
                    .into_iter()
                    .map(|row| {
                        Ok(TokenRecord {
                            id: parse_uuid(&row.id)?,
                            account: row.account,
                            name: row.name,
                            hint: row.hint,
                            token_hash: row.token_hash,
                            created_at: parse_time(&row.created_at)?,
                            created_by: row.created_by,
                            expires_at: parse_time(&row.expires_at)?,
                            last_used_at: parse_optional_time(row.last_used_at.as_deref())?,
                            revoked_at: parse_optional_time(row.revoked_at.as_deref())?,
                            revoked_by: row.revoked_by,
                        })
                    })
                    .collect::<Result<_, RepositoryError>>()?;
                send(SnapshotBatch::Tokens(tokens))?;
            }

            let mut after: Option<(String, String)> = None;
            loop {
                let rows: Vec<ReleaseRow> = paged(
                    connection,
                    "id, service, version, image, template, required_variables, attributes, comment, created_at, created_by, deleted_at, deleted_by, image_digest",
                    "releases",
                    "created_at",
                    after.as_ref(),
                    limit,
                )?;
                let Some(last) = rows.last() else { break };
                after = Some((last.created_at.clone(), last.id.clone()));
                let releases = rows
                    .into_iter()
                    .map(|row| {
                        Ok(ReleaseRecord {
                            id: parse_uuid(&row.id)?,
                            service: row.service,
                            version: row.version,
                            image: row.image,
                            template: row.template,
                            required_variables: serde_json::from_str(&row.required_variables)
                                .map_err(|e| {
                                    RepositoryError::caused_by("stored variables are not a list", e)
                                })?,
                            attributes: json(&row.attributes)?,
                            comment: row.comment,
                            created_at: parse_time(&row.created_at)?,
                            created_by: row.created_by,
                            deleted_at: parse_optional_time(row.deleted_at.as_deref())?,
                            deleted_by: row.deleted_by,
                            image_digest: row.image_digest,
                        })
                    })
                    .collect::<Result<_, RepositoryError>>()?;
                send(SnapshotBatch::Releases(releases))?;
            }

            let mut after: Option<(String, String)> = None;
            loop {
                let rows: Vec<DeploymentRow> = paged(
                    connection,
                    "id, release_id, service, version, cluster, namespace, requested_by, attributes, timeout_seconds, prune, rollback_on_failure, manifest, objects, status, created_at, started_at, finished_at, diagnostics, rollback_of",
                    "deployments",
                    "created_at",
                    after.as_ref(),
                    limit,
                )?;
                let Some(last) = rows.last() else { break };
                after = Some((last.created_at.clone(), last.id.clone()));
                let timeline: Vec<TimelineRow> = statement(
                    "SELECT deployment_id, at, phase, message, resource FROM deployment_timeline WHERE deployment_id IN (SELECT value FROM json_each(?)) ORDER BY deployment_id, seq",
                    vec![Bind::from(json_list(rows.iter().map(|r| r.id.clone())))],
                )
                .load(connection)
                .map_err(query_failed("reading the timelines"))?;
                let deployments = rows
                    .into_iter()
                    .map(|row| {
                        let entries = timeline
                            .iter()
                            .filter(|t| t.deployment_id == row.id)
                            .map(|t| {
                                Ok(TimelineRecord {
                                    at: parse_time(&t.at)?,
                                    phase: t.phase.clone(),
                                    message: t.message.clone(),
                                    resource: t.resource.clone(),
                                })
                            })
                            .collect::<Result<_, RepositoryError>>()?;
                        Ok(DeploymentRecord {
                            id: parse_uuid(&row.id)?,
                            release_id: parse_uuid(&row.release_id)?,
                            service: row.service,
                            version: row.version,
                            cluster: row.cluster,
                            namespace: row.namespace,
                            requested_by: row.requested_by,
                            attributes: json(&row.attributes)?,
                            timeout_seconds: row.timeout_seconds,
                            prune: row.prune != 0,
                            rollback_on_failure: row.rollback_on_failure != 0,
                            manifest: row.manifest,
                            objects: json(&row.objects)?,
                            status: row.status,
                            created_at: parse_time(&row.created_at)?,
                            started_at: parse_optional_time(row.started_at.as_deref())?,
                            finished_at: parse_optional_time(row.finished_at.as_deref())?,
                            diagnostics: row.diagnostics.as_deref().map(json).transpose()?,
                            rollback_of: optional_uuid(row.rollback_of)?,
                            timeline: entries,
                        })
                    })
                    .collect::<Result<_, RepositoryError>>()?;
                send(SnapshotBatch::Deployments(deployments))?;
            }

            let mut after: Option<(String, String)> = None;
            loop {
                let rows: Vec<AuditRow> = paged(
                    connection,
                    "id, at, actor, action, target, request_id, source, details",
                    "audit_log",
                    "at",
                    after.as_ref(),
                    limit,
                )?;
                let Some(last) = rows.last() else { break };
                after = Some((last.at.clone(), last.id.clone()));
                let entries = rows
                    .into_iter()
                    .map(|row| {
                        Ok(AuditRecord {
                            id: parse_uuid(&row.id)?,
                            at: parse_time(&row.at)?,
                            actor: row.actor,
                            action: row.action,
                            target: row.target,
                            request_id: row.request_id,
                            source: row.source,
                            details: json(&row.details)?,
                        })
                    })
                    .collect::<Result<_, RepositoryError>>()?;
                send(SnapshotBatch::Audit(entries))?;
            }
            Ok(())
        })
            .map_err(|Failed(error)| error)?;
        Ok(counts)
    }
}

/// A failure inside the read transaction (diesel's transactions need errors it can make
/// from its own).
struct Failed(RepositoryError);

impl From<diesel::result::Error> for Failed {
    fn from(error: diesel::result::Error) -> Self {
        Self(query_failed("reading the database")(error))
    }
}

impl From<RepositoryError> for Failed {
    fn from(error: RepositoryError) -> Self {
        Self(error)
    }
}

/// One page of `table`, oldest first by `(time, id)`, after `after`.
fn paged<Row: QueryableByName<diesel::sqlite::Sqlite> + 'static>(
    connection: &mut SqliteConnection,
    columns: &str,
    table: &'static str,
    time: &str,
    after: Option<&(String, String)>,
    limit: i64,
) -> Result<Vec<Row>, RepositoryError> {
    let mut binds = Vec::new();
    if let Some((at, id)) = after {
        binds.push(Bind::from(at.as_str()));
        binds.push(Bind::from(id.as_str()));
    }
    binds.push(Bind::from(limit));
    statement(page_sql(columns, table, time, after.is_some()), binds)
        .load(connection)
        .map_err(|error| RepositoryError::caused_by(format!("reading {table} failed"), error))
}
