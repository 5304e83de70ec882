//! Every built-in kind of Kubernetes v1.33 is served by the simulator: the table
//! matches k8s-openapi's `v1_33` module, discovery lists every kind at its scope, and
//! every kind without a controller can be created, read, listed, watched and deleted.

mod sim_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sim_support::start;

/// One served kind as the tests compare them: group, version, kind, plural, whether
/// namespaced, whether it has a `status` subresource.
type Kind = (String, String, String, String, bool, bool);

/// Kinds k8s-openapi knows in a stable version that kube-sim does not serve, each with
/// its reason (the same list as the comment on kube-sim's table).
const NOT_SERVED: &[(&str, &str, &str, &str)] = &[(
    "autoscaling",
    "v1",
    "HorizontalPodAutoscaler",
    "one kind in two versions needs conversion; autoscaling/v2 is served",
)];

/// The source folder of the k8s-openapi crate this workspace locks, from `cargo metadata`.
fn k8s_openapi_source() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "k8s-openapi")
        .expect("k8s-openapi is a dependency");
    let manifest_path = package["manifest_path"].as_str().expect("manifest_path");
    Path::new(manifest_path)
        .parent()
        .expect("the crate folder")
        .join("src")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a k8s-openapi folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn constant(source: &str, name: &str) -> String {
    let marker = format!("const {name}: &'static str = \"");
    let start = source
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in a Resource impl"))
        + marker.len();
    let len = source[start..].find('"').expect("a closing quote");
    source[start..start + len].to_owned()
}

/// Every listable kind of a stable (GA) group version in k8s-openapi's `v1_33` module,
/// read from the `impl crate::Resource` blocks of its source, so that a kind added to
/// k8s-openapi fails this test until kube-sim's table has it.
fn k8s_openapi_stable_kinds() -> BTreeSet<Kind> {
    let mut files = Vec::new();
    rust_files(&k8s_openapi_source().join("v1_33"), &mut files);
    let mut kinds = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read a k8s-openapi source file");
        if !source.contains("impl crate::ListableResource for") {
            continue;
        }
        let version = constant(&source, "VERSION");
        let stable = version
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !stable {
            continue;
        }
        let namespaced = source.contains("type Scope = crate::NamespaceResourceScope;");
        assert!(
            namespaced || source.contains("type Scope = crate::ClusterResourceScope;"),
            "{}: no scope",
            file.display()
        );
        kinds.insert((
            constant(&source, "GROUP"),
            version,
            constant(&source, "KIND"),
            constant(&source, "URL_PATH_SEGMENT"),
            namespaced,
            source.contains("pub status: Option<"),
        ));
    }
    kinds
}

async fn discovered(client: &Client) -> Vec<(ApiResource, ApiCapabilities)> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let mut all = Vec::new();
    for group in discovery.groups() {
        for version in group.versions() {
            all.extend(group.versioned_resources(version));
        }
    }
    all
}

fn as_kind(resource: &ApiResource, caps: &ApiCapabilities) -> Kind {
    (
        resource.group.clone(),
        resource.version.clone(),
        resource.kind.clone(),
        resource.plural.clone(),
        caps.scope == Scope::Namespaced,
        caps.subresources.iter().any(|(s, _)| s.plural == "status"),
    )
}

#[tokio::test]
async fn discovery_lists_every_stable_kind_of_k8s_openapi_v1_33_at_its_scope() {
    let expected: BTreeSet<Kind> = k8s_openapi_stable_kinds()
        .into_iter()
        .filter(|(g, v, k, ..)| !NOT_SERVED.iter().any(|n| (n.0, n.1, n.2) == (g, v, k)))
        .collect();
    assert!(
        expected.len() >= 50,
        "{} kinds in k8s-openapi",
        expected.len()
    );
    let (_sim, client) = start().await;
    let served: BTreeSet<Kind> = discovered(&client)
        .await
        .iter()
        .map(|(r, c)| as_kind(r, c))
        .collect();
    let missing: Vec<&Kind> = expected.difference(&served).collect();
    let extra: Vec<&Kind> = served.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from kube-sim: {missing:#?}\nserved but not in k8s-openapi v1_33: {extra:#?}"
    );
}

/// Kinds whose objects a controller or validation needs a real spec for; their own
/// tests (sim_api, sim_rollout, sim_pods, the CRD tests below) cover them.
const NEEDS_A_SPEC: &[&str] = &[
    "CustomResourceDefinition",
    "Pod",
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

fn api_for(client: &Client, resource: &ApiResource, caps: &ApiCapabilities) -> Api<DynamicObject> {
    match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), "default", resource),
        Scope::Cluster => Api::all_with(client.clone(), resource),
    }
}

#[tokio::test]
async fn every_kind_without_a_controller_is_created_read_listed_and_deleted_at_its_scope() {
    let (_sim, client) = start().await;
    let mut exercised = BTreeSet::new();
    for (resource, caps) in discovered(&client).await {
        if NEEDS_A_SPEC.contains(&resource.kind.as_str()) || !caps.supports_operation(verbs::CREATE)
        {
            continue;
        }
        let what = format!("{}/{} {}", resource.group, resource.version, resource.kind);
        let api = api_for(&client, &resource, &caps);
        let name = "kinds-test";
        let mut object = DynamicObject::new(name, &resource);
        object
            .labels_mut()
            .insert("test".to_owned(), "kinds".to_owned());
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{what}: create: {e}"));
        assert!(created.uid().is_some(), "{what}: no uid");
        assert_eq!(
            created.namespace().is_some(),
            caps.scope == Scope::Namespaced,
            "{what}: namespace of {created:?}"
        );
        let read = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{what}: get: {e}"));
        assert_eq!(read.uid(), created.uid(), "{what}");
        let listed = Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list(&ListParams::default().labels("test=kinds"))
            .await
            .unwrap_or_else(|e| panic!("{what}: list: {e}"));
        assert_eq!(
            listed
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>(),
            [name],
            "{what}"
        );
        api.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: delete: {e}"));
        let gone = api
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("{what}: get: {e}"));
        assert!(
            gone.is_none() || resource.kind == "Namespace",
            "{what}: still there"
        );
        exercised.insert(resource.kind.clone());
    }
    for kind in [
        "StorageClass",
        "PersistentVolume",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Endpoints",
        "APIService",
        "NetworkPolicy",
        "Lease",
        "PriorityClass",
    ] {
        assert!(
            exercised.contains(kind),
            "{kind} was not exercised: {exercised:?}"
        );
    }
}

#[tokio::test]
async fn a_cluster_scoped_kind_is_not_served_under_a_namespace_nor_a_namespaced_one_without() {
    let (sim, _client) = start().await;
    let base = sim
        .kubeconfig_yaml()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server in the kubeconfig")
        .trim()
        .to_owned();
    let http = |path: String| {
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                    .arg(format!("{base}{path}"))
                    .output()
                    .expect("curl runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .await
            .expect("curl finishes")
        }
    };
    let storage = "/apis/storage.k8s.io/v1";
    assert_eq!(http(format!("{storage}/storageclasses/fast")).await, "404");
    assert_eq!(
        http(format!("{storage}/namespaces/default/storageclasses/fast")).await,
        "404"
    );
    assert_eq!(http(format!("{storage}/storageclasses")).await, "200");
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    assert_eq!(
        http(format!("{rbac}/namespaces/default/roles")).await,
        "200"
    );
    assert_eq!(http(format!("{rbac}/roles")).await, "200");
    assert_eq!(http(format!("{rbac}/roles/reader")).await, "404");
    assert_eq!(
        http(format!("{rbac}/namespaces/default/clusterroles")).await,
        "404"
    );
    // ComponentStatus is read-only, as on a real server.
    assert_eq!(http("/api/v1/componentstatuses".to_owned()).await, "200");
}

#[tokio::test]
async fn a_role_is_watched_and_applied_server_side_like_any_kind() {
    let (_sim, client) = start().await;
    let roles: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "Role"),
            "roles",
        ),
    );
    let mut events = roles
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch roles")
        .boxed();
    let role: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    }))
    .expect("a role");
    let applied = roles
        .patch(
            "reader",
            &PatchParams::apply("kinds-test"),
            &Patch::Apply(&role),
        )
        .await
        .expect("server-side apply creates the role");
    assert_eq!(applied.data["rules"][0]["verbs"], json!(["get", "list"]));
    let first = tokio::time::timeout(sim_support::WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("a watch event");
    match first {
        WatchEvent::Added(obj) => assert_eq!(obj.name_any(), "reader"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

const KUBECTL: &str = "/usr/bin/kubectl";

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    kind: Widget
    plural: widgets
    singular: widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
";

const WIDGET: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: sprocket
spec:
  size: 3
";

async fn kubectl(
    sim: &kubernaut_testkit::sim::Simulator,
    cache: &Path,
    args: &[&str],
) -> (bool, String) {
    let out = tokio::process::Command::new(KUBECTL)
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("KUBECONFIG", sim.kubeconfig_path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn widgets() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

#[tokio::test]
async fn a_crd_serves_its_kind_until_it_is_deleted() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipped: {KUBECTL} is not installed");
        return;
    }
    let (sim, client) = start().await;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let cache = dir.path().join("cache");
    let crd_file = dir.path().join("crd.yaml");
    let widget_file = dir.path().join("widget.yaml");
    std::fs::write(&crd_file, CRD).expect("write the CRD");
    std::fs::write(&widget_file, WIDGET).expect("write the widget");
    let crd_path = crd_file.to_string_lossy().into_owned();
    let widget_path = widget_file.to_string_lossy().into_owned();

    let (ok, out) = kubectl(&sim, &cache, &["apply", "--server-side", "-f", &crd_path]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &sim,
        &cache,
        &[
            "wait",
            "--for",
            "condition=Established",
            "crd/widgets.example.com",
            "--timeout",
            "20s",
        ],
    )
    .await;
    assert!(ok, "{out}");

    // Discovery lists the kind with its scope and status subresource.
    let served: Vec<Kind> = discovered(&client)
        .await
        .iter()
        .map(|(r, c)| as_kind(r, c))
        .filter(|k| k.0 == "example.com")
        .collect();
    assert_eq!(
        served,
        [(
            "example.com".to_owned(),
            "v1".to_owned(),
            "Widget".to_owned(),
            "widgets".to_owned(),
            true,
            true
        )]
    );

    // Custom objects: applied server-side with kubectl, listed, watched, status.
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &widgets());
    let mut events = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch widgets")
        .boxed();
    let (ok, out) = kubectl(
        &sim,
        &cache,
        &["apply", "--server-side", "-f", &widget_path],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&sim, &cache, &["get", "wd", "-o", "name"]).await;
    assert!(ok && out.trim() == "widget.example.com/sprocket", "{out}");
    match tokio::time::timeout(sim_support::WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("a watch event")
    {
        WatchEvent::Added(obj) => assert_eq!(obj.data["spec"]["size"], 3),
        other => panic!("expected ADDED, got {other:?}"),
    }
    let status = json!({"status": {"phase": "Polished"}});
    let patched = api
        .patch_status("sprocket", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the status subresource");
    assert_eq!(patched.data["status"]["phase"], "Polished");
    // Through the main resource, status is ignored and the spec is kept.
    let ignored = json!({"spec": {"size": 4}, "status": {"phase": "Dull"}});
    let patched = api
        .patch("sprocket", &PatchParams::default(), &Patch::Merge(&ignored))
        .await
        .expect("a merge patch");
    assert_eq!(patched.data["status"]["phase"], "Polished");
    assert_eq!(patched.data["spec"]["size"], 4);
    assert_eq!(patched.metadata.generation, Some(2));
    let listed = api
        .list(&ListParams::default())
        .await
        .expect("list widgets");
    assert_eq!(listed.items.len(), 1);

    // Deleting the definition deletes its objects and stops serving the kind.
    let (ok, out) = kubectl(&sim, &cache, &["delete", "crd", "widgets.example.com"]).await;
    assert!(ok, "{out}");
    loop {
        match tokio::time::timeout(sim_support::WAIT, events.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("a watch event")
        {
            WatchEvent::Deleted(obj) => break assert_eq!(obj.name_any(), "sprocket"),
            WatchEvent::Modified(_) => {}
            other => panic!("expected DELETED, got {other:?}"),
        }
    }
    let error = api
        .list(&ListParams::default())
        .await
        .expect_err("no longer served");
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 404),
        "{error}"
    );
    assert!(
        discovered(&client)
            .await
            .iter()
            .all(|(r, _)| r.group != "example.com"),
        "discovery still lists example.com"
    );
    let (ok, out) = kubectl(
        &sim,
        &cache,
        &["apply", "--server-side", "-f", &widget_path],
    )
    .await;
    assert!(!ok, "a widget was applied without its CRD: {out}");
}

#[tokio::test]
async fn a_cluster_scoped_crd_without_status_serves_its_kind_at_cluster_scope() {
    let (_sim, client) = start().await;
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
            ),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"kind": "Gadget", "plural": "gadgets"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}}}]}
    }))
    .expect("a CRD");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create the CRD");
    let established = crds.get("gadgets.example.com").await.expect("the CRD");
    let conditions = established.data["status"]["conditions"].to_string();
    assert!(conditions.contains("\"Established\""), "{conditions}");
    let served: Vec<Kind> = discovered(&client)
        .await
        .iter()
        .map(|(r, c)| as_kind(r, c))
        .filter(|k| k.0 == "example.com")
        .collect();
    assert_eq!(served.len(), 1, "{served:?}");
    assert!(!served[0].4 && !served[0].5, "{served:?}");
    let gadgets: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("example.com", "v1alpha1", "Gadget"),
            "gadgets",
        ),
    );
    let gadget = DynamicObject::new("g1", &gadgets_resource());
    let created = gadgets
        .create(&PostParams::default(), &gadget)
        .await
        .expect("a gadget");
    assert!(created.namespace().is_none());
    gadgets
        .delete("g1", &DeleteParams::default())
        .await
        .expect("delete the gadget");
    assert!(gadgets.get_opt("g1").await.expect("get").is_none());
    // A definition whose name is not plural.group is refused, as a real server does.
    let mut bad = crd.clone();
    bad.metadata.name = Some("wrong.example.com".to_owned());
    let error = crds
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("a misnamed CRD is refused");
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 422 && s.message.contains("metadata.name")),
        "{error}"
    );
}

fn gadgets_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("example.com", "v1alpha1", "Gadget"),
        "gadgets",
    )
}
