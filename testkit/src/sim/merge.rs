//! Server-side apply with field ownership (`managedFields`), JSON merge patch and
//! strategic merge patch.
//!
//! Field sets follow the `FieldsV1` format: `f:<field>` for map fields and
//! `k:{"name":"web"}` for items of lists merged by key. Lists without a merge key are
//! atomic: whoever sets them owns the whole list.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::store::now_rfc3339;

type Path = Vec<String>;
pub(crate) type FieldSet = BTreeSet<Path>;

/// The merge key of a list field, for the lists Kubernetes merges by key.
fn list_merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "ports" => {
            if items.iter().all(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        _ => return None,
    };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

fn item_path_element(key: &str, item: &Value) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_owned(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    format!("k:{}", Value::Object(m))
}

fn collect(value: &Value, prefix: &Path, out: &mut FieldSet) {
    let Some(map) = value.as_object() else {
        out.insert(prefix.clone());
        return;
    };
    if map.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, v) in map {
        let mut p = prefix.clone();
        p.push(format!("f:{k}"));
        match v {
            Value::Object(_) => collect(v, &p, out),
            Value::Array(items) => match list_merge_key(k, items) {
                Some(key) if !items.is_empty() => {
                    for item in items {
                        let mut ip = p.clone();
                        ip.push(item_path_element(key, item));
                        out.insert(ip.clone());
                        if let Some(obj) = item.as_object() {
                            for (ik, iv) in obj {
                                let mut fp = ip.clone();
                                fp.push(format!("f:{ik}"));
                                match iv {
                                    Value::Object(_) => collect(iv, &fp, out),
                                    _ => {
                                        out.insert(fp);
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {
                    out.insert(p);
                }
            },
            _ => {
                out.insert(p);
            }
        }
    }
}

/// The fields an object (or an apply configuration) sets, leaving out identity and status.
pub(crate) fn field_set(obj: &Value) -> FieldSet {
    let mut trimmed = obj.clone();
    if let Some(o) = trimmed.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
        }
        if o.get("metadata")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            o.remove("metadata");
        }
    }
    let mut out = FieldSet::new();
    if trimmed.as_object().is_some_and(|m| !m.is_empty()) {
        collect(&trimmed, &Vec::new(), &mut out);
    }
    out
}

/// The fields under `status`, for updates through the status subresource.
pub(crate) fn status_field_set(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(status) = obj
        .get("status")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
    {
        collect(status, &vec!["f:status".to_owned()], &mut out);
    }
    out
}

/// Looks up the value at a field path.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut parent_field = "";
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
            parent_field = f;
        } else if let Some(k) = el.strip_prefix("k:") {
            let want: Value = serde_json::from_str(k).ok()?;
            let (key, key_value) = want.as_object()?.iter().next()?;
            let _ = parent_field;
            cur = cur
                .as_array()?
                .iter()
                .find(|i| i.get(key) == Some(key_value))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parents {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Value>(k) else {
                return;
            };
            let Some((key, key_value)) = want.as_object().and_then(|o| o.iter().next()) else {
                return;
            };
            let (key, key_value) = (key.clone(), key_value.clone());
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| i.get(&key) == Some(&key_value)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:")
        && let Ok(want) = serde_json::from_str::<Value>(k)
        && let Some((key, key_value)) = want.as_object().and_then(|o| o.iter().next())
        && let Some(a) = cur.as_array_mut()
    {
        a.retain(|i| i.get(key) != Some(key_value));
    }
}

/// Merges an apply configuration into a live object: maps recursively, keyed lists by
/// key, everything else replaced.
fn apply_merge(live: &mut Value, config: &Value, field: &str) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                match l.get_mut(k) {
                    Some(lv) => apply_merge(lv, cv, k),
                    None => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let key = list_merge_key(field, c).filter(|k| l.iter().all(|i| i.get(*k).is_some()));
            match key {
                Some(key) => {
                    for ci in c {
                        match l.iter_mut().find(|li| li.get(key) == ci.get(key)) {
                            Some(li) => apply_merge(li, ci, ""),
                            None => l.push(ci.clone()),
                        }
                    }
                }
                None => *l = c.clone(),
            }
        }
        (l, c) => *l = c.clone(),
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
pub(crate) struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub time: String,
    pub fields: FieldSet,
}

fn fields_from_v1(node: &Value, prefix: &Path, out: &mut FieldSet) {
    let Some(map) = node.as_object() else {
        return;
    };
    if map.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, v) in map {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        let mut p = prefix.clone();
        p.push(k.clone());
        fields_from_v1(v, &p, out);
    }
}

pub(crate) fn fields_to_v1(fields: &FieldSet) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String], is_item_marker: bool) {
        match path.split_first() {
            None => {}
            Some((first, rest)) => {
                let child = node
                    .entry(first.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(child_map) = child.as_object_mut() {
                    if rest.is_empty() {
                        if is_item_marker && !child_map.is_empty() {
                            child_map.insert(".".to_owned(), json!({}));
                        }
                    } else {
                        insert(child_map, rest, is_item_marker);
                    }
                }
            }
        }
    }
    let mut root = Map::new();
    // Deeper paths first so that item markers land in nodes that already have children.
    let mut paths: Vec<&Path> = fields.iter().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in paths {
        let is_item = p.last().is_some_and(|l| l.starts_with("k:"));
        insert(&mut root, p, is_item);
    }
    Value::Object(root)
}

pub(crate) fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let mut fields = FieldSet::new();
                    if let Some(f) = e.get("fieldsV1") {
                        fields_from_v1(f, &Vec::new(), &mut fields);
                    }
                    ManagedEntry {
                        manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                        operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                        api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                        subresource: e["subresource"].as_str().map(str::to_owned),
                        time: e["time"].as_str().unwrap_or_default().to_owned(),
                        fields,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let values: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields_to_v1(&e.fields)
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if values.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_owned(), Value::Array(values));
        }
    }
}

/// A field owned by another manager with a different value.
/// A conflict: the manager as the real server names it in messages (`"alice"` for an
/// applier, `"kubectl" using apps/v1` for an updater, `with subresource "status"` when
/// it wrote a subresource), its name, and the field.
pub(crate) type Conflict = (String, String, String);

/// How the real server names a manager in a conflict: appliers by name, updaters with
/// the version they wrote.
fn conflicting_manager(entry: &ManagedEntry) -> String {
    let mut who = format!("{:?}", entry.manager);
    if let Some(subresource) = &entry.subresource {
        who.push_str(&format!(" with subresource {subresource:?}"));
    }
    if entry.operation == "Update" {
        who.push_str(&format!(" using {}", entry.api_version));
    }
    who
}

fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            s.push('[');
            s.push_str(&k.trim_matches(|c| c == '{' || c == '}').replace(':', "="));
            s.push(']');
        }
    }
    s
}

/// Server-side apply of `config` by `manager` onto `live` (None when creating).
///
/// Returns the merged object with updated `managedFields`, or the conflicts when
/// `force` is false and another manager owns a field the configuration sets differently.
pub(crate) fn server_side_apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    subresource: Option<&str>,
) -> Result<Value, Vec<Conflict>> {
    let applied = if subresource == Some("status") {
        status_field_set(config)
    } else {
        field_set(config)
    };
    let mut merged = live.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    let mut entries = live.map(read_managed).unwrap_or_default();

    let mut conflicts = Vec::new();
    for entry in entries.iter_mut().filter(|e| e.manager != manager) {
        let mut lost = Vec::new();
        for path in entry.fields.intersection(&applied) {
            let wanted = value_at(config, path);
            let current = value_at(&merged, path);
            let is_leaf = !matches!(wanted, Some(Value::Object(_)))
                && !path.last().is_some_and(|l| l.starts_with("k:"));
            if is_leaf && wanted != current {
                conflicts.push((
                    conflicting_manager(entry),
                    entry.manager.clone(),
                    dotted(path),
                ));
                lost.push(path.clone());
            }
        }
        if force {
            for p in lost {
                entry.fields.remove(&p);
            }
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }

    let previous: FieldSet = entries
        .iter()
        .filter(|e| {
            e.manager == manager
                && e.operation == "Apply"
                && e.subresource.as_deref() == subresource
        })
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    // Fields this manager applied before and no longer applies, and nobody else owns, go away.
    let mut dropped: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied.contains(*p) && !others.contains(*p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut merged, p);
    }

    let mut to_merge = config.clone();
    if let Some(o) = to_merge.as_object_mut() {
        if subresource == Some("status") {
            o.retain(|k, _| k == "status");
        } else {
            o.remove("status");
        }
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
            ] {
                meta.remove(f);
            }
        }
    }
    apply_merge(&mut merged, &to_merge, "");

    entries.retain(|e| {
        !(e.manager == manager && e.operation == "Apply" && e.subresource.as_deref() == subresource)
    });
    entries.push(ManagedEntry {
        manager: manager.to_owned(),
        operation: "Apply".to_owned(),
        api_version: api_version.to_owned(),
        subresource: subresource.map(str::to_owned),
        time: now_rfc3339(),
        fields: applied,
    });
    write_managed(&mut merged, &entries);
    Ok(merged)
}

/// Records an `Update` operation by `manager`: it takes ownership of what it changed.
pub(crate) fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let (old_fields, new_fields) = if subresource == Some("status") {
        (
            old.map(status_field_set).unwrap_or_default(),
            status_field_set(new),
        )
    } else {
        (old.map(field_set).unwrap_or_default(), field_set(new))
    };
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => value_at(o, p) != value_at(new, p),
        })
        .cloned()
        .collect();
    let removed: FieldSet = old_fields.difference(&new_fields).cloned().collect();
    let mut entries = old.map(read_managed).unwrap_or_default();
    for e in &mut entries {
        if subresource.is_none() || e.subresource.as_deref() == subresource {
            e.fields
                .retain(|p| !removed.contains(p) && (!changed.contains(p) || e.manager == manager));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| {
            e.manager == manager
                && e.operation == "Update"
                && e.subresource.as_deref() == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now_rfc3339();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: "Update".to_owned(),
                api_version: api_version.to_owned(),
                subresource: subresource.map(str::to_owned),
                time: now_rfc3339(),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (None, Some(p)) => {
            *target = Value::Object(Map::new());
            let mut stripped = Value::Object(p.clone());
            strip_nulls(&mut stripped);
            merge_patch(target, &stripped);
        }
        _ => *target = patch.clone(),
    }
}

fn strip_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, v| !v.is_null());
        for v in m.values_mut() {
            strip_nulls(v);
        }
    }
}

/// Strategic merge patch: a merge patch whose keyed lists (containers, env, ports, ...)
/// are merged item by item, with `$patch: delete|replace` and `$`-directives understood.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value, field: &str) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replacement = Value::Object(p.clone());
                strip_directives(&mut replacement);
                *t = replacement.as_object().cloned().unwrap_or_default();
                return;
            }
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => strategic_merge_patch(tv, v, k),
                    None => {
                        let mut nv = v.clone();
                        strip_directives(&mut nv);
                        t.insert(k.clone(), nv);
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p)) => match list_merge_key(field, p) {
            Some(key) if t.iter().all(|i| i.get(key).is_some()) => {
                for pi in p {
                    let directive = pi.get("$patch").and_then(Value::as_str);
                    let pos = t.iter().position(|ti| ti.get(key) == pi.get(key));
                    match (directive, pos) {
                        (Some("delete"), Some(i)) => {
                            t.remove(i);
                        }
                        (Some("delete"), None) => {}
                        (_, Some(i)) => strategic_merge_patch(&mut t[i], pi, ""),
                        (_, None) => {
                            let mut ni = pi.clone();
                            strip_directives(&mut ni);
                            t.push(ni);
                        }
                    }
                }
            }
            _ => {
                let mut nv = Value::Array(p.clone());
                strip_directives(&mut nv);
                *t = nv.as_array().cloned().unwrap_or_default();
            }
        },
        (t, p) => {
            let mut nv = p.clone();
            strip_directives(&mut nv);
            *t = nv;
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, v| !k.starts_with('$') && !v.is_null());
            for v in m.values_mut() {
                strip_directives(v);
            }
        }
        Value::Array(a) => {
            for v in a {
                strip_directives(v);
            }
        }
        _ => {}
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test, copy, move).
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("missing path")?;
        match op["op"].as_str() {
            Some("add") => pointer_set(target, path, op["value"].clone(), true)?,
            Some("replace") => pointer_set(target, path, op["value"].clone(), false)?,
            Some("remove") => {
                pointer_remove(target, path)?;
            }
            Some("test") => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            Some("copy") => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = target
                    .pointer(from)
                    .cloned()
                    .ok_or("copy from a missing path")?;
                pointer_set(target, path, v, true)?;
            }
            Some("move") => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = pointer_remove(target, from)?;
                pointer_set(target, path, v, true)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let idx = path.rfind('/').ok_or_else(|| format!("bad path {path}"))?;
    let last = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..idx].to_owned(), last))
}

fn pointer_set(target: &mut Value, path: &str, value: Value, insert: bool) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let parent = target
        .pointer_mut(&parent)
        .ok_or_else(|| format!("missing parent of {path}"))?;
    match parent {
        Value::Object(m) => {
            if !insert && !m.contains_key(&last) {
                return Err(format!("replace of missing {path}"));
            }
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                if insert && i <= a.len() {
                    a.insert(i, value);
                } else if !insert && i < a.len() {
                    a[i] = value;
                } else {
                    return Err(format!("index out of range in {path}"));
                }
            }
        }
        _ => return Err(format!("cannot set {path}")),
    }
    Ok(())
}

fn pointer_remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let parent = target
        .pointer_mut(&parent)
        .ok_or_else(|| format!("missing parent of {path}"))?;
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(|| format!("missing {path}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(format!("index out of range in {path}"))
            }
        }
        _ => Err(format!("cannot remove {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_owned_item_by_item() {
        let fields = field_set(&json!({
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
        }));
        let v1 = fields_to_v1(&fields);
        assert_eq!(
            v1,
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}}})
        );
        let mut back = FieldSet::new();
        fields_from_v1(&v1, &Vec::new(), &mut back);
        assert_eq!(back, fields);
    }

    #[test]
    fn a_field_owned_by_another_manager_with_another_value_conflicts() {
        let first = server_side_apply(
            None,
            &json!({"spec": {"replicas": 2}}),
            "a",
            "apps/v1",
            false,
            None,
        )
        .expect("first apply");
        let conflicts = server_side_apply(
            Some(&first),
            &json!({"spec": {"replicas": 3}}),
            "b",
            "apps/v1",
            false,
            None,
        )
        .expect_err("conflict");
        assert_eq!(conflicts[0].2, ".spec.replicas");
        let same = server_side_apply(
            Some(&first),
            &json!({"spec": {"replicas": 2}}),
            "b",
            "apps/v1",
            false,
            None,
        );
        assert!(same.is_ok());
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let first = server_side_apply(
            None,
            &json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            "m",
            "v1",
            false,
            None,
        )
        .expect("apply");
        let second = server_side_apply(
            Some(&first),
            &json!({"metadata": {"labels": {"a": "1"}}}),
            "m",
            "v1",
            false,
            None,
        )
        .expect("apply");
        assert_eq!(second["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut target =
            json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]});
        strategic_merge_patch(
            &mut target,
            &json!({"containers": [{"name": "b", "image": "z"}]}),
            "",
        );
        assert_eq!(target["containers"][0]["image"], "x");
        assert_eq!(target["containers"][1]["image"], "z");
    }
}
