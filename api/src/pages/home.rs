//! `/`: the service × (cluster/namespace) matrix of the versions running now.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::web::Data;
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::deployment::{DeploymentQuery, Placement};
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::{Caller, PageLimit};

use super::PageError;
use super::charts::Chart;
use super::delivery::{deploys_per_day, recent_deployments};
use super::view::{DeploymentRow, lookup_error};

/// How many of the newest deployments the home page lists.
const RECENT: i64 = 10;
use crate::session::{SessionView, SignedIn};

/// The key of a placement: service, cluster, namespace.
pub type PlacementKey = (String, String, String);

/// Where each service matching `query` stands on each target, keyed by service, cluster
/// and namespace: read whole from the database, however many deployments there are.
///
/// # Errors
/// [`PageError`] when the caller may not read or the storage fails.
pub async fn placements(
    service: &DeploymentService,
    query: &DeploymentQuery,
    caller: &Caller,
) -> Result<BTreeMap<PlacementKey, Placement>, PageError> {
    let placements = service
        .placements(query, caller)
        .await
        .map_err(lookup_error)?;
    Ok(placements
        .into_iter()
        .map(|placement| {
            let last = &placement.last;
            let key = (
                last.service.to_string(),
                last.target.cluster.to_string(),
                last.target.namespace.to_string(),
            );
            (key, placement)
        })
        .collect())
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
    pub fn of(placement: &Placement) -> Self {
        Self {
            running: placement.running.as_ref().map(DeploymentRow::from),
            last: DeploymentRow::from(&placement.last),
            last_differs: placement
                .running
                .as_ref()
                .is_none_or(|r| r.id != placement.last.id),
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
    /// Deploys per day across the fleet.
    per_day: Chart,
}

/// The days the home page's chart covers.
const FLEET_DAYS: u32 = 14;

/// `GET /`
pub async fn show(
    signed_in: SignedIn,
    service: Data<DeploymentService>,
) -> Result<HomePage, PageError> {
    let placements = placements(&service, &DeploymentQuery::default(), &signed_in.caller).await?;
    let recent = service
        .list(
            &DeploymentQuery {
                limit: PageLimit::new(RECENT).unwrap_or_default(),
                ..DeploymentQuery::default()
            },
            &signed_in.caller,
        )
        .await
        .map_err(lookup_error)?
        .items;
    let now = chrono::Utc::now();
    let fleet = recent_deployments(
        &service,
        DeploymentQuery::default(),
        FLEET_DAYS,
        now,
        &signed_in.caller,
    )
    .await?;
    let per_day = deploys_per_day("fleet-per-day", &fleet, FLEET_DAYS, now, "across the fleet");
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
        recent: recent.iter().map(DeploymentRow::from).collect(),
        per_day,
    })
}
