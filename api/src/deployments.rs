//! `/api/deployments`: request deploys, follow them to a verdict, cancel, roll back.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::stream;
use kubernaut_domain::access_service::{AccessService, AuthenticationError};
use kubernaut_domain::changes::{Change, next_change_of};

use crate::rate_limit::{StreamLimiter, StreamPermit};
use kubernaut_domain::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentQuery, DeploymentStatus, Diagnostics,
    Namespace, Target, TimelineEntry,
};
use kubernaut_domain::deployment_service::{
    DeploymentLookupError, DeploymentRequest, DeploymentService, ReleaseSelector,
    RequestDeploymentError, RollbackError, parse_request_attributes,
};
use kubernaut_domain::token::TokenHash;
use kubernaut_domain::{
    Caller, FieldError, Permission, ReleaseId, ServiceName, ValidationErrors, Version,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Authenticated, Identity};
use crate::body::read_body;
use crate::params::Window;
use crate::problem::{ApiError, ProblemType};

/// The longest a request may be held by `?wait=`.
pub const MAX_WAIT: Duration = Duration::from_secs(900);

/// A deployment as the API shows it. Listings leave out the manifest, the objects and
/// the timeline.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Deployment)]
pub struct DeploymentBody {
    #[schema(value_type = uuid::Uuid)]
    pub id: DeploymentId,
    #[schema(value_type = uuid::Uuid)]
    pub release_id: ReleaseId,
    pub service: String,
    pub version: String,
    pub cluster: String,
    pub namespace: String,
    #[schema(value_type = crate::openapi::DeploymentStatus)]
    pub status: DeploymentStatus,
    /// The headline of a failure: `crash_loop`, `image_not_found`, ...
    #[schema(value_type = Option<crate::openapi::FailureReason>, required = true)]
    pub reason: Option<String>,
    pub requested_by: String,
    pub attributes: BTreeMap<String, String>,
    pub timeout_seconds: u64,
    pub prune: bool,
    pub rollback_on_failure: bool,
    /// The deployment this one rolled back.
    #[schema(value_type = Option<uuid::Uuid>, required = true)]
    pub rollback_of: Option<DeploymentId>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a failure or timeout happened.
    #[schema(value_type = Option<crate::openapi::Diagnostics>, required = true)]
    pub diagnostics: Option<Diagnostics>,
    /// Only when read one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<crate::openapi::TimelineEntry>)]
    pub timeline: Option<Vec<TimelineEntry>>,
    /// The rendered manifest; only when read one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub manifest: Option<String>,
    /// The objects as applied; only when read one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<crate::openapi::KubernetesObject>)]
    pub objects: Option<Vec<Value>>,
}

impl DeploymentBody {
    pub fn full(deployment: &Deployment) -> Self {
        Self {
            timeline: Some(deployment.timeline.clone()),
            manifest: Some(deployment.manifest.clone()),
            objects: Some(deployment.objects.clone()),
            ..Self::summary(deployment)
        }
    }

    pub fn summary(deployment: &Deployment) -> Self {
        Self {
            id: deployment.id,
            release_id: deployment.release_id,
            service: deployment.service.to_string(),
            version: deployment.version.to_string(),
            cluster: deployment.target.cluster.to_string(),
            namespace: deployment.target.namespace.to_string(),
            status: deployment.status,
            reason: deployment
                .diagnostics
                .as_ref()
                .and_then(Diagnostics::primary_reason)
                .map(|r| r.to_string()),
            requested_by: deployment.requested_by.to_string(),
            attributes: deployment.attributes.clone(),
            timeout_seconds: deployment.options.timeout.as_secs(),
            prune: deployment.options.prune,
            rollback_on_failure: deployment.options.rollback_on_failure,
            rollback_of: deployment.rollback_of,
            created_at: deployment.created_at,
            started_at: deployment.started_at,
            finished_at: deployment.finished_at,
            diagnostics: deployment.diagnostics.clone(),
            timeline: None,
            manifest: None,
            objects: None,
        }
    }
}

pub fn location_of(id: DeploymentId) -> String {
    format!("/api/deployments/{id}")
}

/// The body of `POST /api/deployments`: the release by `release_id`, or by `service`
/// and `version`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DeploymentRequest, example = json!({
    "service": "hello",
    "version": "1.0.0",
    "cluster": "staging",
    "namespace": "shop",
    "attributes": {"replicas": 2},
    "timeout_seconds": 300
}))]
pub(crate) struct RequestBody {
    #[schema(value_type = Option<uuid::Uuid>)]
    release_id: Option<String>,
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    service: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    version: Option<String>,
    /// A configured cluster's name.
    #[schema(min_length = 1, max_length = 253)]
    cluster: String,
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    namespace: String,
    /// The request's attributes (name → value).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, crate::openapi::AttributeValue>)]
    attributes: BTreeMap<String, AttributeValue>,
    /// The whole rollout's deadline: 1 to 21600 seconds (the release's
    /// `kubernaut.timeout_seconds` attribute, else 600, when left out).
    #[schema(minimum = 1, maximum = 21600)]
    timeout_seconds: Option<u64>,
    /// Delete this service's objects the manifest no longer holds (true when left out).
    prune: Option<bool>,
    /// On failure, deploy the last release that succeeded on the target (false when left out).
    rollback_on_failure: Option<bool>,
}

/// Attribute values may be sent as strings, numbers or booleans.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AttributeValue {
    Text(String),
    Number(serde_json::Number),
    Flag(bool),
}

impl AttributeValue {
    fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Number(number) => number.to_string(),
            Self::Flag(flag) => flag.to_string(),
        }
    }
}

/// Parses JSON naming the field at fault.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::malformed(ValidationErrors::single(field, error.inner().to_string()))
    })
}

pub(crate) fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemType::UnsupportedMediaType,
            format!(
                "send application/json, not {}",
                if essence.is_empty() { "none" } else { essence }
            ),
        ))
    }
}

impl RequestBody {
    fn into_request(self) -> Result<DeploymentRequest, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let release = match (self.release_id, self.service, self.version) {
            (Some(id), None, None) => match ReleaseId::parse(&id) {
                Some(id) => Some(ReleaseSelector::Id(id)),
                None => {
                    errors.push(FieldError::new("release_id", "must be a UUID"));
                    None
                }
            },
            (None, Some(service), Some(version)) => {
                let service = errors.check("service", ServiceName::parse(&service));
                let version = errors.check("version", Version::parse(&version));
                service
                    .zip(version)
                    .map(|(s, v)| ReleaseSelector::Version(s, v))
            }
            _ => {
                errors.push(FieldError::new(
                    "release_id",
                    "name the release either by release_id or by service and version",
                ));
                None
            }
        };
        let cluster = errors.check("cluster", ClusterName::parse(&self.cluster));
        let namespace = errors.check("namespace", Namespace::parse(&self.namespace));
        let raw: BTreeMap<String, String> = self
            .attributes
            .into_iter()
            .map(|(k, v)| (k, v.into_text()))
            .collect();
        let attributes = match parse_request_attributes(&raw) {
            Ok(attributes) => Some(attributes),
            Err(bad) => {
                for error in bad.fields() {
                    errors.push(error.clone());
                }
                None
            }
        };
        let timeout = match self.timeout_seconds {
            Some(0) => {
                errors.push(FieldError::new("timeout_seconds", "must be at least 1"));
                None
            }
            Some(seconds) if seconds > 6 * 3600 => {
                errors.push(FieldError::new(
                    "timeout_seconds",
                    "must be at most 21600 (6 hours)",
                ));
                None
            }
            other => other.map(Duration::from_secs),
        };
        match (release, cluster, namespace, attributes) {
            (Some(release), Some(cluster), Some(namespace), Some(attributes))
                if errors.is_empty() =>
            {
                Ok(DeploymentRequest {
                    release,
                    target: Target { cluster, namespace },
                    attributes,
                    timeout,
                    prune: self.prune.unwrap_or(true),
                    rollback_on_failure: self.rollback_on_failure.unwrap_or(false),
                })
            }
            _ => Err(errors),
        }
    }
}

/// `?wait=SECONDS`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitParameter {
    /// Hold the request until the verdict, or at most this many seconds (0 to 900).
    #[param(value_type = Option<u16>, minimum = 0, maximum = 900)]
    wait: Option<String>,
}

impl WaitParameter {
    fn duration(&self) -> Result<Option<Duration>, ApiError> {
        match &self.wait {
            None => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(seconds) if Duration::from_secs(seconds) <= MAX_WAIT => {
                    Ok(Some(Duration::from_secs(seconds)))
                }
                _ => Err(ApiError::malformed(ValidationErrors::single(
                    "wait",
                    format!(
                        "must be a number of seconds from 0 to {}",
                        MAX_WAIT.as_secs()
                    ),
                ))),
            },
        }
    }
}

pub(crate) fn request_error(error: RequestDeploymentError) -> ApiError {
    let field =
        |field: &str, reason: String| ApiError::validation(ValidationErrors::single(field, reason));
    match error {
        RequestDeploymentError::ReleaseNotFound => {
            field("release_id", "no active release matches".to_owned())
        }
        RequestDeploymentError::UnknownCluster(name) => field(
            "cluster",
            format!("no cluster is configured under the name {name}"),
        ),
        error @ RequestDeploymentError::NamespaceNotAllowed { .. } => {
            field("namespace", error.to_string())
        }
        RequestDeploymentError::MissingVariables(names) => field(
            "attributes",
            format!(
                "the template needs variables this deploy does not supply: {}",
                names.join(", ")
            ),
        ),
        RequestDeploymentError::Render(message) => field("template", message),
        RequestDeploymentError::ValueChangesStructure(names) => {
            let mut errors = ValidationErrors::new();
            for name in names {
                errors.push(FieldError::new(
                    format!("attributes.{name}"),
                    kubernaut_domain::template::CHANGES_STRUCTURE,
                ));
            }
            ApiError::validation(errors)
        }
        RequestDeploymentError::Rejected(rejected) => field("manifest", rejected.to_string()),
        RequestDeploymentError::ActiveExists { active } => ApiError::conflict(
            format!(
                "deployment {active} of this service to this target is still active; wait for it or cancel it"
            ),
            active,
        ),
        error @ RequestDeploymentError::NothingToRollBackTo => {
            ApiError::new(ProblemType::Conflict, error.to_string())
        }
        RequestDeploymentError::Forbidden(denied) => ApiError::forbidden(&denied),
        RequestDeploymentError::Repository(error) => ApiError::repository(error),
        error @ RequestDeploymentError::ClusterUnavailable { .. } => {
            let detail = format!("{error}; nothing was started, try again shortly");
            ApiError::unavailable(detail, error).with_retry_after(5)
        }
    }
}

pub(crate) fn lookup_error(id: &str, error: DeploymentLookupError) -> ApiError {
    match error {
        DeploymentLookupError::NotFound => {
            ApiError::not_found(format!("no deployment has the id {id}"))
        }
        DeploymentLookupError::AlreadyFinished(status) => ApiError::new(
            ProblemType::Conflict,
            format!("the deployment already ended: {status}"),
        ),
        DeploymentLookupError::Forbidden(denied) => ApiError::forbidden(&denied),
        DeploymentLookupError::Repository(error) => ApiError::repository(error),
    }
}

pub(crate) fn parse_id(id: &str) -> Result<DeploymentId, ApiError> {
    DeploymentId::parse(id)
        .ok_or_else(|| ApiError::not_found(format!("no deployment has the id {id}")))
}

fn accepted(deployment: &Deployment) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, location_of(deployment.id)))
        .json(DeploymentBody::full(deployment))
}

/// `POST /api/deployments[?wait=SECONDS]`
#[utoipa::path(
    post,
    path = "/api/deployments",
    operation_id = "createDeployment",
    summary = "Deploy a release to a cluster and namespace",
    tag = "deployments",
    params(WaitParameter),
    request_body = RequestBody,
    responses(
        (status = 202, description = "Queued (`Location: /api/deployments/{id}`); with `wait`, as it is when the verdict came or the wait ended", body = DeploymentBody,
            headers(("Location" = String, description = "The deployment's URL"))),
        (status = 400, description = "Unreadable JSON, or a field of the wrong type, missing, unknown or breaking a rule; a bad `wait`"),
        (status = 409, description = "An active deployment of this service on this target (`existing_id`)"),
        (status = 413, description = "A body over 3 MiB"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "An unknown release or cluster, a namespace or manifest the cluster does not allow, variables nobody supplies, a value that would change the manifest's structure"),
        (status = 429, description = "Too many changes from this client, or (with `wait`) too many requests held open (`Retry-After`)"),
    ),
)]
pub async fn create(
    identity: Identity,
    service: Data<DeploymentService>,
    streams: Data<StreamLimiter>,
    request: HttpRequest,
    wait: web::Query<WaitParameter>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = identity.caller;
    // Cheap refusals first: a caller who may deploy nowhere is refused before the body
    // is read; the target the body names is checked by the use case.
    caller.require(Permission::DeploySomewhere)?;
    let wait = wait.duration()?;
    // A held request takes a slot before anything is stored.
    let _held = match wait {
        Some(_) => Some(streams.acquire(identity.token.to_string())?),
        None => None,
    };
    require_json(&request)?;
    let body: RequestBody = parse_json(&read_body(&request, payload).await?)?;
    let request = body.into_request().map_err(ApiError::malformed)?;
    let deployment = service
        .request(request, &caller)
        .await
        .map_err(request_error)?;
    let deployment = match wait {
        Some(wait) => {
            // Not held while waiting: its rendered objects are most of a waiting
            // request's memory, and the wait reads the deployment again anyway.
            let id = deployment.id;
            drop(deployment);
            service
                .wait(id, wait, &caller)
                .await
                .map_err(|e| lookup_error(&id.to_string(), e))?
        }
        None => deployment,
    };
    Ok(accepted(&deployment))
}

/// `GET /api/deployments/{id}[?wait=SECONDS]`
#[utoipa::path(
    get,
    path = "/api/deployments/{id}",
    operation_id = "getDeployment",
    summary = "Read a deployment, optionally waiting for its verdict",
    tag = "deployments",
    params(("id" = uuid::Uuid, Path, description = "The deployment's id"), WaitParameter),
    responses(
        (status = 200, description = "The deployment with its timeline, manifest and objects", body = DeploymentBody),
        (status = 400, description = "A bad `wait`"),
        (status = 404, description = "An unknown or malformed id"),
        (status = 429, description = "With `wait`: too many requests held open (`Retry-After`)"),
    ),
)]
pub async fn get(
    identity: Identity,
    service: Data<DeploymentService>,
    streams: Data<StreamLimiter>,
    id: web::Path<String>,
    wait: web::Query<WaitParameter>,
) -> Result<HttpResponse, ApiError> {
    let caller = identity.caller;
    let deployment_id = parse_id(&id)?;
    let deployment = match wait.duration()? {
        Some(wait) => {
            let _held = streams.acquire(identity.token.to_string())?;
            service.wait(deployment_id, wait, &caller).await
        }
        None => service.get(deployment_id, &caller).await,
    }
    .map_err(|e| lookup_error(&id, e))?;
    Ok(HttpResponse::Ok().json(DeploymentBody::full(&deployment)))
}

/// `POST /api/deployments/{id}/cancel`
#[utoipa::path(
    post,
    path = "/api/deployments/{id}/cancel",
    operation_id = "cancelDeployment",
    summary = "Cancel a deployment",
    tag = "deployments",
    params(("id" = uuid::Uuid, Path, description = "The deployment's id")),
    responses(
        (status = 200, description = "The cancelled deployment (what was applied stays applied)", body = DeploymentBody),
        (status = 404, description = "An unknown or malformed id"),
        (status = 409, description = "The deployment already has a verdict"),
    ),
)]
pub async fn cancel(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deployment_id = parse_id(&id)?;
    let deployment = service
        .cancel(deployment_id, &caller)
        .await
        .map_err(|e| lookup_error(&id, e))?;
    Ok(HttpResponse::Ok().json(DeploymentBody::full(&deployment)))
}

/// `POST /api/deployments/{id}/rollback`: deploys the last release that succeeded on
/// the deployment's target before it.
#[utoipa::path(
    post,
    path = "/api/deployments/{id}/rollback",
    operation_id = "rollbackDeployment",
    summary = "Roll back to the last release that succeeded on the target",
    tag = "deployments",
    params(("id" = uuid::Uuid, Path, description = "The deployment's id")),
    responses(
        (status = 202, description = "The new deployment (`rollback_of` names this one)", body = DeploymentBody,
            headers(("Location" = String, description = "The new deployment's URL"))),
        (status = 404, description = "An unknown or malformed id"),
        (status = 409, description = "Nothing to roll back to, or an active deployment on the target"),
        (status = 422, description = "The release rolled back to cannot be deployed there any more"),
    ),
)]
pub async fn rollback(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deployment_id = parse_id(&id)?;
    let deployment =
        service
            .rollback(deployment_id, &caller)
            .await
            .map_err(|error| match error {
                RollbackError::Lookup(error) => lookup_error(&id, error),
                RollbackError::Request(error) => request_error(error),
            })?;
    Ok(accepted(&deployment))
}

/// The query string of `GET /api/deployments`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParameters {
    /// Only this service's deployments.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    service: Option<String>,
    /// Only the deployments of this release.
    #[param(value_type = Option<uuid::Uuid>)]
    release_id: Option<String>,
    /// Only to this cluster.
    cluster: Option<String>,
    /// Only to this namespace.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    namespace: Option<String>,
    /// Only in this status.
    #[param(value_type = Option<crate::openapi::DeploymentStatus>)]
    status: Option<String>,
    /// Only deployments created after this time (strict).
    #[param(value_type = Option<DateTime<Utc>>)]
    created_after: Option<String>,
    /// Only deployments created before this time (strict).
    #[param(value_type = Option<DateTime<Utc>>)]
    created_before: Option<String>,
    /// The page's size: 1 to 500 (50 when left out).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl ListParameters {
    fn into_query(self) -> Result<DeploymentQuery, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let service = self
            .service
            .and_then(|s| errors.check("service", ServiceName::parse(&s)));
        let release = self.release_id.and_then(|id| {
            errors.check(
                "release_id",
                ReleaseId::parse(&id).ok_or("must be a release id (a UUID)"),
            )
        });
        let cluster = self
            .cluster
            .and_then(|c| errors.check("cluster", ClusterName::parse(&c)));
        let namespace = self
            .namespace
            .and_then(|n| errors.check("namespace", Namespace::parse(&n)));
        let status = self.status.and_then(|s| {
            errors.check(
                "status",
                DeploymentStatus::parse(&s).ok_or(
                    "must be one of queued, applying, rolling_out, succeeded, failed, timed_out, cancelled",
                ),
            )
        });
        let window = Window::parse(
            &mut errors,
            self.created_after,
            self.created_before,
            self.limit,
            self.cursor,
        );
        errors.into_result(|| DeploymentQuery {
            service,
            release,
            cluster,
            namespace,
            status,
            created_after: window.created_after,
            created_before: window.created_before,
            after: window.after,
            limit: window.limit,
        })
    }
}

/// A page of deployments.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeploymentPage)]
pub struct DeploymentPageBody {
    pub items: Vec<DeploymentBody>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /api/deployments`
#[utoipa::path(
    get,
    path = "/api/deployments",
    operation_id = "listDeployments",
    summary = "List deployments",
    tag = "deployments",
    params(ListParameters),
    responses(
        (status = 200, description = "A page of deployments, newest first (without timeline, manifest and objects)", body = DeploymentPageBody),
        (status = 400, description = "A bad query parameter (`errors` names it)"),
    ),
)]
pub async fn list(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    parameters: web::Query<ListParameters>,
) -> Result<HttpResponse, ApiError> {
    let query = parameters
        .into_inner()
        .into_query()
        .map_err(ApiError::malformed)?;
    let page = service
        .list(&query, &caller)
        .await
        .map_err(|error| lookup_error("", error))?;
    Ok(HttpResponse::Ok().json(DeploymentPageBody {
        items: page.items.iter().map(DeploymentBody::summary).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// The query string of `GET /api/placements`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlacementParameters {
    /// Only this service.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    service: Option<String>,
    /// Only this cluster.
    cluster: Option<String>,
    /// Only this namespace.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    namespace: Option<String>,
}

impl PlacementParameters {
    fn into_query(self) -> Result<DeploymentQuery, ValidationErrors> {
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
        errors.into_result(|| DeploymentQuery {
            service,
            cluster,
            namespace,
            ..DeploymentQuery::default()
        })
    }
}

/// Where a service stands on one target.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Placement)]
pub struct PlacementBody {
    pub service: String,
    pub cluster: String,
    pub namespace: String,
    /// The newest deployment that succeeded: what runs there now (`null`: none).
    #[schema(required = true)]
    pub running: Option<DeploymentBody>,
    /// The newest deployment, of any status.
    pub last: DeploymentBody,
}

/// Every target of the services asked about: not paged, nothing left out.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PlacementList)]
pub struct PlacementListBody {
    pub items: Vec<PlacementBody>,
}

/// `GET /api/placements`: what runs where, exactly, from the database's query.
#[utoipa::path(
    get,
    path = "/api/placements",
    operation_id = "listPlacements",
    summary = "What version of each service runs on each target",
    tag = "deployments",
    params(PlacementParameters),
    responses(
        (status = 200, description = "For each (service, cluster, namespace) deployed to: the newest deployment and the newest that succeeded, ordered by service, cluster and namespace; every target, however many deployments there are", body = PlacementListBody),
        (status = 400, description = "A bad query parameter (`errors` names it)"),
    ),
)]
pub async fn placements(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    parameters: web::Query<PlacementParameters>,
) -> Result<HttpResponse, ApiError> {
    let query = parameters
        .into_inner()
        .into_query()
        .map_err(ApiError::malformed)?;
    let placements = service
        .placements(&query, &caller)
        .await
        .map_err(|error| lookup_error("", error))?;
    let items = placements
        .iter()
        .map(|placement| PlacementBody {
            service: placement.last.service.to_string(),
            cluster: placement.last.target.cluster.to_string(),
            namespace: placement.last.target.namespace.to_string(),
            running: placement.running.as_ref().map(DeploymentBody::summary),
            last: DeploymentBody::summary(&placement.last),
        })
        .collect();
    Ok(HttpResponse::Ok().json(PlacementListBody { items }))
}

/// What the event stream has sent so far.
struct StreamState {
    service: DeploymentService,
    caller: Caller,
    id: DeploymentId,
    changes: tokio::sync::broadcast::Receiver<Change>,
    sent_entries: usize,
    last_status: Option<DeploymentStatus>,
    finished: bool,
    /// The stream's credential, checked again on every wake-up: a stream ends when its
    /// token is revoked or expires, or its account loses the right to read.
    access: AccessService,
    token: TokenHash,
    credentials_changed: tokio::sync::watch::Receiver<u64>,
    /// The stream's slot among the requests held open, given back when it ends.
    _held: StreamPermit,
}

/// How often an open event stream wakes without news: to send a keep-alive comment, and
/// to notice a revocation made through another Kubernaut process.
const STREAM_IDLE_WAKE: Duration = Duration::from_secs(15);

fn error_event(detail: &str) -> String {
    format!(
        "event: error\ndata: {}\n\n",
        serde_json::json!({ "detail": detail })
    )
}

fn sse(event: &str, data: &impl Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    format!("event: {event}\ndata: {data}\n\n")
}

/// A `timeline` event with its id: the entry's position in the timeline, counted from
/// 1 (timelines only grow, so the position names the entry for good).
fn timeline_event(position: usize, entry: &impl Serialize) -> String {
    let data = serde_json::to_string(entry).unwrap_or_else(|_| "null".to_owned());
    format!("id: {position}\nevent: timeline\ndata: {data}\n\n")
}

/// How many timeline entries a reconnecting client has already seen: its
/// `Last-Event-ID` (the position of the last entry it got); 0 when absent or not one
/// of ours.
fn entries_seen(request: &HttpRequest) -> usize {
    request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// How long a client should wait before reconnecting a broken stream, sent first.
const STREAM_RETRY_MILLISECONDS: u64 = 1000;

/// Everything new since the last call, and whether the stream is done.
fn new_events(state: &mut StreamState, deployment: &Deployment) -> String {
    let mut out = String::new();
    for (index, entry) in deployment
        .timeline
        .iter()
        .enumerate()
        .skip(state.sent_entries)
    {
        out.push_str(&timeline_event(index + 1, entry));
    }
    state.sent_entries = deployment.timeline.len().max(state.sent_entries);
    if state.last_status != Some(deployment.status) {
        state.last_status = Some(deployment.status);
        out.push_str(&sse(
            "status",
            &serde_json::json!({ "status": deployment.status }),
        ));
    }
    if deployment.status.is_verdict() {
        out.push_str(&sse("verdict", &DeploymentBody::summary(deployment)));
        state.finished = true;
    }
    out
}

/// `GET /api/deployments/{id}/events`: the timeline as Server-Sent Events, live until
/// the verdict (`timeline`, `status` and a final `verdict` event). Each `timeline`
/// event has an `id:` (its position); a client reconnecting with `Last-Event-ID` gets
/// only the entries after that one, then the current status (and the verdict).
#[utoipa::path(
    get,
    path = "/api/deployments/{id}/events",
    operation_id = "streamDeploymentEvents",
    summary = "Follow a deployment as Server-Sent Events",
    tag = "deployments",
    params(
        ("id" = uuid::Uuid, Path, description = "The deployment's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last `timeline` event received (its position): only later entries are sent. Any other value is ignored, as Server-Sent Events want: the stream starts from the first entry"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `timeline` (with `id:`, its position in the timeline), `status`, a final `verdict` (the deployment), or `error` when the stream's credential stops being valid; `: keep-alive` every 15 s. Send `Last-Event-ID` to resume after an entry", body = crate::openapi::ServerSentEvent, content_type = "text/event-stream"),
        (status = 404, description = "An unknown or malformed id"),
        (status = 429, description = "Too many streams open for this token or in all (`Retry-After`)"),
    ),
)]
pub async fn events(
    identity: Identity,
    service: Data<DeploymentService>,
    access: Data<AccessService>,
    streams: Data<StreamLimiter>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = identity.caller;
    let seen = entries_seen(&request);
    let deployment_id = parse_id(&id)?;
    // Held by the stream until it ends (or its client goes away).
    let held = streams.acquire(identity.token.to_string())?;
    let changes = service.subscribe();
    let credentials_changed = access.credentials_changed();
    let first = service
        .get(deployment_id, &caller)
        .await
        .map_err(|e| lookup_error(&id, e))?;
    let mut state = StreamState {
        service: service.get_ref().clone(),
        caller,
        id: deployment_id,
        changes,
        sent_entries: seen,
        last_status: None,
        finished: false,
        access: access.get_ref().clone(),
        token: identity.token_hash,
        credentials_changed,
        _held: held,
    };
    // `retry:` leads the first event's block (the opening always has one: the
    // status), where every parser applies it.
    let opening = format!(
        "retry: {STREAM_RETRY_MILLISECONDS}\n{}",
        new_events(&mut state, &first)
    );
    let body = stream::unfold((state, Some(opening)), |(mut state, pending)| async move {
        if let Some(text) = pending {
            return Some((Ok::<_, actix_web::Error>(Bytes::from(text)), (state, None)));
        }
        if state.finished {
            return None;
        }
        // Wait for a change of this deployment or of credentials, re-reading at least
        // every 15 s (and sending a comment so proxies keep the connection open).
        let id = state.id;
        let changed = tokio::time::timeout(STREAM_IDLE_WAKE, async {
            tokio::select! {
                () = next_change_of(&mut state.changes, id) => {}
                credentials = state.credentials_changed.changed() => {
                    if credentials.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        })
        .await;
        match state.access.authenticate_hash(state.token).await {
            Ok(authenticated) => {
                // Grants may have changed since the stream opened: read with today's.
                state.caller = Caller::new(authenticated.principal)
                    .with_request(state.caller.request_id.clone(), state.caller.source.clone());
            }
            Err(error) => {
                state.finished = true;
                let detail = match error {
                    AuthenticationError::Repository(_) => {
                        "the stream's credential could not be checked again; reconnect"
                    }
                    _ => {
                        "the credential this stream was opened with is no longer valid (revoked or expired): sign in again"
                    }
                };
                return Some((Ok(Bytes::from(error_event(detail))), (state, None)));
            }
        }
        let text = match state.service.get(state.id, &state.caller).await {
            Ok(deployment) => {
                let text = new_events(&mut state, &deployment);
                if text.is_empty() && changed.is_err() {
                    ": keep-alive\n\n".to_owned()
                } else {
                    text
                }
            }
            Err(error) => {
                state.finished = true;
                error_event(&error.to_string())
            }
        };
        Some((Ok(Bytes::from(text)), (state, None)))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        // Never compressed: a compressor may hold an event back until more follow.
        .insert_header(header::ContentEncoding::Identity)
        .streaming(body))
}
