//! `/releases/{id}/deploy`: deploy a release from the page. The form is filled on the
//! release's page; `GET` renders the manifest for the chosen target (nothing applied)
//! with a confirming form, whose `POST` starts the deploy through the same use case as
//! `POST /api/deployments` (role, scope, audit) and sends the browser to the new
//! deployment's page, which follows the rollout live.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use kubernaut_domain::deployment::{ClusterName, DeploymentOptions, Namespace, Target};
use kubernaut_domain::deployment_service::{
    DeploymentRequest, DeploymentService, PreviewError, ReleaseSelector, RequestDeploymentError,
    parse_request_attributes,
};
use kubernaut_domain::{
    Caller, GetReleaseError, Release, ReleaseId, ReleaseService, ValidationErrors,
};

use super::{PageError, html};
use crate::session::{SessionView, SignedIn};

/// A target a person may deploy to: a cluster and the namespaces worth suggesting.
#[derive(Debug, Clone)]
pub struct ClusterChoice {
    pub name: String,
    pub selected: bool,
}

/// A variable of the template with its own field.
#[derive(Debug, Clone)]
pub struct VariableField {
    pub name: String,
    pub value: String,
}

/// The deploy form as shown (and sent back): every field as typed.
#[derive(Debug, Clone)]
pub struct DeployForm {
    pub clusters: Vec<ClusterChoice>,
    pub namespace: String,
    /// Suggestions for the namespace: those the grants name and those already in use.
    pub namespaces: Vec<String>,
    pub variables: Vec<VariableField>,
    /// Further `name=value` lines.
    pub extra: String,
    pub timeout_seconds: String,
    pub prune: bool,
    pub rollback_on_failure: bool,
}

impl DeployForm {
    /// The form's fields as `(name, value)` pairs, for the hidden fields of the
    /// confirming form.
    pub fn hidden_fields(&self) -> Vec<(String, String)> {
        let mut fields = vec![
            ("cluster".to_owned(), self.cluster().to_owned()),
            ("namespace".to_owned(), self.namespace.clone()),
            ("attributes".to_owned(), self.extra.clone()),
            ("timeout_seconds".to_owned(), self.timeout_seconds.clone()),
        ];
        for variable in &self.variables {
            fields.push((format!("var.{}", variable.name), variable.value.clone()));
        }
        if self.prune {
            fields.push(("prune".to_owned(), "on".to_owned()));
        }
        if self.rollback_on_failure {
            fields.push(("rollback_on_failure".to_owned(), "on".to_owned()));
        }
        fields.push(("sent".to_owned(), "1".to_owned()));
        fields
    }

    pub fn cluster(&self) -> &str {
        self.clusters
            .iter()
            .find(|c| c.selected)
            .map_or("", |c| c.name.as_str())
    }
}

/// A field the deploy refused, or the refusal as a whole (`field` empty).
#[derive(Debug, Clone)]
pub struct FormError {
    pub field: String,
    pub message: String,
}

/// Why the deploy cannot go ahead, shown above the form.
#[derive(Debug, Clone, Default)]
pub struct Refusal {
    pub errors: Vec<FormError>,
    /// The active deployment in the way (a 409).
    pub active: Option<String>,
}

/// `/releases/{id}/deploy`: the preview and the confirming form, or why not.
#[derive(Debug, Template)]
#[template(path = "deploy.html")]
pub struct DeployPage {
    section: &'static str,
    session: Option<SessionView>,
    service: String,
    version: String,
    release_id: String,
    form: DeployForm,
    refusal: Option<Refusal>,
    /// The manifest as it would be applied, when it renders.
    preview: Option<String>,
    /// The deploy-time attributes of the preview, as parsed.
    attributes: Vec<(String, String)>,
}

/// Reads a release for a page, naming it when it is unknown.
pub(super) async fn release_for_page(
    releases: &ReleaseService,
    id: &str,
    caller: &Caller,
) -> Result<Release, PageError> {
    let not_found = || PageError::NotFound(format!("No release has the id {id}."));
    let release_id = ReleaseId::parse(id).ok_or_else(not_found)?;
    releases
        .get(release_id, caller)
        .await
        .map_err(|error| match error {
            GetReleaseError::NotFound => not_found(),
            GetReleaseError::Forbidden(denied) => PageError::from(denied),
            GetReleaseError::Repository(e) => PageError::internal(&e),
        })
}

/// The clusters the caller may deploy to, in configuration order.
pub(super) async fn deployable_clusters(
    service: &DeploymentService,
    caller: &Caller,
) -> Result<Vec<String>, PageError> {
    Ok(service
        .clusters(caller)
        .await?
        .into_iter()
        .filter(|c| caller.principal().may_deploy_in(&c.name))
        .map(|c| c.name.to_string())
        .collect())
}

/// Namespaces worth suggesting on `cluster`: those the grants name and those this
/// service or any other runs in already, where the caller may deploy.
pub(super) async fn suggested_namespaces(
    service: &DeploymentService,
    caller: &Caller,
    cluster: &str,
) -> Vec<String> {
    let Ok(cluster) = ClusterName::parse(cluster) else {
        return Vec::new();
    };
    let mut names = caller.principal().named_namespaces(&cluster);
    let query = kubernaut_domain::deployment::DeploymentQuery {
        cluster: Some(cluster.clone()),
        ..Default::default()
    };
    if let Ok(placements) = service.placements(&query, caller).await {
        names.extend(
            placements
                .iter()
                .map(|p| p.last.target.clone())
                .filter(|target| {
                    caller.allows(&kubernaut_domain::access::Permission::Deploy(
                        target.clone(),
                    ))
                })
                .map(|target| target.namespace.to_string()),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// The fields of the deploy form, as sent (by `GET` or `POST`).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The form as sent, over the release's variables and the caller's clusters. A form
/// not yet sent (from the release page's link) prunes by default.
pub(super) fn form_of(release: &Release, clusters: &[String], fields: &Fields) -> DeployForm {
    let sent = field(fields, "sent").is_some();
    let chosen = field(fields, "cluster")
        .map(str::trim)
        .filter(|c| clusters.iter().any(|known| known == c))
        .map(str::to_owned)
        .or_else(|| clusters.first().cloned())
        .unwrap_or_default();
    DeployForm {
        clusters: clusters
            .iter()
            .map(|name| ClusterChoice {
                name: name.clone(),
                selected: *name == chosen,
            })
            .collect(),
        namespace: field(fields, "namespace")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        namespaces: Vec::new(),
        variables: release
            .template()
            .required_variables()
            .iter()
            .map(|name| VariableField {
                name: name.clone(),
                value: field(fields, &format!("var.{name}"))
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect(),
        extra: field(fields, "attributes").unwrap_or_default().to_owned(),
        timeout_seconds: field(fields, "timeout_seconds")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        prune: if sent {
            field(fields, "prune").is_some()
        } else {
            true
        },
        rollback_on_failure: field(fields, "rollback_on_failure").is_some(),
    }
}

/// What the form asks for, parsed as `POST /api/deployments` parses its body; every
/// bad field is named.
fn parse_form(form: &DeployForm, release: ReleaseId) -> Result<DeploymentRequest, Refusal> {
    let mut errors = ValidationErrors::new();
    let cluster = errors.check("cluster", ClusterName::parse(form.cluster()));
    let namespace = errors.check("namespace", Namespace::parse(&form.namespace));
    let mut raw = BTreeMap::new();
    for (number, line) in form.extra.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) => {
                raw.insert(name.trim().to_owned(), value.trim().to_owned());
            }
            None => errors.push(kubernaut_domain::FieldError::new(
                "attributes",
                format!("line {} is not name=value: {line}", number + 1),
            )),
        }
    }
    for variable in &form.variables {
        if !variable.value.trim().is_empty() {
            raw.insert(variable.name.clone(), variable.value.trim().to_owned());
        }
    }
    let attributes = match parse_request_attributes(&raw) {
        Ok(attributes) => Some(attributes),
        Err(bad) => {
            for error in bad.fields() {
                errors.push(error.clone());
            }
            None
        }
    };
    let timeout = match form.timeout_seconds.as_str() {
        "" => None,
        text => errors.check(
            "timeout_seconds",
            text.parse::<u64>()
                .ok()
                .map(Duration::from_secs)
                .filter(|t| !t.is_zero() && *t <= DeploymentOptions::MAX_TIMEOUT)
                .ok_or("must be a whole number of seconds from 1 to 21600 (6 hours)"),
        ),
    };
    match (cluster, namespace, attributes) {
        (Some(cluster), Some(namespace), Some(attributes)) if errors.is_empty() => {
            Ok(DeploymentRequest {
                release: ReleaseSelector::Id(release),
                target: Target { cluster, namespace },
                attributes,
                timeout,
                prune: form.prune,
                rollback_on_failure: form.rollback_on_failure,
            })
        }
        _ => Err(Refusal {
            errors: errors
                .fields()
                .iter()
                .map(|e| FormError {
                    field: e.field.clone(),
                    message: e.reason.clone(),
                })
                .collect(),
            active: None,
        }),
    }
}

/// A refused deploy as the form tells it, with the status the API would answer.
fn refusal_of(error: RequestDeploymentError) -> Result<(StatusCode, Refusal), PageError> {
    let one = |status: StatusCode, field: &str, message: String| {
        Ok((
            status,
            Refusal {
                errors: vec![FormError {
                    field: field.to_owned(),
                    message,
                }],
                active: None,
            },
        ))
    };
    match error {
        RequestDeploymentError::ActiveExists { active } => Ok((
            StatusCode::CONFLICT,
            Refusal {
                errors: vec![FormError {
                    field: String::new(),
                    message: format!(
                        "Deployment {active} of this service to this target is still active: wait for its verdict or cancel it."
                    ),
                }],
                active: Some(active.to_string()),
            },
        )),
        RequestDeploymentError::MissingVariables(names) => one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "attributes",
            format!(
                "The template needs variables this deploy does not supply: {}.",
                names.join(", ")
            ),
        ),
        RequestDeploymentError::Forbidden(denied) => {
            one(StatusCode::FORBIDDEN, "", format!("{denied}."))
        }
        RequestDeploymentError::ReleaseNotFound => one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            "The release was deleted meanwhile.".to_owned(),
        ),
        error @ RequestDeploymentError::UnknownCluster(_) => one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cluster",
            error.to_string(),
        ),
        error @ RequestDeploymentError::NamespaceNotAllowed { .. } => one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "namespace",
            error.to_string(),
        ),
        error @ RequestDeploymentError::ValueChangesStructure(_) => one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "attributes",
            error.to_string(),
        ),
        error @ (RequestDeploymentError::Render(_) | RequestDeploymentError::Rejected(_)) => {
            one(StatusCode::UNPROCESSABLE_ENTITY, "", error.to_string())
        }
        error @ RequestDeploymentError::NothingToRollBackTo => {
            one(StatusCode::CONFLICT, "", error.to_string())
        }
        error @ RequestDeploymentError::ClusterUnavailable { .. } => one(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster",
            format!("{error}; nothing was started, try again shortly"),
        ),
        RequestDeploymentError::Repository(error) => Err(PageError::internal(&error)),
    }
}

async fn page(
    signed_in: &SignedIn,
    releases: &ReleaseService,
    deployments: &DeploymentService,
    id: &str,
    fields: &Fields,
) -> Result<(Release, DeployPage), PageError> {
    let release = release_for_page(releases, id, &signed_in.caller).await?;
    let clusters = deployable_clusters(deployments, &signed_in.caller).await?;
    if clusters.is_empty() {
        return Err(PageError::Forbidden(format!(
            "{} may not deploy to any configured cluster: that needs the deployer role for a scope on one, or admin.",
            signed_in.account
        )));
    }
    let mut form = form_of(&release, &clusters, fields);
    form.namespaces = suggested_namespaces(deployments, &signed_in.caller, form.cluster()).await;
    let page = DeployPage {
        section: "releases",
        session: Some(signed_in.view()),
        service: release.service.to_string(),
        version: release.version.to_string(),
        release_id: release.id.to_string(),
        form,
        refusal: None,
        preview: None,
        attributes: Vec::new(),
    };
    Ok((release, page))
}

/// `GET /releases/{id}/deploy?cluster=&namespace=&var.NAME=&attributes=&...`: the
/// manifest for the target and a form to confirm, or what is wrong with the choice.
pub async fn preview(
    signed_in: SignedIn,
    releases: Data<ReleaseService>,
    deployments: Data<DeploymentService>,
    id: web::Path<String>,
    fields: web::Query<Fields>,
) -> Result<HttpResponse, PageError> {
    let (release, mut page) = page(&signed_in, &releases, &deployments, &id, &fields).await?;
    let status = match parse_form(&page.form, release.id) {
        Err(refusal) => {
            page.refusal = Some(refusal);
            StatusCode::BAD_REQUEST
        }
        Ok(request) => match deployments
            .preview(
                release.id,
                &request.target,
                &request.attributes,
                &signed_in.caller,
            )
            .await
        {
            Ok(preview) => {
                if let Err(denied) =
                    signed_in
                        .caller
                        .require(kubernaut_domain::access::Permission::Deploy(
                            request.target.clone(),
                        ))
                {
                    page.refusal = Some(Refusal {
                        errors: vec![FormError {
                            field: "namespace".to_owned(),
                            message: format!("{denied}."),
                        }],
                        active: None,
                    });
                    StatusCode::FORBIDDEN
                } else {
                    page.preview = Some(preview.text);
                    page.attributes = request
                        .attributes
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.clone()))
                        .collect();
                    StatusCode::OK
                }
            }
            Err(PreviewError::ReleaseNotFound) => {
                return Err(PageError::NotFound(format!("No release has the id {id}.")));
            }
            Err(PreviewError::Request(error)) => {
                let (status, refusal) = refusal_of(error)?;
                page.refusal = Some(refusal);
                status
            }
        },
    };
    Ok(html(status, &page, "the deploy page could not be rendered"))
}

/// `POST /releases/{id}/deploy`: starts the deploy and shows its page (`303`), or
/// shows the form again with why not (409 for an active deployment, 422 for a manifest
/// that cannot be made, ...).
pub async fn submit(
    signed_in: SignedIn,
    request: HttpRequest,
    releases: Data<ReleaseService>,
    deployments: Data<DeploymentService>,
    id: web::Path<String>,
    fields: web::Form<Fields>,
) -> Result<HttpResponse, PageError> {
    signed_in.check_form(&request, field(&fields, "csrf").unwrap_or_default())?;
    let (release, mut page) = page(&signed_in, &releases, &deployments, &id, &fields).await?;
    let outcome = match parse_form(&page.form, release.id) {
        Err(refusal) => Err((StatusCode::BAD_REQUEST, refusal)),
        Ok(wanted) => match deployments.request(wanted, &signed_in.caller).await {
            Ok(deployment) => Ok(deployment),
            Err(error) => Err(refusal_of(error)?),
        },
    };
    match outcome {
        Ok(deployment) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/deployments/{}", deployment.id)))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()),
        Err((status, refusal)) => {
            page.refusal = Some(refusal);
            Ok(html(status, &page, "the deploy page could not be rendered"))
        }
    }
}
