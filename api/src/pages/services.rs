//! `/services/{name}`: a service's release history and where each version went.

use actix_web::web::{self, Data};
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::deployment::DeploymentQuery;
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::{ListReleasesError, ReleaseId, ReleaseQuery, ReleaseService, ServiceName};

use super::PageError;
use super::home::{Cell, placements};
use super::releases::ReleaseRow;
use super::view::{DeploymentRow, largest_page, lookup_error};
use crate::session::{SessionView, SignedIn};

/// What runs on one target now.
#[derive(Debug)]
pub struct TargetRow {
    pub cluster: String,
    pub namespace: String,
    pub cell: Cell,
}

/// A release of the service and the newest deployment of it on each target.
#[derive(Debug)]
pub struct HistoryRow {
    pub release: ReleaseRow,
    pub went_to: Vec<DeploymentRow>,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "service.html")]
pub struct ServicePage {
    section: &'static str,
    session: Option<SessionView>,
    name: String,
    targets: Vec<TargetRow>,
    history: Vec<HistoryRow>,
    /// Whether older releases exist than those shown.
    more_releases: bool,
}

/// `GET /services/{name}`
pub async fn show(
    signed_in: SignedIn,
    releases: Data<ReleaseService>,
    deployments: Data<DeploymentService>,
    name: web::Path<String>,
) -> Result<ServicePage, PageError> {
    let not_found = || PageError::NotFound(format!("Kubernaut knows no service {name}."));
    let service = ServiceName::parse(&name).map_err(|_| not_found())?;
    let page = releases
        .list(
            &ReleaseQuery {
                service: Some(service.clone()),
                limit: largest_page(),
                ..ReleaseQuery::default()
            },
            &signed_in.caller,
        )
        .await
        .map_err(|error| match error {
            ListReleasesError::Forbidden(denied) => PageError::from(denied),
            ListReleasesError::Repository(e) => PageError::internal(&e),
        })?;
    let of_service = DeploymentQuery {
        service: Some(service.clone()),
        ..DeploymentQuery::default()
    };
    let placements = placements(&deployments, &of_service, &signed_in.caller).await?;
    // Where each release shown (the newest page) went: its newest deployment per target.
    let shown: Vec<ReleaseId> = page.items.iter().map(|release| release.id).collect();
    let went_to = deployments
        .newest_per_target(&shown, &signed_in.caller)
        .await
        .map_err(lookup_error)?;
    if page.items.is_empty() && placements.is_empty() {
        return Err(not_found());
    }
    let targets = placements
        .iter()
        .map(|((_, cluster, namespace), placement)| TargetRow {
            cluster: cluster.clone(),
            namespace: namespace.clone(),
            cell: Cell::of(placement),
        })
        .collect();
    let history = page
        .items
        .iter()
        .map(|release| {
            // Ordered by target, as the repository gives them.
            let went_to = went_to
                .iter()
                .filter(|d| d.release_id == release.id)
                .map(DeploymentRow::from)
                .collect();
            HistoryRow {
                release: ReleaseRow::from(release),
                went_to,
            }
        })
        .collect();
    Ok(ServicePage {
        section: "services",
        session: Some(signed_in.view()),
        name: service.to_string(),
        targets,
        history,
        more_releases: page.next_cursor.is_some(),
    })
}
