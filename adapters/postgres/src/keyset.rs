//! The keyset condition of the newest-first listings as one SQL row comparison.
//!
//! `(created_at, id) < ($1, $2)` lets PostgreSQL seek the `(created_at DESC, id DESC)`
//! index straight to the cursor; the equivalent `created_at < $1 OR (created_at = $1
//! AND id < $2)` would filter a scan instead, so deep pages would get slower and slower.
//! diesel has no row comparison, and its `sql` literal would keep the listing out of
//! the prepared statement cache, hence this small expression of our own. It takes the
//! table's two columns as type parameters, so every listing (releases, deployments)
//! shares it.

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

/// `(created_at_column, id_column) < (cursor.created_at, cursor.id)`.
#[derive(Debug, Clone, Copy, QueryId)]
pub(crate) struct OlderThan<CreatedAt, Id> {
    created_at_column: CreatedAt,
    id_column: Id,
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl<CreatedAt, Id> OlderThan<CreatedAt, Id>
where
    CreatedAt: Expression<SqlType = Timestamptz>,
    Id: Expression<SqlType = SqlUuid>,
{
    /// The rows of `(created_at, id)` strictly after `cursor` in newest-first order.
    pub(crate) fn cursor(columns: (CreatedAt, Id), cursor: &Cursor) -> Self {
        let (created_at_column, id_column) = columns;
        Self {
            created_at_column,
            id_column,
            created_at: cursor.created_at,
            id: cursor.id,
        }
    }
}

impl<CreatedAt, Id> Expression for OlderThan<CreatedAt, Id> {
    type SqlType = Bool;
}

impl<CreatedAt, Id> ValidGrouping<()> for OlderThan<CreatedAt, Id> {
    type IsAggregate = is_aggregate::Never;
}

impl<QS, CreatedAt, Id> AppearsOnTable<QS> for OlderThan<CreatedAt, Id>
where
    CreatedAt: AppearsOnTable<QS>,
    Id: AppearsOnTable<QS>,
{
}

impl<QS, CreatedAt, Id> SelectableExpression<QS> for OlderThan<CreatedAt, Id>
where
    CreatedAt: SelectableExpression<QS>,
    Id: SelectableExpression<QS>,
{
}

impl<CreatedAt, Id> QueryFragment<Pg> for OlderThan<CreatedAt, Id>
where
    CreatedAt: QueryFragment<Pg>,
    Id: QueryFragment<Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(");
        self.created_at_column.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.id_column.walk_ast(out.reborrow())?;
        out.push_sql(") < (");
        out.push_bind_param::<Timestamptz, _>(&self.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}
