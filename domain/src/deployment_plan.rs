//! Turning a release and a request into a deployment ready to store: the template
//! rendered for its target, Kubernaut's labels added, its options settled and its audit
//! record written. The deployment use cases plan requests with it, and the engine plans
//! automatic rollbacks with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound as _, Utc};

use crate::access::{Caller, Permission};
use crate::audit::AuditAction;
use crate::cluster::{ClusterSettings, KindRef, KindScope, KindScopes, prepare_objects};
use crate::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentOptions, DeploymentStatus, NewDeployment,
    Target, TimelineEntry,
};
use crate::deployment_service::{
    ClusterHandle, DeploymentRequest, ReleaseSelector, RequestDeploymentError,
};
use crate::ports::{ClusterError, DeploymentRepository, ReleaseRepository};
use crate::release::{AttributeName, Release};
use crate::template::{RenderError, TemplateVariables};

/// The release attribute that sets a release's default rollout timeout.
pub const TIMEOUT_ATTRIBUTE: &str = "kubernaut.timeout_seconds";

pub(crate) fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Renders releases for targets on the configured clusters.
#[derive(Clone)]
pub(crate) struct Planner {
    pub(crate) releases: Arc<dyn ReleaseRepository>,
    pub(crate) clusters: Arc<BTreeMap<ClusterName, ClusterHandle>>,
    pub(crate) pin_image_digest: bool,
}

/// A rendered manifest: its text, its objects and the cluster it is for.
pub(crate) struct Rendered<'a> {
    pub(crate) text: String,
    pub(crate) objects: Vec<serde_json::Value>,
    pub(crate) handle: &'a ClusterHandle,
}

impl Planner {
    pub(crate) fn cluster(
        &self,
        name: &ClusterName,
    ) -> Result<&ClusterHandle, RequestDeploymentError> {
        self.clusters
            .get(name)
            .ok_or_else(|| RequestDeploymentError::UnknownCluster(name.clone()))
    }

    pub(crate) async fn resolve_release(
        &self,
        selector: &ReleaseSelector,
    ) -> Result<Release, RequestDeploymentError> {
        let found = match selector {
            ReleaseSelector::Id(id) => self.releases.find_active(*id).await?,
            ReleaseSelector::Version(service, version) => {
                self.releases
                    .find_active_by_version(service, version)
                    .await?
            }
        };
        found.ok_or(RequestDeploymentError::ReleaseNotFound)
    }

    /// Renders `release` for `target`: variables from the cluster, the namespace, the
    /// release, `cluster` and `namespace`, then the request's attributes, later winning.
    pub(crate) fn render(
        &self,
        release: &Release,
        target: &Target,
        attributes: &BTreeMap<AttributeName, String>,
    ) -> Result<Rendered<'_>, RequestDeploymentError> {
        let handle = self.cluster(&target.cluster)?;
        if !handle.settings.allows_namespace(&target.namespace) {
            return Err(RequestDeploymentError::NamespaceNotAllowed {
                cluster: target.cluster.clone(),
                namespace: target.namespace.clone(),
            });
        }
        let variables = self.variables(release, target, &handle.settings, attributes);
        let rendered = release
            .template()
            .render(&variables)
            .map_err(|error| match error {
                RenderError::MissingVariables(names) => {
                    RequestDeploymentError::MissingVariables(names)
                }
                RenderError::ValueChangesStructure(names) => {
                    RequestDeploymentError::ValueChangesStructure(names)
                }
                other => RequestDeploymentError::Render(other.to_string()),
            })?;
        Ok(Rendered {
            text: rendered.text,
            objects: rendered.objects,
            handle,
        })
    }

    fn variables(
        &self,
        release: &Release,
        target: &Target,
        settings: &ClusterSettings,
        attributes: &BTreeMap<AttributeName, String>,
    ) -> TemplateVariables {
        let mut variables = TemplateVariables::default();
        for (name, value) in &settings.attributes {
            variables.set(name, value);
        }
        if let Some(namespace_attributes) =
            settings.namespace_attributes.get(target.namespace.as_str())
        {
            for (name, value) in namespace_attributes {
                variables.set(name, value);
            }
        }
        for (name, value) in release.attributes().iter() {
            variables.set(name.as_str(), value);
        }
        variables.set("service", release.service.as_str());
        variables.set("version", release.version.as_str());
        match release.pinned_image().filter(|_| self.pin_image_digest) {
            Some(pinned) => variables.set("image", &pinned),
            None => variables.set("image", release.image().as_str()),
        }
        variables.set("cluster", target.cluster.as_str());
        variables.set("namespace", target.namespace.as_str());
        for (name, value) in attributes {
            variables.set(name.as_str(), value);
        }
        variables
    }

    /// The rendered objects made ready for `target`: each kind's scope asked of the
    /// cluster's discovery, the cluster's rules applied (kinds, scopes, namespaces),
    /// labelled and annotated for deployment `id`. With a `caller`, also checks that it
    /// may deploy every object where it would land: another namespace needs a deploy
    /// scope there too, an object outside namespaces needs one over the whole cluster.
    pub(crate) async fn prepare(
        &self,
        rendered: &Rendered<'_>,
        release: &Release,
        target: &Target,
        id: DeploymentId,
        caller: Option<&Caller>,
    ) -> Result<Vec<serde_json::Value>, RequestDeploymentError> {
        let kinds = KindRef::distinct_in(&rendered.objects);
        let discovered = rendered
            .handle
            .cluster
            .kind_scopes(&kinds)
            .await
            .map_err(|error| match error {
                ClusterError::Unavailable(message) => RequestDeploymentError::ClusterUnavailable {
                    cluster: target.cluster.clone(),
                    message,
                },
                ClusterError::Rejected { resource, message } => {
                    RequestDeploymentError::Render(format!("{resource}: {message}"))
                }
            })?;
        let scopes = KindScopes::new(&kinds, &discovered, &rendered.objects);
        let objects = prepare_objects(
            &rendered.objects,
            &scopes,
            &rendered.handle.settings,
            target,
            &release.service,
            release.id,
            id,
        )?;
        let Some(caller) = caller else {
            return Ok(objects);
        };
        if objects.iter().any(|object| {
            let reference = crate::cluster::resource_ref_of(object);
            scopes.get(&KindRef::new(reference.api_version, reference.kind))
                == Some(KindScope::Cluster)
        }) {
            caller.require(Permission::DeployClusterWide(target.cluster.clone()))?;
        }
        // An object that names another namespace deploys there too: the caller must be
        // allowed to deploy there as well.
        for named in objects
            .iter()
            .filter_map(|object| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(serde_json::Value::as_str)
            })
            .filter(|named| *named != target.namespace.as_str())
        {
            let namespace = crate::deployment::Namespace::parse(named).map_err(|_| {
                RequestDeploymentError::Render(format!(
                    "the manifest names an invalid namespace {named:?}"
                ))
            })?;
            caller.require(Permission::Deploy(Target {
                cluster: target.cluster.clone(),
                namespace,
            }))?;
        }
        Ok(objects)
    }

    /// The deployment `request` asks for, `queued`, with the audit record of the
    /// request; `rollback_of` names the deployment it rolls back.
    pub(crate) async fn plan(
        &self,
        release: &Release,
        request: DeploymentRequest,
        caller: &Caller,
        rollback_of: Option<DeploymentId>,
    ) -> Result<NewDeployment, RequestDeploymentError> {
        let actor = caller.actor().clone();
        let rendered = self.render(release, &request.target, &request.attributes)?;
        let id = DeploymentId::generate();
        let objects = self
            .prepare(&rendered, release, &request.target, id, Some(caller))
            .await?;
        let timeout = request
            .timeout
            .or_else(|| {
                release
                    .attributes()
                    .get(TIMEOUT_ATTRIBUTE)
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(Duration::from_secs)
            })
            .unwrap_or(DeploymentOptions::DEFAULT_TIMEOUT)
            .clamp(Duration::from_secs(1), DeploymentOptions::MAX_TIMEOUT);
        let created_at = now();
        let message = match rollback_of {
            Some(of) => format!(
                "rollback of deployment {of} to {} {} requested by {actor}",
                release.service, release.version
            ),
            None => format!(
                "{} {} to {} requested by {actor}",
                release.service, release.version, request.target
            ),
        };
        let deployment = Deployment {
            id,
            release_id: release.id,
            service: release.service.clone(),
            version: release.version.clone(),
            target: request.target,
            requested_by: actor,
            attributes: request
                .attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            options: DeploymentOptions {
                timeout,
                prune: request.prune,
                rollback_on_failure: request.rollback_on_failure,
            },
            manifest: rendered.text,
            objects,
            status: DeploymentStatus::Queued,
            created_at,
            started_at: None,
            finished_at: None,
            timeline: vec![TimelineEntry {
                at: created_at,
                phase: DeploymentStatus::Queued,
                message,
                resource: None,
            }],
            diagnostics: None,
            rollback_of,
        };
        let audit = caller.audit(
            if rollback_of.is_some() {
                AuditAction::DeploymentRolledBack
            } else {
                AuditAction::DeploymentRequested
            },
            format!("deployment/{}", deployment.id),
            serde_json::json!({
                "service": deployment.service.as_str(),
                "version": deployment.version.as_str(),
                "release": deployment.release_id.to_string(),
                "cluster": deployment.target.cluster.as_str(),
                "namespace": deployment.target.namespace.as_str(),
                "rollback_of": rollback_of.map(|of| of.to_string()),
            }),
        );
        Ok(NewDeployment { deployment, audit })
    }

    /// The rollback of `deployment`: the newest release that succeeded on its target,
    /// other than its own, deployed again with the options it succeeded with.
    pub(crate) async fn plan_rollback(
        &self,
        deployments: &dyn DeploymentRepository,
        deployment: &Deployment,
        caller: &Caller,
    ) -> Result<NewDeployment, RequestDeploymentError> {
        let good = deployments
            .last_succeeded(
                &deployment.service,
                &deployment.target,
                Some(deployment.release_id),
            )
            .await?
            .ok_or(RequestDeploymentError::NothingToRollBackTo)?;
        let release = self
            .releases
            .find_active(good.release_id)
            .await?
            .ok_or(RequestDeploymentError::NothingToRollBackTo)?;
        let attributes = good
            .attributes
            .iter()
            .filter_map(|(k, v)| AttributeName::parse(k).ok().map(|k| (k, v.clone())))
            .collect();
        let request = DeploymentRequest {
            release: ReleaseSelector::Id(release.id),
            target: deployment.target.clone(),
            attributes,
            timeout: Some(good.options.timeout),
            prune: good.options.prune,
            rollback_on_failure: false,
        };
        self.plan(&release, request, caller, Some(deployment.id))
            .await
    }
}
