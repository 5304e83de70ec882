//! CustomResourceDefinitions: the kinds they define, served beside the built-in table.
//!
//! After every change to a CRD, [`sync`] rebuilds the custom types from the stored
//! definitions: each served version of an accepted definition is one [`Resource`],
//! marked `Established` in the definition's status, and the objects of a type no
//! definition serves any more are deleted (with `DELETED` events), as the real API
//! server does when a CRD is removed. Versions of one kind share their objects and no
//! conversion happens between them.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};

use super::World;
use super::resources::{self, Resource, VERBS};
use super::store::now_rfc3339;

/// The `&'static` copies of custom types and their names. Content-addressed and shared
/// by every simulator in the process: defining the same kind again reuses its entry, so
/// only distinct definitions take memory, once.
static INTERNED_STRINGS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static INTERNED_RESOURCES: Mutex<Vec<&'static Resource>> = Mutex::new(Vec::new());

fn intern(s: &str) -> &'static str {
    let mut strings = INTERNED_STRINGS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = strings.iter().find(|x| **x == s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    strings.push(leaked);
    leaked
}

fn intern_slice(items: &[&'static str]) -> &'static [&'static str] {
    if items.is_empty() {
        return &[];
    }
    Box::leak(items.to_vec().into_boxed_slice())
}

fn intern_resource(r: Resource) -> &'static Resource {
    let mut all = INTERNED_RESOURCES
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = all.iter().find(|x| ***x == r) {
        return found;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    all.push(leaked);
    leaked
}

fn strings(v: Option<&Value>) -> Vec<&'static str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(intern)
        .collect()
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Why a definition is invalid, if it is (checked on create and update).
pub(crate) fn invalid(crd: &Value) -> Option<(&'static str, String)> {
    types_of(crd).err()
}

/// The types one definition serves, or the invalid field and why.
fn types_of(crd: &Value) -> Result<Vec<Resource>, (&'static str, String)> {
    let group = str_at(crd, "/spec/group");
    let kind = str_at(crd, "/spec/names/kind");
    let plural = str_at(crd, "/spec/names/plural");
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Err((
            "spec",
            "spec.group, spec.names.kind and spec.names.plural are required".to_owned(),
        ));
    }
    if str_at(crd, "/metadata/name") != format!("{plural}.{group}") {
        return Err((
            "metadata.name",
            format!("Invalid value: must be spec.names.plural+\".\"+spec.group: {plural}.{group}"),
        ));
    }
    let namespaced = match str_at(crd, "/spec/scope") {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err((
                "spec.scope",
                format!(
                    "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
        }
    };
    let (group, kind, plural) = (intern(group), intern(kind), intern(plural));
    let key = intern(&format!("{kind}.{group}"));
    let short_names = intern_slice(&strings(crd.pointer("/spec/names/shortNames")));
    let categories = intern_slice(&strings(crd.pointer("/spec/names/categories")));
    let mut types = Vec::new();
    for version in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if version.get("served") != Some(&json!(true)) {
            continue;
        }
        let name = str_at(version, "/name");
        if name.is_empty() {
            return Err(("spec.versions[].name", "Required value".to_owned()));
        }
        types.push(Resource {
            key,
            group,
            version: intern(name),
            kind,
            plural,
            namespaced,
            short_names,
            categories,
            has_status: version.pointer("/subresources/status").is_some(),
            has_generation: true,
            verbs: VERBS,
        });
    }
    Ok(types)
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
        "message": message, "lastTransitionTime": now_rfc3339()
    })
}

/// Rebuilds the custom types from the stored definitions (see the module comment).
pub(crate) fn sync(world: &mut World) {
    let Some(crd_res) = resources::by_kind("CustomResourceDefinition") else {
        return;
    };
    let before = std::mem::take(&mut world.custom);
    let mut served: Vec<&'static Resource> = Vec::new();
    for crd in world.store.list_owned(crd_res, None) {
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let (types, status) = match types_of(&crd) {
            Ok(types) => {
                let clash = types.iter().find(|t| {
                    resources::RESOURCES
                        .iter()
                        .chain(served.iter().copied())
                        .any(|o| {
                            o.group == t.group && o.plural == t.plural && o.version == t.version
                        })
                });
                match clash {
                    Some(t) => (
                        Vec::new(),
                        json!({"conditions": [
                            condition("NamesAccepted", false, "NameConflict", &format!("{}.{} is already in use", t.plural, t.group)),
                            condition("Established", false, "NotAccepted", "not all names are accepted"),
                        ]}),
                    ),
                    None => {
                        let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
                        let stored: Vec<Value> = crd
                            .pointer("/spec/versions")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter(|v| v.get("storage") == Some(&json!(true)))
                            .filter_map(|v| v.get("name").cloned())
                            .collect();
                        (
                            types,
                            json!({
                                "acceptedNames": names,
                                "storedVersions": stored,
                                "conditions": [
                                    condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
                                    condition("Established", true, "InitialNamesAccepted", "the initial names have been accepted"),
                                ]
                            }),
                        )
                    }
                }
            }
            Err((_, message)) => (
                Vec::new(),
                json!({"conditions": [
                    condition("NamesAccepted", false, "Invalid", &message),
                    condition("Established", false, "NotAccepted", &message),
                ]}),
            ),
        };
        served.extend(types.into_iter().map(intern_resource));
        let same = |a: Option<&Value>, b: &Value| {
            let strip = |v: &Value| {
                let mut v = v.clone();
                for c in v
                    .get_mut("conditions")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("lastTransitionTime");
                    }
                }
                v
            };
            a.is_some_and(|a| strip(a) == strip(b))
        };
        if !same(crd.get("status"), &status) {
            let mut updated = crd;
            updated["status"] = status;
            world.store.replace(crd_res, updated);
        }
    }
    let kept: HashSet<&'static str> = served.iter().map(|r| r.key).collect();
    for gone in before.iter().filter(|r| !kept.contains(r.key)) {
        for obj in world.store.list_owned(gone, None) {
            let ns = str_at(&obj, "/metadata/namespace").to_owned();
            let name = str_at(&obj, "/metadata/name").to_owned();
            let uid = str_at(&obj, "/metadata/uid").to_owned();
            world.forget(&uid);
            world.store.remove(gone, &ns, &name);
        }
    }
    world.custom = served;
}
