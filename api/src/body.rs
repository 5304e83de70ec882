//! Reading request bodies with a size limit, and turning them into raw releases.
//!
//! A release arrives as JSON or, as the original kubernaut's Jenkins jobs send it, as
//! `multipart/form-data`. Either way the result is an [`UnvalidatedRelease`]; the domain
//! checks its rules.

use std::collections::BTreeMap;

use actix_multipart::Multipart;
use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{BytesMut, Payload};
use futures_util::StreamExt as _;
use kubernaut_domain::{FieldError, UnvalidatedRelease, ValidationErrors};
use serde_json::Value;

use crate::problem::{ApiError, ProblemType};

/// The largest body a request may carry: a 1 MiB template plus JSON escaping and the
/// other fields.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The kinds of body this API reads.
enum BodyKind {
    Json,
    Multipart,
}

fn body_kind(request: &HttpRequest) -> Result<BodyKind, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(BodyKind::Json)
    } else if essence == "multipart/form-data" {
        Ok(BodyKind::Multipart)
    } else {
        let shown = if essence.is_empty() {
            "none"
        } else {
            essence.as_str()
        };
        Err(ApiError::new(
            ProblemType::UnsupportedMediaType,
            format!("send application/json or multipart/form-data, not {shown}"),
        ))
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ProblemType::PayloadTooLarge,
        format!("the body must be at most {MAX_BODY_BYTES} bytes"),
    )
}

fn reject_declared_oversize(request: &HttpRequest) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES => Err(too_large()),
        _ => Ok(()),
    }
}

async fn read_limited(mut payload: Payload) -> Result<BytesMut, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::malformed(ValidationErrors::single(
                "body",
                format!("could not be read: {e}"),
            ))
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a body of at most [`MAX_BODY_BYTES`]. Handlers call it only after the
/// caller's permission is checked, so that a caller who may not ask is refused
/// before a byte of the body is read.
///
/// # Errors
/// 413 past [`MAX_BODY_BYTES`], 400 when the body cannot be read.
pub(crate) async fn read_body(
    request: &HttpRequest,
    payload: Payload,
) -> Result<BytesMut, ApiError> {
    reject_declared_oversize(request)?;
    read_limited(payload).await
}

/// Reads a release from a JSON or multipart body.
///
/// # Errors
/// 415 for other content types, 413 past [`MAX_BODY_BYTES`], 400 when the body is
/// not well-formed or a field has the wrong JSON type.
pub async fn read_release(
    request: &HttpRequest,
    payload: Payload,
) -> Result<UnvalidatedRelease, ApiError> {
    let kind = body_kind(request)?;
    reject_declared_oversize(request)?;
    match kind {
        BodyKind::Json => {
            let body = read_limited(payload).await?;
            release_from_json(&body)
        }
        BodyKind::Multipart => {
            release_from_multipart(Multipart::new(request.headers(), payload)).await
        }
    }
}

/// Extracts a release from JSON, naming every field of the wrong type at once.
fn release_from_json(body: &[u8]) -> Result<UnvalidatedRelease, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed(ValidationErrors::single(
            "body",
            format!("is not valid JSON: {e}"),
        ))
    })?;
    let Value::Object(mut object) = value else {
        return Err(ApiError::malformed(ValidationErrors::single(
            "body",
            "must be a JSON object",
        )));
    };
    let mut errors = ValidationErrors::new();
    let mut required =
        |name: &str, object: &mut serde_json::Map<String, Value>| match object.remove(name) {
            Some(Value::String(text)) => text,
            Some(_) => {
                errors.push(FieldError::new(name, "must be a string"));
                String::new()
            }
            None => {
                errors.push(FieldError::new(name, "is required"));
                String::new()
            }
        };
    let service = required("service", &mut object);
    let version = required("version", &mut object);
    let image = required("image", &mut object);
    let template = required("template", &mut object);
    let comment = match object.remove("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => {
            errors.push(FieldError::new("comment", "must be a string"));
            None
        }
    };
    let mut attributes = BTreeMap::new();
    match object.remove("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                match value {
                    Value::String(text) => {
                        attributes.insert(name, text);
                    }
                    // CI scripts often send numbers and booleans; their JSON text is
                    // what a template would print anyway.
                    Value::Number(_) | Value::Bool(_) => {
                        attributes.insert(name, value.to_string());
                    }
                    _ => errors.push(FieldError::new(
                        format!("attributes.{name}"),
                        "must be a string, number or boolean",
                    )),
                }
            }
        }
        Some(_) => errors.push(FieldError::new(
            "attributes",
            "must be an object of names to strings",
        )),
    }
    for unknown in object.keys() {
        errors.push(FieldError::new(
            unknown.as_str(),
            "is not a field of a release",
        ));
    }
    if errors.is_empty() {
        Ok(UnvalidatedRelease {
            service,
            version,
            image,
            template,
            attributes,
            comment,
        })
    } else {
        Err(ApiError::malformed(errors))
    }
}

/// Extracts a release from a multipart form: `service`, `version`, `image`, `comment`,
/// the template as the part `template` (a file or a plain field), any other part as an
/// attribute.
async fn release_from_multipart(mut form: Multipart) -> Result<UnvalidatedRelease, ApiError> {
    let mut parts: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0usize;
    let mut errors = ValidationErrors::new();
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| {
            ApiError::malformed(ValidationErrors::single(
                "body",
                format!("is not a valid multipart form: {e}"),
            ))
        })?;
        let name = field.name().unwrap_or_default().to_owned();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::malformed(ValidationErrors::single(
                    "body",
                    format!("part {name:?} could not be read: {e}"),
                ))
            })?;
            total += chunk.len();
            if total > MAX_BODY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if name.is_empty() {
            errors.push(FieldError::new("body", "every part must have a name"));
            continue;
        }
        match String::from_utf8(bytes) {
            Ok(text) => {
                if parts.insert(name.clone(), text).is_some() {
                    errors.push(FieldError::new(name, "must be sent once"));
                }
            }
            Err(_) => errors.push(FieldError::new(name, "must be UTF-8 text")),
        }
    }
    let mut take = |name: &str| {
        parts.remove(name).unwrap_or_else(|| {
            errors.push(FieldError::new(name, "is required"));
            String::new()
        })
    };
    let service = take("service");
    let version = take("version");
    let image = take("image");
    let template = take("template");
    let comment = parts.remove("comment");
    if errors.is_empty() {
        Ok(UnvalidatedRelease {
            service,
            version,
            image,
            template,
            attributes: parts,
            comment,
        })
    } else {
        Err(ApiError::malformed(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_errors(body: &str) -> Vec<(String, String)> {
        let error = release_from_json(body.as_bytes()).expect_err("must be refused");
        error
            .problem()
            .errors
            .into_iter()
            .map(|e| (e.field, e.reason))
            .collect()
    }

    #[test]
    fn a_json_release_is_read_with_its_attributes() {
        let release = release_from_json(
            br#"{"service":"s","version":"1","image":"i","template":"t","attributes":{"replicas":3,"team":"x","debug":true},"comment":null}"#,
        )
        .expect("readable");
        assert_eq!(
            release.attributes.get("replicas").map(String::as_str),
            Some("3")
        );
        assert_eq!(
            release.attributes.get("debug").map(String::as_str),
            Some("true")
        );
        assert_eq!(release.comment, None);
    }

    #[test]
    fn missing_wrongly_typed_and_unknown_fields_are_each_named() {
        let errors = json_errors(r#"{"service":1,"image":"i","template":"t","colour":"red"}"#);
        assert_eq!(
            errors,
            [
                ("service".to_owned(), "must be a string".to_owned()),
                ("version".to_owned(), "is required".to_owned()),
                (
                    "colour".to_owned(),
                    "is not a field of a release".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        assert_eq!(json_errors("[1,2]")[0].1, "must be a JSON object");
        assert!(
            json_errors("{not json")[0]
                .1
                .starts_with("is not valid JSON")
        );
        assert_eq!(
            json_errors(
                r#"{"service":"s","version":"1","image":"i","template":"t","attributes":[1]}"#
            )[0]
            .0,
            "attributes"
        );
    }
}
