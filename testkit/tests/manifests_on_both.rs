//! Manifests nobody here wrote, applied to kube-sim and to a real control plane: every
//! document a real API server accepts must be accepted by kube-sim, and every document
//! it refuses must be refused by kube-sim for the same reason (the same HTTP code and
//! Status reason, or the kind not being served at all).
//!
//! The corpus is `tests/manifests` (ours: the kinds services carry and mistakes a real
//! server refuses), `../shared/manifests` (when it is beside the repository; otherwise
//! the test says it skipped) and, when `KUBERNAUT_PUBLIC_EXAMPLES` names a directory,
//! every YAML file below it (e.g. a checkout of the public `kubernetes/examples`
//! repository). Each file is applied with server-side apply, strict field validation
//! and force, as `kubectl apply --server-side --force-conflicts` does, into a
//! namespace of its own on each server (namespaced documents are put in it, whatever
//! namespace they name, as Kubernaut renders a manifest for its target namespace).

mod sim_support;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::core::params::ValidationDirective;
use kube::discovery::{ApiResource, Scope};
use kube::{Client, ResourceExt};
use kubernaut_testkit::control_plane::SharedControlPlane;
use serde_json::{Value, json};

/// What a server did with one document.
#[derive(Debug, Clone)]
enum Outcome {
    Accepted,
    /// Discovery does not list the document's kind in its version.
    NotServed,
    /// The API server answered with an error Status.
    Refused {
        code: u16,
        reason: String,
        /// Shown in reports, not compared: the wording differs between servers.
        message: String,
    },
    /// Not a Kubernetes object at all (no apiVersion or kind).
    NotAnObject,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accepted => f.write_str("accepted"),
            Self::NotServed => f.write_str("kind not served"),
            Self::Refused { code, reason, .. } => write!(f, "refused {code} {reason}"),
            Self::NotAnObject => f.write_str("not an object"),
        }
    }
}

impl Outcome {
    /// The same answer as far as a client can tell: acceptance, or the code and
    /// reason of the refusal.
    fn agrees_with(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Refused { code, reason, .. },
                Self::Refused {
                    code: other_code,
                    reason: other_reason,
                    ..
                },
            ) => code == other_code && reason == other_reason,
            (Self::Accepted, Self::Accepted)
            | (Self::NotServed, Self::NotServed)
            | (Self::NotAnObject, Self::NotAnObject) => true,
            _ => false,
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Refused { message, .. } => format!("{self} ({message})"),
            _ => self.to_string(),
        }
    }
}

/// One server to apply documents to.
struct Server {
    name: &'static str,
    client: Client,
    /// What each kind resolved to; forgotten when a definition of kinds is accepted.
    kinds: HashMap<GroupVersionKind, Option<(ApiResource, Scope)>>,
}

impl Server {
    fn new(name: &'static str, client: Client) -> Self {
        Self {
            name,
            client,
            kinds: HashMap::new(),
        }
    }

    async fn create_namespace(&self, namespace: &str) {
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        );
        let object: DynamicObject = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .expect("a namespace object");
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("namespace {namespace} on {}: {e}", self.name));
    }

    /// The kind's resource and scope from the discovery of its group version alone
    /// (an aggregated API that is down must not hide the others), or `None` when the
    /// server does not serve it.
    async fn resolve(&mut self, gvk: &GroupVersionKind) -> Option<(ApiResource, Scope)> {
        if let Some(known) = self.kinds.get(gvk) {
            return known.clone();
        }
        let resolved = match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok((resource, capabilities)) => Some((resource, capabilities.scope)),
            Err(_) => None,
        };
        self.kinds.insert(gvk.clone(), resolved.clone());
        resolved
    }

    /// Waits (up to ten seconds) until the kinds `definition` defines are served, as
    /// `kubectl wait --for condition=Established` lets a pipeline do: a real server
    /// serves them a moment after it accepts the definition.
    async fn wait_until_served(&mut self, definition: &Value) {
        let group = definition["spec"]["group"].as_str().unwrap_or_default();
        let kind = definition["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default();
        let versions = definition["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for version in versions.iter().filter_map(|v| v["name"].as_str()) {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                self.kinds.remove(&gvk);
                if self.resolve(&gvk).await.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }

    /// Applies one document of the file whose namespace is `namespace`: namespaced
    /// objects go into it, cluster-scoped ones get its name as a suffix (two files'
    /// StorageClasses called `slow` must not meet as an update of one by the other).
    async fn apply(&mut self, document: &Value, namespace: &str) -> Outcome {
        let Ok(mut object) = serde_json::from_value::<DynamicObject>(document.clone()) else {
            return Outcome::NotAnObject;
        };
        let Some(types) = object.types.clone() else {
            return Outcome::NotAnObject;
        };
        let Ok(gvk) = GroupVersionKind::try_from(&types) else {
            return Outcome::NotAnObject;
        };
        let Some((resource, scope)) = self.resolve(&gvk).await else {
            return Outcome::NotServed;
        };
        let api: Api<DynamicObject> = match scope {
            Scope::Namespaced => {
                object.metadata.namespace = Some(namespace.to_owned());
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
            Scope::Cluster => {
                object.metadata.namespace = None;
                // Their names have rules of their own (`<plural>.<group>`,
                // `<version>.<group>`), and one definition serves every file.
                if !matches!(gvk.kind.as_str(), "CustomResourceDefinition" | "APIService") {
                    object.metadata.name = object.metadata.name.map(|n| format!("{n}-{namespace}"));
                }
                Api::all_with(self.client.clone(), &resource)
            }
        };
        let mut params = PatchParams::apply("manifests-on-both").force();
        params.field_validation = Some(ValidationDirective::Strict);
        match api
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
        {
            Ok(_) => {
                if matches!(gvk.kind.as_str(), "CustomResourceDefinition" | "APIService") {
                    // It may serve kinds the cache says are not served.
                    self.kinds.retain(|_, known| known.is_some());
                }
                if gvk.kind == "CustomResourceDefinition" {
                    self.wait_until_served(document).await;
                }
                Outcome::Accepted
            }
            Err(kube::Error::Api(status)) => Outcome::Refused {
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            Err(other) => panic!("applying to {}: {other}", self.name),
        }
    }
}

/// The YAML files of the corpus, each with a label for the report.
fn corpus() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let ours = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests"));
    collect(&ours, &ours, "ours", &mut files);
    let shared = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/manifests"
    ));
    if shared.is_dir() {
        collect(&shared, &shared, "shared", &mut files);
    } else {
        eprintln!(
            "skipped part: the shared manifests are not at {}",
            shared.display()
        );
    }
    if let Some(dir) = std::env::var_os("KUBERNAUT_PUBLIC_EXAMPLES") {
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "KUBERNAUT_PUBLIC_EXAMPLES is not a directory");
        collect(&dir, &dir, "public", &mut files);
    }
    files.sort();
    files
}

fn collect(root: &Path, dir: &Path, label: &str, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, label, files);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let relative = path.strip_prefix(root).unwrap_or(&path).display();
            files.push((format!("{label}/{relative}"), path));
        }
    }
}

/// The documents of one file, or the reason it is not YAML both servers could read.
fn documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| e.to_string())?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

#[tokio::test]
async fn every_manifest_gets_the_same_answer_from_kube_sim_and_a_real_api_server() {
    let files = corpus();
    if files.is_empty() {
        eprintln!("skipped: no manifests to compare");
        return;
    }
    let plane = SharedControlPlane::get().expect("the real control plane starts");
    let (_sim, sim_client) = sim_support::start().await;
    let real_client = sim_support::client_for_kubeconfig(plane.kubeconfig_path()).await;
    let mut sim = Server::new("kube-sim", sim_client);
    let mut real = Server::new("the real API server", real_client);
    let started = std::time::Instant::now();

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut differences = Vec::new();
    let mut compared = 0;
    for (index, (label, path)) in files.iter().enumerate() {
        let docs = match documents(path) {
            Ok(docs) => docs,
            Err(error) => {
                eprintln!("{label}: not YAML ({error}), not sent");
                *tally.entry("not YAML".to_owned()).or_default() += 1;
                continue;
            }
        };
        let namespace = format!("manifest-{index}");
        real.create_namespace(&namespace).await;
        sim.create_namespace(&namespace).await;
        for (n, doc) in docs.iter().enumerate() {
            let on_real = real.apply(doc, &namespace).await;
            let on_sim = sim.apply(doc, &namespace).await;
            compared += 1;
            *tally.entry(on_real.to_string()).or_default() += 1;
            if !on_real.agrees_with(&on_sim) {
                differences.push(format!(
                    "{label} #{n} ({} {}): real: {}; kube-sim: {}",
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?"),
                    on_real.detail(),
                    on_sim.detail()
                ));
            }
        }
    }
    eprintln!(
        "{} files, {compared} documents in {:.1} s; answers of the real API server: {tally:?}; differences: {}",
        files.len(),
        started.elapsed().as_secs_f64(),
        differences.len()
    );
    assert!(
        differences.is_empty(),
        "kube-sim answered differently:\n{}",
        differences.join("\n")
    );
}
