//! `Table` responses for `kubectl get` (`Accept: application/json;as=Table;...`).

use serde_json::{Value, json};

use super::resources::Resource;

fn age(obj: &Value) -> String {
    let Some(created) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return "<unknown>".to_owned();
    };
    let secs = (chrono::Utc::now() - created.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".to_owned();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for cs in statuses.into_iter().flatten() {
        if let Some(reason) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            return reason.to_owned();
        }
        if let Some(reason) = cs
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            return reason.to_owned();
        }
    }
    text(pod, "/status/phase")
}

fn columns_and_cells(r: &Resource, obj: &Value) -> (Vec<(&'static str, &'static str)>, Vec<Value>) {
    let name = json!(text(obj, "/metadata/name"));
    match r.kind {
        "Deployment" => (
            vec![
                ("Name", "string"),
                ("Ready", "string"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
                ("Age", "string"),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                json!(age(obj)),
            ],
        ),
        "ReplicaSet" => (
            vec![
                ("Name", "string"),
                ("Desired", "integer"),
                ("Current", "integer"),
                ("Ready", "integer"),
                ("Age", "string"),
            ],
            vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                json!(age(obj)),
            ],
        ),
        "Pod" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum()
            });
            (
                vec![
                    ("Name", "string"),
                    ("Ready", "string"),
                    ("Status", "string"),
                    ("Restarts", "string"),
                    ("Age", "string"),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(obj)),
                    json!(restarts.to_string()),
                    json!(age(obj)),
                ],
            )
        }
        "Service" => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let node = p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .map(|n| format!(":{n}"))
                        .unwrap_or_default();
                    format!(
                        "{}{node}/{}",
                        p["port"],
                        p["protocol"].as_str().unwrap_or("TCP")
                    )
                })
                .collect();
            (
                vec![
                    ("Name", "string"),
                    ("Type", "string"),
                    ("Cluster-IP", "string"),
                    ("External-IP", "string"),
                    ("Port(s)", "string"),
                    ("Age", "string"),
                ],
                vec![
                    name,
                    json!(text(obj, "/spec/type")),
                    json!(text(obj, "/spec/clusterIP")),
                    json!("<none>"),
                    json!(ports.join(",")),
                    json!(age(obj)),
                ],
            )
        }
        "Event" => {
            let last = obj
                .get("lastTimestamp")
                .filter(|t| t.is_string())
                .map_or_else(
                    || age(obj),
                    |t| age(&json!({"metadata": {"creationTimestamp": t}})),
                );
            let object = format!(
                "{}/{}",
                text(obj, "/involvedObject/kind").to_ascii_lowercase(),
                text(obj, "/involvedObject/name")
            );
            (
                vec![
                    ("Last Seen", "string"),
                    ("Type", "string"),
                    ("Reason", "string"),
                    ("Object", "string"),
                    ("Message", "string"),
                ],
                vec![
                    json!(last),
                    json!(text(obj, "/type")),
                    json!(text(obj, "/reason")),
                    json!(object),
                    json!(text(obj, "/message")),
                ],
            )
        }
        "Namespace" => (
            vec![("Name", "string"), ("Status", "string"), ("Age", "string")],
            vec![name, json!(text(obj, "/status/phase")), json!(age(obj))],
        ),
        _ => (
            vec![("Name", "string"), ("Age", "string")],
            vec![name, json!(age(obj))],
        ),
    }
}

/// Converts an object or a list into a `meta.k8s.io/v1` Table.
pub(crate) fn to_table(r: &Resource, value: &Value) -> Value {
    let items: Vec<&Value> = match value.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![value],
    };
    let mut definitions = columns_and_cells(r, &json!({})).0;
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let (defs, cells) = columns_and_cells(r, obj);
            definitions = defs;
            json!({"cells": cells, "object": obj})
        })
        .collect();
    let column_definitions: Vec<Value> = definitions
        .iter()
        .map(|(name, kind)| {
            json!({
                "name": name, "type": kind, "format": if *name == "Name" { "name" } else { "" },
                "description": "", "priority": 0
            })
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = value.pointer("/metadata/resourceVersion") {
        meta["resourceVersion"] = rv.clone();
    }
    if let Some(c) = value.pointer("/metadata/continue") {
        meta["continue"] = c.clone();
    }
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": column_definitions, "rows": rows
    })
}
