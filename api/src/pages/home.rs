//! `/`: the service × (cluster/namespace) matrix of the versions running now.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::web::Data;
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::Caller;
use kubernaut_domain::deployment::{Deployment, DeploymentQuery, DeploymentStatus};
use kubernaut_domain::deployment_service::DeploymentService;

use super::PageError;
use super::view::{DeploymentRow, MAX_SCANNED, deployments_matching};
use crate::session::{SessionView, SignedIn};

/// Where a service stands on one target.
#[derive(Debug)]
pub struct Placement<'a> {
    /// The newest deployment that succeeded: the version running now.
    pub running: Option<&'a Deployment>,
    /// The newest deployment of any status.
    pub last: &'a Deployment,
}

/// The key of a placement: service, cluster, namespace.
pub type PlacementKey = (String, String, String);

/// The newest deployments of a scan, both succeeded and of any status.
#[derive(Debug)]
pub struct Scan {
    pub succeeded: Vec<Deployment>,
    pub all: Vec<Deployment>,
}

impl Scan {
    /// Reads the newest deployments matching `query` (whose status is ignored).
    ///
    /// # Errors
    /// [`PageError`] when the caller may not read or the storage fails.
    pub async fn read(
        service: &DeploymentService,
        query: DeploymentQuery,
        caller: &Caller,
    ) -> Result<Self, PageError> {
        let all = deployments_matching(
            service,
            DeploymentQuery {
                status: None,
                ..query.clone()
            },
            MAX_SCANNED,
            caller,
        )
        .await?;
        let succeeded = deployments_matching(
            service,
            DeploymentQuery {
                status: Some(DeploymentStatus::Succeeded),
                ..query
            },
            MAX_SCANNED,
            caller,
        )
        .await?;
        Ok(Self { succeeded, all })
    }

    /// Every (service, cluster, namespace) deployed to, with what runs there now.
    pub fn placements(&self) -> BTreeMap<PlacementKey, Placement<'_>> {
        let key = |d: &Deployment| {
            (
                d.service.to_string(),
                d.target.cluster.to_string(),
                d.target.namespace.to_string(),
            )
        };
        let mut placements = BTreeMap::new();
        // Both listings are newest first: the first seen of a key is its newest.
        for deployment in &self.all {
            placements.entry(key(deployment)).or_insert(Placement {
                running: None,
                last: deployment,
            });
        }
        for deployment in &self.succeeded {
            if let Some(placement) = placements.get_mut(&key(deployment))
                && placement.running.is_none()
            {
                placement.running = Some(deployment);
            }
        }
        placements
    }
}

/// One cell of the matrix.
#[derive(Debug)]
pub struct Cell {
    pub running: Option<DeploymentRow>,
    pub last: DeploymentRow,
    /// Whether the last deployment is not the one running (a failure since, say).
    pub last_differs: bool,
}

impl Cell {
    pub fn of(placement: &Placement<'_>) -> Self {
        Self {
            running: placement.running.map(DeploymentRow::from),
            last: DeploymentRow::from(placement.last),
            last_differs: placement.running.is_none_or(|r| r.id != placement.last.id),
        }
    }
}

#[derive(Debug)]
pub struct MatrixRow {
    pub service: String,
    pub cells: Vec<Option<Cell>>,
}

#[derive(Debug)]
pub struct TargetColumn {
    pub cluster: String,
    pub namespace: String,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "home.html")]
pub struct HomePage {
    section: &'static str,
    session: Option<SessionView>,
    targets: Vec<TargetColumn>,
    rows: Vec<MatrixRow>,
    recent: Vec<DeploymentRow>,
}

/// `GET /`
pub async fn show(
    signed_in: SignedIn,
    service: Data<DeploymentService>,
) -> Result<HomePage, PageError> {
    let scan = Scan::read(&service, DeploymentQuery::default(), &signed_in.caller).await?;
    let placements = scan.placements();
    let targets: BTreeSet<(String, String)> = placements
        .keys()
        .map(|(_, cluster, namespace)| (cluster.clone(), namespace.clone()))
        .collect();
    let services: BTreeSet<&String> = placements.keys().map(|(service, _, _)| service).collect();
    let rows = services
        .into_iter()
        .map(|service| MatrixRow {
            service: service.clone(),
            cells: targets
                .iter()
                .map(|(cluster, namespace)| {
                    placements
                        .get(&(service.clone(), cluster.clone(), namespace.clone()))
                        .map(Cell::of)
                })
                .collect(),
        })
        .collect();
    Ok(HomePage {
        section: "home",
        session: Some(signed_in.view()),
        targets: targets
            .into_iter()
            .map(|(cluster, namespace)| TargetColumn { cluster, namespace })
            .collect(),
        rows,
        recent: scan.all.iter().take(10).map(DeploymentRow::from).collect(),
    })
}
