//! The keyset condition of the newest-first listing as one SQL row comparison.
//!
//! `(created_at, id) < ($1, $2)` lets PostgreSQL seek the `(created_at DESC, id DESC)`
//! index straight to the cursor; the equivalent `created_at < $1 OR (created_at = $1
//! AND id < $2)` would filter a scan instead, so deep pages would get slower and slower.
//! diesel has no row comparison, and its `sql` literal would keep the listing out of
//! the prepared statement cache, hence this small expression of our own.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate,
};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Timestamptz, Uuid as SqlUuid};
use kubernaut_domain::pagination::Cursor;
use uuid::Uuid;

use crate::schema::releases;

/// `(releases.created_at, releases.id) < (cursor.created_at, cursor.id)`.
#[derive(Debug, Clone, Copy, QueryId)]
pub(crate) struct OlderThan {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl OlderThan {
    pub(crate) fn cursor(cursor: &Cursor) -> Self {
        Self {
            created_at: cursor.created_at,
            id: cursor.id,
        }
    }
}

impl Expression for OlderThan {
    type SqlType = Bool;
}

impl ValidGrouping<()> for OlderThan {
    type IsAggregate = is_aggregate::Never;
}

impl AppearsOnTable<releases::table> for OlderThan {}

impl SelectableExpression<releases::table> for OlderThan {}

impl QueryFragment<Pg> for OlderThan {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(");
        releases::created_at.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        releases::id.walk_ast(out.reborrow())?;
        out.push_sql(") < (");
        out.push_bind_param::<Timestamptz, _>(&self.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}
