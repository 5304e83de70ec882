//! The resource types the simulator serves, and the discovery documents built from them.

use serde_json::{Value, json};

/// Whether objects of a type live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Namespaced,
    Cluster,
}

/// One served resource type (one group/version/kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resource {
    /// The name the store files objects of the type under: the kind, or `Kind.group`
    /// where two groups serve a kind of the same name (`Event`).
    pub key: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether the type has a `status` subresource (status is then ignored on the main resource).
    pub has_status: bool,
    /// Whether `metadata.generation` is maintained for the type.
    pub has_generation: bool,
    /// The verbs discovery lists for the type.
    pub verbs: &'static [&'static str],
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A type served with every verb, no short names or categories, no status
    /// subresource and no `generation`.
    const fn new(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
        scope: Scope,
    ) -> Self {
        Self {
            key: kind,
            group,
            version,
            kind,
            plural,
            namespaced: matches!(scope, Namespaced),
            short_names: NONE,
            categories: NONE,
            has_status: false,
            has_generation: false,
            verbs: VERBS,
        }
    }

    const fn short(self, short_names: &'static [&'static str]) -> Self {
        Self {
            short_names,
            ..self
        }
    }

    /// In the `all` category (`kubectl get all`).
    const fn in_all(self) -> Self {
        Self {
            categories: ALL,
            ..self
        }
    }

    /// With a `status` subresource.
    const fn status(self) -> Self {
        Self {
            has_status: true,
            ..self
        }
    }

    /// With a `status` subresource and `metadata.generation` bumped by spec changes.
    const fn spec_status(self) -> Self {
        Self {
            has_status: true,
            has_generation: true,
            ..self
        }
    }

    /// With `metadata.generation` bumped by spec changes, and no status.
    const fn generation(self) -> Self {
        Self {
            has_generation: true,
            ..self
        }
    }

    const fn verbs(self, verbs: &'static [&'static str]) -> Self {
        Self { verbs, ..self }
    }

    const fn key(self, key: &'static str) -> Self {
        Self { key, ..self }
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const READ_ONLY: &[&str] = &["get", "list"];
const NODE_VERBS: &[&str] = &["get", "list", "watch"];

use Scope::{Cluster, Namespaced};

/// Every resource type a Kubernetes v1.33 API server serves with its default settings:
/// each listable kind of a stable (GA) group version, as k8s-openapi's `v1_33` module
/// describes it (group, version, kind, plural, scope; `tests/sim_kinds.rs` checks the
/// table against k8s-openapi so it cannot drift). Beta and alpha group versions are off
/// by default in v1.33 and are not served; nor is `autoscaling/v1`
/// HorizontalPodAutoscaler (one kind in two versions needs conversion; `v2` is served).
/// The core group comes first, so `by_kind("Event")` is the core Event.
pub(crate) static RESOURCES: &[Resource] = &[
    // core/v1
    Resource::new("", "v1", "Namespace", "namespaces", Cluster)
        .short(&["ns"])
        .status(),
    Resource::new("", "v1", "Node", "nodes", Cluster)
        .short(&["no"])
        .status()
        .verbs(NODE_VERBS),
    Resource::new("", "v1", "Pod", "pods", Namespaced)
        .short(&["po"])
        .in_all()
        .status(),
    Resource::new("", "v1", "Service", "services", Namespaced)
        .short(&["svc"])
        .in_all()
        .status(),
    Resource::new("", "v1", "ConfigMap", "configmaps", Namespaced).short(&["cm"]),
    Resource::new("", "v1", "Secret", "secrets", Namespaced),
    Resource::new("", "v1", "ServiceAccount", "serviceaccounts", Namespaced).short(&["sa"]),
    Resource::new("", "v1", "Event", "events", Namespaced).short(&["ev"]),
    Resource::new(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Namespaced,
    )
    .short(&["pvc"])
    .status(),
    Resource::new("", "v1", "PersistentVolume", "persistentvolumes", Cluster)
        .short(&["pv"])
        .status(),
    Resource::new(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        Namespaced,
    )
    .short(&["rc"])
    .in_all()
    .spec_status(),
    Resource::new("", "v1", "Endpoints", "endpoints", Namespaced).short(&["ep"]),
    Resource::new("", "v1", "LimitRange", "limitranges", Namespaced).short(&["limits"]),
    Resource::new("", "v1", "ResourceQuota", "resourcequotas", Namespaced)
        .short(&["quota"])
        .status(),
    Resource::new("", "v1", "PodTemplate", "podtemplates", Namespaced),
    Resource::new("", "v1", "ComponentStatus", "componentstatuses", Cluster)
        .short(&["cs"])
        .verbs(READ_ONLY),
    // admissionregistration.k8s.io/v1
    Resource::new(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        Cluster,
    )
    .generation(),
    Resource::new(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        Cluster,
    )
    .generation(),
    Resource::new(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        Cluster,
    )
    .spec_status(),
    Resource::new(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        Cluster,
    )
    .generation(),
    // apiextensions.k8s.io/v1, apiregistration.k8s.io/v1
    Resource::new(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        Cluster,
    )
    .short(&["crd", "crds"])
    .spec_status(),
    Resource::new(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        Cluster,
    )
    .status(),
    // apps/v1
    Resource::new("apps", "v1", "Deployment", "deployments", Namespaced)
        .short(&["deploy"])
        .in_all()
        .spec_status(),
    Resource::new("apps", "v1", "ReplicaSet", "replicasets", Namespaced)
        .short(&["rs"])
        .in_all()
        .spec_status(),
    Resource::new("apps", "v1", "StatefulSet", "statefulsets", Namespaced)
        .short(&["sts"])
        .in_all()
        .spec_status(),
    Resource::new("apps", "v1", "DaemonSet", "daemonsets", Namespaced)
        .short(&["ds"])
        .in_all()
        .spec_status(),
    Resource::new(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        Namespaced,
    ),
    // autoscaling/v2, batch/v1
    Resource::new(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        Namespaced,
    )
    .short(&["hpa"])
    .in_all()
    .spec_status(),
    Resource::new("batch", "v1", "Job", "jobs", Namespaced)
        .in_all()
        .spec_status(),
    Resource::new("batch", "v1", "CronJob", "cronjobs", Namespaced)
        .short(&["cj"])
        .in_all()
        .spec_status(),
    // certificates.k8s.io/v1, coordination.k8s.io/v1, discovery.k8s.io/v1, events.k8s.io/v1
    Resource::new(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        Cluster,
    )
    .short(&["csr"])
    .status(),
    Resource::new("coordination.k8s.io", "v1", "Lease", "leases", Namespaced),
    Resource::new(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        Namespaced,
    ),
    Resource::new("events.k8s.io", "v1", "Event", "events", Namespaced)
        .short(&["ev"])
        .key("Event.events.k8s.io"),
    // flowcontrol.apiserver.k8s.io/v1
    Resource::new(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "FlowSchema",
        "flowschemas",
        Cluster,
    )
    .spec_status(),
    Resource::new(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        Cluster,
    )
    .spec_status(),
    // networking.k8s.io/v1, node.k8s.io/v1, policy/v1
    Resource::new(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        Namespaced,
    )
    .short(&["ing"])
    .spec_status(),
    Resource::new(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        Cluster,
    ),
    Resource::new(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        Namespaced,
    )
    .short(&["netpol"])
    .generation(),
    Resource::new(
        "networking.k8s.io",
        "v1",
        "IPAddress",
        "ipaddresses",
        Cluster,
    )
    .short(&["ip"]),
    Resource::new(
        "networking.k8s.io",
        "v1",
        "ServiceCIDR",
        "servicecidrs",
        Cluster,
    )
    .status(),
    Resource::new(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        "runtimeclasses",
        Cluster,
    ),
    Resource::new(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        Namespaced,
    )
    .short(&["pdb"])
    .spec_status(),
    // rbac.authorization.k8s.io/v1
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        Cluster,
    ),
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        Cluster,
    ),
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        Namespaced,
    ),
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        Namespaced,
    ),
    // scheduling.k8s.io/v1, storage.k8s.io/v1
    Resource::new(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        Cluster,
    )
    .short(&["pc"]),
    Resource::new(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        Cluster,
    )
    .short(&["sc"]),
    Resource::new("storage.k8s.io", "v1", "CSIDriver", "csidrivers", Cluster),
    Resource::new("storage.k8s.io", "v1", "CSINode", "csinodes", Cluster),
    Resource::new(
        "storage.k8s.io",
        "v1",
        "CSIStorageCapacity",
        "csistoragecapacities",
        Namespaced,
    ),
    Resource::new(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        Cluster,
    )
    .status(),
];

/// The group versions other than core `v1`, in the order the table first names them,
/// which is the order discovery lists them in.
pub(crate) fn groups(custom: &[&'static Resource]) -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for r in all(custom).filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

pub(crate) fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The built-in types, then the custom ones (see `crd`).
pub(crate) fn all(custom: &[&'static Resource]) -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().chain(custom.iter().copied())
}

/// The type the store files under `key` (see [`Resource::key`]).
pub(crate) fn by_key(custom: &[&'static Resource], key: &str) -> Option<&'static Resource> {
    all(custom).find(|r| r.key == key)
}

pub(crate) fn by_path(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
    plural: &str,
) -> Option<&'static Resource> {
    all(custom).find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub(crate) const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
    })
}

pub(crate) fn api_group_list(custom: &[&'static Resource]) -> Value {
    let groups: Vec<Value> = groups(custom)
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn api_group(custom: &[&'static Resource], group: &str) -> Option<Value> {
    let (name, version) = groups(custom).into_iter().find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": name,
        "versions": [gv.clone()], "preferredVersion": gv
    }))
}

pub(crate) fn api_resource_list(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut resources = Vec::new();
    for r in all(custom).filter(|r| r.group == group && r.version == version) {
        let verbs = r.verbs;
        let mut entry = json!({
            "name": r.plural, "singularName": r.kind.to_ascii_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]
            }));
        }
        if r.kind == "Pod" {
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]
            }));
        }
        if r.kind == "ServiceAccount" {
            resources.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                "verbs": ["create"]
            }));
        }
        if has_scale(r) {
            resources.push(json!({
                "name": format!("{}/scale", r.plural), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"]
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version, "resources": resources
    }))
}

pub(crate) fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32"
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 discovery document. Only operations are described, no schemas: enough
/// for kubectl to learn that the server validates fields itself (`fieldValidation`).
pub(crate) fn openapi_v3_root(custom: &[&'static Resource]) -> Value {
    let mut paths = serde_json::Map::new();
    let gvs = std::iter::once(("", "v1")).chain(groups(custom));
    for (group, version) in gvs {
        let p = gv_path(group, version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0000000000000000")}),
        );
    }
    json!({"paths": paths})
}

pub(crate) fn openapi_v3_group_version(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in all(custom).filter(|r| r.group == group && r.version == version) {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let field_validation = json!({
            "name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
            "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."
        });
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [field_validation.clone()],
                "responses": {"200": {"description": "OK"}}
            })
        };
        paths.insert(
            item,
            json!({
                "get": operation("get"), "put": operation("put"), "patch": operation("patch"),
                "delete": operation("delete"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, field_validation]
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

/// Whether the type has a `scale` subresource.
pub(crate) fn has_scale(r: &Resource) -> bool {
    matches!(
        r.kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
    )
}
