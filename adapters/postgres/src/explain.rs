//! `EXPLAIN` in front of a query built by diesel, binds and all, so tests (and anyone
//! chasing a slow page) see the plan of the very query the repository runs.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Text;
use diesel::{PgConnection, QueryResult, RunQueryDsl};
use kubernaut_domain::ports::RepositoryError;

use crate::blocking::{query_failed, with_connection};
use crate::database::PgPool;

#[derive(Debug)]
pub(crate) struct Explain<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("EXPLAIN ");
        self.0.walk_ast(out.reborrow())
    }
}

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Explain<Q> {
    type SqlType = Text;
}

impl<Q> RunQueryDsl<PgConnection> for Explain<Q> {}

/// The plan PostgreSQL chooses for the query `build` makes, as `EXPLAIN` prints it.
/// `what` names the query in the error when it fails.
pub(crate) async fn explain_plan<Q, F>(
    pool: &PgPool,
    what: &'static str,
    build: F,
) -> Result<String, RepositoryError>
where
    F: FnOnce() -> Q + Send + 'static,
    Q: QueryFragment<Pg>,
{
    with_connection(pool, move |connection| {
        let lines: Vec<String> = Explain(build())
            .load(connection)
            .map_err(query_failed(what))?;
        Ok(lines.join("\n"))
    })
    .await
}
