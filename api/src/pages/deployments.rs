//! `/deployments` and `/deployments/{id}`: the deploys, one deploy's timeline (live
//! while it runs), the status of each of its resources, and on failure why.

use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::ServiceName;
use kubernaut_domain::access::Permission;
use kubernaut_domain::cluster::resource_ref_of;
use kubernaut_domain::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, Namespace,
    ResourceDiagnosis,
};
use kubernaut_domain::deployment_service::{
    DeploymentLookupError, DeploymentService, RequestDeploymentError, RollbackError,
};

use super::PageError;
use super::view::{
    DeploymentRow, FilterError, When, filled, lookup_error, parse_cursor, parse_filter,
    status_label,
};
use crate::session::{SessionView, SignedIn};

/// The filters of the deployments listing, as the form sends them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DeploymentFilters {
    pub service: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub status: Option<String>,
    pub cursor: Option<String>,
}

/// A choice of the status filter.
#[derive(Debug)]
pub struct StatusChoice {
    pub value: &'static str,
    pub label: String,
    pub selected: bool,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "deployments.html")]
pub struct DeploymentsPage {
    section: &'static str,
    session: Option<SessionView>,
    service: String,
    cluster: String,
    namespace: String,
    status: String,
    statuses: Vec<StatusChoice>,
    errors: Vec<FilterError>,
    deployments: Vec<DeploymentRow>,
    next_cursor: Option<String>,
    paged: bool,
}

/// `GET /deployments?service=&cluster=&namespace=&status=&cursor=`
pub async fn list(
    signed_in: SignedIn,
    service: Data<DeploymentService>,
    filters: web::Query<DeploymentFilters>,
) -> Result<DeploymentsPage, PageError> {
    let filters = filters.into_inner();
    let mut errors = Vec::new();
    let query = DeploymentQuery {
        service: parse_filter(
            &mut errors,
            "service",
            filters.service.as_ref(),
            ServiceName::parse,
        ),
        cluster: parse_filter(
            &mut errors,
            "cluster",
            filters.cluster.as_ref(),
            ClusterName::parse,
        ),
        namespace: parse_filter(
            &mut errors,
            "namespace",
            filters.namespace.as_ref(),
            Namespace::parse,
        ),
        status: parse_filter(&mut errors, "status", filters.status.as_ref(), |s| {
            DeploymentStatus::parse(s).ok_or("is not a status of a deployment")
        }),
        after: parse_cursor(&mut errors, filters.cursor.as_ref()),
        ..DeploymentQuery::default()
    };
    let (deployments, next_cursor) = if errors.is_empty() {
        let page = service
            .list(&query, &signed_in.caller)
            .await
            .map_err(lookup_error)?;
        (
            page.items.iter().map(DeploymentRow::from).collect(),
            page.next_cursor.map(|c| c.encode()),
        )
    } else {
        (Vec::new(), None)
    };
    let text = |value: Option<&String>| filled(value).unwrap_or_default().to_owned();
    let status = text(filters.status.as_ref());
    Ok(DeploymentsPage {
        section: "deployments",
        session: Some(signed_in.view()),
        service: text(filters.service.as_ref()),
        cluster: text(filters.cluster.as_ref()),
        namespace: text(filters.namespace.as_ref()),
        statuses: DeploymentStatus::ALL
            .into_iter()
            .map(|s| StatusChoice {
                value: s.as_str(),
                label: status_label(s),
                selected: s.as_str() == status,
            })
            .collect(),
        status,
        errors,
        deployments,
        next_cursor,
        paged: query.after.is_some(),
    })
}

/// A line of the timeline.
#[derive(Debug)]
pub struct TimelineRow {
    pub at: When,
    pub phase: String,
    pub phase_label: String,
    pub message: String,
    pub resource: Option<String>,
    /// The line that gave the verdict, marked on the timeline.
    pub verdict: bool,
}

/// The state of one applied object.
#[derive(Debug)]
pub struct ResourceRow {
    pub resource: String,
    /// The CSS class of its badge: `succeeded`, `failed`, `rolling_out`, ...
    pub state: String,
    pub state_label: String,
    /// The last thing the timeline or the diagnosis says about it.
    pub detail: String,
}

/// An event of a failing resource.
#[derive(Debug)]
pub struct EventRow {
    pub at: Option<When>,
    pub warning: bool,
    pub kind: String,
    pub reason: String,
    pub object: String,
    pub message: String,
    pub count: i32,
}

/// The last lines of a failing container.
#[derive(Debug)]
pub struct LogBlock {
    pub pod: String,
    pub container: String,
    pub lines: Vec<String>,
}

/// What went wrong with one resource.
#[derive(Debug)]
pub struct DiagnosisView {
    pub resource: String,
    pub reason: String,
    pub message: String,
    pub events: Vec<EventRow>,
    pub logs: Vec<LogBlock>,
}

impl From<&ResourceDiagnosis> for DiagnosisView {
    fn from(diagnosis: &ResourceDiagnosis) -> Self {
        // Warnings first: they are what explains a failure.
        let mut events: Vec<EventRow> = diagnosis
            .events
            .iter()
            .map(|e| EventRow {
                at: e.at.map(When::from),
                warning: e.event_type.eq_ignore_ascii_case("warning"),
                kind: e.event_type.clone(),
                reason: e.reason.clone(),
                object: e.object.clone(),
                message: e.message.clone(),
                count: e.count,
            })
            .collect();
        events.sort_by_key(|e| !e.warning);
        Self {
            resource: diagnosis.resource.to_string(),
            reason: diagnosis.reason.as_str().replace('_', " "),
            message: diagnosis.message.clone(),
            events,
            logs: diagnosis
                .logs
                .iter()
                .map(|l| LogBlock {
                    pod: l.pod.clone(),
                    container: l.container.clone(),
                    lines: l.lines.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "deployment.html")]
pub struct DeploymentPage {
    section: &'static str,
    session: Option<SessionView>,
    deployment: DeploymentRow,
    started_at: Option<When>,
    finished_at: Option<When>,
    deadline: When,
    timeout_seconds: u64,
    prune: bool,
    rollback_on_failure: bool,
    rollback_of: Option<String>,
    active: bool,
    diagnoses: Vec<DiagnosisView>,
    resources: Vec<ResourceRow>,
    timeline: Vec<TimelineRow>,
    manifest: String,
    /// Whether the signed-in person may cancel or roll back here.
    may_act: bool,
    /// Why the last cancel or rollback from this page was refused.
    action_error: Option<String>,
    /// The live rollout picture.
    rollout: super::rollout::RolloutView,
    notifications: Vec<NotificationRow>,
}

/// One delivery of a notification on the deployment's page.
#[derive(Debug)]
pub struct NotificationRow {
    sink: String,
    event: String,
    state: &'static str,
    /// The status class that colours it.
    state_class: &'static str,
    next_attempt: Option<When>,
    attempts: Vec<AttemptRow>,
}

/// One attempt at a delivery.
#[derive(Debug)]
pub struct AttemptRow {
    at: When,
    /// `accepted (204)`, `refused (500): ...`, `failed: ...`.
    outcome: String,
    duration_ms: u64,
    replica: String,
}

impl From<&kubernaut_domain::notification::Delivery> for NotificationRow {
    fn from(delivery: &kubernaut_domain::notification::Delivery) -> Self {
        use kubernaut_domain::notification::DeliveryStatus;
        let (state, state_class) = match delivery.status {
            DeliveryStatus::Pending => ("pending", "queued"),
            DeliveryStatus::Delivered => ("delivered", "succeeded"),
            DeliveryStatus::Dead => ("given up", "failed"),
        };
        Self {
            sink: delivery.sink.clone(),
            event: delivery.notification.event.as_str().replace('_', " "),
            state,
            state_class,
            next_attempt: delivery.next_attempt_at.map(When::from),
            attempts: delivery
                .attempts
                .iter()
                .map(|attempt| AttemptRow {
                    at: attempt.at.into(),
                    outcome: match (&attempt.error, attempt.status_code) {
                        (None, Some(code)) => format!("accepted ({code})"),
                        (None, None) => "accepted".to_owned(),
                        (Some(error), Some(code)) => format!("refused ({code}): {error}"),
                        (Some(error), None) => format!("failed: {error}"),
                    },
                    duration_ms: attempt.duration_ms,
                    replica: attempt.replica.clone(),
                })
                .collect(),
        }
    }
}

/// `GET /deployments/{id}`
pub async fn show(
    signed_in: SignedIn,
    service: Data<DeploymentService>,
    id: web::Path<String>,
) -> Result<DeploymentPage, PageError> {
    let deployment = find(&signed_in, &service, &id).await?;
    Ok(deployment_page(&signed_in, &service, &deployment, None).await)
}

/// The page of `deployment`, with `action_error` when a cancel or rollback was refused.
async fn deployment_page(
    signed_in: &SignedIn,
    service: &DeploymentService,
    deployment: &Deployment,
    action_error: Option<String>,
) -> DeploymentPage {
    let diagnoses: Vec<DiagnosisView> = deployment
        .diagnostics
        .iter()
        .flat_map(|d| d.resources.iter().map(DiagnosisView::from))
        .collect();
    let verdict_line = deployment
        .timeline
        .iter()
        .position(|entry| entry.phase.is_verdict() || entry.phase == DeploymentStatus::Cancelled);
    DeploymentPage {
        section: "deployments",
        session: Some(signed_in.view()),
        started_at: deployment.started_at.map(When::from),
        finished_at: deployment.finished_at.map(When::from),
        deadline: deployment.deadline().into(),
        timeout_seconds: deployment.options.timeout.as_secs(),
        prune: deployment.options.prune,
        rollback_on_failure: deployment.options.rollback_on_failure,
        rollback_of: deployment.rollback_of.map(|id| id.to_string()),
        active: deployment.status.is_active(),
        resources: resource_rows(deployment, &diagnoses),
        diagnoses,
        timeline: deployment
            .timeline
            .iter()
            .enumerate()
            .map(|(index, entry)| TimelineRow {
                at: entry.at.into(),
                phase: entry.phase.as_str().to_owned(),
                phase_label: status_label(entry.phase),
                message: entry.message.clone(),
                resource: entry.resource.clone(),
                verdict: Some(index) == verdict_line,
            })
            .collect(),
        manifest: deployment.manifest.clone(),
        may_act: signed_in
            .caller
            .allows(&Permission::Deploy(deployment.target.clone())),
        action_error,
        rollout: super::rollout::picture(service, deployment, &signed_in.caller).await,
        // The page shows without them when they cannot be read.
        notifications: match service
            .notifications_of(deployment, &signed_in.caller)
            .await
        {
            Ok(deliveries) => deliveries.iter().map(NotificationRow::from).collect(),
            Err(error) => {
                tracing::warn!(deployment = %deployment.id, error = %error, "could not read the notifications");
                Vec::new()
            }
        },
        deployment: DeploymentRow::from(deployment),
    }
}

/// A deployment named in a path, or the page that says there is none.
pub(super) async fn find(
    signed_in: &SignedIn,
    service: &DeploymentService,
    id: &str,
) -> Result<Deployment, PageError> {
    let not_found = || PageError::NotFound(format!("No deployment has the id {id}."));
    let deployment_id = DeploymentId::parse(id).ok_or_else(not_found)?;
    service
        .get(deployment_id, &signed_in.caller)
        .await
        .map_err(|error| match error {
            DeploymentLookupError::NotFound => not_found(),
            other => lookup_error(other),
        })
}

/// The `csrf` field of a button's form.
#[derive(Debug, serde::Deserialize)]
pub struct ButtonForm {
    #[serde(default)]
    csrf: String,
}

fn see(location: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The deployment's page again, saying why the action was refused.
async fn refused(
    signed_in: &SignedIn,
    service: &DeploymentService,
    deployment: &Deployment,
    status: StatusCode,
    message: String,
) -> HttpResponse {
    let page = deployment_page(signed_in, service, deployment, Some(message)).await;
    super::html(status, &page, "the deployment page could not be rendered")
}

/// `POST /deployments/{id}/cancel`: the same use case as the API's cancel; back to the
/// deployment's page (`303`), or that page with why not (409 once it has a verdict).
pub async fn cancel(
    signed_in: SignedIn,
    request: HttpRequest,
    service: Data<DeploymentService>,
    id: web::Path<String>,
    form: web::Form<ButtonForm>,
) -> Result<HttpResponse, PageError> {
    signed_in.check_form(&request, &form.csrf)?;
    let deployment = find(&signed_in, &service, &id).await?;
    match service.cancel(deployment.id, &signed_in.caller).await {
        Ok(cancelled) => Ok(see(format!("/deployments/{}", cancelled.id))),
        Err(DeploymentLookupError::AlreadyFinished(status)) => {
            let now = find(&signed_in, &service, &id).await?;
            Ok(refused(
                &signed_in,
                &service,
                &now,
                StatusCode::CONFLICT,
                format!(
                    "Not cancelled: the deployment already ended ({}).",
                    status_label(status)
                ),
            )
            .await)
        }
        Err(DeploymentLookupError::Forbidden(denied)) => Ok(refused(
            &signed_in,
            &service,
            &deployment,
            StatusCode::FORBIDDEN,
            format!("Not cancelled: {denied}."),
        )
        .await),
        Err(other) => Err(lookup_error(other)),
    }
}

/// `POST /deployments/{id}/rollback`: deploys again the last release that succeeded on
/// the target (the API's rollback) and shows the new deployment (`303`), or this page
/// with why not (409 with nothing to roll back to or an active deployment there).
pub async fn rollback(
    signed_in: SignedIn,
    request: HttpRequest,
    service: Data<DeploymentService>,
    id: web::Path<String>,
    form: web::Form<ButtonForm>,
) -> Result<HttpResponse, PageError> {
    signed_in.check_form(&request, &form.csrf)?;
    let deployment = find(&signed_in, &service, &id).await?;
    let (status, message) = match service.rollback(deployment.id, &signed_in.caller).await {
        Ok(started) => return Ok(see(format!("/deployments/{}", started.id))),
        Err(RollbackError::Lookup(DeploymentLookupError::Forbidden(denied)))
        | Err(RollbackError::Request(RequestDeploymentError::Forbidden(denied))) => {
            (StatusCode::FORBIDDEN, format!("Not rolled back: {denied}."))
        }
        Err(RollbackError::Request(RequestDeploymentError::ActiveExists { active })) => (
            StatusCode::CONFLICT,
            format!(
                "Not rolled back: deployment {active} to this target is still active; wait for its verdict or cancel it."
            ),
        ),
        Err(RollbackError::Request(RequestDeploymentError::NothingToRollBackTo)) => (
            StatusCode::CONFLICT,
            "Not rolled back: no earlier release succeeded on this target.".to_owned(),
        ),
        Err(RollbackError::Request(RequestDeploymentError::Repository(error)))
        | Err(RollbackError::Lookup(DeploymentLookupError::Repository(error))) => {
            return Err(PageError::internal(&error));
        }
        Err(RollbackError::Lookup(other)) => return Err(lookup_error(other)),
        Err(RollbackError::Request(other)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Not rolled back: {other}."),
        ),
    };
    Ok(refused(&signed_in, &service, &deployment, status, message).await)
}

/// Each applied object with its state: failed when diagnosed, else the deployment's
/// own state, with the timeline's last word on it.
fn resource_rows(deployment: &Deployment, diagnoses: &[DiagnosisView]) -> Vec<ResourceRow> {
    deployment
        .objects
        .iter()
        .map(|object| {
            let resource = resource_ref_of(object).to_string();
            let last_note = deployment
                .timeline
                .iter()
                .rev()
                .find(|entry| entry.resource.as_deref() == Some(resource.as_str()))
                .map(|entry| entry.message.clone());
            match diagnoses.iter().find(|d| d.resource == resource) {
                Some(diagnosis) => ResourceRow {
                    resource,
                    state: "failed".to_owned(),
                    state_label: diagnosis.reason.clone(),
                    detail: diagnosis.message.clone(),
                },
                None => {
                    let (state, state_label) = match deployment.status {
                        DeploymentStatus::Succeeded => ("succeeded".to_owned(), "ready".to_owned()),
                        // Not blamed by the diagnosis, but not known to be ready either.
                        DeploymentStatus::Failed | DeploymentStatus::TimedOut => {
                            ("applied".to_owned(), "not blamed".to_owned())
                        }
                        other => (other.as_str().to_owned(), status_label(other)),
                    };
                    ResourceRow {
                        resource,
                        state,
                        state_label,
                        detail: last_note.unwrap_or_default(),
                    }
                }
            }
        })
        .collect()
}
