//! `GET /api/deployments/{id}/notifications`: where a deployment's notifications went,
//! each delivery with its attempts.

use actix_web::HttpResponse;
use actix_web::web::{self, Data};
use chrono::{DateTime, Utc};
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::notification::{Attempt, Delivery};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::deployments::{lookup_error, parse_id};
use crate::problem::ApiError;

/// The deliveries of a deployment's notifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationsBody {
    pub items: Vec<DeliveryBody>,
}

/// One notification to one sink.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    pub id: uuid::Uuid,
    /// The event's id: the same for every sink and every attempt (`ce-id`,
    /// `X-Kubernaut-Event-Id`); receivers deduplicate on it.
    pub event_id: uuid::Uuid,
    /// `started`, `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub event: String,
    /// The sink's name in the settings.
    pub sink: String,
    /// `pending` (due at `next_attempt_at`), `delivered` or `dead` (given up).
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Oldest first.
    pub attempts: Vec<AttemptBody>,
}

/// One try at a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptBody {
    /// 1 for the first.
    pub number: u32,
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong; absent when the receiver accepted it.
    pub error: Option<String>,
    pub succeeded: bool,
    /// The replica that made it.
    pub replica: String,
}

impl From<&Attempt> for AttemptBody {
    fn from(attempt: &Attempt) -> Self {
        Self {
            number: attempt.number,
            at: attempt.at,
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            error: attempt.error.clone(),
            succeeded: attempt.succeeded(),
            replica: attempt.replica.clone(),
        }
    }
}

impl From<&Delivery> for DeliveryBody {
    fn from(delivery: &Delivery) -> Self {
        Self {
            id: delivery.id,
            event_id: delivery.notification.id,
            event: delivery.notification.event.as_str().to_owned(),
            sink: delivery.sink.clone(),
            status: delivery.status.as_str().to_owned(),
            created_at: delivery.created_at,
            next_attempt_at: delivery.next_attempt_at,
            attempts: delivery.attempts.iter().map(AttemptBody::from).collect(),
        }
    }
}

/// `GET /api/deployments/{id}/notifications`
#[utoipa::path(
    get,
    path = "/api/deployments/{id}/notifications",
    operation_id = "listDeploymentNotifications",
    summary = "Where a deployment's notifications went: each delivery with its attempts",
    tag = "deployments",
    params(("id" = uuid::Uuid, Path, description = "The deployment's id")),
    responses(
        (status = 200, description = "The deliveries, oldest first (none when no rule matched)", body = NotificationsBody),
        (status = 404, description = "An unknown or malformed id"),
    ),
)]
pub async fn list(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deployment = parse_id(&id)?;
    let deliveries = service
        .notifications(deployment, &caller)
        .await
        .map_err(|e| lookup_error(&id, e))?;
    Ok(HttpResponse::Ok().json(NotificationsBody {
        items: deliveries.iter().map(DeliveryBody::from).collect(),
    }))
}
