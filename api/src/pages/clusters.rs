//! `/clusters`: the configured clusters, whether they answer, and the namespaces
//! Kubernaut deployed to in each.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::web::Data;
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::deployment::DeploymentQuery;
use kubernaut_domain::deployment_service::DeploymentService;

use super::PageError;
use super::home::placements;
use crate::session::{SessionView, SignedIn};

/// A namespace deployed to, and the services deployed there.
#[derive(Debug)]
pub struct NamespaceRow {
    pub name: String,
    pub services: Vec<String>,
}

#[derive(Debug)]
pub struct ClusterView {
    pub name: String,
    /// `kubernaut dev`'s simulated cluster.
    pub simulated: bool,
    pub reachable: bool,
    pub version: Option<String>,
    pub error: Option<String>,
    /// Namespaces deploys may target; empty means all.
    pub allowed_namespaces: Vec<String>,
    pub allow_cluster_scoped: bool,
    pub allow_other_namespaces: bool,
    /// The kinds manifests may hold, joined; empty when every kind is allowed.
    pub allowed_kinds: String,
    pub attributes: Vec<(String, String)>,
    pub namespaces: Vec<NamespaceRow>,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "clusters.html")]
pub struct ClustersPage {
    section: &'static str,
    session: Option<SessionView>,
    clusters: Vec<ClusterView>,
}

/// `GET /clusters`
pub async fn list(
    signed_in: SignedIn,
    service: Data<DeploymentService>,
) -> Result<ClustersPage, PageError> {
    let placements = placements(&service, &DeploymentQuery::default(), &signed_in.caller).await?;
    let mut in_use: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (service, cluster, namespace) in placements.into_keys() {
        in_use
            .entry((cluster, namespace))
            .or_default()
            .insert(service);
    }
    let clusters = service
        .clusters(&signed_in.caller)
        .await?
        .into_iter()
        .map(|cluster| {
            let name = cluster.name.to_string();
            let namespaces = in_use
                .iter()
                .filter(|((c, _), _)| *c == name)
                .map(|((_, namespace), services)| NamespaceRow {
                    name: namespace.clone(),
                    services: services.iter().cloned().collect(),
                })
                .collect();
            ClusterView {
                reachable: cluster.status.reachable,
                version: cluster.status.version,
                error: cluster.status.error,
                allowed_namespaces: cluster.settings.allowed_namespaces,
                allow_cluster_scoped: cluster.settings.allow_cluster_scoped,
                allow_other_namespaces: cluster.settings.allow_other_namespaces,
                allowed_kinds: cluster.settings.allowed_kinds.join(", "),
                simulated: cluster.settings.simulated,
                attributes: cluster.settings.attributes.into_iter().collect(),
                namespaces,
                name,
            }
        })
        .collect();
    Ok(ClustersPage {
        section: "clusters",
        session: Some(signed_in.view()),
        clusters,
    })
}
