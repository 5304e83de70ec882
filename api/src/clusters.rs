//! `/api/clusters` and the manifest preview.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use kubernaut_domain::deployment::{ClusterName, Namespace, Target};
use kubernaut_domain::deployment_service::{
    DeploymentService, DiffError, ObjectDiff, PreviewError, parse_request_attributes,
};
use kubernaut_domain::release::AttributeName;
use kubernaut_domain::{ReleaseId, ValidationErrors};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::deployments::request_error;
use crate::problem::ApiError;

/// A configured cluster as listed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Cluster)]
pub struct ClusterBody {
    pub name: String,
    /// A simulated cluster (`kubernaut dev`'s sandbox), not a real one.
    pub simulated: bool,
    pub reachable: bool,
    /// The API server's Kubernetes version, when reachable.
    #[schema(required = true)]
    pub version: Option<String>,
    /// Why it is not reachable.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Namespaces deploys may target; empty means all.
    pub allowed_namespaces: Vec<String>,
    pub allow_cluster_scoped: bool,
    pub allow_other_namespaces: bool,
    /// Kinds manifests may hold (`Kind`, `group/Kind`, `group/*`); empty means all.
    pub allowed_kinds: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

/// The configured clusters.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ClusterList)]
pub struct ClusterListBody {
    pub items: Vec<ClusterBody>,
}

/// `GET /api/clusters`
#[utoipa::path(
    get,
    path = "/api/clusters",
    operation_id = "listClusters",
    summary = "List the configured clusters",
    tag = "clusters",
    responses((status = 200, description = "Every configured cluster and whether it answers", body = ClusterListBody)),
)]
pub async fn list(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
) -> Result<HttpResponse, ApiError> {
    let clusters: Vec<ClusterBody> = service
        .clusters(&caller)
        .await?
        .into_iter()
        .map(|c| ClusterBody {
            name: c.name.to_string(),
            simulated: c.settings.simulated,
            reachable: c.status.reachable,
            version: c.status.version,
            error: c.status.error,
            allowed_namespaces: c.settings.allowed_namespaces,
            allow_cluster_scoped: c.settings.allow_cluster_scoped,
            allow_other_namespaces: c.settings.allow_other_namespaces,
            allowed_kinds: c.settings.allowed_kinds,
            attributes: c.settings.attributes,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClusterListBody { items: clusters }))
}

/// The release, target and deploy-time attributes of a preview or a diff, from the
/// path's id and the query (`cluster`, `namespace`, `attr.NAME`).
fn release_and_target(
    id: &str,
    query: Vec<(String, String)>,
) -> Result<(ReleaseId, Target, BTreeMap<AttributeName, String>), ApiError> {
    let release = ReleaseId::parse(id)
        .ok_or_else(|| ApiError::not_found(format!("no active release has the id {id}")))?;
    let mut errors = ValidationErrors::new();
    let mut cluster = None;
    let mut namespace = None;
    let mut raw_attributes = BTreeMap::new();
    for (key, value) in query {
        match key.as_str() {
            "cluster" => cluster = errors.check("cluster", ClusterName::parse(&value)),
            "namespace" => namespace = errors.check("namespace", Namespace::parse(&value)),
            other => match other.strip_prefix("attr.") {
                Some(name) => {
                    raw_attributes.insert(name.to_owned(), value);
                }
                None => errors.push(kubernaut_domain::FieldError::new(
                    other,
                    "is not a parameter of the preview (cluster, namespace, attr.NAME)",
                )),
            },
        }
    }
    if cluster.is_none() && errors.is_empty() {
        errors.push(kubernaut_domain::FieldError::new("cluster", "is required"));
    }
    if namespace.is_none() && errors.is_empty() {
        errors.push(kubernaut_domain::FieldError::new(
            "namespace",
            "is required",
        ));
    }
    let attributes = match parse_request_attributes(&raw_attributes) {
        Ok(attributes) => attributes,
        Err(bad) => {
            for error in bad.fields() {
                errors.push(error.clone());
            }
            BTreeMap::new()
        }
    };
    let (Some(cluster), Some(namespace)) = (cluster, namespace) else {
        return Err(ApiError::malformed(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::malformed(errors));
    }
    Ok((release, Target { cluster, namespace }, attributes))
}

/// `GET /api/releases/{id}/manifest?cluster=C&namespace=N[&attr.NAME=VALUE...]`: the
/// release rendered for a target as YAML (or, with `Accept: application/json`, the
/// objects as Kubernaut would apply them); nothing is applied.
#[utoipa::path(
    get,
    path = "/api/releases/{id}/manifest",
    operation_id = "previewManifest",
    summary = "Render a release for a target, applying nothing",
    tag = "releases",
    params(
        ("id" = uuid::Uuid, Path, description = "The release's id"),
        ("cluster" = String, Query, description = "The target cluster"),
        ("namespace" = String, Query, description = "The target namespace"),
    ),
    description = "The release rendered for a target, nothing applied. Deploy-time attributes are passed as `attr.NAME=VALUE` query parameters.",
    responses(
        (status = 200, description = "The manifest as YAML, or (with `Accept: application/json`) with the objects as they would be applied",
            content(
                (crate::openapi::KubernetesObject = "application/yaml"),
                (crate::openapi::ManifestPreview = "application/json"),
            )),
        (status = 400, description = "A missing or bad parameter (`errors` names it)"),
        (status = 404, description = "No active release has this id"),
        (status = 422, description = "The release cannot be rendered for this target (unknown cluster, namespace not allowed, missing variables, ...)"),
    ),
)]
pub async fn preview(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    request: HttpRequest,
    id: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found(format!("no active release has the id {id}"));
    let (release, target, attributes) = release_and_target(&id, query.into_inner())?;
    let preview = service
        .preview(release, &target, &attributes, &caller)
        .await
        .map_err(|error| match error {
            PreviewError::ReleaseNotFound => not_found(),
            PreviewError::Request(error) => request_error(error),
        })?;
    let wants_json = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        Ok(
            HttpResponse::Ok()
                .json(json!({ "manifest": preview.text, "objects": preview.objects })),
        )
    } else {
        Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/yaml; charset=utf-8"))
            .body(preview.text))
    }
}

/// One object of a diff: the rendered one and the live one, cut down to the fields the
/// rendered one sets.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ObjectDiff)]
pub struct ObjectDiffBody {
    #[schema(value_type = crate::openapi::ResourceRef)]
    pub resource: kubernaut_domain::deployment::ResourceRef,
    /// `create` (not in the cluster), `update` (a field differs) or `unchanged`.
    pub action: &'static str,
    /// The object as Kubernaut would apply it (without the deployment-id label).
    #[schema(value_type = crate::openapi::KubernetesObject)]
    pub desired: serde_json::Value,
    /// The live object, only the fields `desired` sets; `null` when there is none.
    #[schema(value_type = Option<crate::openapi::KubernetesObject>, required = true)]
    pub live: Option<serde_json::Value>,
}

/// A release rendered for a target against what runs there.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReleaseDiff)]
pub struct DiffBody {
    pub items: Vec<ObjectDiffBody>,
    /// Whether any object would be created or changed.
    pub changed: bool,
}

/// `GET /api/releases/{id}/diff?cluster=C&namespace=N[&attr.NAME=VALUE...]`: the
/// release rendered for a target beside the live objects of the target's cluster.
#[utoipa::path(
    get,
    path = "/api/releases/{id}/diff",
    operation_id = "diffRelease",
    summary = "Compare a release rendered for a target with the live objects",
    tag = "releases",
    params(
        ("id" = uuid::Uuid, Path, description = "The release's id"),
        ("cluster" = String, Query, description = "The target cluster"),
        ("namespace" = String, Query, description = "The target namespace"),
    ),
    description = "Renders the release as the preview does and reads each object from the cluster (nothing is applied). Only the fields the rendered object sets are compared, so defaults the API server added are no difference; the `kubernaut.io/deployment-id` label is left out. Objects a deploy would prune are not listed.",
    responses(
        (status = 200, description = "Every rendered object with its action", body = DiffBody),
        (status = 400, description = "A missing or bad parameter (`errors` names it)"),
        (status = 404, description = "No active release has this id"),
        (status = 422, description = "The release cannot be rendered for this target"),
        (status = 503, description = "The cluster cannot be read"),
    ),
)]
pub async fn diff(
    Authenticated(caller): Authenticated,
    service: Data<DeploymentService>,
    id: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found(format!("no active release has the id {id}"));
    let (release, target, attributes) = release_and_target(&id, query.into_inner())?;
    let objects = service
        .diff(release, &target, &attributes, &caller)
        .await
        .map_err(|error| match error {
            DiffError::Preview(PreviewError::ReleaseNotFound) => not_found(),
            DiffError::Preview(PreviewError::Request(error)) => request_error(error),
            DiffError::Cluster(error) => {
                let detail = format!("the cluster {} cannot be read: {error}", target.cluster);
                ApiError::unavailable(detail, error).with_retry_after(5)
            }
        })?;
    let changed = objects.iter().any(ObjectDiff::changes);
    let items = objects
        .into_iter()
        .map(|object| ObjectDiffBody {
            action: match (&object.live, object.changes()) {
                (None, _) => "create",
                (Some(_), true) => "update",
                (Some(_), false) => "unchanged",
            },
            resource: object.resource,
            desired: object.desired,
            live: object.live,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DiffBody { items, changed }))
}
