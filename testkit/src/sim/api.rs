//! The API semantics behind each verb, independent of HTTP: validation, defaulting,
//! optimistic concurrency, field ownership, and deletion with propagation.

use serde_json::{Value, json};

use super::World;
use super::error::{ApiError, ApiResult};
use super::merge;
use super::resources::{self, Resource};
use super::store::now_rfc3339;

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The body formats a PATCH can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Apply,
    Merge,
    Strategic,
    Json,
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Checks a DNS-1123 subdomain name, as the API server does for most names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(len)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

pub(crate) fn random_name_suffix() -> String {
    random_suffix(5)
}

fn ensure_namespace(world: &World, r: &Resource, ns: &str) -> ApiResult<()> {
    if !r.namespaced {
        return Ok(());
    }
    let Some(ns_res) = resources::by_kind("Namespace") else {
        return Ok(());
    };
    if world.store.get(ns_res, "", ns).is_none() {
        return Err(ApiError::namespace_not_found(ns));
    }
    Ok(())
}

/// Checks kind/apiVersion in a body against the URL and puts name/namespace in place.
fn check_body(r: &Resource, ns: &str, name: Option<&str>, body: &mut Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not an object",
        ));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != r.kind
    {
        // The real server decodes the body as its own kind and fails to convert it.
        let version = body
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(r.version);
        let version = version.rsplit('/').next().unwrap_or(version);
        let internal = match r.group {
            "" => "core",
            group => group.split('.').next().unwrap_or(group),
        };
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {}: converting ({version}.{kind}) to ({internal}.{}): unknown conversion",
            r.kind, r.kind
        )));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && av != r.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    if r.namespaced {
        match body.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => body["metadata"]["namespace"] = json!(ns),
        }
    } else if let Some(m) = body["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if let Some(name) = name {
        match body.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => body["metadata"]["name"] = json!(name),
        }
    }
    Ok(())
}

fn validate(r: &Resource, obj: &Value) -> ApiResult<()> {
    let name = name_of(obj);
    if !valid_name(name) {
        return Err(ApiError::invalid(
            r.kind,
            r.group,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        ));
    }
    if r.key == "CustomResourceDefinition"
        && let Some((field, message)) = super::crd::invalid(obj)
    {
        return Err(ApiError::invalid(r.kind, r.group, name, field, &message));
    }
    if let Some((field, message)) = super::validation::invalid(r.kind, obj) {
        return Err(ApiError::invalid(r.kind, r.group, name, &field, &message));
    }
    let template_kinds = ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"];
    if template_kinds.contains(&r.kind) {
        let Some(selector) = obj.pointer("/spec/selector") else {
            return Err(ApiError::invalid(
                r.kind,
                r.group,
                name,
                "spec.selector",
                "Required value",
            ));
        };
        let sel = super::selector::LabelSelector::from_object(selector);
        if sel.is_empty() {
            return Err(ApiError::invalid(
                r.kind,
                r.group,
                name,
                "spec.selector",
                "Invalid value: \"null\": empty selector is invalid for deployment",
            ));
        }
        let labels = obj.pointer("/spec/template/metadata/labels");
        if !sel.matches_labels(labels) {
            // The real message shows the labels as Go prints a map: sorted JSON.
            let sorted: std::collections::BTreeMap<&String, &Value> = labels
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .collect();
            return Err(ApiError::invalid(
                r.kind,
                r.group,
                name,
                "spec.template.metadata.labels",
                &format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    json!(sorted)
                ),
            ));
        }
    }
    let containers = match r.kind {
        "Pod" => obj.pointer("/spec/containers"),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => obj.pointer("/spec/template/spec/containers"),
        "CronJob" => obj.pointer("/spec/jobTemplate/spec/template/spec/containers"),
        _ => return Ok(()),
    };
    let containers = containers.and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        return Err(ApiError::invalid(
            r.kind,
            r.group,
            name,
            "spec.template.spec.containers",
            "Required value",
        ));
    }
    for c in containers.into_iter().flatten() {
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::invalid(
                r.kind,
                r.group,
                name,
                "spec.template.spec.containers[0].image",
                "Required value",
            ));
        }
    }
    Ok(())
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut()
        && !m.contains_key(key)
    {
        m.insert(key.to_owned(), value);
    }
}

fn default_pod_spec(spec: &mut Value, restart_policy: &str) {
    set_default(spec, "restartPolicy", json!(restart_policy));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or_default().to_owned();
                let last = image.rsplit('/').next().unwrap_or_default();
                let latest = !last.contains(':') || last.ends_with(":latest");
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if latest && !image.contains('@') {
                        "Always"
                    } else {
                        "IfNotPresent"
                    }),
                );
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn default_template(obj: &mut Value, pointer: &str, restart_policy: &str) {
    if let Some(spec) = obj.pointer_mut(pointer) {
        default_pod_spec(spec, restart_policy);
    }
}

/// Fills the defaults the API server fills, so what clients read back looks real.
fn apply_defaults(world: &mut World, r: &Resource, obj: &mut Value) {
    match r.kind {
        "Namespace" => {
            let name = name_of(obj).to_owned();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            set_default(obj, "spec", json!({"finalizers": ["kubernetes"]}));
            set_default(obj, "status", json!({"phase": "Active"}));
        }
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec, "Always");
                set_default(spec, "serviceAccountName", json!("default"));
            }
        }
        "Deployment" => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({}));
            let strategy = &mut spec["strategy"];
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_default(strategy, "rollingUpdate", json!({}));
                set_default(&mut strategy["rollingUpdate"], "maxSurge", json!("25%"));
                set_default(
                    &mut strategy["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            default_template(obj, "/spec/template/spec", "Always");
        }
        "ReplicaSet" => {
            set_default(&mut obj["spec"], "replicas", json!(1));
            default_template(obj, "/spec/template/spec", "Always");
        }
        "ReplicationController" => {
            // As the real server defaults it: the selector, and the object's labels
            // when it has none, are the template's labels.
            let template_labels = obj
                .pointer("/spec/template/metadata/labels")
                .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            if let Some(labels) = template_labels {
                if spec
                    .get("selector")
                    .and_then(Value::as_object)
                    .is_none_or(serde_json::Map::is_empty)
                {
                    spec["selector"] = labels.clone();
                }
                if obj
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .is_none_or(serde_json::Map::is_empty)
                {
                    obj["metadata"]["labels"] = labels;
                }
            }
            default_template(obj, "/spec/template/spec", "Always");
        }
        "StatefulSet" => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default_template(obj, "/spec/template/spec", "Always");
        }
        "DaemonSet" => {
            let spec = &mut obj["spec"];
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_template(obj, "/spec/template/spec", "Always");
        }
        "Job" => {
            let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
            let name = name_of(obj).to_owned();
            let spec = &mut obj["spec"];
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completions", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            if spec.get("selector").is_none() && !uid.is_null() {
                spec["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid.clone()),
                    ("batch.kubernetes.io/job-name", json!(name)),
                    ("controller-uid", uid.clone()),
                    ("job-name", json!(name)),
                ] {
                    spec["template"]["metadata"]["labels"][k] = v;
                }
            }
            default_template(obj, "/spec/template/spec", "Never");
        }
        "CronJob" => {
            let spec = &mut obj["spec"];
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            default_template(obj, "/spec/jobTemplate/spec/template/spec", "Never");
        }
        "Service" => {
            let spec = &mut obj["spec"];
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" && spec.get("clusterIP").is_none() {
                world.ip_counter += 1;
                let ip = format!(
                    "10.96.{}.{}",
                    (world.ip_counter / 250) % 250,
                    world.ip_counter % 250 + 1
                );
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
                spec["ipFamilies"] = json!(["IPv4"]);
                spec["ipFamilyPolicy"] = json!("SingleStack");
                spec["internalTrafficPolicy"] = json!("Cluster");
            }
            let node_ports = matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, "targetPort", port);
                    if node_ports && p.get("nodePort").is_none() {
                        world.node_port_counter += 1;
                        p["nodePort"] = json!(30000 + world.node_port_counter % 2768);
                    }
                }
            }
            if node_ports {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            set_default(obj, "status", json!({"loadBalancer": {}}));
        }
        "Secret" => set_default(obj, "type", json!("Opaque")),
        _ => {}
    }
}

fn status_of_kind(r: &Resource) -> Value {
    match r.kind {
        "Pod" => json!({"phase": "Pending", "qosClass": "BestEffort"}),
        "Namespace" => json!({"phase": "Active"}),
        // As if a default StorageClass provisioned a volume at once.
        "PersistentVolumeClaim" => json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"]}),
        "PersistentVolume" => json!({"phase": "Available"}),
        "ReplicationController" => json!({"replicas": 0}),
        _ => json!({}),
    }
}

/// Creates an object (POST), or with `dry_run` only checks that it could be.
pub(crate) fn create(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    mut body: Value,
    manager: &str,
    dry_run: bool,
) -> ApiResult<Value> {
    check_body(r, ns, None, &mut body)?;
    if name_of(&body).is_empty()
        && let Some(prefix) = body
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
    {
        body["metadata"]["name"] = json!(format!("{prefix}{}", random_name_suffix()));
    }
    ensure_namespace(world, r, ns)?;
    let name = name_of(&body).to_owned();
    if world.store.get(r, ns, &name).is_some() {
        return Err(ApiError::already_exists(r.group, r.plural, &name));
    }
    if let Some(m) = body["metadata"].as_object_mut() {
        for f in [
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "managedFields",
        ] {
            m.remove(f);
        }
        m.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
    }
    if r.has_status && r.kind != "Service" {
        body["status"] = status_of_kind(r);
    }
    merge::track_update(None, &mut body, manager, &r.api_version(), None);
    apply_defaults(world, r, &mut body);
    validate(r, &body)?;
    if dry_run {
        return Ok(body);
    }
    Ok(world.store.insert_new(r, body))
}

fn check_resource_version(
    r: &Resource,
    name: &str,
    body: &Value,
    current: &Value,
) -> ApiResult<()> {
    if let Some(rv) = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            != Some(rv)
    {
        return Err(ApiError::conflict(
            r.group,
            r.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

/// Stores a new state of an existing object, the common tail of PUT and PATCH.
fn store_update(
    world: &mut World,
    r: &'static Resource,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
) -> ApiResult<Value> {
    let name = name_of(old).to_owned();
    if subresource == Some("status") {
        let status = new.get("status").cloned().unwrap_or_else(|| json!({}));
        let managed = new.pointer("/metadata/managedFields").cloned();
        new = old.clone();
        new["status"] = status;
        if let Some(mf) = managed {
            new["metadata"]["managedFields"] = mf;
        }
    } else if r.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    new["metadata"]["uid"] = old["metadata"]["uid"].clone();
    apply_defaults(world, r, &mut new);
    validate(r, &new)?;
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers_left = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let ns = new
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let stored = world
        .store
        .replace(r, new)
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, &name))?;
    if deleting && !finalizers_left {
        world.store.remove(r, &ns, &name);
    }
    Ok(stored)
}

/// Replaces an object (PUT), with optimistic concurrency on `metadata.resourceVersion`.
pub(crate) fn replace(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    name: &str,
    mut body: Value,
    manager: &str,
    subresource: Option<&str>,
) -> ApiResult<Value> {
    check_body(r, ns, Some(name), &mut body)?;
    ensure_namespace(world, r, ns)?;
    let old = world
        .store
        .get(r, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    check_resource_version(r, name, &body, &old)?;
    body["metadata"]["managedFields"] = old
        .pointer("/metadata/managedFields")
        .cloned()
        .unwrap_or(Value::Null);
    merge::track_update(
        Some(&old),
        &mut body,
        manager,
        &r.api_version(),
        subresource,
    );
    store_update(world, r, &old, body, subresource)
}

/// Patches an object. Returns the object and whether it was created (server-side apply).
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the query parameters of PATCH"
)]
pub(crate) fn patch(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    name: &str,
    patch_type: PatchType,
    mut body: Value,
    manager: Option<&str>,
    force: bool,
    subresource: Option<&str>,
) -> ApiResult<(Value, bool)> {
    ensure_namespace(world, r, ns)?;
    let old = world.store.get(r, ns, name).cloned();
    if patch_type == PatchType::Apply {
        let manager = manager
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?;
        check_body(r, ns, Some(name), &mut body)?;
        let merged = merge::server_side_apply(
            old.as_ref(),
            &body,
            manager,
            &r.api_version(),
            force,
            subresource,
        )
        .map_err(|conflicts| ApiError::apply_conflict(&conflicts))?;
        return match old {
            None => {
                if subresource.is_some() {
                    return Err(ApiError::not_found(r.group, r.plural, name));
                }
                let mut created = merged;
                let managed = created.pointer("/metadata/managedFields").cloned();
                if let Some(m) = created["metadata"].as_object_mut() {
                    m.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
                }
                if r.has_status && r.kind != "Service" {
                    created["status"] = status_of_kind(r);
                }
                apply_defaults(world, r, &mut created);
                validate(r, &created)?;
                if let Some(mf) = managed {
                    created["metadata"]["managedFields"] = mf;
                }
                Ok((world.store.insert_new(r, created), true))
            }
            Some(old) => Ok((store_update(world, r, &old, merged, subresource)?, false)),
        };
    }
    let old = old.ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    let mut new = old.clone();
    match patch_type {
        PatchType::Merge => merge::merge_patch(&mut new, &body),
        PatchType::Strategic => merge::strategic_merge_patch(&mut new, &body, ""),
        PatchType::Json => merge::json_patch(&mut new, &body).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?,
        PatchType::Apply => {}
    }
    if new.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(
            "the name of the object cannot be changed by a patch",
        ));
    }
    check_resource_version(r, name, &new, &old)?;
    let manager = manager.unwrap_or("unknown");
    merge::track_update(Some(&old), &mut new, manager, &r.api_version(), subresource);
    Ok((store_update(world, r, &old, new, subresource)?, false))
}

/// Deletes an object. Objects with finalizers only get a `deletionTimestamp`.
pub(crate) fn delete(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    name: &str,
    propagation: Option<Propagation>,
) -> ApiResult<Value> {
    delete_with_grace(world, r, ns, name, propagation, None)
}

/// Deletes an object; a scheduled pod is only marked (`deletionTimestamp`) and the
/// kubelet removes it once its containers have stopped, unless the grace period is 0.
pub(crate) fn delete_with_grace(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    name: &str,
    propagation: Option<Propagation>,
    grace_period: Option<i64>,
) -> ApiResult<Value> {
    let obj = world
        .store
        .get(r, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    let has_finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if obj.pointer("/metadata/deletionTimestamp").is_some() && r.kind != "Pod" {
        return Ok(obj);
    }
    // As the real server does: a namespace passes through `Terminating` while the
    // namespace controller empties it, and an owner deleted in the foreground or
    // orphaning its dependents waits, marked, under the garbage collector's finalizer
    // (`controllers::garbage_collect` finishes both).
    let finalizer = match propagation {
        _ if r.kind == "Namespace" => None,
        Some(Propagation::Foreground) => Some("foregroundDeletion"),
        Some(Propagation::Orphan) => Some("orphan"),
        _ => None,
    };
    if r.kind == "Namespace" || finalizer.is_some() {
        let mut marked = obj.clone();
        marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(finalizer) = finalizer {
            match marked
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                Some(finalizers) => finalizers.push(json!(finalizer)),
                None => marked["metadata"]["finalizers"] = json!([finalizer]),
            }
        } else {
            marked["status"]["phase"] = json!("Terminating");
        }
        return world
            .store
            .replace(r, marked)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name));
    }
    if has_finalizers {
        let mut marked = obj.clone();
        marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return world
            .store
            .replace(r, marked)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name));
    }
    if r.kind == "Pod" && obj.pointer("/spec/nodeName").is_some() {
        let grace = grace_period
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        let already = obj.pointer("/metadata/deletionTimestamp").is_some();
        if grace > 0 {
            if already {
                return Ok(obj);
            }
            let mut marked = obj.clone();
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            marked["metadata"]["deletionTimestamp"] =
                json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return world
                .store
                .replace(r, marked)
                .ok_or_else(|| ApiError::not_found(r.group, r.plural, name));
        }
    }
    remove(world, r, ns, name)
}

/// Removes an object for good, forgetting what the controllers kept about it.
pub(crate) fn remove(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    name: &str,
) -> ApiResult<Value> {
    if let Some(uid) = world
        .store
        .get(r, ns, name)
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(Value::as_str)
    {
        let uid = uid.to_owned();
        world.forget(&uid);
    }
    world
        .store
        .remove(r, ns, name)
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))
}

/// Whether a DELETE that removed an object at once answers with the object rather
/// than a `Status` (`ReturnDeletedObject` in the real server's registries).
pub(crate) fn returns_deleted_object(r: &Resource) -> bool {
    matches!(
        r.kind,
        "Pod"
            | "Service"
            | "ServiceAccount"
            | "StorageClass"
            | "Namespace"
            | "CustomResourceDefinition"
    ) || resources::by_kind(r.kind).is_none()
}

/// The `Status` a DELETE answers when it removed the object at once.
pub(crate) fn deleted_status(r: &Resource, deleted: &Value) -> Value {
    let mut details = json!({
        "name": deleted.pointer("/metadata/name"),
        "kind": r.plural,
        "uid": deleted.pointer("/metadata/uid"),
    });
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn dependents(world: &World, owner_uid: &str) -> Vec<(&'static Resource, String, String)> {
    world
        .store
        .all()
        .filter(|(_, obj)| {
            obj.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|o| o["uid"] == owner_uid))
        })
        .filter_map(|(kind, obj)| {
            let r = resources::by_key(&world.custom, kind)?;
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((r, ns.to_owned(), name_of(obj).to_owned()))
        })
        .collect()
}

/// Takes the owner's references out of its dependents (no `ownerReferences` left
/// when it was the only owner, as the real garbage collector leaves them).
pub(crate) fn orphan_dependents(world: &mut World, owner_uid: &str) {
    for (r, ns, name) in dependents(world, owner_uid) {
        if let Some(mut obj) = world.store.get(r, &ns, &name).cloned() {
            if let Some(refs) = obj
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|o| o["uid"] != owner_uid);
                if refs.is_empty()
                    && let Some(meta) = obj["metadata"].as_object_mut()
                {
                    meta.remove("ownerReferences");
                }
            }
            world.store.replace(r, obj);
        }
    }
}

/// Deletes the owner's dependents in the foreground; returns whether any is left.
pub(crate) fn delete_dependents(world: &mut World, owner_uid: &str) -> bool {
    let dependents = dependents(world, owner_uid);
    for (r, ns, name) in &dependents {
        // As the real collector: in the foreground what has dependents of its own, in
        // the background the rest.
        let own_uid = world
            .store
            .get(r, ns, name)
            .and_then(|o| o.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let policy =
            (!self::dependents(world, &own_uid).is_empty()).then_some(Propagation::Foreground);
        // A dependent that is already gone needs nothing more.
        let _ = delete(world, r, ns, name, policy);
    }
    !dependents.is_empty()
}

pub(crate) fn delete_namespace_contents(world: &mut World, ns: &str) {
    let inside: Vec<(&'static Resource, String)> = world
        .store
        .all()
        .filter(|(_, obj)| obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
        .filter_map(|(kind, obj)| {
            Some((
                resources::by_key(&world.custom, kind)?,
                name_of(obj).to_owned(),
            ))
        })
        .collect();
    for (r, name) in inside {
        // Whatever went meanwhile needs nothing more.
        let _ = remove(world, r, ns, &name);
    }
}

/// The `autoscaling/v1` Scale of a Deployment, ReplicaSet, StatefulSet or
/// ReplicationController.
pub(crate) fn get_scale(world: &World, r: &Resource, ns: &str, name: &str) -> ApiResult<Value> {
    let obj = world
        .store
        .get(r, ns, name)
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    // A ReplicationController's selector is the label map itself.
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .or_else(|| {
            (r.kind == "ReplicationController")
                .then(|| obj.pointer("/spec/selector"))
                .flatten()
        })
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &obj["metadata"];
    Ok(json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector
        }
    }))
}

/// Sets `spec.replicas` through the scale subresource.
pub(crate) fn set_scale(
    world: &mut World,
    r: &'static Resource,
    ns: &str,
    name: &str,
    replicas: i64,
    manager: &str,
) -> ApiResult<Value> {
    let old = world
        .store
        .get(r, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    merge::track_update(Some(&old), &mut new, manager, &r.api_version(), None);
    store_update(world, r, &old, new, None)?;
    get_scale(world, r, ns, name)
}
