//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as client-go's typed
//! clients send built-in objects (kubectl's `create namespace`, `create deployment`, …),
//! turned into the JSON object the same client would have sent, so they take the same
//! path as JSON bodies (validation, admission, storage).
//!
//! The wire format: the magic bytes `k8s\0`, then a `runtime.Unknown` message whose
//! `typeMeta` names the apiVersion and kind and whose `raw` bytes are the object's own
//! message. The messages are described by Kubernetes' `generated.proto` files, compiled
//! into `kubernetes.binpb` (a `FileDescriptorSet` without source info, embedded here so
//! that kube-sim needs neither Go nor protoc) by `scripts/generate-sim-protobuf`; its
//! drift test is `tests/sim_protobuf_descriptors.rs`. The generator writes into each
//! field's `json_name` what Go's JSON encoding does with it: the JSON name, `,inline`
//! for an embedded struct whose fields JSON shows in the parent, and `,omit` for a
//! field JSON leaves out when it holds its zero value (Go's protobuf encoding writes
//! non-pointer fields even when zero).
//!
//! Kubernetes' own JSON forms: `meta/v1` Time (RFC 3339, seconds) and MicroTime (RFC
//! 3339 with microseconds), Duration (Go's duration string), Quantity (its string),
//! IntOrString (a number or a string by its `type`), RawExtension, FieldsV1 and the CRD
//! schema's `JSON` (their raw bytes are JSON, embedded as is), the CRD schema's
//! `…OrArray`/`…OrBool`/`…OrStringArray`, list wrappers (`Verbs`, `ExtraValue`) as plain
//! arrays, `bytes` as base64, maps as objects. Responses stay JSON: clients accept
//! `application/vnd.kubernetes.protobuf,application/json`.

use std::sync::LazyLock;

use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as Field,
};
use serde_json::{Map, Value};

use super::error::ApiError;

/// The media type of protobuf bodies.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The bytes every protobuf-encoded object starts with.
const MAGIC: &[u8] = b"k8s\0";

/// Kubernetes' messages (see the module documentation for how they are made).
static DESCRIPTORS: &[u8] = include_bytes!("kubernetes.binpb");

static POOL: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()));

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
pub(super) const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
pub(super) const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
pub(super) const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
pub(super) const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
pub(super) const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
pub(super) const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
pub(super) const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
pub(super) const CRD: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1";

/// Whether a request body is protobuf: by its content type, or by its magic bytes.
pub(crate) fn is_protobuf(content_type: Option<&str>, body: &[u8]) -> bool {
    content_type.is_some_and(|ct| ct.trim_start().starts_with(MEDIA_TYPE))
        || body.starts_with(MAGIC)
}

/// The JSON object a protobuf body encodes, or a 400 `BadRequest` saying why it cannot
/// be read.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    decode_object(body).map_err(|why| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as protobuf ({MEDIA_TYPE}): {why}"
        ))
    })
}

fn pool() -> Result<&'static DescriptorPool, String> {
    POOL.as_ref()
        .map_err(|e| format!("kube-sim's protobuf descriptors do not load: {e}"))
}

fn decode_object(body: &[u8]) -> Result<Value, String> {
    let pool = pool()?;
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("it does not start with the magic bytes \"k8s\\0\"")?;
    let envelope = pool
        .get_message_by_name(UNKNOWN)
        .ok_or("no runtime.Unknown message")?;
    let unknown = DynamicMessage::decode(envelope, rest)
        .map_err(|e| format!("the runtime.Unknown envelope is malformed: {e}"))?;
    let type_meta = unknown
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned())
        .ok_or("the envelope has no typeMeta")?;
    let api_version = string_field(&type_meta, "apiVersion");
    let kind = string_field(&type_meta, "kind");
    if api_version.is_empty() || kind.is_empty() {
        return Err("the envelope's typeMeta names no apiVersion and kind".to_owned());
    }
    let encoding = string_field(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(format!("content encoding {encoding:?} is not supported"));
    }
    let content_type = string_field(&unknown, "contentType");
    if !content_type.is_empty() && !content_type.starts_with(MEDIA_TYPE) {
        return Err(format!(
            "the envelope's content type {content_type:?} is not {MEDIA_TYPE}"
        ));
    }
    let descriptor = message_for(pool, &api_version, &kind)
        .ok_or_else(|| format!("kube-sim knows no protobuf message for {kind} of {api_version}"))?;
    let raw = bytes_field(&unknown, "raw");
    let message = DynamicMessage::decode(descriptor, raw.as_slice())
        .map_err(|e| format!("the {kind} message is malformed: {e}"))?;
    let mut object = match message_json(&message, "")? {
        Value::Object(map) => map,
        _ => return Err(format!("{kind} does not encode an object")),
    };
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.insert("kind".to_owned(), Value::String(kind));
    Ok(Value::Object(object))
}

/// The message of a kind: in the package of its group version (`apps/v1` is
/// `k8s.io.api.apps.v1`, the core group `k8s.io.api.core.v1`, `rbac.authorization.k8s.io`
/// `k8s.io.api.rbac.v1`), or of `meta/v1` (`DeleteOptions` is sent under any group).
fn message_for(pool: &DescriptorPool, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    group_message(pool, api_version, kind)
        .or_else(|| pool.get_message_by_name(&format!("{META}.{kind}")))
}

fn group_message(
    pool: &DescriptorPool,
    api_version: &str,
    kind: &str,
) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let segment = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    let suffix = format!(".{segment}.{version}");
    pool.all_messages()
        .find(|m| m.name() == kind && m.package_name().ends_with(&suffix))
}

/// The message of a built-in kind in the package of its group version (see
/// `message_for`), or `None` when the descriptors do not load or do not describe it.
pub(super) fn kind_message(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    group_message(pool().ok()?, api_version, kind)
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn bytes_field(message: &DynamicMessage, name: &str) -> Vec<u8> {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
        .unwrap_or_default()
}

fn int_field(message: &DynamicMessage, name: &str) -> i64 {
    match message.get_field_by_name(name).as_deref() {
        Some(Field::I32(n)) => i64::from(*n),
        Some(Field::I64(n)) => *n,
        _ => 0,
    }
}

fn present(message: &DynamicMessage, name: &str) -> Option<Field> {
    let field = message.descriptor().get_field_by_name(name)?;
    message
        .has_field(&field)
        .then(|| message.get_field(&field).into_owned())
}

/// A field's JSON name and whether a zero value is left out (see the module
/// documentation); `None` for an inline field.
pub(super) fn json_name(field: &FieldDescriptor) -> (Option<&str>, bool) {
    let name = field.json_name();
    match name.split_once(',') {
        Some(("", "inline")) => (None, false),
        Some((name, "omit")) => (Some(name), true),
        _ => (Some(name), false),
    }
}

fn is_zero(value: &Field) -> bool {
    match value {
        Field::Bool(b) => !b,
        Field::I32(n) | Field::EnumNumber(n) => *n == 0,
        Field::I64(n) => *n == 0,
        Field::U32(n) => *n == 0,
        Field::U64(n) => *n == 0,
        Field::F32(n) => *n == 0.0,
        Field::F64(n) => *n == 0.0,
        Field::String(s) => s.is_empty(),
        Field::Bytes(b) => b.is_empty(),
        Field::List(l) => l.is_empty(),
        Field::Map(m) => m.is_empty(),
        Field::Message(_) => false,
    }
}

fn path_of(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A message as Kubernetes' JSON shows it.
fn message_json(message: &DynamicMessage, path: &str) -> Result<Value, String> {
    let descriptor = message.descriptor();
    match descriptor.full_name() {
        TIME => return Ok(time_json(message, false)),
        MICRO_TIME => return Ok(time_json(message, true)),
        DURATION => return Ok(Value::String(go_duration(int_field(message, "duration")))),
        QUANTITY => return Ok(Value::String(string_field(message, "string"))),
        INT_OR_STRING => {
            return Ok(if int_field(message, "type") == 1 {
                Value::String(string_field(message, "strVal"))
            } else {
                Value::from(int_field(message, "intVal"))
            });
        }
        RAW_EXTENSION => return raw_json(&bytes_field(message, "raw"), path),
        FIELDS_V1 => return raw_json(&bytes_field(message, "Raw"), path),
        name if name.starts_with(CRD) => {
            if let Some(value) = schema_json(message, &name[CRD.len() + 1..], path)? {
                return Ok(value);
            }
        }
        _ => {}
    }
    if let Some(items) = list_wrapper(&descriptor) {
        return match present(message, items.name()) {
            Some(value) => field_json(&value, path),
            None => Ok(Value::Array(Vec::new())),
        };
    }
    let mut object = Map::new();
    for (field, value) in message.fields() {
        let (name, omit) = json_name(&field);
        let Some(name) = name else {
            // An embedded struct: its fields are the parent's.
            if let Value::Object(inner) = field_json(value, &path_of(path, field.name()))? {
                object.extend(inner);
            }
            continue;
        };
        if omit && is_zero(value) {
            continue;
        }
        let json = field_json(value, &path_of(path, name))?;
        if omit && (json.is_null() || json.as_object().is_some_and(Map::is_empty)) {
            continue;
        }
        object.insert(name.to_owned(), json);
    }
    Ok(Value::Object(object))
}

/// A message that JSON shows as a plain array (`Verbs`, `ExtraValue`): its only field
/// is `repeated string items`.
pub(super) fn list_wrapper(descriptor: &MessageDescriptor) -> Option<FieldDescriptor> {
    let mut fields = descriptor.fields();
    let only = fields.next()?;
    (fields.next().is_none()
        && only.name() == "items"
        && only.is_list()
        && matches!(only.kind(), Kind::String))
    .then_some(only)
}

fn field_json(value: &Field, path: &str) -> Result<Value, String> {
    Ok(match value {
        Field::Bool(b) => Value::Bool(*b),
        Field::I32(n) | Field::EnumNumber(n) => Value::from(*n),
        Field::I64(n) => Value::from(*n),
        Field::U32(n) => Value::from(*n),
        Field::U64(n) => Value::from(*n),
        Field::F32(n) => number(f64::from(*n), path)?,
        Field::F64(n) => number(*n, path)?,
        Field::String(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Field::Message(m) => message_json(m, path)?,
        Field::List(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| field_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Field::Map(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                let json = field_json(value, &format!("{path}[{key}]"))?;
                object.insert(key, json);
            }
            Value::Object(object)
        }
    })
}

fn number(n: f64, path: &str) -> Result<Value, String> {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| format!("{path}: {n} is not a JSON number"))
}

/// How deep protobuf objects may nest in raw bytes.
const MAX_NESTING: usize = 8;

thread_local! {
    static NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Raw bytes that hold JSON (or, nested, another protobuf object), embedded as is.
fn raw_json(raw: &[u8], path: &str) -> Result<Value, String> {
    if raw.is_empty() {
        Ok(Value::Null)
    } else if raw.starts_with(MAGIC) {
        // A nested protobuf object; the depth is bounded so no body can exhaust the stack.
        let depth = NESTING.with(|n| n.get());
        if depth >= MAX_NESTING {
            return Err(format!(
                "{path}: objects nested more than {MAX_NESTING} deep"
            ));
        }
        NESTING.with(|n| n.set(depth + 1));
        let nested = decode_object(raw);
        NESTING.with(|n| n.set(depth));
        nested.map_err(|e| format!("{path}: {e}"))
    } else {
        serde_json::from_slice(raw).map_err(|e| format!("{path}: the raw bytes are not JSON: {e}"))
    }
}

/// `meta/v1` Time (RFC 3339 in seconds) or MicroTime (RFC 3339 with microseconds); the
/// zero time is `null`, as Go shows it.
fn time_json(message: &DynamicMessage, micro: bool) -> Value {
    let seconds = int_field(message, "seconds");
    let nanos = int_field(message, "nanos");
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    let Some(time) = u32::try_from(nanos)
        .ok()
        .and_then(|n| chrono::DateTime::from_timestamp(seconds, n))
    else {
        return Value::Null;
    };
    Value::String(if micro {
        time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// A duration in nanoseconds as Go's `time.Duration.String` writes it (`1h2m3.5s`,
/// `500ms`, `0s`).
fn go_duration(nanos: i64) -> String {
    fn fraction(value: u64, unit: u64, digits: usize) -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let rest = format!("{rest:0digits$}");
            format!("{whole}.{}", rest.trim_end_matches('0'))
        }
    }
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let text = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", fraction(u, 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", fraction(u, 1_000_000, 6))
    } else {
        let total = u / 1_000_000_000;
        let seconds = fraction(u % 60_000_000_000, 1_000_000_000, 9);
        let (hours, minutes) = (total / 3600, total / 60 % 60);
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}s")
        } else {
            format!("{seconds}s")
        }
    };
    format!("{sign}{text}")
}

/// The CRD schema's types with JSON forms of their own, or `None` for the others.
fn schema_json(message: &DynamicMessage, name: &str, path: &str) -> Result<Option<Value>, String> {
    let schema = |m: &DynamicMessage| -> Result<Option<Value>, String> {
        present(m, "schema")
            .map(|v| field_json(&v, path))
            .transpose()
    };
    let list = |m: &DynamicMessage, field: &str| -> Result<Option<Value>, String> {
        match present(m, field) {
            Some(v) if !is_zero(&v) => field_json(&v, path).map(Some),
            _ => Ok(None),
        }
    };
    Ok(Some(match name {
        "JSON" => raw_json(&bytes_field(message, "raw"), path)?,
        "JSONSchemaPropsOrArray" => match list(message, "jSONSchemas")? {
            Some(array) => array,
            None => schema(message)?.unwrap_or(Value::Null),
        },
        "JSONSchemaPropsOrBool" => match schema(message)? {
            Some(schema) => schema,
            None => Value::Bool(matches!(
                present(message, "allows"),
                Some(Field::Bool(true))
            )),
        },
        "JSONSchemaPropsOrStringArray" => match list(message, "property")? {
            Some(array) => array,
            None => schema(message)?.unwrap_or(Value::Null),
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
pub(super) mod tests;
