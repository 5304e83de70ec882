//! [`NotificationOutbox`] on SQLite: `notification_deliveries` and
//! `notification_attempts`. Writers are serialised (`BEGIN IMMEDIATE`), so a claim is
//! a conditional `UPDATE`: a delivery claimed and not expired is not claimed again.
//! Times are this process's clock, which is the storage's here.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use kubernaut_domain::deployment::DeploymentId;
use kubernaut_domain::lease::InstanceId;
use kubernaut_domain::notification::{
    Attempt, ClaimedDelivery, Delivery, DeliveryStatus, NewDelivery, NextStep, Notification,
};
use kubernaut_domain::ports::{NotificationOutbox, RepositoryError};
use uuid::Uuid;

use crate::blocking::{query_failed, with_connection};
use crate::database::SqliteDatabase;
use crate::sql::{
    Bind, parse_optional_time, parse_time, parse_uuid, statement, time_text, uuid_text,
};

#[derive(Debug, QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    sink: String,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
}

#[derive(Debug, QueryableByName)]
struct DeliveryRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    sink: String,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    next_attempt_at: Option<String>,
}

#[derive(Debug, QueryableByName)]
struct AttemptRow {
    #[diesel(sql_type = Text)]
    delivery_id: String,
    #[diesel(sql_type = BigInt)]
    number: i64,
    #[diesel(sql_type = Text)]
    at: String,
    #[diesel(sql_type = BigInt)]
    duration_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    status_code: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Text)]
    replica: String,
}

/// Now plus `delay`, as the tables store times (the latest time when it overflows).
fn after(delay: Duration) -> String {
    let now = Utc::now();
    let later = TimeDelta::from_std(delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay))
        .unwrap_or(now + TimeDelta::days(365 * 100));
    time_text(later)
}

fn payload_of(id: &str, payload: &str) -> Result<Notification, RepositoryError> {
    serde_json::from_str(payload).map_err(|e| {
        RepositoryError::caused_by(
            format!("the notification of delivery {id} is unreadable"),
            e,
        )
    })
}

/// The binds of `deliveries`' rows, payloads serialised, ready for
/// [`insert_deliveries`].
pub(crate) fn delivery_binds(
    deliveries: &[NewDelivery],
) -> Result<Vec<Vec<Bind>>, RepositoryError> {
    let now = time_text(Utc::now());
    deliveries
        .iter()
        .map(|delivery| {
            let notification = &delivery.notification;
            let payload = serde_json::to_string(notification)
                .map_err(|e| RepositoryError::caused_by("a notification does not serialise", e))?;
            Ok(vec![
                uuid_text(delivery.id).into(),
                uuid_text(notification.id).into(),
                uuid_text(notification.deployment.id.as_uuid()).into(),
                notification.event.as_str().into(),
                delivery.sink.clone().into(),
                payload.into(),
                now.clone().into(),
                now.clone().into(),
            ])
        })
        .collect()
}

/// Writes the deliveries of [`delivery_binds`] on `connection` (inside the caller's
/// transaction).
pub(crate) fn insert_deliveries(
    connection: &mut SqliteConnection,
    deliveries: Vec<Vec<Bind>>,
) -> QueryResult<()> {
    for binds in deliveries {
        statement(
            "INSERT INTO notification_deliveries \
             (id, event_id, deployment_id, event, sink, payload, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            binds,
        )
        .execute(connection)?;
    }
    Ok(())
}

/// The outbox in `notification_deliveries` and `notification_attempts`.
#[derive(Debug, Clone)]
pub struct SqliteNotificationOutbox {
    database: SqliteDatabase,
}

impl SqliteNotificationOutbox {
    pub(crate) fn new(database: SqliteDatabase) -> Self {
        Self { database }
    }
}

#[async_trait]
impl NotificationOutbox for SqliteNotificationOutbox {
    async fn claim(
        &self,
        owner: &InstanceId,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, RepositoryError> {
        let owner = owner.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<ClaimedRow> = with_connection(&self.database, move |connection| {
            let now = time_text(Utc::now());
            connection
                .immediate_transaction(|connection| {
                    statement(
                        "UPDATE notification_deliveries \
                            SET claim_owner = ?, claim_expires_at = ? \
                          WHERE id IN ( \
                                SELECT id FROM notification_deliveries \
                                 WHERE status = 'pending' AND next_attempt_at <= ? \
                                   AND (claim_owner IS NULL OR claim_expires_at < ?) \
                                 ORDER BY next_attempt_at, id \
                                 LIMIT ?) \
                         RETURNING id, sink, payload, created_at, attempts",
                        vec![
                            owner.into(),
                            after(lease).into(),
                            now.clone().into(),
                            now.into(),
                            limit.into(),
                        ],
                    )
                    .load::<ClaimedRow>(connection)
                })
                .map_err(query_failed("claiming notifications"))
        })
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    id: parse_uuid(&row.id)?,
                    notification: payload_of(&row.id, &row.payload)?,
                    sink: row.sink,
                    created_at: parse_time(&row.created_at)?,
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
        let (status, next_at, delivered_at) = match next {
            NextStep::Delivered => (DeliveryStatus::Delivered, None, Some(time_text(Utc::now()))),
            NextStep::RetryAfter(delay) => (DeliveryStatus::Pending, Some(after(delay)), None),
            NextStep::GiveUp => (DeliveryStatus::Dead, None, None),
        };
        let id = uuid_text(id);
        with_connection(&self.database, move |connection| {
            connection
                .immediate_transaction(|connection| {
                    let moved = statement(
                        "UPDATE notification_deliveries \
                            SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
                                delivered_at = ?, claim_owner = NULL, claim_expires_at = NULL \
                          WHERE id = ? AND claim_owner = ? AND status = 'pending'",
                        vec![
                            status.as_str().into(),
                            next_at.into(),
                            delivered_at.into(),
                            id.clone().into(),
                            owner.into(),
                        ],
                    )
                    .execute(connection)?
                        == 1;
                    if moved {
                        statement(
                            "INSERT INTO notification_attempts \
                             (delivery_id, number, at, duration_ms, status_code, error, replica) \
                             VALUES (?, ?, ?, ?, ?, ?, ?)",
                            vec![
                                id.into(),
                                i64::from(attempt.number).into(),
                                time_text(attempt.at).into(),
                                i64::try_from(attempt.duration_ms)
                                    .unwrap_or(i64::MAX)
                                    .into(),
                                attempt.status_code.map(i64::from).into(),
                                attempt.error.into(),
                                attempt.replica.into(),
                            ],
                        )
                        .execute(connection)?;
                    }
                    Ok(moved)
                })
                .map_err(query_failed("recording a notification attempt"))
        })
        .await
    }

    async fn deliveries(&self, deployment: DeploymentId) -> Result<Vec<Delivery>, RepositoryError> {
        let deployment = uuid_text(deployment.as_uuid());
        let (deliveries, attempts): (Vec<DeliveryRow>, Vec<AttemptRow>) =
            with_connection(&self.database, move |connection| {
                connection
                    .transaction(|connection| {
                        let deliveries = statement(
                            "SELECT id, sink, payload, status, created_at, next_attempt_at \
                               FROM notification_deliveries WHERE deployment_id = ? \
                              ORDER BY created_at, id",
                            vec![deployment.clone().into()],
                        )
                        .load::<DeliveryRow>(connection)?;
                        let attempts = statement(
                            "SELECT a.delivery_id, a.number, a.at, a.duration_ms, \
                                    a.status_code, a.error, a.replica \
                               FROM notification_attempts a \
                               JOIN notification_deliveries d ON d.id = a.delivery_id \
                              WHERE d.deployment_id = ? \
                              ORDER BY a.delivery_id, a.number",
                            vec![deployment.into()],
                        )
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
                    .map(|attempt| {
                        Ok(Attempt {
                            number: u32::try_from(attempt.number).unwrap_or(0),
                            at: parse_time(&attempt.at)?,
                            duration_ms: u64::try_from(attempt.duration_ms).unwrap_or(0),
                            status_code: attempt.status_code.and_then(|c| u16::try_from(c).ok()),
                            error: attempt.error.clone(),
                            replica: attempt.replica.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, RepositoryError>>()?;
                Ok(Delivery {
                    id: parse_uuid(&row.id)?,
                    notification: payload_of(&row.id, &row.payload)?,
                    sink: row.sink,
                    status,
                    created_at: parse_time(&row.created_at)?,
                    next_attempt_at: parse_optional_time(row.next_attempt_at.as_deref())?,
                    attempts,
                })
            })
            .collect()
    }
}
