//! The audit trail in the `audit_log` table: [`record_audit`], which the other
//! repositories call inside the transaction of each change, and [`AuditRepository`],
//! which reads it back.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::dsl::{AsSelect, SqlTypeOf};
use diesel::pg::Pg;
use diesel::prelude::*;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::ports::{AuditRepository, RepositoryError};
use uuid::Uuid;

use crate::blocking::{query_failed, with_connection_read};
use crate::database::PgPool;
use crate::explain::explain_plan;
use crate::keyset::OlderThan;
use crate::schema::audit_log;

/// One audit record as a row of `audit_log`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log, check_for_backend(Pg))]
// `None` is written as NULL rather than DEFAULT, so the insert stays prepared.
#[diesel(treat_none_as_default_value = false)]
struct AuditRow {
    id: Uuid,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    request_id: Option<String>,
    source: Option<String>,
    details: serde_json::Value,
}

impl AuditRow {
    fn from_entry(entry: &AuditEntry) -> Self {
        Self {
            id: entry.id,
            at: entry.at,
            actor: entry.actor.as_str().to_owned(),
            action: entry.action.as_str().to_owned(),
            target: entry.target.clone(),
            request_id: entry.request_id.clone(),
            source: entry.source.clone(),
            details: entry.details.clone(),
        }
    }

    fn into_entry(self) -> Result<AuditEntry, RepositoryError> {
        let action = AuditAction::parse(&self.action).ok_or_else(|| {
            RepositoryError::new(format!(
                "audit record {} has the unknown action {:?}",
                self.id, self.action
            ))
        })?;
        Ok(AuditEntry {
            id: self.id,
            at: self.at,
            actor: Actor::named(&self.actor),
            action,
            target: self.target,
            request_id: self.request_id,
            source: self.source,
            details: self.details,
        })
    }
}

/// Stores `entry` in the audit trail. Call it inside the transaction of the change it
/// records, so that the change and its record are stored together or not at all.
///
/// # Errors
/// The database's, to roll the transaction back.
pub(crate) fn record_audit(connection: &mut PgConnection, entry: &AuditEntry) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values(AuditRow::from_entry(entry))
        .execute(connection)
        .map(drop)
}

/// `pattern` with LIKE's special characters escaped (`\` being LIKE's escape).
fn escape_like(pattern: &str) -> String {
    let mut escaped = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

type ListQuery = audit_log::BoxedQuery<'static, Pg, SqlTypeOf<AsSelect<AuditRow, Pg>>>;

/// The newest-first listing: the filters that are set, and the keyset condition as a
/// row comparison so that the `(at DESC, id DESC)` indexes serve every page by a seek.
fn list_query(query: &AuditQuery, limit: usize) -> ListQuery {
    let mut select = audit_log::table.select(AuditRow::as_select()).into_boxed();
    if let Some(actor) = &query.actor {
        select = select.filter(audit_log::actor.eq(actor.as_str().to_owned()));
    }
    if let Some(action) = query.action {
        select = select.filter(audit_log::action.eq(action.as_str()));
    }
    if let Some(target) = &query.target {
        if target.ends_with('/') {
            select = select.filter(audit_log::target.like(format!("{}%", escape_like(target))));
        } else {
            select = select.filter(audit_log::target.eq(target.clone()));
        }
    }
    if let Some(since) = query.since {
        select = select.filter(audit_log::at.ge(since));
    }
    if let Some(until) = query.until {
        select = select.filter(audit_log::at.lt(until));
    }
    if let Some(cursor) = &query.after {
        select = select.filter(OlderThan::cursor((audit_log::at, audit_log::id), cursor));
    }
    select
        .order((audit_log::at.desc(), audit_log::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The audit trail in the `audit_log` table, read on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct PostgresAuditRepository {
    pool: PgPool,
}

impl PostgresAuditRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The plan PostgreSQL chooses for [`AuditRepository::list`] with these arguments,
    /// as `EXPLAIN` prints it.
    ///
    /// # Errors
    /// [`RepositoryError`] when the storage fails.
    pub async fn explain_list(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> Result<String, RepositoryError> {
        let query = query.clone();
        explain_plan(&self.pool, "explaining the audit listing", move || {
            list_query(&query, limit)
        })
        .await
    }
}

#[async_trait]
impl AuditRepository for PostgresAuditRepository {
    #[tracing::instrument(skip_all, fields(limit))]
    async fn list(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        let query = query.clone();
        with_connection_read(&self.pool, move |connection| {
            list_query(&query, limit)
                .load(connection)
                .map_err(query_failed("listing the audit trail"))?
                .into_iter()
                .map(AuditRow::into_entry)
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("deployment/"), "deployment/");
        assert_eq!(escape_like(r"a_b%c\d"), r"a\_b\%c\\d");
    }
}
