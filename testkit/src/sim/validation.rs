//! Field validation a real API server does that manifests in the wild trip over
//! (found by applying the public `kubernetes/examples` to both servers): the
//! container ports of every pod template, and a ReplicationController's selector.

use serde_json::Value;

/// Where a kind keeps its pod spec, as the path of its fields.
fn pod_spec_path(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "spec",
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController"
        | "PodTemplate" => "spec.template.spec",
        "CronJob" => "spec.jobTemplate.spec.template.spec",
        _ => return None,
    })
}

fn pointer(path: &str) -> String {
    format!("/{}", path.replace('.', "/"))
}

/// The first field of `obj` (of kind `kind`) a real server refuses, with its reason
/// worded as the server words it.
pub(super) fn invalid(kind: &str, obj: &Value) -> Option<(String, String)> {
    if kind == "ReplicationController" {
        let selector = obj.pointer("/spec/selector").and_then(Value::as_object);
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        // A missing selector defaults to the template's labels; with neither, there
        // is nothing to select pods by.
        if selector.is_none_or(|s| s.is_empty()) && labels.is_none_or(|l| l.is_empty()) {
            return Some(("spec.selector".to_owned(), "Required value".to_owned()));
        }
        // A given selector must select the pods the template makes.
        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
            let selected = selector
                .iter()
                .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value));
            if !selected {
                return Some((
                    "spec.template.metadata.labels".to_owned(),
                    "Invalid value: `selector` does not match template `labels`".to_owned(),
                ));
            }
        }
    }
    let base = pod_spec_path(kind)?;
    let spec = obj.pointer(&pointer(base))?;
    for list in ["initContainers", "containers"] {
        let containers = spec.get(list).and_then(Value::as_array);
        for (i, container) in containers.into_iter().flatten().enumerate() {
            let ports = container.get("ports").and_then(Value::as_array);
            for (j, port) in ports.into_iter().flatten().enumerate() {
                let field = |name: &str| format!("{base}.{list}[{i}].ports[{j}].{name}");
                if let Some(protocol) = port.get("protocol").and_then(Value::as_str)
                    && !matches!(protocol, "TCP" | "UDP" | "SCTP")
                {
                    return Some((
                        field("protocol"),
                        format!(
                            "Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""
                        ),
                    ));
                }
                match port.get("containerPort").and_then(Value::as_i64) {
                    None => return Some((field("containerPort"), "Required value".to_owned())),
                    Some(n) if !(1..=65535).contains(&n) => {
                        return Some((
                            field("containerPort"),
                            format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ports: Value) -> Value {
        json!({"spec": {"containers": [{"name": "a", "image": "x", "ports": ports}]}})
    }

    #[test]
    fn container_ports_need_a_known_protocol_and_a_port_in_range() {
        assert_eq!(
            invalid(
                "Pod",
                &pod(json!([{"containerPort": 80, "protocol": "tcp"}]))
            ),
            Some((
                "spec.containers[0].ports[0].protocol".to_owned(),
                "Unsupported value: \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\""
                    .to_owned()
            ))
        );
        assert_eq!(
            invalid("Pod", &pod(json!([{"containerPort": 0}]))).map(|(f, _)| f),
            Some("spec.containers[0].ports[0].containerPort".to_owned())
        );
        assert_eq!(
            invalid("Pod", &pod(json!([{"protocol": "UDP"}]))).map(|(f, _)| f),
            Some("spec.containers[0].ports[0].containerPort".to_owned())
        );
        assert_eq!(
            invalid(
                "Pod",
                &pod(json!([{"containerPort": 53, "protocol": "UDP"}]))
            ),
            None
        );
        let deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}
        ]}}}});
        assert_eq!(
            invalid("Deployment", &deployment).map(|(f, _)| f),
            Some("spec.template.spec.containers[0].ports[0].containerPort".to_owned())
        );
    }

    #[test]
    fn a_replication_controller_needs_a_selector_or_template_labels() {
        let template = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let bare = json!({"spec": {"template": template}});
        assert_eq!(
            invalid("ReplicationController", &bare),
            Some(("spec.selector".to_owned(), "Required value".to_owned()))
        );
        let mut labelled = bare.clone();
        labelled["spec"]["template"]["metadata"] = json!({"labels": {"app": "a"}});
        assert_eq!(invalid("ReplicationController", &labelled), None);
        let mut selected = labelled.clone();
        selected["spec"]["selector"] = json!({"app": "a"});
        assert_eq!(invalid("ReplicationController", &selected), None);
        let mut elsewhere = labelled;
        elsewhere["spec"]["selector"] = json!({"app": "b"});
        assert_eq!(
            invalid("ReplicationController", &elsewhere).map(|(f, _)| f),
            Some("spec.template.metadata.labels".to_owned())
        );
    }
}
