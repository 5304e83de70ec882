//! [`DeploymentRepository`] on SQLite.

use std::collections::HashMap;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use kubernaut_domain::audit::AuditEntry;
use kubernaut_domain::deployment::{
    Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, Fence, Placement, Target,
    TimelineEntry, Transition,
};
use kubernaut_domain::ports::{DeploymentRepository, InsertDeploymentError, RepositoryError};
use kubernaut_domain::release::{ReleaseId, ServiceName};

use crate::audit_repository::record_audit;
use crate::blocking::{query_failed, with_connection};
use crate::database::SqliteDatabase;
use crate::deployment_row::{
    DeploymentRow, DeploymentSummaryRow, INSERT_DEPLOYMENT, INSERT_TIMELINE, SUMMARY_COLUMNS,
    TimelineRow, deployment_binds, diagnostics_json, stored_objects, timeline_binds,
};
use crate::notification_outbox::{delivery_binds, insert_deliveries};
use crate::sql::{
    ACTIVE_STATUSES, Bind, json_list, optional_time_text, parse_uuid, statement, time_text,
    uuid_text,
};

/// Deployments in the `deployments` table, their timelines in `deployment_timeline`.
#[derive(Debug, Clone)]
pub struct SqliteDeploymentRepository {
    database: SqliteDatabase,
}

impl SqliteDeploymentRepository {
    pub(crate) fn new(database: SqliteDatabase) -> Self {
        Self { database }
    }
}

#[derive(Debug, QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(Debug, QueryableByName)]
struct Objects {
    #[diesel(sql_type = Text)]
    objects: String,
}

/// `AND ...` conditions (and their binds) narrowing to the deployments matching
/// `query`'s service, release, cluster, namespace and creation window.
fn matching(query: &DeploymentQuery, sql: &mut String, binds: &mut Vec<Bind>) {
    if let Some(service) = &query.service {
        sql.push_str(" AND service = ?");
        binds.push(service.as_str().into());
    }
    if let Some(release) = query.release {
        sql.push_str(" AND release_id = ?");
        binds.push(uuid_text(release.as_uuid()).into());
    }
    if let Some(cluster) = &query.cluster {
        sql.push_str(" AND cluster = ?");
        binds.push(cluster.as_str().into());
    }
    if let Some(namespace) = &query.namespace {
        sql.push_str(" AND namespace = ?");
        binds.push(namespace.as_str().into());
    }
    if let Some(after) = query.created_after {
        sql.push_str(" AND created_at > ?");
        binds.push(time_text(after).into());
    }
    if let Some(before) = query.created_before {
        sql.push_str(" AND created_at < ?");
        binds.push(time_text(before).into());
    }
}

/// The newest deployment (of `status` only, when given) of every service on every
/// target matching `query`, ordered by service, cluster and namespace. SQLite has no
/// `DISTINCT ON`: a window numbers each target's deployments newest first.
fn placements_statement(
    query: &DeploymentQuery,
    status: Option<DeploymentStatus>,
) -> (String, Vec<Bind>) {
    let mut sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM (SELECT *, row_number() OVER (\
         PARTITION BY service, cluster, namespace ORDER BY created_at DESC, id DESC) AS newest \
         FROM deployments WHERE 1 = 1"
    );
    let mut binds = Vec::new();
    matching(query, &mut sql, &mut binds);
    if let Some(status) = status {
        sql.push_str(" AND status = ?");
        binds.push(status.as_str().into());
    }
    sql.push_str(") WHERE newest = 1 ORDER BY service, cluster, namespace");
    (sql, binds)
}

fn load_listed(
    connection: &mut SqliteConnection,
    sql: String,
    binds: Vec<Bind>,
    what: &'static str,
) -> Result<Vec<Deployment>, RepositoryError> {
    statement(sql, binds)
        .load::<DeploymentSummaryRow>(connection)
        .map_err(query_failed(what))?
        .into_iter()
        .map(|row| row.into_deployment(Vec::new()))
        .collect()
}

/// The timelines of `ids`, each in the order its entries were written.
fn load_timelines(
    connection: &mut SqliteConnection,
    ids: &[String],
) -> Result<HashMap<String, Vec<TimelineEntry>>, RepositoryError> {
    let rows = statement(
        "SELECT deployment_id, at, phase, message, resource FROM deployment_timeline \
         WHERE deployment_id IN (SELECT value FROM json_each(?)) ORDER BY deployment_id, seq",
        vec![json_list(ids.iter().map(String::as_str)).into()],
    )
    .load::<TimelineRow>(connection)
    .map_err(query_failed("reading deployment timelines"))?;
    let mut timelines: HashMap<String, Vec<TimelineEntry>> = HashMap::new();
    for row in rows {
        let id = row.deployment_id.clone();
        timelines.entry(id).or_default().push(row.into_entry()?);
    }
    Ok(timelines)
}

/// Whole deployments from their rows, with their timelines.
pub(crate) fn with_timelines(
    connection: &mut SqliteConnection,
    rows: Vec<DeploymentRow>,
) -> Result<Vec<Deployment>, RepositoryError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|row| row.summary.id.clone()).collect();
    let mut timelines = load_timelines(connection, &ids)?;
    rows.into_iter()
        .map(|row| {
            let timeline = timelines.remove(&row.summary.id).unwrap_or_default();
            row.into_deployment(timeline)
        })
        .collect()
}

/// Whole deployments (with timelines) selected by `sql`.
pub(crate) fn load_whole(
    connection: &mut SqliteConnection,
    sql: &str,
    binds: Vec<Bind>,
    what: &'static str,
) -> Result<Vec<Deployment>, RepositoryError> {
    let rows = statement(sql, binds)
        .load::<DeploymentRow>(connection)
        .map_err(query_failed(what))?;
    with_timelines(connection, rows)
}

/// A new deployment's binds (the deployment, its timeline) and its audit record, ready
/// to insert in a transaction of the caller's.
struct NewDeploymentRows {
    deployment: Vec<Bind>,
    timeline: Vec<Vec<Bind>>,
    audit: AuditEntry,
    /// Its target, to name the active deployment there when the insert conflicts.
    target: (String, String, String),
}

impl NewDeploymentRows {
    fn of(deployment: &Deployment, audit: &AuditEntry) -> Result<Self, RepositoryError> {
        Ok(Self {
            deployment: deployment_binds(deployment)?,
            timeline: deployment
                .timeline
                .iter()
                .map(|entry| timeline_binds(deployment.id, entry))
                .collect(),
            audit: audit.clone(),
            target: (
                deployment.target.cluster.as_str().to_owned(),
                deployment.target.namespace.as_str().to_owned(),
                deployment.service.as_str().to_owned(),
            ),
        })
    }

    fn insert(&self, connection: &mut SqliteConnection) -> Result<(), DieselError> {
        statement(INSERT_DEPLOYMENT, self.deployment.clone()).execute(connection)?;
        for entry in &self.timeline {
            statement(INSERT_TIMELINE, entry.clone()).execute(connection)?;
        }
        record_audit(connection, &self.audit)
    }

    /// The id of the active deployment on this one's target, if any.
    fn active_on_target(&self, connection: &mut SqliteConnection) -> QueryResult<Option<String>> {
        let (cluster, namespace, service) = self.target.clone();
        statement(
            format!(
                "SELECT id FROM deployments WHERE cluster = ? AND namespace = ? AND service = ? \
                 AND status IN {ACTIVE_STATUSES}"
            ),
            vec![cluster.into(), namespace.into(), service.into()],
        )
        .get_result::<Id>(connection)
        .optional()
        .map(|found| found.map(|found| found.id))
    }
}

/// Whether `error` is the violation of the one-active-deployment-per-target index
/// (SQLite names the index's columns, not the index).
fn is_active_conflict(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.message().contains("deployments.cluster")
    )
}

/// Why an insert in a transaction stored nothing.
enum InsertFailure {
    ActiveExists(String),
    Database(DieselError),
}

impl From<DieselError> for InsertFailure {
    fn from(error: DieselError) -> Self {
        Self::Database(error)
    }
}

/// The `UPDATE` of a transition: a compare-and-set on the status (and the lease for a
/// driver), with `finished_at` following the status so that the
/// `deployments_finished_only_with_a_verdict` constraint holds after every move.
const TRANSITION: &str = "UPDATE deployments \
    SET status = ?, started_at = COALESCE(started_at, ?), finished_at = ?, \
        diagnostics = CASE WHEN ? THEN ? ELSE diagnostics END \
    WHERE id = ? AND status IN (SELECT value FROM json_each(?)) AND (? = 0 OR lease_fence = ?)";

fn transition_binds(
    id: DeploymentId,
    transition: &Transition,
    diagnostics: Option<String>,
) -> Vec<Bind> {
    let verdict = transition.to.is_verdict();
    vec![
        transition.to.as_str().into(),
        optional_time_text((transition.to == DeploymentStatus::Applying).then_some(transition.at))
            .into(),
        optional_time_text(verdict.then_some(transition.at)).into(),
        verdict.into(),
        (if verdict { diagnostics } else { None }).into(),
        uuid_text(id.as_uuid()).into(),
        json_list(transition.from.iter().map(|status| status.as_str())).into(),
        transition.fence.is_some().into(),
        transition.fence.map_or(0, |fence| fence.get()).into(),
    ]
}

#[async_trait]
impl DeploymentRepository for SqliteDeploymentRepository {
    #[tracing::instrument(skip_all, fields(deployment.id = %deployment.id))]
    async fn insert(
        &self,
        deployment: &Deployment,
        audit: &AuditEntry,
    ) -> Result<(), InsertDeploymentError> {
        let new = NewDeploymentRows::of(deployment, audit)?;
        with_connection(&self.database, move |connection| {
            // The partial unique index decides; the write lock, held from BEGIN
            // IMMEDIATE, keeps the active one there until its id is read.
            let inserted = connection.immediate_transaction::<_, InsertFailure, _>(|connection| {
                match new.insert(connection) {
                    Err(error) if is_active_conflict(&error) => {
                        match new.active_on_target(connection)? {
                            Some(active) => Err(InsertFailure::ActiveExists(active)),
                            None => Err(InsertFailure::Database(error)),
                        }
                    }
                    other => Ok(other?),
                }
            });
            match inserted {
                Ok(()) => Ok(()),
                Err(InsertFailure::ActiveExists(active)) => {
                    Err(InsertDeploymentError::ActiveExists {
                        active: DeploymentId::from_uuid(parse_uuid(&active)?),
                    })
                }
                Err(InsertFailure::Database(error)) => {
                    Err(query_failed("inserting a deployment")(error).into())
                }
            }
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn find(&self, id: DeploymentId) -> Result<Option<Deployment>, RepositoryError> {
        with_connection(&self.database, move |connection| {
            Ok(load_whole(
                connection,
                "SELECT * FROM deployments WHERE id = ?",
                vec![uuid_text(id.as_uuid()).into()],
                "finding a deployment",
            )?
            .pop())
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn active_objects(
        &self,
        id: DeploymentId,
    ) -> Result<Option<Vec<serde_json::Value>>, RepositoryError> {
        with_connection(&self.database, move |connection| {
            let stored = statement(
                format!(
                    "SELECT objects FROM deployments WHERE id = ? AND status IN {ACTIVE_STATUSES}"
                ),
                vec![uuid_text(id.as_uuid()).into()],
            )
            .get_result::<Objects>(connection)
            .optional()
            .map_err(query_failed("reading a deployment's objects"))?;
            stored
                .map(|stored| stored_objects(id.as_uuid(), &stored.objects))
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
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM deployments WHERE 1 = 1");
        let mut binds = Vec::new();
        matching(query, &mut sql, &mut binds);
        if let Some(status) = query.status {
            sql.push_str(" AND status = ?");
            binds.push(status.as_str().into());
        }
        if let Some(cursor) = &query.after {
            sql.push_str(" AND (created_at, id) < (?, ?)");
            binds.push(time_text(cursor.created_at).into());
            binds.push(uuid_text(cursor.id).into());
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
        binds.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        with_connection(&self.database, move |connection| {
            load_listed(connection, sql, binds, "listing deployments")
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn placements(&self, query: &DeploymentQuery) -> Result<Vec<Placement>, RepositoryError> {
        let (last_sql, last_binds) = placements_statement(query, None);
        let (running_sql, running_binds) =
            placements_statement(query, Some(DeploymentStatus::Succeeded));
        with_connection(&self.database, move |connection| {
            // One read transaction, so both queries see the same deployments.
            let (last, succeeded) = connection
                .transaction::<_, DieselError, _>(|connection| {
                    let last =
                        statement(last_sql, last_binds).load::<DeploymentSummaryRow>(connection)?;
                    let succeeded = statement(running_sql, running_binds)
                        .load::<DeploymentSummaryRow>(connection)?;
                    Ok((last, succeeded))
                })
                .map_err(query_failed("finding what runs on each target"))?;
            {
                let mut running: HashMap<(String, String, String), DeploymentSummaryRow> =
                    succeeded
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
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(releases = releases.len()))]
    async fn newest_per_target(
        &self,
        releases: &[ReleaseId],
    ) -> Result<Vec<Deployment>, RepositoryError> {
        let ids = json_list(releases.iter().map(|release| uuid_text(release.as_uuid())));
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM (SELECT *, row_number() OVER (\
             PARTITION BY release_id, cluster, namespace ORDER BY created_at DESC, id DESC) \
             AS newest FROM deployments WHERE release_id IN (SELECT value FROM json_each(?))) \
             WHERE newest = 1 ORDER BY release_id, cluster, namespace"
        );
        with_connection(&self.database, move |connection| {
            load_listed(
                connection,
                sql,
                vec![ids.into()],
                "finding where releases went",
            )
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn list_active(&self) -> Result<Vec<Deployment>, RepositoryError> {
        with_connection(&self.database, move |connection| {
            load_whole(
                connection,
                &format!(
                    "SELECT * FROM deployments WHERE status IN {ACTIVE_STATUSES} \
                     ORDER BY created_at, id"
                ),
                Vec::new(),
                "listing active deployments",
            )
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
        let update = transition_binds(id, transition, diagnostics);
        let audit = transition.audit.clone();
        let entries: Vec<Vec<Bind>> = transition
            .entries
            .iter()
            .map(|entry| timeline_binds(id, entry))
            .collect();
        let follow_up = transition
            .follow_up
            .as_ref()
            .map(|new| NewDeploymentRows::of(&new.deployment, &new.audit))
            .transpose()?;
        let notifications = delivery_binds(&transition.notifications)?;
        with_connection(&self.database, move |connection| {
            connection
                .immediate_transaction(|connection| {
                    let moved = statement(TRANSITION, update).execute(connection)? == 1;
                    // Recorded only when the deployment moved: a lost compare-and-set
                    // changed nothing.
                    if moved {
                        for entry in entries {
                            statement(INSERT_TIMELINE, entry).execute(connection)?;
                        }
                        if let Some(audit) = &audit {
                            record_audit(connection, audit)?;
                        }
                        if let Some(follow_up) = &follow_up {
                            follow_up.insert(connection)?;
                        }
                        insert_deliveries(connection, notifications)?;
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
        let mut binds = timeline_binds(id, entry);
        with_connection(&self.database, move |connection| {
            let appended = connection.immediate_transaction(|connection| match fence {
                None => statement(INSERT_TIMELINE, binds).execute(connection),
                // Only while the deployment is active and the lease is the writer's. Writes
                // are serialised, so no line lands after a verdict.
                Some(fence) => {
                    let deployment = binds.remove(0);
                    binds.push(deployment);
                    binds.push(fence.get().into());
                    statement(
                        format!(
                            "INSERT INTO deployment_timeline \
                             (deployment_id, at, phase, message, resource) \
                             SELECT id, ?, ?, ?, ? FROM deployments \
                             WHERE id = ? AND lease_fence = ? AND status IN {ACTIVE_STATUSES}"
                        ),
                        binds,
                    )
                    .execute(connection)
                }
            });
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
        let mut sql = String::from(
            "SELECT * FROM deployments WHERE service = ? AND cluster = ? AND namespace = ? \
             AND status = 'succeeded'",
        );
        let mut binds: Vec<Bind> = vec![
            service.as_str().into(),
            target.cluster.as_str().into(),
            target.namespace.as_str().into(),
        ];
        if let Some(excluding) = excluding {
            sql.push_str(" AND release_id <> ?");
            binds.push(uuid_text(excluding.as_uuid()).into());
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT 1");
        with_connection(&self.database, move |connection| {
            Ok(load_whole(
                connection,
                &sql,
                binds,
                "finding the last successful deployment",
            )?
            .pop())
        })
        .await
    }
}
