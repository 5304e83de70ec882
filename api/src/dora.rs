//! `/api/dora`: the four DORA figures of each service on each target, for the UI.

use actix_web::HttpResponse;
use actix_web::web::{self, Data};
use chrono::{DateTime, Utc};
use kubernaut_domain::deployment::{ClusterName, Namespace};
use kubernaut_domain::deployment_service::{DeploymentLookupError, DeploymentService};
use kubernaut_domain::dora::{DoraFigures, DoraQuery, MAX_DAYS};
use kubernaut_domain::{ServiceName, ValidationErrors};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::problem::ApiError;

/// The window when `days` is left out.
const DEFAULT_DAYS: u32 = 30;

/// The query string of `GET /api/dora`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DoraParameters {
    /// Only this service.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    service: Option<String>,
    /// Only this cluster.
    cluster: Option<String>,
    /// Only this namespace.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    namespace: Option<String>,
    /// The window: deployments created in the last `days` days, 1 to 365 (30 when left
    /// out).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 365)]
    days: Option<String>,
}

impl DoraParameters {
    fn into_query(self) -> Result<DoraQuery, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let service = self
            .service
            .and_then(|s| errors.check("service", ServiceName::parse(&s)));
        let cluster = self
            .cluster
            .and_then(|c| errors.check("cluster", ClusterName::parse(&c)));
        let namespace = self
            .namespace
            .and_then(|n| errors.check("namespace", Namespace::parse(&n)));
        let days = match self.days {
            None => Some(DEFAULT_DAYS),
            Some(days) => errors.check(
                "days",
                days.parse::<u32>()
                    .ok()
                    .filter(|d| (1..=MAX_DAYS).contains(d))
                    .ok_or_else(|| format!("must be a whole number of days from 1 to {MAX_DAYS}")),
            ),
        };
        errors.into_result(|| DoraQuery {
            service,
            cluster,
            namespace,
            days: days.unwrap_or(DEFAULT_DAYS),
        })
    }
}

/// The DORA figures of one service on one target.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DoraFigures)]
pub struct DoraFiguresBody {
    pub service: String,
    pub cluster: String,
    pub namespace: String,
    /// Deployments created in the window that reached a verdict (`succeeded`, `failed`,
    /// `timed_out`); cancelled and active ones are left out of every figure.
    pub deployments: u32,
    pub successes: u32,
    /// `failed` or `timed_out`, rollbacks included.
    pub failures: u32,
    /// Deployment frequency: successful deployments per day of the window.
    pub deployments_per_day: f64,
    /// Change failure rate: of the deployments that are not rollbacks, the share (0 to
    /// 1) that `failed` or `timed_out`; `null` without any.
    #[schema(required = true)]
    pub change_failure_rate: Option<f64>,
    /// Lead time: the median, over successful deployments that are not rollbacks, of
    /// the seconds from the release's registration to the deployment's verdict
    /// (releases deleted since are left out); `null` without any.
    #[schema(required = true)]
    pub lead_time_seconds: Option<f64>,
    /// Time to restore: an incident starts at the verdict of a failed deployment that
    /// follows a success (or opens the window) and ends at the next successful verdict
    /// (a rollback or a fix); the median length in seconds of the incidents that ended
    /// in the window; `null` without any.
    #[schema(required = true)]
    pub time_to_restore_seconds: Option<f64>,
    /// The incidents that ended in the window.
    pub restored_incidents: u32,
    /// When the incident still open began (the last verdict was a failure); `null`
    /// when the last verdict was a success.
    #[schema(required = true)]
    pub failing_since: Option<DateTime<Utc>>,
}

impl From<DoraFigures> for DoraFiguresBody {
    fn from(figures: DoraFigures) -> Self {
        Self {
            service: figures.service.to_string(),
            cluster: figures.target.cluster.to_string(),
            namespace: figures.target.namespace.to_string(),
            deployments: figures.deployments,
            successes: figures.successes,
            failures: figures.failures,
            deployments_per_day: figures.deployment_frequency,
            change_failure_rate: figures.change_failure_rate,
            lead_time_seconds: figures.lead_time.map(|d| d.as_secs_f64()),
            time_to_restore_seconds: figures.time_to_restore.map(|d| d.as_secs_f64()),
            restored_incidents: figures.restored_incidents,
            failing_since: figures.failing_since,
        }
    }
}

/// The figures of every service and target with a verdict in the window.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DoraReport)]
pub struct DoraReportBody {
    pub days: u32,
    /// The window: deployments created from `from` to `to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// By service, cluster and namespace.
    pub items: Vec<DoraFiguresBody>,
}

/// `GET /api/dora`
#[utoipa::path(
    get,
    path = "/api/dora",
    operation_id = "getDoraFigures",
    summary = "DORA figures per service and target",
    description = "Deployment frequency, change failure rate, lead time (release registered to successful verdict) and time to restore of each service on each target, over the deployments created in the last `days` days. Each figure's definition is on its field.",
    tag = "deployments",
    params(DoraParameters),
    responses(
        (status = 200, description = "The figures of every service and target with a verdict in the window", body = DoraReportBody),
        (status = 400, description = "A bad query parameter (`errors` names it)"),
    ),
)]
pub async fn figures(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    parameters: web::Query<DoraParameters>,
) -> Result<HttpResponse, ApiError> {
    let query = parameters
        .into_inner()
        .into_query()
        .map_err(ApiError::malformed)?;
    let to = Utc::now();
    let figures =
        service
            .dora()
            .figures(&query, &caller, to)
            .await
            .map_err(|error| match error {
                DeploymentLookupError::Forbidden(denied) => ApiError::forbidden(&denied),
                DeploymentLookupError::Repository(error) => ApiError::repository(error),
                other => ApiError::internal(other.to_string()),
            })?;
    Ok(HttpResponse::Ok().json(DoraReportBody {
        days: query.days,
        from: to - chrono::Duration::days(i64::from(query.days)),
        to,
        items: figures.into_iter().map(DoraFiguresBody::from).collect(),
    }))
}
