//! The live rollout picture of a deployment's page: per workload, the new revision's
//! pods beside the old ones, the counts and the conditions, as the cluster shows them
//! now. Drawn into the page, and as a fragment (`/deployments/{id}/rollout`) that the
//! page's script fetches again whenever the event stream tells of progress.

use std::time::Duration;

use actix_web::web::{self, Data};
use actix_web::{HttpResponse, http::StatusCode, http::header};
use askama::Template;
use kubernaut_domain::cluster::{PodPicture, WorkloadPicture};
use kubernaut_domain::deployment::{Deployment, DeploymentId, DeploymentQuery};
use kubernaut_domain::deployment_service::{DeploymentService, RolloutPictureError};
use kubernaut_domain::{Caller, PageLimit};

use super::PageError;
use crate::session::SignedIn;

/// How long a page waits for the cluster's answer before drawing without it.
const PATIENCE: Duration = Duration::from_secs(3);

/// A pod as the picture shows it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    /// `ready`, `updating`, `failing`, `terminating`: the CSS class and the words.
    pub state: &'static str,
    pub detail: Option<String>,
}

impl From<&PodPicture> for PodView {
    fn from(pod: &PodPicture) -> Self {
        Self {
            name: pod.name.clone(),
            state: pod.state.as_str(),
            detail: pod.detail.clone(),
        }
    }
}

/// A status condition.
#[derive(Debug, Clone)]
pub struct ConditionView {
    pub kind: String,
    pub status: String,
    pub text: String,
}

/// One workload of the picture.
#[derive(Debug, Clone)]
pub struct WorkloadView {
    pub resource: String,
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// "1 of 2 updated, 1 ready, 1 available; 1 old pod left": what a screen reader
    /// hears when the picture changes.
    pub summary: String,
    pub conditions: Vec<ConditionView>,
    pub new_pods: Vec<PodView>,
    pub old_pods: Vec<PodView>,
}

impl From<&WorkloadPicture> for WorkloadView {
    fn from(workload: &WorkloadPicture) -> Self {
        let new_pods: Vec<PodView> = workload
            .pods
            .iter()
            .filter(|p| p.new_revision)
            .map(PodView::from)
            .collect();
        let old_pods: Vec<PodView> = workload
            .pods
            .iter()
            .filter(|p| !p.new_revision)
            .map(PodView::from)
            .collect();
        let failing = new_pods.iter().filter(|p| p.state == "failing").count();
        let mut summary = format!(
            "{}: {} of {} updated, {} ready, {} available",
            workload.resource,
            workload.updated,
            workload.desired,
            workload.ready,
            workload.available
        );
        if failing > 0 {
            summary.push_str(&format!("; {failing} new pod(s) failing"));
        }
        if !old_pods.is_empty() {
            summary.push_str(&format!("; {} old pod(s) left", old_pods.len()));
        }
        Self {
            resource: workload.resource.clone(),
            desired: workload.desired,
            updated: workload.updated,
            ready: workload.ready,
            available: workload.available,
            summary,
            conditions: workload
                .conditions
                .iter()
                .map(|c| ConditionView {
                    kind: c.kind.clone(),
                    status: c.status.clone(),
                    text: [c.reason.as_deref(), c.message.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": "),
                })
                .collect(),
            new_pods,
            old_pods,
        }
    }
}

/// The picture, or why there is none.
#[derive(Debug, Clone, Default)]
pub struct RolloutView {
    pub workloads: Vec<WorkloadView>,
    /// Why the cluster could not be asked.
    pub unavailable: Option<String>,
    /// A later deployment of the service to the target: what the cluster shows now is
    /// its rollout, not this one's.
    pub superseded_by: Option<String>,
}

/// The newest deployment of `deployment`'s service to its target, when it is another.
async fn newer_on_target(
    service: &DeploymentService,
    deployment: &Deployment,
    caller: &Caller,
) -> Option<DeploymentId> {
    let query = DeploymentQuery {
        service: Some(deployment.service.clone()),
        cluster: Some(deployment.target.cluster.clone()),
        namespace: Some(deployment.target.namespace.clone()),
        limit: PageLimit::new(1).unwrap_or_default(),
        ..DeploymentQuery::default()
    };
    let newest = service
        .list(&query, caller)
        .await
        .ok()?
        .items
        .into_iter()
        .next()?;
    (newest.id != deployment.id).then_some(newest.id)
}

/// The picture of `deployment`'s workloads now, unless a later deployment to its
/// target took over (then the cluster shows that one); never fails the page.
pub async fn picture(
    service: &DeploymentService,
    deployment: &Deployment,
    caller: &Caller,
) -> RolloutView {
    if !deployment.status.is_active()
        && let Some(newer) = newer_on_target(service, deployment, caller).await
    {
        return RolloutView {
            superseded_by: Some(newer.to_string()),
            ..RolloutView::default()
        };
    }
    match tokio::time::timeout(PATIENCE, service.rollout_picture(deployment, caller)).await {
        Ok(Ok(workloads)) => RolloutView {
            workloads: workloads.iter().map(WorkloadView::from).collect(),
            ..RolloutView::default()
        },
        Ok(Err(RolloutPictureError::Forbidden(denied))) => RolloutView {
            unavailable: Some(format!("{denied}.")),
            ..RolloutView::default()
        },
        Ok(Err(RolloutPictureError::Cluster(error))) => RolloutView {
            unavailable: Some(format!("The cluster could not be asked: {error}.")),
            ..RolloutView::default()
        },
        Err(_) => RolloutView {
            unavailable: Some(format!(
                "The cluster did not answer within {} s.",
                PATIENCE.as_secs()
            )),
            ..RolloutView::default()
        },
    }
}

/// The picture alone, for the page's script to put in place.
#[derive(Debug, Template)]
#[template(path = "rollout.html")]
pub struct RolloutFragment {
    rollout: RolloutView,
}

/// `GET /deployments/{id}/rollout`: the picture as an HTML fragment.
pub async fn fragment(
    signed_in: SignedIn,
    service: Data<DeploymentService>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let deployment = super::deployments::find(&signed_in, &service, &id).await?;
    let fragment = RolloutFragment {
        rollout: picture(&service, &deployment, &signed_in.caller).await,
    };
    let mut response = super::html(StatusCode::OK, &fragment, "");
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
