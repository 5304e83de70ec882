//! The mapping of each of Kubernetes' special types, bad bodies, and round trips through
//! a running kube-sim: objects encoded as client-go encodes them are stored as the same
//! objects sent as JSON.

use prost_reflect::prost::Message as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn pool_ok() -> &'static DescriptorPool {
    pool().expect("the embedded descriptors load")
}

fn descriptor(name: &str) -> MessageDescriptor {
    pool_ok()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("no message {name}"))
}

/// A JSON object as client-go encodes it: envelope, message, and (like Go's protobuf
/// encoding) the zero values of non-pointer scalar fields written out.
fn encode(object: &Value) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let descriptor = message_for(pool_ok(), api_version, kind).expect("a message for the kind");
    let message = from_json(&descriptor, object);
    envelope(api_version, kind, &message.encode_to_vec())
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = DynamicMessage::new(descriptor("k8s.io.apimachinery.pkg.runtime.TypeMeta"));
    type_meta.set_field_by_name("apiVersion", Field::String(api_version.to_owned()));
    type_meta.set_field_by_name("kind", Field::String(kind.to_owned()));
    let mut unknown = DynamicMessage::new(descriptor(UNKNOWN));
    unknown.set_field_by_name("typeMeta", Field::Message(type_meta));
    unknown.set_field_by_name("raw", Field::Bytes(raw.to_vec().into()));
    unknown.set_field_by_name("contentEncoding", Field::String(String::new()));
    unknown.set_field_by_name("contentType", Field::String(String::new()));
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn parse_go_duration(text: &str) -> i64 {
    if let Some(positive) = text.strip_prefix('-') {
        return -parse_go_duration(positive);
    }
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let scale = match unit.as_str() {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "µs" | "us" => 1e3,
            "ns" => 1.0,
            other => panic!("unit {other}"),
        };
        total += number.parse::<f64>().expect("a number") * scale;
        number.clear();
    }
    total.round() as i64
}

fn from_json(descriptor: &MessageDescriptor, json: &Value) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let name = descriptor.full_name();
    match name {
        TIME | MICRO_TIME => {
            let time = chrono::DateTime::parse_from_rfc3339(json.as_str().expect("a time"))
                .expect("RFC 3339");
            message.set_field_by_name("seconds", Field::I64(time.timestamp()));
            message.set_field_by_name(
                "nanos",
                Field::I32(i32::try_from(time.timestamp_subsec_nanos()).expect("nanos")),
            );
            return message;
        }
        DURATION => {
            let nanos = parse_go_duration(json.as_str().expect("a duration"));
            message.set_field_by_name("duration", Field::I64(nanos));
            return message;
        }
        QUANTITY => {
            let text = json
                .as_str()
                .map_or_else(|| json.to_string(), str::to_owned);
            message.set_field_by_name("string", Field::String(text));
            return message;
        }
        INT_OR_STRING => {
            if let Some(n) = json.as_i64() {
                message.set_field_by_name("type", Field::I64(0));
                message.set_field_by_name("intVal", Field::I32(i32::try_from(n).expect("i32")));
            } else {
                message.set_field_by_name("type", Field::I64(1));
                message.set_field_by_name(
                    "strVal",
                    Field::String(json.as_str().expect("a string").to_owned()),
                );
            }
            return message;
        }
        RAW_EXTENSION => {
            message.set_field_by_name("raw", Field::Bytes(json.to_string().into_bytes().into()));
            return message;
        }
        FIELDS_V1 => {
            message.set_field_by_name("Raw", Field::Bytes(json.to_string().into_bytes().into()));
            return message;
        }
        _ => {}
    }
    if let Some(crd_type) = name.strip_prefix(CRD).map(|n| &n[1..]) {
        let schema = || descriptor.get_field_by_name("schema").expect("schema");
        let sub = |field: &FieldDescriptor, v: &Value| {
            Field::Message(from_json(
                &field.kind().as_message().expect("a message").clone(),
                v,
            ))
        };
        match (crd_type, json) {
            ("JSON", _) => {
                message
                    .set_field_by_name("raw", Field::Bytes(json.to_string().into_bytes().into()));
                return message;
            }
            ("JSONSchemaPropsOrBool", Value::Bool(b)) => {
                message.set_field_by_name("allows", Field::Bool(*b));
                return message;
            }
            ("JSONSchemaPropsOrArray", Value::Array(_)) => {
                let field = descriptor
                    .get_field_by_name("jSONSchemas")
                    .expect("jSONSchemas");
                message.set_field(&field, value_from_json(&field, json));
                return message;
            }
            ("JSONSchemaPropsOrStringArray", Value::Array(_)) => {
                let field = descriptor.get_field_by_name("property").expect("property");
                message.set_field(&field, value_from_json(&field, json));
                return message;
            }
            (
                "JSONSchemaPropsOrBool" | "JSONSchemaPropsOrArray" | "JSONSchemaPropsOrStringArray",
                _,
            ) => {
                let field = schema();
                message.set_field(&field, sub(&field, json));
                if crd_type == "JSONSchemaPropsOrBool" {
                    message.set_field_by_name("allows", Field::Bool(true));
                }
                return message;
            }
            _ => {}
        }
    }
    if let Some(items) = list_wrapper(descriptor) {
        message.set_field(&items, value_from_json(&items, json));
        return message;
    }
    let object = json
        .as_object()
        .unwrap_or_else(|| panic!("{name}: {json} is not an object"));
    for field in descriptor.fields() {
        match json_name(&field) {
            (None, _) => {
                let inline =
                    from_json(&field.kind().as_message().expect("a message").clone(), json);
                message.set_field(&field, Field::Message(inline));
            }
            (Some(key), omit) => match object.get(key) {
                Some(v) if !v.is_null() => message.set_field(&field, value_from_json(&field, v)),
                _ if omit
                    && !field.is_list()
                    && !field.is_map()
                    && field.kind().as_message().is_none() =>
                {
                    message.set_field(&field, Field::default_value_for_field(&field));
                }
                _ => {}
            },
        }
    }
    message
}

fn value_from_json(field: &FieldDescriptor, json: &Value) -> Field {
    if field.is_map() {
        let entry = field.kind().as_message().expect("a map entry").clone();
        let value_kind = entry.map_entry_value_field().kind();
        let map = json
            .as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| (MapKey::String(k.clone()), element(&value_kind, v)))
            .collect();
        return Field::Map(map);
    }
    if field.is_list() {
        let items = json.as_array().expect("an array");
        return Field::List(items.iter().map(|v| element(&field.kind(), v)).collect());
    }
    element(&field.kind(), json)
}

fn element(kind: &Kind, json: &Value) -> Field {
    match kind {
        Kind::Bool => Field::Bool(json.as_bool().expect("a bool")),
        Kind::Int32 => Field::I32(i32::try_from(json.as_i64().expect("an int")).expect("i32")),
        Kind::Int64 => Field::I64(json.as_i64().expect("an int")),
        Kind::Double => Field::F64(json.as_f64().expect("a number")),
        Kind::String => Field::String(json.as_str().expect("a string").to_owned()),
        Kind::Bytes => Field::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(json.as_str().expect("base64"))
                .expect("base64")
                .into(),
        ),
        Kind::Message(m) => Field::Message(from_json(m, json)),
        other => panic!("{other:?} is not used by Kubernetes"),
    }
}

/// Decodes the object `json` encodes.
fn round(json: &Value) -> Value {
    decode(&encode(json)).expect("decodes")
}

#[test]
fn the_embedded_descriptors_load_and_name_every_served_kind() {
    let pool = pool_ok();
    for r in super::super::resources::RESOURCES {
        assert!(
            message_for(pool, &r.api_version(), r.kind).is_some(),
            "no message for {} {}",
            r.api_version(),
            r.kind
        );
    }
    assert!(message_for(pool, "autoscaling/v1", "Scale").is_some());
    assert!(message_for(pool, "v1", "DeleteOptions").is_some());
    assert_eq!(
        message_for(pool, "rbac.authorization.k8s.io/v1", "Role")
            .expect("Role")
            .full_name(),
        "k8s.io.api.rbac.v1.Role"
    );
}

#[test]
fn times_are_rfc_3339_in_seconds_and_micro_times_in_microseconds() {
    let time = |name: &str, seconds: i64, nanos: i32| {
        let mut m = DynamicMessage::new(descriptor(name));
        m.set_field_by_name("seconds", Field::I64(seconds));
        m.set_field_by_name("nanos", Field::I32(nanos));
        message_json(&m, "t").expect("maps")
    };
    assert_eq!(
        time(TIME, 1_700_000_000, 987_654_321),
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        time(MICRO_TIME, 1_700_000_000, 987_654_321),
        json!("2023-11-14T22:13:20.987654Z")
    );
    assert_eq!(
        time(MICRO_TIME, 1_700_000_000, 0),
        json!("2023-11-14T22:13:20.000000Z")
    );
    assert_eq!(time(TIME, 0, 0), Value::Null, "the zero time is null");
}

#[test]
fn durations_are_go_duration_strings() {
    for (nanos, text) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (500_000_000, "500ms"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(nanos), text);
        assert_eq!(parse_go_duration(text), nanos, "{text}");
    }
    let mut m = DynamicMessage::new(descriptor(DURATION));
    m.set_field_by_name("duration", Field::I64(90_000_000_000));
    assert_eq!(message_json(&m, "d").expect("maps"), json!("1m30s"));
}

#[test]
fn quantities_are_strings_and_int_or_strings_follow_their_type() {
    let mut q = DynamicMessage::new(descriptor(QUANTITY));
    q.set_field_by_name("string", Field::String("500m".to_owned()));
    assert_eq!(message_json(&q, "q").expect("maps"), json!("500m"));

    let mut n = DynamicMessage::new(descriptor(INT_OR_STRING));
    n.set_field_by_name("type", Field::I64(0));
    n.set_field_by_name("intVal", Field::I32(8080));
    n.set_field_by_name("strVal", Field::String(String::new()));
    assert_eq!(message_json(&n, "p").expect("maps"), json!(8080));
    let mut s = DynamicMessage::new(descriptor(INT_OR_STRING));
    s.set_field_by_name("type", Field::I64(1));
    s.set_field_by_name("intVal", Field::I32(0));
    s.set_field_by_name("strVal", Field::String("http".to_owned()));
    assert_eq!(message_json(&s, "p").expect("maps"), json!("http"));
}

#[test]
fn raw_extensions_and_fields_v1_embed_their_json() {
    let revision = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "web-1", "namespace": "default"},
        "data": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "b"}]}}}},
        "revision": 1
    });
    let decoded = round(&revision);
    assert_eq!(decoded["data"], revision["data"]);
    assert_eq!(decoded["revision"], 1);

    let managed = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "managedFields": [{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
            "time": "2025-01-02T03:04:05Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}}
        }]},
        "data": {"a": "1"}
    });
    assert_eq!(
        round(&managed)["metadata"]["managedFields"],
        managed["metadata"]["managedFields"]
    );

    // A RawExtension may hold a nested protobuf object.
    let nested =
        encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}}));
    let mut raw = DynamicMessage::new(descriptor(RAW_EXTENSION));
    raw.set_field_by_name("raw", Field::Bytes(nested.into()));
    let value = message_json(&raw, "data").expect("maps");
    assert_eq!(value["kind"], "ConfigMap");
    assert_eq!(value["metadata"]["name"], "n");
}

#[test]
fn bytes_are_base64_and_maps_are_objects() {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "labels": {"app": "web", "tier": "db"}},
        "type": "Opaque",
        "data": {"password": "c2VjcmV0", "empty": ""},
        "stringData": {"user": "admin"}
    });
    assert_eq!(round(&secret), secret);
}

#[test]
fn list_wrappers_are_arrays() {
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "csr"},
        "spec": {
            "request": "LS0tLS1CRUdJTg==",
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["client auth"],
            "extra": {"scopes": ["a", "b"], "none": []}
        }
    });
    let decoded = round(&csr);
    assert_eq!(decoded["spec"]["extra"], csr["spec"]["extra"]);
    assert_eq!(decoded["spec"]["request"], csr["spec"]["request"]);
}

#[test]
fn inline_structs_and_renamed_fields_take_their_json_shape() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5}}],
            "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "cfg", "configMap": {"name": "c", "optional": false}}],
            "imagePullSecrets": [{"name": "regcred"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0
        }
    });
    let decoded = round(&pod);
    assert_eq!(
        decoded["spec"], pod["spec"],
        "pointer zeros stay, inline volume sources are flat"
    );

    let policy = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "i"},
        "spec": {"rules": [{"host": "a.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}}]}}]}
    });
    assert_eq!(round(&policy)["spec"], policy["spec"]);

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {"size": {"type": "integer", "default": 3, "enum": [1, 3, 5]},
                                       "tags": {"type": "array", "items": {"type": "string"}},
                                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                       "open": {"type": "object", "additionalProperties": false}}},
                    "ref": {"$ref": "#/definitions/x"}
                }}}}]}
    });
    assert_eq!(round(&crd)["spec"], crd["spec"]);
}

#[test]
fn zero_values_go_leaves_out_of_json_are_left_out_and_absent_fields_stay_absent() {
    let descriptor = descriptor("k8s.io.api.apps.v1.DeploymentSpec");
    let mut spec = DynamicMessage::new(descriptor.clone());
    // replicas is a pointer (0 is meaningful); minReadySeconds is not (0 is "unset").
    spec.set_field_by_name("replicas", Field::I32(0));
    spec.set_field_by_name("minReadySeconds", Field::I32(0));
    let decoded = message_json(&spec, "spec").expect("maps");
    assert_eq!(decoded, json!({"replicas": 0}));
    let empty = DynamicMessage::new(descriptor);
    assert_eq!(message_json(&empty, "spec").expect("maps"), json!({}));
}

#[test]
fn bad_protobuf_is_a_bad_request() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"kind\":".to_vec(), "magic bytes"),
        (b"k8s\0\xff\xff\xff".to_vec(), "envelope is malformed"),
        (
            envelope("v1", "Nonsense", &[]),
            "no protobuf message for Nonsense of v1",
        ),
        (envelope("", "", &[]), "names no apiVersion and kind"),
        (
            envelope("v1", "ConfigMap", b"\x0a\x05ab"),
            "ConfigMap message is malformed",
        ),
    ];
    for (body, why) in cases {
        let error = decode(&body).expect_err("refused");
        assert_eq!((error.code, error.reason), (400, "BadRequest"), "{error}");
        assert!(error.message.contains(why), "{why}: {}", error.message);
    }
    let mut raw = DynamicMessage::new(descriptor(RAW_EXTENSION));
    raw.set_field_by_name("raw", Field::Bytes(b"not json".to_vec().into()));
    let error = message_json(&raw, "data").expect_err("not JSON");
    assert!(
        error.contains("data: the raw bytes are not JSON"),
        "{error}"
    );

    // ControllerRevisions whose data nest each other as protobuf, too deep.
    let mut body =
        encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}}));
    let revision = message_for(pool_ok(), "apps/v1", "ControllerRevision").expect("a message");
    for _ in 0..12 {
        let mut data = DynamicMessage::new(descriptor(RAW_EXTENSION));
        data.set_field_by_name("raw", Field::Bytes(body.into()));
        let mut outer = DynamicMessage::new(revision.clone());
        outer.set_field_by_name("data", Field::Message(data));
        body = envelope("apps/v1", "ControllerRevision", &outer.encode_to_vec());
    }
    let error = decode(&body).expect_err("too deep");
    assert_eq!(error.code, 400);
    assert!(
        error.message.contains("nested more than 8 deep"),
        "{}",
        error.message
    );
}

/// One HTTP/1.1 request to kube-sim: status, content type and body (the head alone for
/// a watch, which does not end).
async fn request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("writes");
    stream.write_all(body).await.expect("writes");
    let mut received = Vec::new();
    let mut buffer = [0_u8; 8192];
    let watch = path.contains("watch=true");
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an answer in time")
            .expect("reads");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
        if watch && received.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let split = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&received[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, received[split + 4..].to_vec())
}

const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf,application/json";

/// Creates `object` at `path`, as JSON or as protobuf, and returns what kube-sim stored.
async fn create(url: &str, path: &str, object: &Value, protobuf: bool) -> Value {
    let (content_type, body) = if protobuf {
        (MEDIA_TYPE, encode(object))
    } else {
        ("application/json", object.to_string().into_bytes())
    };
    let (status, answer_type, answer) = request(
        url,
        "POST",
        path,
        &[("Content-Type", content_type), ("Accept", PROTOBUF_FIRST)],
        &body,
    )
    .await;
    let answer: Value = serde_json::from_slice(&answer).expect("a JSON answer");
    assert_eq!(status, 201, "{path}: {answer}");
    assert_eq!(answer_type, "application/json");
    answer
}

/// The stored object without what differs between two creations.
fn comparable(mut object: Value, name: &str) -> Value {
    let uid = object["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    let meta = object["metadata"].as_object_mut().expect("metadata");
    for volatile in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "namespace",
        "name",
    ] {
        meta.remove(volatile);
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        // A Service's allocated address.
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    let meta = object["metadata"].as_object_mut().expect("metadata");
    if let Some(fields) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
        for entry in fields {
            entry.as_object_mut().expect("an entry").remove("time");
        }
    }
    let text = object
        .to_string()
        .replace(name, "NAME")
        .replace(&uid, "UID");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test]
async fn kube_sim_stores_the_same_objects_from_protobuf_as_from_json() {
    let sim = super::super::Simulator::builder()
        .time_scale(50.0)
        .start()
        .await
        .expect("kube-sim starts");
    let url = sim.url().to_owned();
    for ns in ["from-json", "from-protobuf"] {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create(
            &url,
            "/api/v1/namespaces",
            &namespace,
            ns == "from-protobuf",
        )
        .await;
    }
    let objects = round_trip_objects();
    for (path, object) in &objects {
        let mut stored = Vec::new();
        for (suffix, protobuf) in [("from-json", false), ("from-protobuf", true)] {
            let mut object = object.clone();
            let name = format!(
                "{}-{suffix}",
                object["metadata"]["name"].as_str().expect("a name")
            );
            object["metadata"]["name"] = json!(name);
            let path = path.replace("NS", suffix);
            let created = create(&url, &path, &object, protobuf).await;
            let kind = object["kind"].as_str().expect("kind");
            let namespace = if path.contains("/namespaces/") {
                suffix
            } else {
                ""
            };
            let kept = sim
                .get_object(kind, namespace, &name)
                .unwrap_or_else(|| panic!("{kind} {name} stored"));
            assert_eq!(kept["metadata"]["uid"], created["metadata"]["uid"]);
            stored.push(comparable(created, &name));
        }
        assert_eq!(stored[0], stored[1], "{path}");
    }
    assert!(objects.len() >= 12);
}

/// Real objects of many kinds, each with the special types it carries.
pub(in crate::sim) fn round_trip_objects() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/apis/apps/v1/namespaces/NS/deployments",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"replicas": 0, "revisionHistoryLimit": 0, "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                        "containers": [{"name": "web", "image": "nginx:1.27",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "0.1"}},
                            "livenessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 3},
                            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                        "securityContext": {"runAsUser": 0, "runAsNonRoot": false}}}}
            }),
        ),
        (
            "/apis/apps/v1/namespaces/NS/statefulsets",
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                        "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}}]}
            }),
        ),
        (
            "/apis/apps/v1/namespaces/NS/daemonsets",
            json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent"},
                "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "agent:1"}],
                        "tolerations": [{"operator": "Exists"}]}}}
            }),
        ),
        (
            "/api/v1/namespaces/NS/services",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "alt", "port": 8080, "targetPort": 8081}],
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}
            }),
        ),
        (
            "/api/v1/namespaces/NS/configmaps",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg"},
                "data": {"a.conf": "x=1\n"}, "binaryData": {"b": "AAEC"}, "immutable": false
            }),
        ),
        (
            "/api/v1/namespaces/NS/secrets",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "creds"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}
            }),
        ),
        (
            "/api/v1/namespaces/NS/serviceaccounts",
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "robot"}, "automountServiceAccountToken": false,
                "imagePullSecrets": [{"name": "regcred"}]
            }),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/NS/roles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
            }),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/NS/rolebindings",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "x"}]
            }),
        ),
        (
            "/apis/batch/v1/namespaces/NS/jobs",
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "once"},
                "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 0, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "j", "image": "busybox", "command": ["true"]}]}}}
            }),
        ),
        (
            "/apis/batch/v1/namespaces/NS/cronjobs",
            json!({
                "apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "nightly"},
                "spec": {"schedule": "0 3 * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}
            }),
        ),
        (
            "/apis/policy/v1/namespaces/NS/poddisruptionbudgets",
            json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "web"},
                "spec": {"minAvailable": "50%", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}
            }),
        ),
        (
            "/apis/autoscaling/v2/namespaces/NS/horizontalpodautoscalers",
            json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]}
            }),
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/NS/ingresses",
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web"},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
            }),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/NS/leases",
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "leader"},
                "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                    "acquireTime": "2025-01-02T03:04:05.123456Z", "renewTime": "2025-01-02T03:04:06.000001Z"}
            }),
        ),
        (
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "high"}, "value": 1000, "description": "high",
                "preemptionPolicy": "Never"
            }),
        ),
        (
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "check"},
                "webhooks": [{"name": "check.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                    "clientConfig": {"url": "https://check.example.com/", "caBundle": "Y2E="},
                    "rules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}],
                    "timeoutSeconds": 5}]
            }),
        ),
    ]
}

#[tokio::test]
async fn answers_are_json_when_protobuf_is_accepted_first_including_watches() {
    let sim = super::super::Simulator::builder()
        .start()
        .await
        .expect("kube-sim starts");
    let url = sim.url().to_owned();
    for path in [
        "/api/v1/namespaces/default",
        "/api/v1/namespaces",
        "/apis/apps/v1/namespaces/default/deployments",
    ] {
        let (status, content_type, body) =
            request(&url, "GET", path, &[("Accept", PROTOBUF_FIRST)], b"").await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(content_type, "application/json", "{path}");
        serde_json::from_slice::<Value>(&body).expect("JSON");
    }
    let (status, content_type, _) = request(
        &url,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true",
        &[(
            "Accept",
            "application/vnd.kubernetes.protobuf;stream=watch,application/json",
        )],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let (status, content_type, body) = request(
        &url,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", MEDIA_TYPE), ("Accept", PROTOBUF_FIRST)],
        b"k8s\0\x0a\xff",
    )
    .await;
    let answer: Value = serde_json::from_slice(&body).expect("a Status");
    assert_eq!((status, content_type.as_str()), (400, "application/json"));
    assert_eq!(
        (&answer["kind"], &answer["reason"], &answer["code"]),
        (&json!("Status"), &json!("BadRequest"), &json!(400))
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be decoded as protobuf")),
        "{answer}"
    );
}

#[tokio::test]
async fn the_scale_subresource_takes_a_protobuf_scale() {
    let sim = super::super::Simulator::builder()
        .time_scale(50.0)
        .start()
        .await
        .expect("kube-sim starts");
    let url = sim.url().to_owned();
    let deployment = round_trip_objects().remove(0).1;
    create(
        &url,
        "/apis/apps/v1/namespaces/default/deployments",
        &deployment,
        true,
    )
    .await;
    for replicas in [3, 0] {
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": replicas}});
        let (status, _, body) = request(
            &url,
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &[("Content-Type", MEDIA_TYPE), ("Accept", PROTOBUF_FIRST)],
            &encode(&scale),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let stored = sim
            .get_object("Deployment", "default", "web")
            .expect("stored");
        assert_eq!(stored["spec"]["replicas"], replicas);
    }
}

#[test]
fn fields_whose_proto_name_is_not_their_json_name_carry_the_json_one() {
    let field = |message: &str, name: &str| {
        let descriptor = descriptor(message);
        let field = descriptor
            .get_field_by_name(name)
            .unwrap_or_else(|| panic!("{message}.{name}"));
        json_name(&field).0.map(str::to_owned)
    };
    let schema = format!("{CRD}.JSONSchemaProps");
    for (message, proto, json) in [
        (schema.as_str(), "ref", Some("$ref")),
        (schema.as_str(), "schema", Some("$schema")),
        (
            schema.as_str(),
            "xKubernetesPreserveUnknownFields",
            Some("x-kubernetes-preserve-unknown-fields"),
        ),
        (
            schema.as_str(),
            "xKubernetesValidations",
            Some("x-kubernetes-validations"),
        ),
        (
            "k8s.io.api.networking.v1.IngressClassParametersReference",
            "aPIGroup",
            Some("apiGroup"),
        ),
        (
            "k8s.io.api.admissionregistration.v1.Validation",
            "Expression",
            Some("expression"),
        ),
        (
            "k8s.io.api.admissionregistration.v1.Variable",
            "Name",
            Some("name"),
        ),
        ("k8s.io.api.core.v1.Volume", "volumeSource", None),
        (
            "k8s.io.api.core.v1.EphemeralContainer",
            "ephemeralContainerCommon",
            None,
        ),
        (
            "k8s.io.api.apps.v1.DeploymentSpec",
            "replicas",
            Some("replicas"),
        ),
    ] {
        assert_eq!(field(message, proto).as_deref(), json, "{message}.{proto}");
    }
}

#[tokio::test]
async fn a_protobuf_delete_options_body_is_honoured() {
    let sim = super::super::Simulator::builder()
        .time_scale(50.0)
        .start()
        .await
        .expect("kube-sim starts");
    let url = sim.url().to_owned();
    let deployment = round_trip_objects().remove(0).1;
    let mut deployment = deployment;
    deployment["spec"]["replicas"] = json!(1);
    create(
        &url,
        "/apis/apps/v1/namespaces/default/deployments",
        &deployment,
        true,
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim.list_objects("ReplicaSet", Some("default")).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no ReplicaSet");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // As a typed client sends it: DeleteOptions under the client's group version.
    let options = encode(&json!({
        "apiVersion": "apps/v1", "kind": "DeleteOptions", "propagationPolicy": "Orphan"
    }));
    let (status, _, body) = request(
        &url,
        "DELETE",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[("Content-Type", MEDIA_TYPE), ("Accept", PROTOBUF_FIRST)],
        &options,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // As a real server does: the owner stays, marked and under the `orphan`
    // finalizer, until its dependents are freed; then it goes.
    while sim.get_object("Deployment", "default", "web").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Deployment stays"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let replica_sets = sim.list_objects("ReplicaSet", Some("default"));
    assert_eq!(replica_sets.len(), 1, "orphaned, not collected");
    assert!(
        replica_sets[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        replica_sets[0]
    );
}

#[test]
fn damaged_bodies_are_refused_or_read_never_a_panic() {
    let body = encode(&round_trip_objects().remove(0).1);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut refused = 0;
    for round in 0..2000 {
        let mut damaged = body.clone();
        if round % 3 == 0 {
            damaged.truncate(5 + (next() as usize) % (body.len() - 5));
        }
        for _ in 0..1 + next() % 4 {
            let at = 4 + (next() as usize) % (damaged.len() - 4);
            damaged[at] = next() as u8;
        }
        match decode(&damaged) {
            Ok(object) => assert!(object["kind"].is_string()),
            Err(error) => {
                assert_eq!((error.code, error.reason), (400, "BadRequest"));
                refused += 1;
            }
        }
    }
    assert!(
        refused > 100,
        "only {refused} of 2000 damaged bodies refused"
    );
}
