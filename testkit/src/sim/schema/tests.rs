//! The schema check, rule by rule (the answers are the real server's, see the module
//! documentation), and through kube-sim's HTTP front.

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn schema(kind: &str) -> Schema {
    let resource = resources::by_kind(kind).unwrap_or_else(|| panic!("{kind} is served"));
    Schema::of(resource).unwrap_or_else(|| panic!("{kind} has a schema"))
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
}

fn container(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "nginx:1.27"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

fn write_error(kind: &str, mut body: Value, validation: FieldValidation) -> ApiError {
    schema(kind)
        .check_write(&mut body, validation)
        .expect_err("refused")
}

fn apply_error(kind: &str, body: &Value) -> ApiError {
    schema(kind).check_apply(body, "p").expect_err("refused")
}

fn strict_ok(kind: &str, body: &Value) {
    let mut copy = body.clone();
    let warnings = schema(kind)
        .check_write(&mut copy, FieldValidation::Strict)
        .unwrap_or_else(|e| panic!("{kind} accepted: {e}"));
    assert!(warnings.is_empty());
    assert_eq!(&copy, body, "nothing is dropped from a valid {kind}");
    schema(kind)
        .check_apply(body, "p")
        .unwrap_or_else(|e| panic!("{kind} applied: {e}"));
}

#[test]
fn valid_objects_of_every_kind_with_special_types_pass_unchanged() {
    let objects = protobuf::tests::round_trip_objects();
    for (_, object) in &objects {
        strict_ok(object["kind"].as_str().expect("a kind"), object);
    }
    assert!(objects.len() >= 12);
    // What the server itself writes: managed fields, times, owner references, status.
    strict_ok(
        "Pod",
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "uid": "u", "resourceVersion": "3", "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": null,
                "labels": {"a": "b"}, "finalizers": ["x"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}],
                "managedFields": [{"manager": "m", "operation": "Apply", "apiVersion": "v1",
                    "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [container(json!({
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                "resources": {"requests": {"cpu": 0.5, "memory": "1e3"}}}))],
                "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null}]}
        }),
    );
}

#[test]
fn unknown_fields_under_strict_are_one_bad_request_naming_each() {
    let body = pod(json!({"containers": [container(json!({"foo": 1}))], "bar": {"x": 1}}));
    let error = write_error("Pod", body, FieldValidation::Strict);
    assert_eq!((error.code, error.reason), (400, "BadRequest"));
    assert_eq!(
        error.message,
        "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.bar\", unknown field \"spec.containers[0].foo\""
    );
    // In metadata, at the top, in status and below a map entry too.
    let body = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "ws.e.com", "foo": 1}, "top": 2, "status": {"bar": 3},
        "spec": {"group": "e.com", "names": {"kind": "W", "plural": "ws"}, "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema":
                {"type": "object", "properties": {"a": {"type": "string", "bogus": 1}}}}}]}});
    let error = write_error("CustomResourceDefinition", body, FieldValidation::Strict);
    assert!(
        error.message.ends_with(
            "strict decoding error: unknown field \"metadata.foo\", unknown field \"spec.versions[0].schema.openAPIV3Schema.properties.a.bogus\", unknown field \"status.bar\", unknown field \"top\""
        ),
        "{}",
        error.message
    );
}

#[test]
fn unknown_fields_are_dropped_with_a_warning_under_warn_and_silently_under_ignore() {
    let body = pod(json!({"containers": [container(json!({"foo": 1}))], "bar": 1}));
    let expected = pod(json!({"containers": [container(json!({}))]}));
    let mut warned = body.clone();
    let warnings = schema("Pod")
        .check_write(&mut warned, FieldValidation::Warn)
        .expect("accepted");
    assert_eq!(
        warnings,
        [
            "unknown field \"spec.bar\"",
            "unknown field \"spec.containers[0].foo\""
        ]
    );
    assert_eq!(warned, expected);
    let mut ignored = body;
    let warnings = schema("Pod")
        .check_write(&mut ignored, FieldValidation::Ignore)
        .expect("accepted");
    assert!(warnings.is_empty());
    assert_eq!(ignored, expected);
    assert_eq!(
        warning_header("unknown field \"spec.bar\""),
        r#"299 - "unknown field \"spec.bar\"""#
    );
}

#[test]
fn field_validation_is_warn_when_absent_and_other_values_are_invalid() {
    assert_eq!(
        FieldValidation::parse(None, "CreateOptions").expect("absent"),
        FieldValidation::Warn
    );
    assert_eq!(
        FieldValidation::parse(Some("Strict"), "CreateOptions").expect("strict"),
        FieldValidation::Strict
    );
    assert_eq!(
        FieldValidation::parse(Some("Ignore"), "CreateOptions").expect("ignore"),
        FieldValidation::Ignore
    );
    let error = FieldValidation::parse(Some("Bogus"), "CreateOptions").expect_err("bogus");
    assert_eq!((error.code, error.reason), (422, "Invalid"));
    assert_eq!(
        error.message,
        "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"Bogus\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
    );
}

#[test]
fn inlined_structs_contribute_their_fields_but_not_their_own_name() {
    strict_ok(
        "Pod",
        &pod(json!({"containers": [container(json!({
            "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5}}))],
            "volumes": [{"name": "c", "configMap": {"name": "c"}}]})),
    );
    let body = pod(json!({"containers": [container(json!({}))],
        "volumes": [{"name": "c", "volumeSource": {"emptyDir": {}}}]}));
    let error = write_error("Pod", body, FieldValidation::Strict);
    assert!(
        error
            .message
            .ends_with("unknown field \"spec.volumes[0].volumeSource\""),
        "{}",
        error.message
    );
}

#[test]
fn values_of_the_wrong_type_are_a_bad_request_whatever_the_validation() {
    let cases = [
        (
            json!({"hostname": 5}),
            "json: cannot unmarshal number into Go struct field PodSpec.spec.hostname of type string",
        ),
        (
            json!({"priority": true}),
            "json: cannot unmarshal bool into Go struct field PodSpec.spec.priority of type int32",
        ),
        (
            json!({"activeDeadlineSeconds": "5"}),
            "json: cannot unmarshal string into Go struct field PodSpec.spec.activeDeadlineSeconds of type int64",
        ),
        (
            json!({"hostNetwork": 1}),
            "json: cannot unmarshal number into Go struct field PodSpec.spec.hostNetwork of type bool",
        ),
        (
            json!({"securityContext": "x"}),
            "json: cannot unmarshal string into Go struct field PodSpec.spec.securityContext of type v1.PodSecurityContext",
        ),
        (
            json!({"volumes": {}}),
            "json: cannot unmarshal object into Go struct field PodSpec.spec.volumes of type []v1.Volume",
        ),
        (
            json!({"nodeSelector": []}),
            "json: cannot unmarshal array into Go struct field PodSpec.spec.nodeSelector of type map[string]string",
        ),
        (
            json!({"nodeSelector": {"a": 1}}),
            "json: cannot unmarshal number into Go struct field PodSpec.spec.nodeSelector of type string",
        ),
        (
            json!({"priority": 1.5}),
            "json: cannot unmarshal number 1.5 into Go struct field PodSpec.spec.priority of type int32",
        ),
        (
            json!({"priority": 1.0}),
            "json: cannot unmarshal number 1.0 into Go struct field PodSpec.spec.priority of type int32",
        ),
        (
            json!({"priority": 3_000_000_000_i64}),
            "json: cannot unmarshal number 3000000000 into Go struct field PodSpec.spec.priority of type int32",
        ),
    ];
    for (fields, message) in cases {
        let mut spec = json!({"containers": [container(json!({}))]});
        if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
            spec.extend(fields.clone());
        }
        for validation in [FieldValidation::Ignore, FieldValidation::Strict] {
            let error = write_error("Pod", pod(spec.clone()), validation);
            assert_eq!((error.code, error.reason), (400, "BadRequest"));
            assert_eq!(
                error.message,
                format!("Pod in version \"v1\" cannot be handled as a Pod: {message}")
            );
        }
    }
    // Inside list elements, the path has no indices; a wrong type outweighs unknown fields.
    let body = pod(
        json!({"containers": [container(json!({"ports": [{"containerPort": "80"}]}))], "foo": 1}),
    );
    let error = write_error("Pod", body, FieldValidation::Strict);
    assert!(
        error.message.ends_with(
            "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32"
        ),
        "{}",
        error.message
    );
}

#[test]
fn apply_refuses_unknown_fields_and_wrong_types_with_a_500_without_reason() {
    let body = pod(json!({"containers": [container(json!({}))], "bar": 1}));
    let error = apply_error("Pod", &body);
    assert_eq!((error.code, error.reason), (500, ""));
    assert_eq!(
        error.message,
        "failed to create typed patch object (ns/p; /v1, Kind=Pod): .spec.bar: field not declared in schema"
    );
    assert!(error.status().get("reason").is_none());
    // The walk of an object stops at its first unknown field; type errors add up.
    let body = pod(json!({"containers": [container(json!({"zz": 1,
        "ports": [{"containerPort": "80"}]}))], "hostNetwork": "x", "zoo": 1, "zzz": 2}));
    let error = apply_error("Pod", &body);
    assert_eq!(
        error.message,
        "failed to create typed patch object (ns/p; /v1, Kind=Pod): errors:\n  \
         .spec.containers[name=\"app\"].ports[containerPort=\"80\",protocol=\"TCP\"].containerPort: expected numeric (int or float), got string\n  \
         .spec.containers[name=\"app\"].zz: field not declared in schema\n  \
         .spec.hostNetwork: expected boolean, got &{x}\n  \
         .spec.zoo: field not declared in schema"
    );
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "p"}, "spec": {"replicas": "two"}});
    assert_eq!(
        apply_error("Deployment", &deployment).message,
        "failed to create typed patch object (/p; apps/v1, Kind=Deployment): .spec.replicas: expected numeric (int or float), got string"
    );
    let shown = [
        (
            json!({"hostname": 5}),
            "expected string, got &value.valueUnstructured{Value:5}",
        ),
        (
            json!({"hostname": {"a": 1}}),
            "expected string, got &value.valueUnstructured{Value:map[string]interface {}{\"a\":1}}",
        ),
        (
            json!({"priority": {}}),
            "expected numeric (int or float), got map[string]interface {}",
        ),
        (json!({"volumes": {}}), "expected list, got &{map[]}"),
        (json!({"nodeSelector": "x"}), "expected map, got &{x}"),
    ];
    for (fields, message) in shown {
        let mut spec = json!({"containers": [container(json!({}))]});
        if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
            spec.extend(fields.clone());
        }
        let error = apply_error("Pod", &pod(spec));
        assert!(error.message.ends_with(message), "{}", error.message);
    }
}

#[test]
fn values_the_go_type_refuses_fail_the_conversion_of_an_apply() {
    let cases = [
        (
            pod(json!({"containers": [container(json!({}))], "priority": 1.5})),
            "cannot convert float64 to int32",
        ),
        (
            pod(
                json!({"containers": [container(json!({"resources": {"limits": {"cpu": true}}}))]}),
            ),
            QUANTITY_FORMAT,
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": 5}}),
            "json: cannot unmarshal number into Go value of type string",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [container(json!({"readinessProbe": {"httpGet": {"port": false}}}))]}}),
            "json: cannot unmarshal bool into Go value of type int32",
        ),
    ];
    for (body, why) in cases {
        let error = apply_error("Pod", &body);
        assert_eq!((error.code, error.reason), (500, ""));
        assert!(
            error.message.starts_with("failed to convert new object (")
                && error.message.ends_with(&format!(
                    "to proper version: unable to convert unstructured object to /v1, Kind=Pod: {why}"
                )),
            "{}",
            error.message
        );
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "p"},
        "data": {"a": "not base64!"}});
    assert!(
        apply_error("Secret", &secret)
            .message
            .ends_with("error decoding from json: illegal base64 data at input byte 3")
    );
    assert!(
        write_error("Secret", secret, FieldValidation::Strict)
            .message
            .ends_with("cannot be handled as a Secret: illegal base64 data at input byte 3")
    );
    // A whole number written as a float, or too large, is a number an apply converts.
    for priority in [json!(1.0), json!(3_000_000_000_i64)] {
        schema("Pod")
            .check_apply(
                &pod(json!({"containers": [container(json!({}))], "priority": priority})),
                "p",
            )
            .expect("converts");
    }
}

#[test]
fn kubernetes_types_take_their_json_forms() {
    let good = [
        json!({"containers": [container(json!({"resources": {"limits": {"cpu": "100m", "memory": "1Gi"},
            "requests": {"cpu": 1, "memory": "1e3", "ephemeral-storage": "+1.5"}}}))]}),
        json!({"containers": [container(json!({"livenessProbe": {"tcpSocket": {"port": 80}},
            "readinessProbe": {"tcpSocket": {"port": "http"}}}))]}),
        json!({"containers": [container(json!({}))], "nodeSelector": {"a": null}, "volumes": null}),
    ];
    for spec in good {
        strict_ok("Pod", &pod(spec));
    }
    for (text, why) in [
        ("1Zi", QUANTITY_FORMAT),
        ("abc", QUANTITY_FORMAT),
        ("", QUANTITY_FORMAT),
        ("1kk", QUANTITY_SUFFIX),
    ] {
        assert_eq!(quantity_problem(text), Some(why), "{text:?}");
    }
    for text in ["1", "0.5", "500m", "2Ki", "1E", "1e-3", " 7 "] {
        assert_eq!(quantity_problem(text), None, "{text:?}");
    }
    // The CRD schema's own types, and JSON anything.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "ws.e.com"},
        "spec": {"group": "e.com", "names": {"kind": "W", "plural": "ws"}, "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "additionalProperties": false,
                "properties": {
                    "a": {"type": "object", "additionalProperties": {"type": "string"}},
                    "b": {"type": "array", "items": {"type": "string"}, "default": ["x", 1, {"y": true}]},
                    "c": {"type": "array", "items": [{"type": "string"}]},
                    "d": {"type": "object", "dependencies": {"e": ["f"], "g": {"required": ["h"]}}},
                    "e": {"enum": [1, "two", null], "example": {"any": "thing"}}}}}}]}});
    strict_ok("CustomResourceDefinition", &crd);
    let mut wrong = crd;
    wrong["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["additionalProperties"] = json!("no");
    let error = write_error("CustomResourceDefinition", wrong, FieldValidation::Strict);
    assert_eq!(error.code, 400, "{}", error.message);
    // List wrappers (`ExtraValue`) are arrays of strings.
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "c"}, "spec": {"request": "aGk=", "signerName": "a/b",
            "extra": {"scopes": ["a", "b"]}}});
    strict_ok("CertificateSigningRequest", &csr);
    let mut wrong = csr;
    wrong["spec"]["extra"]["scopes"] = json!({"a": "b"});
    let error = write_error("CertificateSigningRequest", wrong, FieldValidation::Strict);
    assert!(
        error.message.ends_with("of type []string"),
        "{}",
        error.message
    );
    // RawExtension: anything.
    strict_ok(
        "ControllerRevision",
        &json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
            "revision": 1, "data": {"spec": {"anything": [1, "two"]}}}),
    );
}

#[test]
fn merge_patches_are_checked_with_their_directives_and_deletions() {
    let mut patch = json!({"spec": {"foo": 1, "hostNetwork": null,
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{"name": "app", "$patch": "delete"}]}});
    let error = schema("Pod")
        .check_patch(&mut patch.clone(), FieldValidation::Strict)
        .expect_err("refused");
    assert_eq!((error.code, error.reason), (422, "Invalid"));
    assert!(
        error
            .message
            .starts_with(" \"\" is invalid: patch: Invalid value: \"map[spec:map[")
            && error
                .message
                .ends_with("]]\": strict decoding error: unknown field \"spec.foo\""),
        "{}",
        error.message
    );
    let warnings = schema("Pod")
        .check_patch(&mut patch, FieldValidation::Warn)
        .expect("accepted");
    assert_eq!(warnings, ["unknown field \"spec.foo\""]);
    assert!(patch["spec"].get("foo").is_none());
    assert!(patch["spec"].get("$setElementOrder/containers").is_some());
    let error = schema("Pod")
        .check_patch(
            &mut json!({"spec": {"hostNetwork": "x"}}),
            FieldValidation::Ignore,
        )
        .expect_err("refused");
    assert!(
        error.message.ends_with(
            "json: cannot unmarshal string into Go struct field PodSpec.spec.hostNetwork of type bool"
        ),
        "{}",
        error.message
    );
}

#[test]
fn custom_resources_have_no_schema_here_even_with_a_built_in_name() {
    let deployment = *resources::by_kind("Deployment").expect("served");
    let custom: &'static Resource = Box::leak(Box::new(Resource {
        group: "apps.example.com",
        ..deployment
    }));
    assert!(Schema::of(custom).is_none());
    assert!(Schema::of(resources::by_kind("Deployment").expect("served")).is_some());
}

/// One HTTP/1.1 request to kube-sim: status, head and JSON body.
async fn request(
    url: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> (u16, String, Value) {
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let body = body.to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut received = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut received),
    )
    .await
    .expect("an answer in time")
    .expect("reads");
    let text = String::from_utf8(received).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (
        status,
        head.to_owned(),
        serde_json::from_str(body).expect("JSON"),
    )
}

#[tokio::test]
async fn kube_sim_answers_each_verb_and_field_validation_as_the_real_server() {
    let sim = super::super::Simulator::builder()
        .time_scale(50.0)
        .start()
        .await
        .expect("kube-sim starts");
    let url = sim.url().to_owned();
    let pods = "/api/v1/namespaces/default/pods";
    let object = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "foo": 1}]}})
    };
    let (status, _, answer) = request(
        &url,
        "POST",
        &format!("{pods}?fieldValidation=Strict"),
        "application/json",
        &object("strict"),
    )
    .await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (400, Some("BadRequest")),
        "{answer}"
    );
    assert!(sim.get_object("Pod", "default", "strict").is_none());

    let (status, head, answer) =
        request(&url, "POST", pods, "application/json", &object("warn")).await;
    let head = head.to_lowercase();
    assert_eq!(status, 201, "{answer}");
    assert!(
        head.contains(r#"warning: 299 - "unknown field \"spec.containers[0].foo\"""#),
        "{head}"
    );
    let stored = sim.get_object("Pod", "default", "warn").expect("stored");
    assert!(
        stored["spec"]["containers"][0].get("foo").is_none(),
        "{stored}"
    );

    let (status, head, _) = request(
        &url,
        "POST",
        &format!("{pods}?fieldValidation=Ignore"),
        "application/json",
        &object("ignore"),
    )
    .await;
    assert_eq!(status, 201);
    assert!(!head.to_lowercase().contains("\r\nwarning:"), "{head}");

    let mut replaced = sim.get_object("Pod", "default", "ignore").expect("stored");
    replaced["spec"]["bar"] = json!(1);
    let (status, _, answer) = request(
        &url,
        "PUT",
        &format!("{pods}/ignore?fieldValidation=Strict"),
        "application/json",
        &replaced,
    )
    .await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (400, Some("BadRequest")),
        "{answer}"
    );

    let (status, _, answer) = request(
        &url,
        "PATCH",
        &format!("{pods}/applied?fieldManager=t&fieldValidation=Ignore"),
        "application/apply-patch+yaml",
        &object("applied"),
    )
    .await;
    assert_eq!(status, 500, "{answer}");
    assert!(answer.get("reason").is_none(), "{answer}");
    assert!(sim.get_object("Pod", "default", "applied").is_none());

    let (status, _, answer) = request(
        &url,
        "PATCH",
        &format!("{pods}/ignore?fieldValidation=Strict"),
        "application/merge-patch+json",
        &json!({"spec": {"bar": 1}}),
    )
    .await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (422, Some("Invalid")),
        "{answer}"
    );

    let (status, _, answer) = request(
        &url,
        "POST",
        &format!("{pods}?fieldValidation=strict"),
        "application/json",
        &object("bogus"),
    )
    .await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (422, Some("Invalid")),
        "{answer}"
    );
}
