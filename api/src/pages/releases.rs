//! `/releases` and `/releases/{id}`: the registered releases, one release's template,
//! its rendered preview for a target, and where it was deployed.

use std::collections::BTreeMap;

use actix_web::web::{self, Data};
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::deployment::{ClusterName, DeploymentQuery, Namespace, Target};
use kubernaut_domain::deployment_service::{
    DeploymentService, PreviewError, RequestDeploymentError,
};
use kubernaut_domain::{
    Caller, GetReleaseError, ListReleasesError, Release, ReleaseId, ReleaseQuery, ReleaseService,
    ReleaseSummary, ServiceName, Version,
};

use super::PageError;
use super::view::{
    DeploymentRow, FilterError, When, deployments_matching, filled, parse_cursor, parse_filter,
};
use crate::session::{SessionView, SignedIn};

/// A release in the listing.
#[derive(Debug)]
pub struct ReleaseRow {
    pub id: String,
    pub service: String,
    pub version: String,
    pub image: String,
    pub comment: Option<String>,
    pub created_at: When,
    pub created_by: String,
}

impl From<&ReleaseSummary> for ReleaseRow {
    fn from(release: &ReleaseSummary) -> Self {
        Self {
            id: release.id.to_string(),
            service: release.service.to_string(),
            version: release.version.to_string(),
            image: release.image.to_string(),
            comment: release.comment.clone(),
            created_at: release.created_at.into(),
            created_by: release.created_by.to_string(),
        }
    }
}

/// The filters of the releases listing, as the form sends them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ReleaseFilters {
    pub service: Option<String>,
    pub version: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "releases.html")]
pub struct ReleasesPage {
    section: &'static str,
    session: Option<SessionView>,
    service: String,
    version: String,
    errors: Vec<FilterError>,
    releases: Vec<ReleaseRow>,
    /// The next page's cursor, when there is one.
    next_cursor: Option<String>,
    /// Whether this is a later page (so a link back to the first one helps).
    paged: bool,
}

/// `GET /releases?service=&version=&cursor=`
pub async fn list(
    signed_in: SignedIn,
    service: Data<ReleaseService>,
    filters: web::Query<ReleaseFilters>,
) -> Result<ReleasesPage, PageError> {
    let filters = filters.into_inner();
    let mut errors = Vec::new();
    let query = ReleaseQuery {
        service: parse_filter(
            &mut errors,
            "service",
            filters.service.as_ref(),
            ServiceName::parse,
        ),
        version: parse_filter(
            &mut errors,
            "version",
            filters.version.as_ref(),
            Version::parse,
        ),
        after: parse_cursor(&mut errors, filters.cursor.as_ref()),
        ..ReleaseQuery::default()
    };
    let (releases, next_cursor) = if errors.is_empty() {
        let page = service
            .list(&query, &signed_in.caller)
            .await
            .map_err(|error| match error {
                ListReleasesError::Forbidden(denied) => PageError::from(denied),
                ListReleasesError::Repository(e) => PageError::internal(&e),
            })?;
        (
            page.items.iter().map(ReleaseRow::from).collect(),
            page.next_cursor.map(|c| c.encode()),
        )
    } else {
        (Vec::new(), None)
    };
    Ok(ReleasesPage {
        section: "releases",
        session: Some(signed_in.view()),
        service: filled(filters.service.as_ref())
            .unwrap_or_default()
            .to_owned(),
        version: filled(filters.version.as_ref())
            .unwrap_or_default()
            .to_owned(),
        errors,
        releases,
        next_cursor,
        paged: query.after.is_some(),
    })
}

/// One release, complete.
#[derive(Debug)]
pub struct ReleaseView {
    pub id: String,
    pub service: String,
    pub version: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub required_variables: Vec<String>,
    pub comment: Option<String>,
    pub created_at: When,
    pub created_by: String,
    pub template: String,
}

impl From<&Release> for ReleaseView {
    fn from(release: &Release) -> Self {
        Self {
            id: release.id.to_string(),
            service: release.service.to_string(),
            version: release.version.to_string(),
            image: release.image().to_string(),
            image_digest: release.image_digest.clone(),
            attributes: release
                .attributes()
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
            required_variables: release
                .template()
                .required_variables()
                .iter()
                .cloned()
                .collect(),
            comment: release.comment.clone(),
            created_at: release.created_at.into(),
            created_by: release.created_by.to_string(),
            template: release.template().source().to_owned(),
        }
    }
}

/// The target the preview form asks for.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PreviewTarget {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
}

/// The outcome of the preview form.
#[derive(Debug)]
pub enum PreviewOutcome {
    Rendered(String),
    Refused(String),
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "release.html")]
pub struct ReleasePage {
    section: &'static str,
    session: Option<SessionView>,
    release: ReleaseView,
    clusters: Vec<String>,
    chosen_cluster: String,
    chosen_namespace: String,
    preview: Option<PreviewOutcome>,
    deployments: Vec<DeploymentRow>,
    /// The deploy form, when the signed-in person may deploy somewhere.
    deploy: Option<super::deploy::DeployForm>,
}

/// `GET /releases/{id}[?cluster=&namespace=]`
pub async fn show(
    signed_in: SignedIn,
    releases: Data<ReleaseService>,
    deployments: Data<DeploymentService>,
    id: web::Path<String>,
    target: web::Query<PreviewTarget>,
) -> Result<ReleasePage, PageError> {
    let not_found = || PageError::NotFound(format!("No release has the id {id}."));
    let release_id = ReleaseId::parse(&id).ok_or_else(not_found)?;
    let release =
        releases
            .get(release_id, &signed_in.caller)
            .await
            .map_err(|error| match error {
                GetReleaseError::NotFound => not_found(),
                GetReleaseError::Forbidden(denied) => PageError::from(denied),
                GetReleaseError::Repository(e) => PageError::internal(&e),
            })?;
    let clusters: Vec<String> = deployments
        .clusters(&signed_in.caller)
        .await?
        .into_iter()
        .map(|c| c.name.to_string())
        .collect();
    let deployable = super::deploy::deployable_clusters(&deployments, &signed_in.caller).await?;
    let deploy = if deployable.is_empty() {
        None
    } else {
        let mut form = super::deploy::form_of(&release, &deployable, &Vec::new());
        form.namespaces =
            super::deploy::suggested_namespaces(&deployments, &signed_in.caller, form.cluster())
                .await;
        Some(form)
    };
    let target = target.into_inner();
    let chosen_cluster = filled(target.cluster.as_ref())
        .map(str::to_owned)
        .or_else(|| clusters.first().cloned())
        .unwrap_or_default();
    let chosen_namespace = filled(target.namespace.as_ref())
        .unwrap_or_default()
        .to_owned();
    let preview = match (
        filled(target.cluster.as_ref()),
        filled(target.namespace.as_ref()),
    ) {
        (Some(cluster), Some(namespace)) => Some(
            preview(
                &deployments,
                release_id,
                cluster,
                namespace,
                &signed_in.caller,
            )
            .await,
        ),
        (Some(_), None) | (None, Some(_)) => Some(PreviewOutcome::Refused(
            "Choose both a cluster and a namespace.".to_owned(),
        )),
        (None, None) => None,
    };
    let of_this_release = deployments_matching(
        &deployments,
        DeploymentQuery {
            release: Some(release.id),
            ..DeploymentQuery::default()
        },
        super::view::MAX_SCANNED,
        &signed_in.caller,
    )
    .await?
    .iter()
    .map(DeploymentRow::from)
    .collect();
    Ok(ReleasePage {
        section: "releases",
        session: Some(signed_in.view()),
        release: ReleaseView::from(&release),
        clusters,
        chosen_cluster,
        chosen_namespace,
        preview,
        deployments: of_this_release,
        deploy,
    })
}

async fn preview(
    service: &DeploymentService,
    release: ReleaseId,
    cluster: &str,
    namespace: &str,
    caller: &Caller,
) -> PreviewOutcome {
    let cluster = match ClusterName::parse(cluster) {
        Ok(cluster) => cluster,
        Err(error) => return PreviewOutcome::Refused(format!("The cluster name {error}.")),
    };
    let namespace = match Namespace::parse(namespace) {
        Ok(namespace) => namespace,
        Err(error) => return PreviewOutcome::Refused(format!("The namespace {error}.")),
    };
    let attributes = BTreeMap::new();
    match service
        .preview(release, &Target { cluster, namespace }, &attributes, caller)
        .await
    {
        Ok(preview) => PreviewOutcome::Rendered(preview.text),
        Err(PreviewError::ReleaseNotFound) => {
            PreviewOutcome::Refused("The release was deleted meanwhile.".to_owned())
        }
        Err(PreviewError::Request(RequestDeploymentError::Forbidden(denied))) => {
            PreviewOutcome::Refused(format!("{denied}."))
        }
        Err(PreviewError::Request(error)) => {
            PreviewOutcome::Refused(capitalised(&error.to_string()))
        }
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
