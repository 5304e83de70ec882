//! [`DeploymentRepository`] on PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use diesel::IntoSql as _;
use diesel::dsl::{AsSelect, SqlTypeOf};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use kubernaut_domain::audit::AuditEntry;
use kubernaut_domain::deployment::{
    Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, Fence, Placement, Target,
    TimelineEntry, Transition,
};
use kubernaut_domain::ports::{DeploymentRepository, InsertDeploymentError, RepositoryError};
use kubernaut_domain::release::{ReleaseId, ServiceName};
use uuid::Uuid;

use crate::audit_repository::record_audit;
use crate::blocking::{query_failed, with_connection, with_connection_read};
use crate::database::PgPool;
use crate::deployment_row::{
    DeploymentRow, DeploymentSummaryRow, NewTimelineRow, TimelineRow, diagnostics_json,
    stored_objects,
};
use crate::deployment_transition::TransitionUpdate;
use crate::explain::explain_plan;
use crate::keyset::OlderThan;
use crate::notification_outbox::{insert_deliveries, with_payloads};
use crate::schema::{deployment_timeline, deployments};

/// The partial unique index that allows one active deployment per target and service.
const ONE_ACTIVE_PER_TARGET: &str = "deployments_one_active_per_target_key";

/// How often an insert that lost to an active deployment is retried when that one
/// reached its verdict before it could be named.
const INSERT_ATTEMPTS: usize = 3;

/// Deployments in the `deployments` table, their timelines in `deployment_timeline`.
/// Every query runs on tokio's blocking pool, so the async executor never waits on the
/// database.
#[derive(Debug, Clone)]
pub struct PostgresDeploymentRepository {
    pool: PgPool,
}

impl PostgresDeploymentRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The plan PostgreSQL chooses for [`DeploymentRepository::list`] with these
    /// arguments, as `EXPLAIN` prints it: to check that every page is an index seek.
    ///
    /// # Errors
    /// [`RepositoryError`] when the storage fails.
    pub async fn explain_list(
        &self,
        query: &DeploymentQuery,
        limit: usize,
    ) -> Result<String, RepositoryError> {
        let query = query.clone();
        explain_plan(&self.pool, "explaining the deployment listing", move || {
            list_query(&query, limit)
        })
        .await
    }
}

pub(crate) fn status_texts(statuses: &[DeploymentStatus]) -> Vec<&'static str> {
    statuses.iter().map(|status| status.as_str()).collect()
}

type ListQuery =
    deployments::BoxedQuery<'static, Pg, SqlTypeOf<AsSelect<DeploymentSummaryRow, Pg>>>;

/// The newest-first listing: every column but the manifest and the objects (both can
/// be large), the filters that are set, and the keyset condition as a row comparison so
/// that the `(created_at DESC, id DESC)` indexes serve every page by a seek.
fn list_query(query: &DeploymentQuery, limit: usize) -> ListQuery {
    let mut select = matching(
        deployments::table
            .select(DeploymentSummaryRow::as_select())
            .into_boxed(),
        query,
    );
    if let Some(status) = query.status {
        select = select.filter(deployments::status.eq(status.as_str()));
    }
    if let Some(cursor) = &query.after {
        select = select.filter(OlderThan::cursor(
            (deployments::created_at, deployments::id),
            cursor,
        ));
    }
    select
        .order((deployments::created_at.desc(), deployments::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The newest deployment (of `status` only, when given) of every service on every
/// target matching `query`, ordered by service, cluster and namespace: `DISTINCT ON`
/// over the `(service, cluster, namespace, created_at DESC, id DESC)` indexes.
fn placements_query(query: &DeploymentQuery, status: Option<DeploymentStatus>) -> ListQuery {
    let mut select = matching(
        deployments::table
            .distinct_on((
                deployments::service,
                deployments::cluster,
                deployments::namespace,
            ))
            .select(DeploymentSummaryRow::as_select())
            .into_boxed(),
        query,
    );
    if let Some(status) = status {
        select = select.filter(deployments::status.eq(status.as_str()));
    }
    select.order((
        deployments::service.asc(),
        deployments::cluster.asc(),
        deployments::namespace.asc(),
        deployments::created_at.desc(),
        deployments::id.desc(),
    ))
}

/// The newest deployment of each of the releases `ids` on every target it went to,
/// ordered by release, cluster and namespace: `DISTINCT ON` over the rows of the
/// `(release_id, created_at DESC, id DESC)` index.
fn went_to_query(ids: Vec<Uuid>) -> ListQuery {
    deployments::table
        .distinct_on((
            deployments::release_id,
            deployments::cluster,
            deployments::namespace,
        ))
        .filter(deployments::release_id.eq_any(ids))
        .select(DeploymentSummaryRow::as_select())
        .order((
            deployments::release_id.asc(),
            deployments::cluster.asc(),
            deployments::namespace.asc(),
            deployments::created_at.desc(),
            deployments::id.desc(),
        ))
        .into_boxed()
}

/// Runs a listing query; its deployments come without timeline, manifest or objects.
fn load_listed(
    query: ListQuery,
    connection: &mut PgConnection,
    what: &'static str,
) -> Result<Vec<Deployment>, RepositoryError> {
    query
        .load(connection)
        .map_err(query_failed(what))?
        .into_iter()
        .map(|row| row.into_deployment(Vec::new()))
        .collect()
}

/// `select` narrowed to the deployments matching `query`'s service, cluster, namespace
/// and creation window.
fn matching(mut select: ListQuery, query: &DeploymentQuery) -> ListQuery {
    if let Some(service) = &query.service {
        select = select.filter(deployments::service.eq(service.as_str().to_owned()));
    }
    if let Some(release) = query.release {
        select = select.filter(deployments::release_id.eq(release.as_uuid()));
    }
    if let Some(cluster) = &query.cluster {
        select = select.filter(deployments::cluster.eq(cluster.as_str().to_owned()));
    }
    if let Some(namespace) = &query.namespace {
        select = select.filter(deployments::namespace.eq(namespace.as_str().to_owned()));
    }
    if let Some(after) = query.created_after {
        select = select.filter(deployments::created_at.gt(after));
    }
    if let Some(before) = query.created_before {
        select = select.filter(deployments::created_at.lt(before));
    }
    select
}

/// The timelines of `ids`, each in the order its entries were written.
fn load_timelines(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<TimelineEntry>>, RepositoryError> {
    let rows: Vec<TimelineRow> = deployment_timeline::table
        .filter(deployment_timeline::deployment_id.eq_any(ids))
        .order((deployment_timeline::deployment_id, deployment_timeline::seq))
        .select(TimelineRow::as_select())
        .load(connection)
        .map_err(query_failed("reading deployment timelines"))?;
    let mut timelines: HashMap<Uuid, Vec<TimelineEntry>> = HashMap::new();
    for row in rows {
        timelines
            .entry(row.deployment_id)
            .or_default()
            .push(row.into_entry()?);
    }
    Ok(timelines)
}

/// Whole deployments from their rows, with their timelines.
pub(crate) fn with_timelines(
    connection: &mut PgConnection,
    rows: Vec<DeploymentRow>,
) -> Result<Vec<Deployment>, RepositoryError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.summary.id).collect();
    let mut timelines = load_timelines(connection, &ids)?;
    rows.into_iter()
        .map(|row| {
            let timeline = timelines.remove(&row.summary.id).unwrap_or_default();
            row.into_deployment(timeline)
        })
        .collect()
}

/// A new deployment's rows (the deployment, its timeline) and its audit record, ready
/// to insert in a transaction of the caller's.
struct NewDeploymentRows {
    row: DeploymentRow,
    timeline: Vec<NewTimelineRow>,
    audit: AuditEntry,
}

impl NewDeploymentRows {
    fn of(deployment: &Deployment, audit: &AuditEntry) -> Result<Self, RepositoryError> {
        Ok(Self {
            row: DeploymentRow::from_deployment(deployment)?,
            timeline: deployment
                .timeline
                .iter()
                .map(|entry| NewTimelineRow::from_entry(deployment.id, entry))
                .collect(),
            audit: audit.clone(),
        })
    }

    fn insert(&self, connection: &mut PgConnection) -> Result<(), DieselError> {
        diesel::insert_into(deployments::table)
            .values(&self.row)
            .execute(connection)?;
        // One statement per entry (there is usually one): diesel keeps a single-row
        // insert prepared, never a multi-row one.
        for entry in &self.timeline {
            diesel::insert_into(deployment_timeline::table)
                .values(entry)
                .execute(connection)?;
        }
        record_audit(connection, &self.audit)
    }
}

/// Whether `error` is the violation of the one-active-deployment-per-target index.
fn is_active_conflict(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(ONE_ACTIVE_PER_TARGET)
    )
}

/// The id of the active deployment of `service` on `cluster`/`namespace`, if any.
fn active_on_target(
    connection: &mut PgConnection,
    row: &DeploymentSummaryRow,
) -> Result<Option<Uuid>, RepositoryError> {
    deployments::table
        .filter(deployments::cluster.eq(&row.cluster))
        .filter(deployments::namespace.eq(&row.namespace))
        .filter(deployments::service.eq(&row.service))
        .filter(deployments::status.eq_any(status_texts(&DeploymentStatus::ACTIVE)))
        .select(deployments::id)
        .first(connection)
        .optional()
        .map_err(query_failed("finding the active deployment of a target"))
}

#[async_trait]
impl DeploymentRepository for PostgresDeploymentRepository {
    #[tracing::instrument(skip_all, fields(deployment.id = %deployment.id))]
    async fn insert(
        &self,
        deployment: &Deployment,
        audit: &AuditEntry,
    ) -> Result<(), InsertDeploymentError> {
        let new = NewDeploymentRows::of(deployment, audit)?;
        with_connection(&self.pool, move |connection| {
            for _ in 0..INSERT_ATTEMPTS {
                // The partial unique index decides, so concurrent requests cannot both
                // pass; the loser learns the winner's id once its transaction is over.
                let inserted = connection
                    .transaction::<_, DieselError, _>(|connection| new.insert(connection));
                match inserted {
                    Ok(()) => return Ok(()),
                    Err(error) if is_active_conflict(&error) => {
                        if let Some(active) = active_on_target(connection, &new.row.summary)? {
                            return Err(InsertDeploymentError::ActiveExists {
                                active: DeploymentId::from_uuid(active),
                            });
                        }
                        // The active one reached its verdict in between: try again.
                    }
                    Err(error) => return Err(query_failed("inserting a deployment")(error).into()),
                }
            }
            Err(RepositoryError::new(
                "inserting a deployment kept conflicting with deployments that finished at once",
            )
            .into())
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn find(&self, id: DeploymentId) -> Result<Option<Deployment>, RepositoryError> {
        with_connection_read(&self.pool, move |connection| {
            let row = deployments::table
                .find(id.as_uuid())
                .select(DeploymentRow::as_select())
                .first(connection)
                .optional()
                .map_err(query_failed("finding a deployment"))?;
            Ok(with_timelines(connection, row.into_iter().collect())?.pop())
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn active_objects(
        &self,
        id: DeploymentId,
    ) -> Result<Option<Vec<serde_json::Value>>, RepositoryError> {
        with_connection_read(&self.pool, move |connection| {
            let objects: Option<serde_json::Value> = deployments::table
                .find(id.as_uuid())
                .filter(deployments::status.eq_any(status_texts(&DeploymentStatus::ACTIVE)))
                .select(deployments::objects)
                .first(connection)
                .optional()
                .map_err(query_failed("reading a deployment's objects"))?;
            objects
                .map(|objects| stored_objects(id.as_uuid(), objects))
                .transpose()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn list(
        &self,
        query: &DeploymentQuery,
        limit: usize,
    ) -> Result<Vec<Deployment>, RepositoryError> {
        let query = query.clone();
        with_connection_read(&self.pool, move |connection| {
            load_listed(list_query(&query, limit), connection, "listing deployments")
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn placements(&self, query: &DeploymentQuery) -> Result<Vec<Placement>, RepositoryError> {
        let query = query.clone();
        with_connection_read(&self.pool, move |connection| {
            let last = placements_query(&query, None)
                .load(connection)
                .map_err(query_failed("finding the newest deployment on each target"))?;
            let succeeded = placements_query(&query, Some(DeploymentStatus::Succeeded))
                .load(connection)
                .map_err(query_failed("finding what runs on each target"))?;
            let mut running: HashMap<(String, String, String), DeploymentSummaryRow> = succeeded
                .into_iter()
                .map(|row| {
                    (
                        (
                            row.service.clone(),
                            row.cluster.clone(),
                            row.namespace.clone(),
                        ),
                        row,
                    )
                })
                .collect();
            last.into_iter()
                .map(|row| {
                    let key = (
                        row.service.clone(),
                        row.cluster.clone(),
                        row.namespace.clone(),
                    );
                    Ok(Placement {
                        running: running
                            .remove(&key)
                            .map(|row| row.into_deployment(Vec::new()))
                            .transpose()?,
                        last: row.into_deployment(Vec::new())?,
                    })
                })
                .collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(releases = releases.len()))]
    async fn newest_per_target(
        &self,
        releases: &[ReleaseId],
    ) -> Result<Vec<Deployment>, RepositoryError> {
        let ids: Vec<Uuid> = releases.iter().map(|release| release.as_uuid()).collect();
        with_connection_read(&self.pool, move |connection| {
            load_listed(
                went_to_query(ids.clone()),
                connection,
                "finding where releases went",
            )
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn list_active(&self) -> Result<Vec<Deployment>, RepositoryError> {
        with_connection_read(&self.pool, move |connection| {
            let rows = deployments::table
                .filter(deployments::status.eq_any(status_texts(&DeploymentStatus::ACTIVE)))
                .order((deployments::created_at.asc(), deployments::id.asc()))
                .select(DeploymentRow::as_select())
                .load(connection)
                .map_err(query_failed("listing active deployments"))?;
            with_timelines(connection, rows)
        })
        .await
    }

    #[tracing::instrument(skip(self, transition), fields(to = %transition.to))]
    async fn transition(
        &self,
        id: DeploymentId,
        transition: &Transition,
    ) -> Result<bool, RepositoryError> {
        let diagnostics = diagnostics_json(id, transition.diagnostics.as_ref())?;
        let update = TransitionUpdate::new(id.as_uuid(), transition, diagnostics);
        let carries_more = transition.audit.is_some()
            || !transition.entries.is_empty()
            || transition.follow_up.is_some()
            || !transition.notifications.is_empty();
        if !carries_more {
            return with_connection(&self.pool, move |connection| {
                // A compare-and-set on the status (and the lease), so a cancel and the
                // driver cannot both win.
                let moved = update
                    .execute(connection)
                    .map_err(query_failed("moving a deployment on"))?;
                Ok(moved == 1)
            })
            .await;
        }
        let audit = transition.audit.clone();
        let entries: Vec<NewTimelineRow> = transition
            .entries
            .iter()
            .map(|entry| NewTimelineRow::from_entry(id, entry))
            .collect();
        let follow_up = transition
            .follow_up
            .as_ref()
            .map(|new| NewDeploymentRows::of(&new.deployment, &new.audit))
            .transpose()?;
        let notifications = with_payloads(&transition.notifications)?;
        with_connection(&self.pool, move |connection| {
            connection
                .transaction(|connection| {
                    let moved = update.execute(connection)? == 1;
                    // Recorded only when the deployment moved: a lost compare-and-set
                    // changed nothing.
                    if moved {
                        for entry in &entries {
                            diesel::insert_into(deployment_timeline::table)
                                .values(entry)
                                .execute(connection)?;
                        }
                        if let Some(audit) = &audit {
                            record_audit(connection, audit)?;
                        }
                        if let Some(follow_up) = &follow_up {
                            follow_up.insert(connection)?;
                        }
                        insert_deliveries(connection, &notifications)?;
                    }
                    Ok(moved)
                })
                .map_err(query_failed("moving a deployment on"))
        })
        .await
    }

    #[tracing::instrument(skip(self, entry))]
    async fn append_timeline(
        &self,
        id: DeploymentId,
        fence: Option<Fence>,
        entry: &TimelineEntry,
    ) -> Result<bool, RepositoryError> {
        let row = NewTimelineRow::from_entry(id, entry);
        with_connection(&self.pool, move |connection| {
            let appended = match fence {
                None => diesel::insert_into(deployment_timeline::table)
                    .values(&row)
                    .execute(connection),
                // Only while the deployment is active and the lease is the writer's. The
                // row is share-locked: a concurrent move (a cancel, a takeover's verdict)
                // waits for this line, or this line waits for it and then finds the
                // deployment ended, so no line lands after a verdict.
                Some(fence) => diesel::insert_into(deployment_timeline::table)
                    .values(
                        deployments::table
                            .filter(deployments::id.eq(row.deployment_id))
                            .filter(deployments::lease_fence.eq(fence.get()))
                            .filter(
                                deployments::status
                                    .eq_any(status_texts(&DeploymentStatus::ACTIVE)),
                            )
                            .select((
                                deployments::id,
                                row.at.into_sql::<diesel::sql_types::Timestamptz>(),
                                row.phase.clone().into_sql::<diesel::sql_types::Text>(),
                                row.message.clone().into_sql::<diesel::sql_types::Text>(),
                                row.resource
                                    .clone()
                                    .into_sql::<diesel::sql_types::Nullable<diesel::sql_types::Text>>(),
                            ))
                            .for_share(),
                    )
                    .into_columns((
                        deployment_timeline::deployment_id,
                        deployment_timeline::at,
                        deployment_timeline::phase,
                        deployment_timeline::message,
                        deployment_timeline::resource,
                    ))
                    .execute(connection),
            };
            match appended {
                Ok(count) => Ok(count == 1),
                // Like a note about nothing: an unknown deployment has no timeline to add to.
                Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
                    tracing::warn!(deployment = %id, "a timeline entry for an unknown deployment was dropped");
                    Ok(false)
                }
                Err(error) => Err(query_failed("appending to a deployment's timeline")(error)),
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(%service, %target))]
    async fn last_succeeded(
        &self,
        service: &ServiceName,
        target: &Target,
        excluding: Option<ReleaseId>,
    ) -> Result<Option<Deployment>, RepositoryError> {
        let service = service.as_str().to_owned();
        let cluster = target.cluster.as_str().to_owned();
        let namespace = target.namespace.as_str().to_owned();
        with_connection_read(&self.pool, move |connection| {
            let mut select = deployments::table
                .filter(deployments::service.eq(&service))
                .filter(deployments::cluster.eq(&cluster))
                .filter(deployments::namespace.eq(&namespace))
                .filter(deployments::status.eq(DeploymentStatus::Succeeded.as_str()))
                .select(DeploymentRow::as_select())
                .into_boxed();
            if let Some(excluding) = excluding {
                select = select.filter(deployments::release_id.ne(excluding.as_uuid()));
            }
            let row = select
                .order((deployments::created_at.desc(), deployments::id.desc()))
                .first(connection)
                .optional()
                .map_err(query_failed("finding the last successful deployment"))?;
            Ok(with_timelines(connection, row.into_iter().collect())?.pop())
        })
        .await
    }
}
