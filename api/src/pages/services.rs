//! `/services/{name}`: a service's release history and where each version went.

use actix_web::web::{self, Data};
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::deployment::DeploymentQuery;
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::{ListReleasesError, ReleaseId, ReleaseQuery, ReleaseService, ServiceName};

use std::collections::BTreeMap;

use chrono::Utc;
use kubernaut_domain::Caller;
use kubernaut_domain::deployment::{ClusterName, Namespace, Placement};
use kubernaut_domain::dora::{DoraQuery, MAX_DAYS};

use super::PageError;
use super::charts::Chart;
use super::delivery::{DoraRow, deploys_per_day, dora_view, recent_deployments, rollout_durations};
use super::home::{Cell, PlacementKey, placements};
use super::releases::ReleaseRow;
use super::view::{DeploymentRow, filled, largest_page, lookup_error};
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
    delivery: Delivery,
}

/// How the service ships: the DORA four per target and, for all its targets or the
/// one chosen, deploys per day and rollout durations.
#[derive(Debug)]
pub struct Delivery {
    pub days: u32,
    /// `cluster/namespace`, when one target is chosen.
    pub target: Option<String>,
    /// Every target of the service, and whether it is the one chosen.
    pub choices: Vec<(String, bool)>,
    pub dora: Vec<DoraRow>,
    pub dora_charts: Vec<Chart>,
    pub per_day: Chart,
    pub durations: Chart,
    /// Why the chosen target or window was not taken.
    pub errors: Vec<String>,
}

/// The window and target of the service page's charts.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DeliveryFilters {
    pub target: Option<String>,
    pub days: Option<String>,
}

/// The window when none is asked for.
const DEFAULT_DAYS: u32 = 30;

/// `GET /services/{name}`
pub async fn show(
    signed_in: SignedIn,
    releases: Data<ReleaseService>,
    deployments: Data<DeploymentService>,
    name: web::Path<String>,
    filters: web::Query<DeliveryFilters>,
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
    let delivery = delivery(
        &deployments,
        &service,
        &placements,
        &filters,
        &signed_in.caller,
    )
    .await?;
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
        delivery,
    })
}

async fn delivery(
    deployments: &DeploymentService,
    service: &ServiceName,
    placements: &BTreeMap<PlacementKey, Placement>,
    filters: &DeliveryFilters,
    caller: &Caller,
) -> Result<Delivery, PageError> {
    let mut errors = Vec::new();
    let days = match filled(filters.days.as_ref()) {
        None => DEFAULT_DAYS,
        Some(text) => match text.parse::<u32>() {
            Ok(days) if (1..=MAX_DAYS).contains(&days) => days,
            _ => {
                errors.push(format!(
                    "The window must be a whole number of days from 1 to {MAX_DAYS}; showing {DEFAULT_DAYS}."
                ));
                DEFAULT_DAYS
            }
        },
    };
    let known: Vec<String> = placements
        .keys()
        .map(|(_, cluster, namespace)| format!("{cluster}/{namespace}"))
        .collect();
    let target = match filled(filters.target.as_ref()) {
        None => None,
        Some(text) if known.iter().any(|k| k == text) => Some(text.to_owned()),
        Some(text) => {
            errors.push(format!(
                "{service} was never deployed to {text}; showing all its targets."
            ));
            None
        }
    };
    let (cluster, namespace) = match target.as_deref().and_then(|t| t.split_once('/')) {
        Some((cluster, namespace)) => (
            ClusterName::parse(cluster).ok(),
            Namespace::parse(namespace).ok(),
        ),
        None => (None, None),
    };
    let now = Utc::now();
    let query = DeploymentQuery {
        service: Some(service.clone()),
        cluster: cluster.clone(),
        namespace: namespace.clone(),
        ..DeploymentQuery::default()
    };
    let recent = recent_deployments(deployments, query, days, now, caller).await?;
    let whose = match &target {
        Some(target) => format!("of {service} on {target}"),
        None => format!("of {service}"),
    };
    let dora = dora_view(
        deployments,
        &DoraQuery {
            service: Some(service.clone()),
            cluster,
            namespace,
            days,
        },
        caller,
        now,
    )
    .await?;
    Ok(Delivery {
        days,
        choices: known
            .into_iter()
            .map(|k| {
                let chosen = target.as_deref() == Some(k.as_str());
                (k, chosen)
            })
            .collect(),
        target,
        dora: dora.rows,
        dora_charts: dora.charts,
        per_day: deploys_per_day("service-per-day", &recent, days, now, &whose),
        durations: rollout_durations("service-durations", &recent, &whose),
        errors,
    })
}
