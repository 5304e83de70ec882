//! [`NotificationOutbox`] on PostgreSQL: `notification_deliveries` and
//! `notification_attempts`. Deliveries are written by
//! [`DeploymentRepository::transition`](kubernaut_domain::ports::DeploymentRepository::transition)
//! in the move's transaction; dispatchers claim them with `FOR UPDATE SKIP LOCKED`
//! and a lease on the database's clock, so concurrent replicas never attempt one
//! delivery at once and a dead replica's claims expire.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{
    BigInt, Double, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use kubernaut_domain::deployment::DeploymentId;
use kubernaut_domain::lease::InstanceId;
use kubernaut_domain::notification::{
    Attempt, ClaimedDelivery, Delivery, DeliveryStatus, NewDelivery, NextStep, Notification,
};
use kubernaut_domain::ports::{NotificationOutbox, RepositoryError};
use uuid::Uuid;

use crate::blocking::{query_failed, with_connection};
use crate::database::PgPool;

const INSERT: &str = "\
INSERT INTO notification_deliveries (id, event_id, deployment_id, event, sink, payload)
VALUES ($1, $2, $3, $4, $5, $6)";

/// Claims up to `$3` due, unclaimed (or expired) pending deliveries for `$1` until
/// `$2` seconds from now, skipping rows another claimer holds.
const CLAIM: &str = "\
UPDATE notification_deliveries
   SET claim_owner = $1,
       claim_expires_at = now() + make_interval(secs => $2)
 WHERE id IN (
       SELECT id FROM notification_deliveries
        WHERE status = 'pending'
          AND next_attempt_at <= now()
          AND (claim_owner IS NULL OR claim_expires_at < now())
        ORDER BY next_attempt_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
RETURNING id, sink, payload, created_at, attempts";

/// Moves a pending delivery `$1` that `$2` claims on after an attempt: to `$3`, due
/// again `$4` seconds from now when pending; frees its claim.
const AFTER_ATTEMPT: &str = "\
UPDATE notification_deliveries
   SET status = $3,
       attempts = attempts + 1,
       next_attempt_at = CASE WHEN $3 = 'pending'
                              THEN now() + make_interval(secs => $4) END,
       delivered_at = CASE WHEN $3 = 'delivered' THEN now() END,
       claim_owner = NULL,
       claim_expires_at = NULL
 WHERE id = $1 AND claim_owner = $2 AND status = 'pending'";

const INSERT_ATTEMPT: &str = "\
INSERT INTO notification_attempts
       (delivery_id, number, at, duration_ms, status_code, error, replica)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

#[derive(Debug, QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    sink: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(Debug, QueryableByName)]
struct DeliveryRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    sink: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Debug, QueryableByName)]
struct AttemptRow {
    #[diesel(sql_type = SqlUuid)]
    delivery_id: Uuid,
    #[diesel(sql_type = Integer)]
    number: i32,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    duration_ms: i64,
    #[diesel(sql_type = Nullable<Integer>)]
    status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Text)]
    replica: String,
}

fn payload_of(id: Uuid, payload: serde_json::Value) -> Result<Notification, RepositoryError> {
    serde_json::from_value(payload).map_err(|e| {
        RepositoryError::caused_by(
            format!("the notification of delivery {id} is unreadable"),
            e,
        )
    })
}

/// Writes `deliveries` on `connection` (inside the caller's transaction).
pub(crate) fn insert_deliveries(
    connection: &mut PgConnection,
    deliveries: &[(NewDelivery, serde_json::Value)],
) -> QueryResult<()> {
    for (delivery, payload) in deliveries {
        let notification = &delivery.notification;
        sql_query(INSERT)
            .bind::<SqlUuid, _>(delivery.id)
            .bind::<SqlUuid, _>(notification.id)
            .bind::<SqlUuid, _>(notification.deployment.id.as_uuid())
            .bind::<Text, _>(notification.event.as_str())
            .bind::<Text, _>(&delivery.sink)
            .bind::<Jsonb, _>(payload)
            .execute(connection)?;
    }
    Ok(())
}

/// `deliveries` with their payloads as JSON, ready for [`insert_deliveries`].
pub(crate) fn with_payloads(
    deliveries: &[NewDelivery],
) -> Result<Vec<(NewDelivery, serde_json::Value)>, RepositoryError> {
    deliveries
        .iter()
        .map(|delivery| {
            serde_json::to_value(&delivery.notification)
                .map(|payload| (delivery.clone(), payload))
                .map_err(|e| RepositoryError::caused_by("a notification does not serialise", e))
        })
        .collect()
}

/// The outbox in `notification_deliveries` and `notification_attempts`.
#[derive(Debug, Clone)]
pub struct PostgresNotificationOutbox {
    pool: PgPool,
}

impl PostgresNotificationOutbox {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl NotificationOutbox for PostgresNotificationOutbox {
    async fn claim(
        &self,
        owner: &InstanceId,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, RepositoryError> {
        let owner = owner.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<ClaimedRow> = with_connection(&self.pool, move |connection| {
            sql_query(CLAIM)
                .bind::<Text, _>(owner)
                .bind::<Double, _>(lease.as_secs_f64())
                .bind::<BigInt, _>(limit)
                .load(connection)
                .map_err(query_failed("claiming notifications"))
        })
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    id: row.id,
                    sink: row.sink,
                    notification: payload_of(row.id, row.payload)?,
                    created_at: row.created_at,
                    attempts: u32::try_from(row.attempts).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn record_attempt(
        &self,
        id: Uuid,
        owner: &InstanceId,
        attempt: &Attempt,
        next: NextStep,
    ) -> Result<bool, RepositoryError> {
        let owner = owner.as_str().to_owned();
        let attempt = attempt.clone();
        let (status, delay) = match next {
            NextStep::Delivered => (DeliveryStatus::Delivered, 0.0),
            NextStep::RetryAfter(delay) => (DeliveryStatus::Pending, delay.as_secs_f64()),
            NextStep::GiveUp => (DeliveryStatus::Dead, 0.0),
        };
        with_connection(&self.pool, move |connection| {
            connection
                .transaction(|connection| {
                    let moved = sql_query(AFTER_ATTEMPT)
                        .bind::<SqlUuid, _>(id)
                        .bind::<Text, _>(&owner)
                        .bind::<Text, _>(status.as_str())
                        .bind::<Double, _>(delay)
                        .execute(connection)?
                        == 1;
                    if moved {
                        sql_query(INSERT_ATTEMPT)
                            .bind::<SqlUuid, _>(id)
                            .bind::<Integer, _>(i32::try_from(attempt.number).unwrap_or(i32::MAX))
                            .bind::<Timestamptz, _>(attempt.at)
                            .bind::<BigInt, _>(
                                i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
                            )
                            .bind::<Nullable<Integer>, _>(attempt.status_code.map(i32::from))
                            .bind::<Nullable<Text>, _>(attempt.error.as_deref())
                            .bind::<Text, _>(&attempt.replica)
                            .execute(connection)?;
                    }
                    Ok(moved)
                })
                .map_err(query_failed("recording a notification attempt"))
        })
        .await
    }

    async fn deliveries(&self, deployment: DeploymentId) -> Result<Vec<Delivery>, RepositoryError> {
        let deployment = deployment.as_uuid();
        let (deliveries, attempts): (Vec<DeliveryRow>, Vec<AttemptRow>) =
            with_connection(&self.pool, move |connection| {
                connection
                    .build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(|connection| {
                        let deliveries = sql_query(
                            "SELECT id, sink, payload, status, created_at, next_attempt_at \
                               FROM notification_deliveries WHERE deployment_id = $1 \
                              ORDER BY created_at, id",
                        )
                        .bind::<SqlUuid, _>(deployment)
                        .load::<DeliveryRow>(connection)?;
                        let attempts = sql_query(
                            "SELECT a.delivery_id, a.number, a.at, a.duration_ms, \
                                    a.status_code, a.error, a.replica \
                               FROM notification_attempts a \
                               JOIN notification_deliveries d ON d.id = a.delivery_id \
                              WHERE d.deployment_id = $1 \
                              ORDER BY a.delivery_id, a.number",
                        )
                        .bind::<SqlUuid, _>(deployment)
                        .load::<AttemptRow>(connection)?;
                        Ok((deliveries, attempts))
                    })
                    .map_err(query_failed("reading notifications"))
            })
            .await?;
        deliveries
            .into_iter()
            .map(|row| {
                let status = DeliveryStatus::parse(&row.status).ok_or_else(|| {
                    RepositoryError::new(format!(
                        "delivery {} has the unknown status {:?}",
                        row.id, row.status
                    ))
                })?;
                let attempts = attempts
                    .iter()
                    .filter(|attempt| attempt.delivery_id == row.id)
                    .map(|attempt| Attempt {
                        number: u32::try_from(attempt.number).unwrap_or(0),
                        at: attempt.at,
                        duration_ms: u64::try_from(attempt.duration_ms).unwrap_or(0),
                        status_code: attempt.status_code.and_then(|c| u16::try_from(c).ok()),
                        error: attempt.error.clone(),
                        replica: attempt.replica.clone(),
                    })
                    .collect();
                Ok(Delivery {
                    id: row.id,
                    sink: row.sink,
                    notification: payload_of(row.id, row.payload)?,
                    status,
                    created_at: row.created_at,
                    next_attempt_at: row.next_attempt_at,
                    attempts,
                })
            })
            .collect()
    }
}
