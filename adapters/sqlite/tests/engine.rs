//! The domain's engine, unchanged, on SQLite: its leases, fences and follow-ups, with
//! the in-process change feed (`LocalChanges`) that a single process uses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kubernaut_domain::access::Caller;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry};
use kubernaut_domain::changes::LocalChanges;
use kubernaut_domain::cluster::{
    AppliedResource, ClusterSettings, ClusterStatus, RolloutOutcome, RolloutProgress,
    RolloutRequest,
};
use kubernaut_domain::deployment::{
    ClusterName, DeploymentStatus, Diagnostics, Namespace, ResourceRef, Target,
};
use kubernaut_domain::deployment_service::{
    ClusterHandle, DeploymentRequest, DeploymentService, ReleaseSelector,
};
use kubernaut_domain::engine::EngineSettings;
use kubernaut_domain::lease::InstanceId;
use kubernaut_domain::ports::{Cluster, ClusterError, ReleaseRepository as _};
use kubernaut_domain::release::{NewRelease, Release, ServiceName, UnvalidatedRelease};
use kubernaut_sqlite::SqliteDatabase;
use tokio::sync::mpsc::UnboundedSender;

const TEMPLATE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
spec:
  template:
    spec:
      containers:
        - name: app
          image: {{ image }}
";

/// A cluster where every apply works and every rollout succeeds, but that of an image
/// tagged `broken`. Each applied resource's uid is the image it runs, so that the
/// rollout knows which it is watching.
#[derive(Debug)]
struct FakeCluster;

#[async_trait]
impl Cluster for FakeCluster {
    async fn apply(
        &self,
        objects: &[serde_json::Value],
    ) -> Result<Vec<AppliedResource>, ClusterError> {
        Ok(objects
            .iter()
            .map(|object| AppliedResource {
                resource: ResourceRef {
                    api_version: object["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    kind: object["kind"].as_str().unwrap_or_default().to_owned(),
                    name: object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
                },
                uid: object["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                generation: Some(1),
            })
            .collect())
    }

    async fn watch_rollout(
        &self,
        request: &RolloutRequest,
        _progress: UnboundedSender<RolloutProgress>,
    ) -> Result<RolloutOutcome, ClusterError> {
        if request.resources.iter().any(|r| r.uid.ends_with(":broken")) {
            Ok(RolloutOutcome::Failed(Diagnostics::default()))
        } else {
            Ok(RolloutOutcome::Succeeded {
                warnings: Vec::new(),
            })
        }
    }

    async fn prune(
        &self,
        _namespace: &Namespace,
        _service: &ServiceName,
        _keep: &[ResourceRef],
    ) -> Result<Vec<ResourceRef>, ClusterError> {
        Ok(Vec::new())
    }

    async fn kind_scopes(
        &self,
        kinds: &[kubernaut_domain::cluster::KindRef],
    ) -> Result<Vec<Option<kubernaut_domain::cluster::KindScope>>, ClusterError> {
        Ok(vec![
            Some(kubernaut_domain::cluster::KindScope::Namespaced);
            kinds.len()
        ])
    }

    async fn read(
        &self,
        objects: &[serde_json::Value],
    ) -> Result<Vec<Option<serde_json::Value>>, ClusterError> {
        // Nothing runs in this cluster as far as a comparison asks.
        Ok(vec![None; objects.len()])
    }

    async fn status(&self) -> ClusterStatus {
        ClusterStatus {
            reachable: true,
            version: Some("v1.33.0".to_owned()),
            error: None,
        }
    }
}

async fn stored_release(database: &SqliteDatabase, version: &str) -> Release {
    let release = Release::register(
        NewRelease::parse(&UnvalidatedRelease {
            service: "payments".to_owned(),
            version: version.to_owned(),
            image: format!("registry.example.com/payments:{version}"),
            template: TEMPLATE.to_owned(),
            attributes: BTreeMap::new(),
            comment: None,
        })
        .expect("a valid release"),
        Actor::named("jenkins"),
    );
    let audit = AuditEntry::new(
        Actor::named("jenkins"),
        AuditAction::ReleaseCreated,
        format!("release/{}", release.id),
        None,
        None,
        serde_json::json!({}),
    );
    database
        .release_repository()
        .insert(&release, &audit)
        .await
        .expect("the release is stored");
    release
}

fn request(release: &Release, rollback_on_failure: bool) -> DeploymentRequest {
    DeploymentRequest {
        release: ReleaseSelector::Id(release.id),
        target: Target {
            cluster: ClusterName::parse("eu").expect("a cluster"),
            namespace: Namespace::parse("shop").expect("a namespace"),
        },
        attributes: BTreeMap::new(),
        timeout: Some(Duration::from_secs(60)),
        prune: true,
        rollback_on_failure,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_the_rollback_of_a_failure_are_driven_to_their_verdicts() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let database =
        SqliteDatabase::open(&directory.path().join("kubernaut.db")).expect("the database opens");
    let service = DeploymentService::new(
        Arc::new(database.release_repository()),
        Arc::new(database.deployment_repository()),
        Arc::new(database.lease_repository()),
        Arc::new(LocalChanges::new()),
        vec![ClusterHandle {
            name: ClusterName::parse("eu").expect("a cluster"),
            settings: ClusterSettings::default(),
            cluster: Arc::new(FakeCluster),
        }],
    )
    .with_engine_settings(EngineSettings {
        instance: InstanceId::unique("sqlite"),
        // Longer than the test: deployments are claimed because they are announced,
        // not because a claim tick came round.
        claim_interval: Duration::from_secs(600),
        ..EngineSettings::default()
    });
    service.engine().start();
    let caller = Caller::system("ci");
    let good = stored_release(&database, "1.0.0").await;
    let broken = stored_release(&database, "broken").await;

    let first = service
        .request(request(&good, false), &caller)
        .await
        .expect("the deploy starts");
    let first = service
        .wait(first.id, Duration::from_secs(20), &caller)
        .await
        .expect("the deployment");
    assert_eq!(first.status, DeploymentStatus::Succeeded, "{first:?}");

    let failing = service
        .request(request(&broken, true), &caller)
        .await
        .expect("the deploy starts");
    let failing = service
        .wait(failing.id, Duration::from_secs(20), &caller)
        .await
        .expect("the deployment");
    assert_eq!(failing.status, DeploymentStatus::Failed, "{failing:?}");

    // The failure's verdict stored the rollback with it; the engine heard of it and
    // drives it too.
    let rollback = service
        .list(&Default::default(), &caller)
        .await
        .expect("the listing")
        .items
        .into_iter()
        .find(|deployment| deployment.rollback_of == Some(failing.id))
        .expect("a rollback was started");
    let rollback = service
        .wait(rollback.id, Duration::from_secs(20), &caller)
        .await
        .expect("the deployment");
    assert_eq!(rollback.status, DeploymentStatus::Succeeded, "{rollback:?}");
    assert_eq!(rollback.release_id, good.id);
}
