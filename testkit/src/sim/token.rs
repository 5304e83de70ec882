//! The `serviceaccounts/token` subresource: a `TokenRequest` (`authentication.k8s.io/v1`,
//! which `kubectl create token` sends as protobuf) answered with a token for the service
//! account. The token has a JWT's shape and claims (`sub`
//! `system:serviceaccount:NS:NAME`, `aud`, `exp`, …) but kube-sim checks no tokens, so
//! its signature is only a digest.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::error::{ApiError, ApiResult};
use super::resources::Resource;

/// The audience a token is for when the request names none (the API server's own).
const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// A token's lifetime when the request names none, and the shortest allowed.
const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;

/// Answers a `TokenRequest` for the service account `ns/name`.
pub(crate) fn request(
    store: &super::store::Store,
    r: &Resource,
    ns: &str,
    name: &str,
    method: &str,
    body: &Value,
) -> ApiResult<(u16, Value)> {
    if method != "POST" {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        ));
    }
    let account = store
        .get(r, ns, name)
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    let invalid = |field: &str, why: &str| {
        ApiError::invalid("TokenRequest", "authentication.k8s.io", name, field, why)
    };
    let seconds = match body.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                "spec.expirationSeconds",
                "Invalid value: must be an integer",
            )
        })?,
    };
    if seconds < MIN_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            &format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    let audiences = match body.pointer("/spec/audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([DEFAULT_AUDIENCE]),
    };
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::seconds(seconds);
    let claims = json!({
        "aud": audiences,
        "exp": expires.timestamp(),
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "iss": DEFAULT_AUDIENCE,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": account["metadata"]["uid"]}
        }
    });
    let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signed = format!(
        "{}.{}",
        encode(
            json!({"alg": "RS256", "kid": "kube-sim"})
                .to_string()
                .as_bytes()
        ),
        encode(claims.to_string().as_bytes())
    );
    let signature = encode(&sha2::Sha256::digest(signed.as_bytes()));
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["audiences"] = audiences;
    spec["expirationSeconds"] = json!(seconds);
    Ok((
        201,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {
                "name": name,
                "namespace": ns,
                "creationTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            },
            "spec": spec,
            "status": {
                "token": format!("{signed}.{signature}"),
                "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }
        }),
    ))
}
