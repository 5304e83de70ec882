//! A deployment's move to a new status as one `UPDATE` of our own.
//!
//! diesel never keeps its `UPDATE` statements in the prepared statement cache, and a
//! transition runs several times per deployment, so this statement is written once,
//! with the differences between transitions carried by binds:
//!
//! ```sql
//! UPDATE deployments
//!    SET status = $to,
//!        started_at = COALESCE(started_at, $started),    -- $at entering `applying`
//!        finished_at = $finished,                        -- $at for a verdict, else NULL
//!        diagnostics = CASE WHEN $verdict THEN $diagnostics ELSE diagnostics END
//!  WHERE id = $id AND status = ANY($from)
//!    AND ($fenced IS FALSE OR lease_fence = $fence)               -- a driver's move
//! ```
//!
//! The `WHERE` makes it a compare-and-set (on the lease too, for a driver), and
//! `finished_at` follows the status, so the `deployments_finished_only_with_a_verdict`
//! constraint holds after every move.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{PgConnection, QueryResult, RunQueryDsl};
use kubernaut_domain::deployment::{DeploymentStatus, Transition};
use uuid::Uuid;

use crate::schema::deployments;

#[derive(Debug, Clone, QueryId)]
pub(crate) struct TransitionUpdate {
    id: Uuid,
    from: Vec<String>,
    to: String,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    verdict: bool,
    diagnostics: Option<serde_json::Value>,
    fenced: bool,
    fence: i64,
}

impl TransitionUpdate {
    /// The move of deployment `id` that `transition` describes, with its diagnostics
    /// already as JSON.
    pub(crate) fn new(
        id: Uuid,
        transition: &Transition,
        diagnostics: Option<serde_json::Value>,
    ) -> Self {
        let verdict = transition.to.is_verdict();
        Self {
            id,
            from: transition
                .from
                .iter()
                .map(|status| status.as_str().to_owned())
                .collect(),
            to: transition.to.as_str().to_owned(),
            started: (transition.to == DeploymentStatus::Applying).then_some(transition.at),
            finished: verdict.then_some(transition.at),
            verdict,
            diagnostics: if verdict { diagnostics } else { None },
            fenced: transition.fence.is_some(),
            fence: transition.fence.map_or(0, |fence| fence.get()),
        }
    }
}

impl QueryFragment<Pg> for TransitionUpdate {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use diesel::Column as _;
        let column = |out: &mut AstPass<'_, 'b, Pg>, name: &str| -> QueryResult<()> {
            out.push_identifier(name)
        };
        out.push_sql("UPDATE ");
        out.push_identifier("deployments")?;
        out.push_sql(" SET ");
        column(&mut out, deployments::status::NAME)?;
        out.push_sql(" = ");
        out.push_bind_param::<Text, _>(&self.to)?;
        out.push_sql(", ");
        column(&mut out, deployments::started_at::NAME)?;
        out.push_sql(" = COALESCE(");
        column(&mut out, deployments::started_at::NAME)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Timestamptz>, _>(&self.started)?;
        out.push_sql("), ");
        column(&mut out, deployments::finished_at::NAME)?;
        out.push_sql(" = ");
        out.push_bind_param::<Nullable<Timestamptz>, _>(&self.finished)?;
        out.push_sql(", ");
        column(&mut out, deployments::diagnostics::NAME)?;
        out.push_sql(" = CASE WHEN ");
        out.push_bind_param::<Bool, _>(&self.verdict)?;
        out.push_sql(" THEN ");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.diagnostics)?;
        out.push_sql(" ELSE ");
        column(&mut out, deployments::diagnostics::NAME)?;
        out.push_sql(" END WHERE ");
        column(&mut out, deployments::id::NAME)?;
        out.push_sql(" = ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(" AND ");
        column(&mut out, deployments::status::NAME)?;
        out.push_sql(" = ANY(");
        out.push_bind_param::<Array<Text>, _>(&self.from)?;
        out.push_sql(") AND (");
        out.push_bind_param::<Bool, _>(&self.fenced)?;
        out.push_sql(" IS FALSE OR ");
        column(&mut out, deployments::lease_fence::NAME)?;
        out.push_sql(" = ");
        out.push_bind_param::<BigInt, _>(&self.fence)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for TransitionUpdate {}
