//! The OpenAPI 3.1 document of `/api`, generated from the handlers' `#[utoipa::path]`
//! annotations and the bodies' schemas; served at `GET /api/openapi.json` with a
//! Swagger UI at `/api/docs` (both readable without a token, like `/healthz`: the
//! contract is no secret, the data behind it is).
//!
//! The domain's types that the API serializes as they are (accounts, tokens, audit
//! entries, diagnostics, ...) are described here by schema-only twins rather than by
//! deriving `ToSchema` in the domain: the domain stays free of HTTP concerns, and the
//! schemathesis run of `app/tests/openapi.rs` checks every twin against what the server
//! really sends.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::http::header::ContentType;

use actix_web::HttpResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::SESSION_COOKIE;
use crate::problem::PROBLEM_JSON;
use crate::{access, audit, clusters, deployments, dora, releases};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";
/// Where the Swagger UI is served.
pub const UI_PATH: &str = "/api/docs";

/// The document's source: every `/api` operation and the schemas they use.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Kubernaut",
        description = "Releases, deployments to Kubernetes clusters, accounts, API tokens and the audit trail. Errors are `application/problem+json` (RFC 9457). See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        openapi_document,
        releases::list,
        releases::create,
        releases::get,
        releases::delete,
        clusters::preview,
        clusters::diff,
        deployments::list,
        deployments::placements,
        deployments::create,
        deployments::get,
        deployments::events,
        deployments::cancel,
        deployments::rollback,
        crate::notifications::list,
        dora::figures,
        clusters::list,
        access::whoami,
        access::list_accounts,
        access::create_account,
        access::get_account,
        access::add_grant,
        access::remove_grant,
        access::list_tokens,
        access::create_token,
        access::revoke_token,
        audit::list,
    ),
    components(schemas(crate::problem::Problem, FieldError)),
    modifiers(&Contract),
    security(("bearer" = []), ("session_cookie" = [])),
    tags(
        (name = "releases", description = "Register, list, read and retire releases"),
        (name = "deployments", description = "Request deploys, follow them to a verdict, cancel, roll back"),
        (name = "clusters", description = "The configured clusters"),
        (name = "access", description = "Who is asking, accounts and their grants, API tokens"),
        (name = "audit", description = "The audit trail"),
        (name = "meta", description = "This document"),
    ),
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/openapi.json`: this document, without a token.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApi",
    summary = "This OpenAPI document",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object)),
)]
pub async fn openapi_document() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().unwrap_or_default());
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(json.as_str())
}

/// The security schemes, and the problem responses every operation shares.
struct Contract;

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("knt_...")
                    .description(Some(
                        "An API token: `Authorization: Bearer knt_...` (POST /api/tokens)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The web UI's session; changes made with it need proof of origin (same Origin, Sec-Fetch-Site: same-origin, or X-CSRF-Token)",
            ))),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (true, item.put.as_mut()),
                (true, item.patch.as_mut()),
                (true, item.delete.as_mut()),
            ];
            for (mutation, operation) in operations {
                if let Some(operation) = operation {
                    shared_problems(path, operation, mutation);
                }
            }
        }
    }
}

/// Adds the problems any authenticated operation can answer with, and gives every
/// error response without a body the problem+json one.
fn shared_problems(path: &str, operation: &mut Operation, mutation: bool) {
    let public = operation
        .security
        .as_ref()
        .is_some_and(|requirements| requirements.iter().all(is_empty_requirement));
    if !public {
        let mut shared = vec![
            (
                "401",
                "No token or session, or one that is malformed, unknown, expired or revoked (`WWW-Authenticate: Bearer`)",
            ),
            (
                "403",
                "The caller's account lacks the role this needs, or a change made with the session cookie lacks proof of origin",
            ),
            ("503", "The database does not answer (`Retry-After`)"),
        ];
        shared.push((
            "429",
            if mutation {
                "More changes than `security.mutations_per_minute` from this client, or more failed authentications from its address than `security.failed_authentications_per_minute` (`Retry-After`)"
            } else {
                "More failed authentications from this address than `security.failed_authentications_per_minute`, or more requests held open than allowed (`Retry-After`)"
            },
        ));
        if path.starts_with("/api/") {
            shared.push(("500", "Unexpected; the cause is in the server's log"));
        }
        for (status, description) in shared {
            if !operation.responses.responses.contains_key(status) {
                operation.responses.responses.insert(
                    status.to_owned(),
                    ResponseBuilder::new()
                        .description(description)
                        .build()
                        .into(),
                );
            }
        }
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, utoipa::openapi::RefOr::T(response)) = (is_error, response)
            && response.content.is_empty()
        {
            response.content.insert(
                PROBLEM_JSON.to_owned(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
        }
    }
}

fn is_empty_requirement(requirement: &SecurityRequirement) -> bool {
    requirement == &SecurityRequirement::default()
}

// Schema-only twins of the domain's types the API serializes as they are.

/// One field that failed its rule, and why.
#[derive(Debug, ToSchema)]
pub struct FieldError {
    /// The input field's name as the caller sent it (`service`, `attributes.team`, ...).
    pub field: String,
    /// A sentence saying which rule the value broke.
    pub reason: String,
}

/// A role, from least to most powerful.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Releaser,
    Deployer,
    Admin,
}

/// A person signs in to the web UI; a robot is a CI job or another tool.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Person,
    Robot,
}

/// A role for a scope.
#[derive(Debug, ToSchema)]
pub struct Grant {
    pub role: Role,
    /// `*` (everywhere) or `cluster/namespace` with `*` and `?` wildcards; narrower
    /// than `*` only for `deployer`.
    #[schema(example = "staging/*")]
    pub scope: String,
}

/// An account and what it has been granted.
#[derive(Debug, ToSchema)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    pub grants: Vec<Grant>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
}

/// Every account.
#[derive(Debug, ToSchema)]
pub struct AccountList {
    pub items: Vec<Account>,
}

/// An API token as stored: everything but its secret.
#[derive(Debug, ToSchema)]
pub struct ApiToken {
    pub id: Uuid,
    pub account: String,
    pub name: String,
    /// The first characters of the secret (`knt_AbC123`), to recognise it.
    pub hint: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Written at most once a minute.
    #[schema(required = true)]
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(required = true)]
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(required = true)]
    pub revoked_by: Option<String>,
}

/// Tokens, newest first.
#[derive(Debug, ToSchema)]
pub struct TokenList {
    pub items: Vec<ApiToken>,
}

/// A token just issued: its record and its secret, shown this once.
#[derive(Debug, ToSchema)]
pub struct IssuedToken {
    pub token: ApiToken,
    /// `knt_...`: send as `Authorization: Bearer knt_...`.
    pub secret: String,
}

/// How a request authenticated.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatedBy {
    Bearer,
    SessionCookie,
}

/// What changed.
#[derive(Debug, ToSchema)]
pub enum AuditAction {
    #[serde(rename = "release.created")]
    ReleaseCreated,
    #[serde(rename = "release.deleted")]
    ReleaseDeleted,
    #[serde(rename = "deployment.requested")]
    DeploymentRequested,
    #[serde(rename = "deployment.cancelled")]
    DeploymentCancelled,
    #[serde(rename = "deployment.rolled_back")]
    DeploymentRolledBack,
    #[serde(rename = "deployment.finished")]
    DeploymentFinished,
    #[serde(rename = "account.created")]
    AccountCreated,
    #[serde(rename = "role.granted")]
    RoleGranted,
    #[serde(rename = "role.revoked")]
    RoleRevoked,
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
}

/// One change: who did what to which object, when, and from where.
#[derive(Debug, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: AuditAction,
    /// The object changed: `release/<id>`, `deployment/<id>`, `account/<name>`,
    /// `token/<id>`.
    pub target: String,
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// The address the request came from.
    #[schema(required = true)]
    pub source: Option<String>,
    /// What changed, as JSON.
    pub details: serde_json::Value,
}

/// Where a deployment is in its life: `queued`, `applying` and `rolling_out` are
/// active, the rest are verdicts.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Queued,
    Applying,
    RollingOut,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

/// Why a resource failed its rollout.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    CrashLoop,
    ImageNotFound,
    ImagePullFailed,
    ContainerConfigError,
    ContainerCannotRun,
    FailedProbe,
    Unschedulable,
    PodFailed,
    JobFailed,
    ProgressDeadlineExceeded,
    ApplyRejected,
    TimedOut,
    Cancelled,
    Other,
}

/// One line of a deployment's history.
#[derive(Debug, ToSchema)]
pub struct TimelineEntry {
    pub at: chrono::DateTime<chrono::Utc>,
    /// The deployment's status when this happened.
    pub phase: DeploymentStatus,
    pub message: String,
    /// The resource concerned, as `Kind/name`, when there is one.
    pub resource: Option<String>,
}

/// A Kubernetes object, named by kind and name (and namespace when it has one).
/// `apiVersion` was `api_version` before 2026-12; that name is still accepted on input.
#[derive(Debug, ToSchema)]
pub struct ResourceRef {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

/// A Kubernetes event about one of the rollout's objects.
#[derive(Debug, ToSchema)]
pub struct EventRecord {
    #[schema(required = true)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
    pub message: String,
    /// The object the event is about, as `Kind/name`.
    pub object: String,
    pub count: i32,
}

/// The last lines a failing container wrote.
#[derive(Debug, ToSchema)]
pub struct ContainerLogs {
    pub pod: String,
    pub container: String,
    pub lines: Vec<String>,
}

/// What went wrong with one resource.
#[derive(Debug, ToSchema)]
pub struct ResourceDiagnosis {
    pub resource: ResourceRef,
    pub reason: FailureReason,
    pub message: String,
    pub events: Vec<EventRecord>,
    pub logs: Vec<ContainerLogs>,
}

/// Why a deployment failed or timed out, resource by resource.
#[derive(Debug, ToSchema)]
pub struct Diagnostics {
    pub resources: Vec<ResourceDiagnosis>,
}

/// A value of an attribute as sent: a string, a number or a boolean (numbers and
/// booleans are stored as their text).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    Text(String),
    Number(f64),
    Flag(bool),
}

/// A token's lifetime: a duration such as `"90d"` or `"12h"`, or whole seconds.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum Lifetime {
    Duration(String),
    Seconds(u64),
}

/// The JSON body of `POST /api/releases`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "service": "hello",
    "version": "1.0.0",
    "image": "registry.example.com/hello:1.0.0",
    "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"{{ service }}\"\ndata:\n  version: \"{{ version }}\"\n  team: \"{{ team }}\"\n",
    "attributes": {"team": "payments"},
    "comment": "built by CI #42"
}))]
pub struct NewRelease {
    /// A DNS-1123 label, at most 63 characters.
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    pub service: String,
    /// 1 to 128 printable characters, no whitespace.
    #[schema(min_length = 1, max_length = 128)]
    pub version: String,
    /// `[registry[:port]/]path[:tag][@sha256:digest]`
    pub image: String,
    /// A Jinja manifest template (at most 1 MiB).
    pub template: String,
    /// Name → value (names `[A-Za-z_][A-Za-z0-9_.-]*`).
    #[schema(required = false)]
    pub attributes: BTreeMap<String, AttributeValue>,
    pub comment: Option<String>,
}

/// The `multipart/form-data` body of `POST /api/releases`: every part other than
/// these is an attribute.
#[derive(Debug, ToSchema)]
pub struct NewReleaseForm {
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    pub service: String,
    #[schema(min_length = 1, max_length = 128)]
    pub version: String,
    pub image: String,
    /// The template: a file or a field.
    pub template: String,
    pub comment: Option<String>,
}

/// What an event of a deployment's stream is.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `data`: a [`TimelineEntry`], one per entry, the past ones first.
    Timeline,
    /// `data`: `{"status": ...}`, on each change.
    Status,
    /// `data`: the [`Deployment`](crate::deployments::DeploymentBody); the stream ends.
    Verdict,
    /// `data`: `{"detail": ...}` when the stream's credential stops being valid; the
    /// stream ends.
    Error,
}

/// One Server-Sent Event of `GET /api/deployments/{id}/events`.
#[derive(Debug, ToSchema)]
pub struct ServerSentEvent {
    pub event: EventKind,
    /// JSON, as the event's kind says.
    pub data: String,
}

/// The object's name and, for namespaced kinds, its namespace; the rest as the
/// manifest says.
#[derive(Debug, ToSchema)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: Option<String>,
}

/// A Kubernetes object: `apiVersion`, `kind`, `metadata.name` and whatever else its
/// manifest says. As YAML, a manifest of several objects is a stream of documents
/// separated by `---`.
#[derive(Debug, ToSchema)]
pub struct KubernetesObject {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
}

/// The rendered manifest of a preview, as JSON.
#[derive(Debug, ToSchema)]
pub struct ManifestPreview {
    /// The YAML.
    pub manifest: String,
    /// The objects as Kubernaut would apply them (its labels and namespace added).
    pub objects: Vec<KubernetesObject>,
}

#[cfg(test)]
mod tests;
