//! Kubernetes' schema of the built-in kinds, checked as a real API server checks what a
//! client writes: fields it does not declare, and values of the wrong JSON type.
//!
//! The schema is the one `protobuf.rs` reads protobuf bodies with: Kubernetes'
//! `generated.proto` messages, whose fields carry their JSON names and mark the Go
//! structs JSON inlines into their parent. Each kind's message is walked alongside the
//! JSON object: fields by JSON name, `repeated` fields as arrays, `map` fields as objects,
//! scalars by type, and Kubernetes' types with JSON forms of their own (Time, MicroTime
//! and Duration strings, Quantity a string or a number, IntOrString an integer or a
//! string, RawExtension, FieldsV1 and the CRD schema's `JSON` anything, list wrappers
//! such as `Verbs` arrays). Custom resources are not described there and are left
//! alone.
//!
//! What the real server answers (v1.37, asked for each case):
//! - Create and update (POST, PUT; JSON or YAML) decode the body into the Go type. A
//!   value of the wrong type is a 400 `BadRequest` (`Pod in version "v1" cannot be
//!   handled as a Pod: json: cannot unmarshal string into Go struct field
//!   ContainerPort.spec.containers.ports.containerPort of type int32`), whatever
//!   `fieldValidation` says. Unknown fields depend on it: `Strict` refuses them all in
//!   one 400 (`strict decoding error: unknown field "spec.containers[0].foo", unknown
//!   field "spec.bar"`), `Warn` (the default when it is absent) drops them and says so
//!   in a `Warning` header per field, `Ignore` drops them silently.
//! - Server-side apply builds a typed object of the patch first: unknown fields and
//!   values of the wrong type are a 500 without a reason (`failed to create typed patch
//!   object (ns/name; /v1, Kind=Pod): .spec.bar: field not declared in schema`), whatever
//!   `fieldValidation` says. Values of the right JSON type that the Go type still
//!   refuses (a fraction for an integer, a malformed quantity or base64) fail the
//!   conversion after the merge: a 500 as well.
//! - Merge and strategic merge patches: with `Strict`, unknown fields and wrong types are
//!   a 422 `Invalid` on the field `patch`; otherwise unknown fields are dropped (with a
//!   warning for `Warn`). kube-sim checks the patch body, which holds every field the
//!   patch adds; JSON patches are not checked.
//!
//! The status of the main resource is checked too (the real server decodes it before it
//! sets it aside). Messages follow the real server's; where the real server names a list
//! element of an applied object by its key (`containers[name="app"]`), kube-sim knows
//! the keys of the common lists and uses the index for the others, and fields are
//! walked in sorted order (the real server's order is its own).

use base64::Engine as _;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::protobuf;
use super::resources::{self, Resource};

/// `fieldValidation`: what a write does with fields the schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// The query parameter of a request whose options are `options` (`CreateOptions`,
    /// `UpdateOptions`, `PatchOptions`); absent means `Warn`, as on the real server.
    pub(crate) fn parse(value: Option<&str>, options: &str) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::invalid(
                options,
                "meta.k8s.io",
                "",
                "fieldValidation",
                &format!(
                    "Unsupported value: \"{other}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
                ),
            )),
        }
    }
}

/// The schema of one built-in kind.
pub(crate) struct Schema {
    message: MessageDescriptor,
    resource: &'static Resource,
}

impl Schema {
    /// The schema of a resource type, or `None` for custom resources (and for a kind
    /// the descriptors do not describe).
    pub(crate) fn of(resource: &'static Resource) -> Option<Self> {
        let builtin = resources::by_path(&[], resource.group, resource.version, resource.plural)
            .is_some_and(|b| std::ptr::eq(b, resource));
        if !builtin {
            return None;
        }
        let message = protobuf::kind_message(&resource.api_version(), resource.kind)?;
        Some(Self { message, resource })
    }

    fn walk(&self, object: &mut Value, mode: Mode) -> Vec<Problem> {
        let mut walk = Walk {
            mode,
            problems: Vec::new(),
        };
        walk.value_of_message(&self.message, "", object, &Vec::new(), true);
        walk.problems
    }

    /// Checks the body of a create or an update (POST, PUT): a 400 for a value of the
    /// wrong type, or for unknown fields under `Strict`; otherwise unknown fields are
    /// dropped, and with `Warn` the warnings to send are returned.
    pub(crate) fn check_write(
        &self,
        body: &mut Value,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let prune = validation != FieldValidation::Strict;
        let problems = self.walk(body, Mode::Write { prune });
        let r = self.resource;
        let refuse = |why: String| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {why}",
                r.kind, r.version, r.kind
            ))
        };
        answer(&problems, validation, refuse)
    }

    /// Checks a server-side apply body: a 500 without a reason for unknown fields and
    /// values of the wrong type, as the real server's field manager answers.
    pub(crate) fn check_apply(&self, body: &Value, name: &str) -> Result<(), ApiError> {
        let mut body = body.clone();
        let problems = self.walk(&mut body, Mode::Apply);
        if problems.is_empty() {
            return Ok(());
        }
        let r = self.resource;
        let namespace = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let gvk = format!("{}/{}, Kind={}", r.group, r.version, r.kind);
        let object = format!("{namespace}/{name}; {gvk}");
        let typed: Vec<String> = problems.iter().filter_map(Problem::typed_error).collect();
        let message = match typed.as_slice() {
            [] => {
                let why = problems
                    .iter()
                    .find_map(Problem::conversion_error)
                    .unwrap_or_default();
                format!(
                    "failed to convert new object ({object}) to proper version: unable to convert unstructured object to {gvk}: {why}"
                )
            }
            [one] => format!("failed to create typed patch object ({object}): {one}"),
            many => format!(
                "failed to create typed patch object ({object}): errors:\n  {}",
                many.join("\n  ")
            ),
        };
        Err(ApiError::new(500, "", message))
    }

    /// Checks the body of a merge or strategic merge patch: a 422 `Invalid` on `patch`
    /// for a value of the wrong type, or for unknown fields under `Strict`; otherwise
    /// unknown fields are dropped from the patch, and with `Warn` the warnings to send
    /// are returned.
    pub(crate) fn check_patch(
        &self,
        patch: &mut Value,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let shown = go_plain(patch);
        let prune = validation != FieldValidation::Strict;
        let problems = self.walk(patch, Mode::Patch { prune });
        let refuse = |why: String| {
            ApiError::invalid(
                "",
                "",
                "",
                "patch",
                &format!("Invalid value: \"{shown}\": {why}"),
            )
        };
        answer(&problems, validation, refuse)
    }
}

/// The `Warning` header value of a warning.
pub(crate) fn warning_header(text: &str) -> String {
    format!(
        "299 - \"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn unknown_fields(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .filter_map(|p| match p {
            Problem::Unknown(path) => Some(format!("unknown field \"{}\"", strict_path(path))),
            _ => None,
        })
        .collect()
}

/// How a body is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A create or update; unknown fields are removed when `prune`.
    Write { prune: bool },
    /// A server-side apply: the walk of an object stops at its first unknown field.
    Apply,
    /// A merge or strategic merge patch: `null` deletes, `$` keys are directives.
    Patch { prune: bool },
}

/// One step of a path in an object.
#[derive(Debug, Clone)]
enum Step {
    Field(String),
    /// A list element, with its key where the list has one (`name="app"`).
    Index(usize, Option<String>),
    /// A map entry.
    Key(String),
}

type Path = Vec<Step>;

/// The path as strict decoding names it: `spec.containers[0].foo`.
fn strict_path(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Field(name) | Step::Key(name) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(name);
            }
            Step::Index(i, _) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// The path as server-side apply names it: `.spec.containers[name="app"].foo`.
fn apply_path(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Field(name) | Step::Key(name) => {
                text.push('.');
                text.push_str(name);
            }
            Step::Index(_, Some(key)) => text.push_str(&format!("[{key}]")),
            Step::Index(i, None) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// The path as Go's JSON decoder names it: fields only, `spec.containers.ports.containerPort`.
fn go_path(path: &[Step]) -> String {
    path.iter()
        .filter_map(|step| match step {
            Step::Field(name) => Some(name.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What the schema wants where a value does not fit.
#[derive(Debug, Clone)]
struct Expected {
    /// How server-side apply's typed object names the type (`numeric (int or float)`,
    /// `string`, `boolean`, `map`, `list`), or `None` when only the conversion to the Go
    /// type refuses the value.
    apply: Option<&'static str>,
    /// The Go type (`int32`, `[]v1.Volume`, `map[string]string`).
    go: String,
}

/// Why a value of the right JSON type is still refused.
#[derive(Debug, Clone)]
enum Unfit {
    /// A number the Go integer type cannot hold: a fraction (`1.5`, even `1.0` when
    /// decoding; a conversion only refuses a real fraction), or out of range when
    /// decoding (a conversion wraps it).
    Number(String),
    /// Not a quantity.
    Quantity(&'static str),
    /// Not base64 (`bytes`), with the position Go names.
    Base64(usize),
}

#[derive(Debug, Clone)]
enum Problem {
    Unknown(Path),
    Type {
        path: Path,
        /// The Go struct that declares the field.
        parent: String,
        expected: Expected,
        got: Value,
    },
    Unfit {
        path: Path,
        parent: String,
        go: String,
        unfit: Unfit,
    },
}

const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const QUANTITY_SUFFIX: &str = "unable to parse quantity's suffix";

impl Problem {
    /// How decoding a create, update or patch body reports it (`None` for unknown fields).
    fn decoding_error(&self) -> Option<String> {
        match self {
            Self::Unknown(_) => None,
            Self::Type {
                path,
                parent,
                expected,
                got,
            } => Some(format!(
                "json: cannot unmarshal {} into Go struct field {parent}.{} of type {}",
                json_type(got),
                go_path(path),
                expected.go
            )),
            Self::Unfit {
                path,
                parent,
                go,
                unfit,
            } => Some(match unfit {
                Unfit::Number(n) => format!(
                    "json: cannot unmarshal number {n} into Go struct field {parent}.{} of type {go}",
                    go_path(path)
                ),
                Unfit::Quantity(why) => (*why).to_owned(),
                Unfit::Base64(at) => format!("illegal base64 data at input byte {at}"),
            }),
        }
    }

    /// How server-side apply's typed patch object reports it, if it does.
    fn typed_error(&self) -> Option<String> {
        match self {
            Self::Unknown(path) => Some(format!(
                "{}: field not declared in schema",
                apply_path(path)
            )),
            Self::Type {
                path,
                expected,
                got,
                ..
            } => {
                let wanted = expected.apply?;
                let shown = match wanted {
                    "numeric (int or float)" => go_type_of(got).to_owned(),
                    "string" => format!("&value.valueUnstructured{{Value:{}}}", go_sharp(got)),
                    _ => format!("&{{{}}}", go_plain(got)),
                };
                Some(format!(
                    "{}: expected {wanted}, got {shown}",
                    apply_path(path)
                ))
            }
            Self::Unfit { .. } => None,
        }
    }

    /// How server-side apply's conversion to the Go type reports it.
    fn conversion_error(&self) -> Option<String> {
        match self {
            Self::Unknown(_) => None,
            Self::Type { expected, got, .. } => Some(format!(
                "json: cannot unmarshal {} into Go value of type {}",
                json_type(got),
                expected.go
            )),
            Self::Unfit { go, unfit, .. } => Some(match unfit {
                Unfit::Number(_) => format!("cannot convert float64 to {go}"),
                Unfit::Quantity(why) => (*why).to_owned(),
                Unfit::Base64(at) => {
                    format!("error decoding from json: illegal base64 data at input byte {at}")
                }
            }),
        }
    }
}

/// The JSON type as Go's decoder names it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type of a decoded JSON value.
fn go_type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A decoded JSON value as Go's `%#v` shows it.
fn go_sharp(value: &Value) -> String {
    match value {
        Value::Null => "interface {}(nil)".to_owned(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(items) => format!(
            "[]interface {{}}{{{}}}",
            items.iter().map(go_sharp).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "map[string]interface {{}}{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), go_sharp(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A decoded JSON value as Go's `%v` shows it.
fn go_plain(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_plain).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", go_plain(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// The Go name of a message's type (`v1.PodSpec`).
fn go_message(message: &MessageDescriptor) -> String {
    let package = message.package_name();
    let short = package.rsplit('.').next().unwrap_or(package);
    format!("{short}.{}", message.name())
}

/// The Go name of a field's element type.
fn go_kind(kind: &Kind) -> String {
    match kind {
        Kind::Double => "float64".to_owned(),
        Kind::Float => "float32".to_owned(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "int32".to_owned(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "int64".to_owned(),
        Kind::Uint32 | Kind::Fixed32 => "uint32".to_owned(),
        Kind::Uint64 | Kind::Fixed64 => "uint64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String | Kind::Enum(_) => "string".to_owned(),
        Kind::Bytes => "[]uint8".to_owned(),
        Kind::Message(m) => match m.full_name() {
            protobuf::TIME | protobuf::MICRO_TIME | protobuf::DURATION => "string".to_owned(),
            protobuf::INT_OR_STRING => "int32".to_owned(),
            _ if protobuf::list_wrapper(m).is_some() => "[]string".to_owned(),
            _ => go_message(m),
        },
    }
}

/// The key server-side apply names an element of a common list by.
fn list_key(element: &MessageDescriptor, item: &Value) -> Option<String> {
    let keys: &[(&str, Option<&str>)] = match element.name() {
        "Container" | "EphemeralContainer" | "Volume" | "EnvVar" | "PodResourceClaim" => {
            &[("name", None)]
        }
        "VolumeMount" => &[("mountPath", None)],
        "VolumeDevice" => &[("devicePath", None)],
        "ContainerPort" => &[("containerPort", None), ("protocol", Some("TCP"))],
        "ServicePort" => &[("port", None), ("protocol", Some("TCP"))],
        _ => return None,
    };
    let parts: Option<Vec<String>> = keys
        .iter()
        .map(|(key, default)| {
            let value = item
                .get(*key)
                .cloned()
                .or_else(|| default.map(|d| Value::String(d.to_owned())))?;
            Some(format!("{key}={value}"))
        })
        .collect();
    parts.map(|p| p.join(","))
}

fn with(path: &Path, step: Step) -> Path {
    let mut longer = path.clone();
    longer.push(step);
    longer
}

/// A field of a message by its JSON name, with the message that declares it; the
/// fields of inlined structs are their parent's.
fn field_named(message: &MessageDescriptor, name: &str) -> Option<(FieldDescriptor, String)> {
    for field in message.fields() {
        match protobuf::json_name(&field).0 {
            Some(json) if json == name => return Some((field, message.name().to_owned())),
            Some(_) => {}
            None => {
                if let Kind::Message(inner) = field.kind()
                    && let Some(found) = field_named(&inner, name)
                {
                    return Some(found);
                }
            }
        }
    }
    None
}

fn integral(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64()
}

/// Whether Go's decoder puts a JSON number into an integer of this kind.
fn fits(kind: &Kind, n: &serde_json::Number) -> bool {
    let signed = |bits: u32| {
        n.as_i64()
            .is_some_and(|v| v >= -(1_i64 << (bits - 1)) && v < (1_i64 << (bits - 1)))
    };
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => signed(32),
        Kind::Uint32 | Kind::Fixed32 => n.as_u64().is_some_and(|v| v <= u64::from(u32::MAX)),
        Kind::Uint64 | Kind::Fixed64 => n.is_u64(),
        _ => n.is_i64(),
    }
}

/// The first problem of a quantity's text, as Go's `ParseQuantity` reports it.
fn quantity_problem(text: &str) -> Option<&'static str> {
    let text = text.trim();
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Some(QUANTITY_FORMAT);
    }
    let letters = suffix
        .find(|c: char| !"eEinumkKMGTP".contains(c))
        .unwrap_or(suffix.len());
    let (letters, exponent) = suffix.split_at(letters);
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Some(QUANTITY_FORMAT);
    }
    let known = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || (matches!(letters, "e" | "E") && !digits.is_empty());
    (!known).then_some(QUANTITY_SUFFIX)
}

/// Where Go's base64 decoder stops on text that is not base64.
fn base64_problem(text: &str) -> Option<usize> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let cleaned: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    match engine.decode(cleaned.as_bytes()) {
        Ok(_) => None,
        Err(
            base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _),
        ) => Some(at),
        Err(_) => Some(cleaned.len()),
    }
}

struct Walk {
    mode: Mode,
    problems: Vec<Problem>,
}

impl Walk {
    fn prune(&self) -> bool {
        matches!(
            self.mode,
            Mode::Write { prune: true } | Mode::Patch { prune: true }
        )
    }

    fn wrong_type(
        &mut self,
        path: &Path,
        parent: &str,
        apply: Option<&'static str>,
        go: String,
        got: &Value,
    ) {
        self.problems.push(Problem::Type {
            path: path.clone(),
            parent: parent.to_owned(),
            expected: Expected { apply, go },
            got: got.clone(),
        });
    }

    fn unfit(&mut self, path: &Path, parent: &str, go: String, unfit: Unfit) {
        self.problems.push(Problem::Unfit {
            path: path.clone(),
            parent: parent.to_owned(),
            go,
            unfit,
        });
    }

    /// The fields of an object of `message`.
    fn object(
        &mut self,
        message: &MessageDescriptor,
        object: &mut Map<String, Value>,
        path: &Path,
        root: bool,
    ) {
        let keys: Vec<String> = object.keys().cloned().collect();
        for key in keys {
            if root && matches!(key.as_str(), "apiVersion" | "kind") {
                continue;
            }
            if matches!(self.mode, Mode::Patch { .. }) && key.starts_with('$') {
                continue;
            }
            let Some((field, parent)) = field_named(message, &key) else {
                self.problems
                    .push(Problem::Unknown(with(path, Step::Field(key.clone()))));
                if self.prune() {
                    object.remove(&key);
                }
                if self.mode == Mode::Apply {
                    return;
                }
                continue;
            };
            if let Some(value) = object.get_mut(&key) {
                self.field(&field, &parent, value, &with(path, Step::Field(key)));
            }
        }
    }

    fn field(&mut self, field: &FieldDescriptor, parent: &str, value: &mut Value, path: &Path) {
        if value.is_null() {
            return;
        }
        let kind = field.kind();
        if field.is_map() {
            let Some(entry) = kind.as_message() else {
                return;
            };
            let value_kind = entry.map_entry_value_field().kind();
            let Some(map) = value.as_object_mut() else {
                let go = format!("map[string]{}", go_kind(&value_kind));
                self.wrong_type(path, parent, Some("map"), go, value);
                return;
            };
            for (key, item) in map.iter_mut() {
                self.single(
                    &value_kind,
                    parent,
                    item,
                    &with(path, Step::Key(key.clone())),
                );
            }
        } else if field.is_list() {
            let Some(items) = value.as_array_mut() else {
                let go = format!("[]{}", go_kind(&kind));
                self.wrong_type(path, parent, Some("list"), go, value);
                return;
            };
            for (i, item) in items.iter_mut().enumerate() {
                let key = kind.as_message().and_then(|m| list_key(m, item));
                self.single(&kind, parent, item, &with(path, Step::Index(i, key)));
            }
        } else {
            self.single(&kind, parent, value, path);
        }
    }

    /// One value of a field's type.
    fn single(&mut self, kind: &Kind, parent: &str, value: &mut Value, path: &Path) {
        let go = go_kind(kind);
        match (kind, &*value) {
            (_, Value::Null) => {}
            (Kind::Message(message), _) => {
                self.value_of_message(message, parent, value, path, false)
            }
            (Kind::Bool, Value::Bool(_)) | (Kind::String | Kind::Enum(_), Value::String(_)) => {}
            (Kind::Bool, _) => self.wrong_type(path, parent, Some("boolean"), go, value),
            (Kind::String, _) => self.wrong_type(path, parent, Some("string"), go, value),
            (Kind::Bytes, Value::String(text)) => {
                if let Some(at) = base64_problem(text) {
                    self.unfit(path, parent, go, Unfit::Base64(at));
                }
            }
            (Kind::Bytes, _) => self.wrong_type(path, parent, Some("string"), go, value),
            (Kind::Double | Kind::Float | Kind::Enum(_), Value::Number(_)) => {}
            (_, Value::Number(n)) => {
                let unfit = match self.mode {
                    Mode::Apply => n.as_f64().is_some_and(|f| f.fract() != 0.0),
                    _ => !fits(kind, n),
                };
                if unfit {
                    self.unfit(path, parent, go, Unfit::Number(n.to_string()));
                }
            }
            _ => self.wrong_type(path, parent, Some("numeric (int or float)"), go, value),
        }
    }

    /// A value of a message type: an object, or the JSON form of Kubernetes' own types.
    fn value_of_message(
        &mut self,
        message: &MessageDescriptor,
        parent: &str,
        value: &mut Value,
        path: &Path,
        root: bool,
    ) {
        let go = go_kind(&Kind::Message(message.clone()));
        let name = message.full_name();
        match name {
            protobuf::TIME | protobuf::MICRO_TIME | protobuf::DURATION => {
                if !value.is_string() {
                    self.wrong_type(path, parent, None, go, value);
                }
                return;
            }
            protobuf::QUANTITY => {
                let problem = match &*value {
                    Value::Number(_) => None,
                    Value::String(text) => quantity_problem(text),
                    _ => Some(QUANTITY_FORMAT),
                };
                if let Some(why) = problem {
                    self.unfit(path, parent, go, Unfit::Quantity(why));
                }
                return;
            }
            protobuf::INT_OR_STRING => {
                match &*value {
                    Value::String(_) => {}
                    Value::Number(n) if integral(n) => {}
                    Value::Number(n) => {
                        self.unfit(path, parent, go, Unfit::Number(n.to_string()));
                    }
                    _ => self.wrong_type(path, parent, None, go, value),
                }
                return;
            }
            protobuf::RAW_EXTENSION | protobuf::FIELDS_V1 => return,
            _ => {}
        }
        if let Some(rest) = name
            .strip_prefix(protobuf::CRD)
            .and_then(|r| r.strip_prefix('.'))
        {
            let props = message
                .parent_pool()
                .get_message_by_name(&format!("{}.JSONSchemaProps", protobuf::CRD));
            let either = match (rest, &mut *value) {
                ("JSON", _) => return,
                ("JSONSchemaPropsOrBool", Value::Bool(_)) => return,
                ("JSONSchemaPropsOrArray", Value::Array(items)) => {
                    if let Some(props) = &props {
                        for (i, item) in items.iter_mut().enumerate() {
                            self.single(
                                &Kind::Message(props.clone()),
                                parent,
                                item,
                                &with(path, Step::Index(i, None)),
                            );
                        }
                    }
                    return;
                }
                ("JSONSchemaPropsOrStringArray", Value::Array(items)) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.single(
                            &Kind::String,
                            parent,
                            item,
                            &with(path, Step::Index(i, None)),
                        );
                    }
                    return;
                }
                (
                    "JSONSchemaPropsOrBool"
                    | "JSONSchemaPropsOrArray"
                    | "JSONSchemaPropsOrStringArray",
                    _,
                ) => true,
                _ => false,
            };
            if either {
                match (&props, value.as_object_mut()) {
                    (Some(props), Some(object)) => self.object(props, object, path, false),
                    _ => self.wrong_type(path, parent, None, go, value),
                }
                return;
            }
        }
        if protobuf::list_wrapper(message).is_some() {
            match value.as_array_mut() {
                Some(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.single(
                            &Kind::String,
                            parent,
                            item,
                            &with(path, Step::Index(i, None)),
                        );
                    }
                }
                None => self.wrong_type(path, parent, Some("list"), go, value),
            }
            return;
        }
        match value.as_object_mut() {
            Some(object) => self.object(message, object, path, root),
            None => self.wrong_type(path, parent, Some("map"), go, value),
        }
    }
}

/// What a create, update or patch gets for `problems` under `validation`: refused
/// (through `refuse`) for a value of the wrong type, or for unknown fields under
/// `Strict`; otherwise the warnings to send (`Warn`) or none.
fn answer(
    problems: &[Problem],
    validation: FieldValidation,
    refuse: impl Fn(String) -> ApiError,
) -> Result<Vec<String>, ApiError> {
    if let Some(why) = problems.iter().find_map(Problem::decoding_error) {
        return Err(refuse(why));
    }
    let unknown = unknown_fields(problems);
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => Err(refuse(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok(unknown),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests;
