//! The audit trail in the `audit_log` table: [`record_audit`], which the other
//! repositories call inside the transaction of each change, and [`AuditRepository`],
//! which reads it back.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use diesel::sqlite::SqliteConnection;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::ports::{AuditRepository, RepositoryError};

use crate::blocking::{query_failed, with_connection};
use crate::database::SqliteDatabase;
use crate::sql::{Bind, parse_time, parse_uuid, statement, time_text, uuid_text};

/// One audit record as a row of `audit_log`.
#[derive(Debug, QueryableByName)]
pub(crate) struct AuditRow {
    #[diesel(sql_type = Text)]
    pub(crate) id: String,
    #[diesel(sql_type = Text)]
    pub(crate) at: String,
    #[diesel(sql_type = Text)]
    pub(crate) actor: String,
    #[diesel(sql_type = Text)]
    pub(crate) action: String,
    #[diesel(sql_type = Text)]
    pub(crate) target: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) request_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) source: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) details: String,
}

impl AuditRow {
    fn into_entry(self) -> Result<AuditEntry, RepositoryError> {
        let action = AuditAction::parse(&self.action).ok_or_else(|| {
            RepositoryError::new(format!(
                "audit record {} has the unknown action {:?}",
                self.id, self.action
            ))
        })?;
        Ok(AuditEntry {
            id: parse_uuid(&self.id)?,
            at: parse_time(&self.at)?,
            actor: Actor::named(&self.actor),
            action,
            target: self.target,
            request_id: self.request_id,
            source: self.source,
            details: serde_json::from_str(&self.details).map_err(|error| {
                RepositoryError::caused_by(
                    format!("the details of audit record {} are not JSON", self.id),
                    error,
                )
            })?,
        })
    }
}

/// Stores `entry` in the audit trail. Call it inside the transaction of the change it
/// records, so that the change and its record are stored together or not at all.
///
/// # Errors
/// The database's, to roll the transaction back.
pub(crate) fn record_audit(
    connection: &mut SqliteConnection,
    entry: &AuditEntry,
) -> QueryResult<()> {
    statement(
        "INSERT INTO audit_log (id, at, actor, action, target, request_id, source, details) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            uuid_text(entry.id).into(),
            time_text(entry.at).into(),
            entry.actor.as_str().into(),
            entry.action.as_str().into(),
            entry.target.clone().into(),
            entry.request_id.clone().into(),
            entry.source.clone().into(),
            entry.details.to_string().into(),
        ],
    )
    .execute(connection)
    .map(drop)
}

/// The audit trail in the `audit_log` table.
#[derive(Debug, Clone)]
pub struct SqliteAuditRepository {
    database: SqliteDatabase,
}

impl SqliteAuditRepository {
    pub(crate) fn new(database: SqliteDatabase) -> Self {
        Self { database }
    }
}

#[async_trait]
impl AuditRepository for SqliteAuditRepository {
    #[tracing::instrument(skip_all, fields(limit))]
    async fn list(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        let mut sql = String::from("SELECT * FROM audit_log WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(actor) = &query.actor {
            sql.push_str(" AND actor = ?");
            binds.push(actor.as_str().into());
        }
        if let Some(action) = query.action {
            sql.push_str(" AND action = ?");
            binds.push(action.as_str().into());
        }
        if let Some(target) = &query.target {
            if target.ends_with('/') {
                // A prefix, compared bytewise (SQLite's LIKE ignores the case of ASCII
                // letters; PostgreSQL's does not).
                sql.push_str(" AND substr(target, 1, length(?)) = ?");
                binds.push(target.clone().into());
                binds.push(target.clone().into());
            } else {
                sql.push_str(" AND target = ?");
                binds.push(target.clone().into());
            }
        }
        if let Some(since) = query.since {
            sql.push_str(" AND at >= ?");
            binds.push(time_text(since).into());
        }
        if let Some(until) = query.until {
            sql.push_str(" AND at < ?");
            binds.push(time_text(until).into());
        }
        if let Some(cursor) = &query.after {
            sql.push_str(" AND (at, id) < (?, ?)");
            binds.push(time_text(cursor.created_at).into());
            binds.push(uuid_text(cursor.id).into());
        }
        sql.push_str(" ORDER BY at DESC, id DESC LIMIT ?");
        binds.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        with_connection(&self.database, move |connection| {
            statement(sql, binds)
                .load::<AuditRow>(connection)
                .map_err(query_failed("listing the audit trail"))?
                .into_iter()
                .map(AuditRow::into_entry)
                .collect()
        })
        .await
    }
}
