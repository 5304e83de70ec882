//! API errors, answered as `Status` objects with the reasons and codes of the real API server.

use serde_json::{Value, json};

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The Status's list metadata (a `continue` token), when it carries any.
    pub metadata: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            metadata: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `details` of an error about one object: the real server leaves an empty
    /// group out.
    fn object_details(group: &str, plural: &str, name: &str) -> Value {
        let mut details = json!({"name": name, "kind": plural});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        details
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(Self::object_details(group, plural, name))
    }

    /// A path that names no served resource (empty details, as the real server sends).
    pub fn not_served() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(415, "UnsupportedMediaType", "415: Unsupported Media Type")
            .with_details(json!({}))
    }

    pub fn namespace_not_found(name: &str) -> Self {
        Self::not_found("", "namespaces", name)
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(Self::object_details(group, plural, name))
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        )
        .with_details(Self::object_details(group, plural, name))
    }

    /// A server-side apply conflict; as from the real server, the details carry only
    /// the causes.
    pub fn apply_conflict(conflicts: &[super::merge::Conflict]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(who, _, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {who}"),
                    "field": field
                })
            })
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(who, _, field)| format!("conflict with {who}: {field}"))
            .collect();
        let message = if conflicts.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines.join("\n"))
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        Self::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// A 422 about one field; `why` starting with `Required value` is a missing field
    /// (`FieldValueRequired`), anything else an invalid one.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, why: &str) -> Self {
        let reason = if why.starts_with("Required value") {
            "FieldValueRequired"
        } else {
            "FieldValueInvalid"
        };
        let mut details = json!({
            "name": name, "kind": kind,
            "causes": [{"reason": reason, "message": why, "field": field}]
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(
            422,
            "Invalid",
            format!(
                "{kind}.{} \"{name}\" is invalid: {field}: {why}",
                if group.is_empty() { "" } else { group }
            )
            .replace(". \"", " \""),
        )
        .with_details(details)
    }

    /// An expired continue token; as the real server, it offers one that goes on from
    /// the same place in the current state, for a client that accepts an inconsistent
    /// list.
    pub fn continue_expired(inconsistent_continue: String) -> Self {
        let mut error = Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
        error.metadata = Some(json!({"continue": inconsistent_continue}));
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1",
            "metadata": self.metadata.clone().unwrap_or_else(|| json!({})),
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        if self.reason.is_empty()
            && let Some(fields) = status.as_object_mut()
        {
            // An error without a reason (server-side apply's typed object) has none.
            fields.remove("reason");
        }
        status
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
