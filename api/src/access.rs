//! `/api/whoami`, `/api/accounts` and `/api/tokens`: who is asking, accounts and their
//! grants, API tokens.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes, Data, Payload, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use kubernaut_domain::access::{AccountKind, AccountName, Grant, Permission, Role, Scope};
use kubernaut_domain::access_service::{AccessError, AccessService, NewAccount, NewToken};
use kubernaut_domain::token::{ApiToken, TokenId};
use kubernaut_domain::{FieldError, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api_resource;
use crate::auth::{Authenticated, Credential, Identity};
use crate::body::read_body;
use crate::deployments::{parse_json, require_json};
use crate::problem::ApiError;

/// Registers the routes of this module.
pub fn configure(config: &mut ServiceConfig) {
    config
        .service(api_resource("/api/whoami", "GET").route(web::get().to(whoami)))
        .service(
            api_resource("/api/accounts", "GET, POST")
                .route(web::get().to(list_accounts))
                .route(web::post().to(create_account)),
        )
        .service(api_resource("/api/accounts/{name}", "GET").route(web::get().to(get_account)))
        .service(
            api_resource("/api/accounts/{name}/grants", "POST, DELETE")
                .route(web::post().to(add_grant))
                .route(web::delete().to(remove_grant)),
        )
        .service(
            api_resource("/api/tokens", "GET, POST")
                .route(web::get().to(list_tokens))
                .route(web::post().to(create_token)),
        )
        .service(api_resource("/api/tokens/{id}", "DELETE").route(web::delete().to(revoke_token)));
}

/// The problem an access use case answers with.
pub fn access_error(error: AccessError) -> ApiError {
    match error {
        AccessError::Forbidden(denied) => ApiError::forbidden(&denied),
        AccessError::Invalid(field) => {
            ApiError::validation(ValidationErrors::single(field.field, field.reason))
        }
        AccessError::AccountExists(name) => {
            ApiError::conflict(format!("the account {name} exists already"), name)
        }
        AccessError::AccountNotFound(name) => {
            ApiError::not_found(format!("no account is named {name}"))
        }
        AccessError::TokenNotFound => ApiError::not_found("no token has this id"),
        AccessError::Repository(error) => ApiError::repository(error),
    }
}

/// The body of `GET /api/whoami`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Whoami)]
pub struct WhoamiBody {
    #[schema(value_type = String)]
    pub account: AccountName,
    #[schema(value_type = Vec<crate::openapi::Grant>)]
    pub grants: Vec<Grant>,
    /// The id of the token the request authenticated with (the session's token for
    /// the web UI).
    #[schema(value_type = uuid::Uuid)]
    pub token_id: TokenId,
    pub expires_at: DateTime<Utc>,
    /// `bearer` or `session_cookie`.
    #[schema(value_type = crate::openapi::AuthenticatedBy)]
    pub authenticated_by: &'static str,
}

/// `GET /api/whoami`
#[utoipa::path(
    get,
    path = "/api/whoami",
    operation_id = "whoami",
    summary = "Who the caller is",
    tag = "access",
    responses((status = 200, description = "Who the token (or session) is", body = WhoamiBody)),
)]
pub async fn whoami(identity: Identity) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(WhoamiBody {
            account: identity.account,
            grants: identity.caller.principal().grants.clone(),
            token_id: identity.token,
            expires_at: identity.expires_at,
            authenticated_by: match identity.credential {
                Credential::Bearer => "bearer",
                Credential::SessionCookie => "session_cookie",
            },
        })
}

/// A grant as sent: `{"role": "deployer", "scope": "staging/*"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GrantRequest, example = json!({"role": "deployer", "scope": "staging/*"}))]
pub struct GrantBody {
    #[schema(value_type = crate::openapi::Role)]
    role: String,
    /// `*` (everywhere; when left out) or `cluster/namespace` with `*` and `?`
    /// wildcards, only for `deployer`.
    scope: Option<String>,
}

impl GrantBody {
    /// The grant, or the errors under `prefix` (`grants[0].`, or empty).
    fn parse(self, prefix: &str, errors: &mut ValidationErrors) -> Option<Grant> {
        let role = errors.check(&format!("{prefix}role"), Role::parse(&self.role));
        let scope = match self.scope {
            None => Some(Scope::global()),
            Some(text) => errors.check(&format!("{prefix}scope"), Scope::parse(&text)),
        }?;
        let role = role?;
        match Grant::new(role, scope) {
            Ok(grant) => Some(grant),
            Err(error) => {
                errors.push(FieldError::new(
                    format!("{prefix}{}", error.field),
                    error.reason,
                ));
                None
            }
        }
    }
}

/// The body of `POST /api/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewAccount, example = json!({
    "name": "ci-robot",
    "kind": "robot",
    "grants": [{"role": "deployer", "scope": "staging/*"}]
}))]
pub(crate) struct NewAccountBody {
    /// 1 to 128 of ASCII letters, digits, `.`, `_`, `@`, `+`, `-`, starting with a
    /// letter or digit.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")]
    name: String,
    /// `person` when left out.
    #[schema(value_type = Option<crate::openapi::AccountKind>)]
    kind: Option<String>,
    #[serde(default)]
    #[schema(required = false)]
    grants: Vec<GrantBody>,
}

impl NewAccountBody {
    fn into_new(self) -> Result<NewAccount, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let name = errors.check("name", AccountName::parse(&self.name));
        let kind = match self.kind {
            None => Some(AccountKind::default()),
            Some(text) => errors.check("kind", AccountKind::parse(&text)),
        };
        let grants: Vec<Option<Grant>> = self
            .grants
            .into_iter()
            .enumerate()
            .map(|(i, grant)| grant.parse(&format!("grants[{i}]."), &mut errors))
            .collect();
        match (name, kind) {
            (Some(name), Some(kind)) if errors.is_empty() => Ok(NewAccount {
                name,
                kind,
                grants: grants.into_iter().flatten().collect(),
            }),
            _ => Err(errors),
        }
    }
}

fn account_name(name: &str) -> Result<AccountName, ApiError> {
    AccountName::parse(name).map_err(|_| ApiError::not_found(format!("no account is named {name}")))
}

fn json_body<T: serde::de::DeserializeOwned>(
    request: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    require_json(request)?;
    parse_json(body)
}

/// `GET /api/accounts`: every account (admin only).
#[utoipa::path(
    get,
    path = "/api/accounts",
    operation_id = "listAccounts",
    summary = "List accounts",
    tag = "access",
    responses((status = 200, description = "Every account", body = crate::openapi::AccountList)),
)]
pub async fn list_accounts(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
) -> Result<HttpResponse, ApiError> {
    let accounts = access.list_accounts(&caller).await.map_err(access_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": accounts })))
}

/// `POST /api/accounts` `{name, kind?, grants?: [{role, scope?}]}` → 201.
#[utoipa::path(
    post,
    path = "/api/accounts",
    operation_id = "createAccount",
    summary = "Create an account",
    tag = "access",
    request_body = NewAccountBody,
    responses(
        (status = 201, description = "Created (`Location: /api/accounts/{name}`)", body = crate::openapi::Account,
            headers(("Location" = String, description = "The account's URL"))),
        (status = 400, description = "Unreadable JSON, or a field of the wrong type, missing or unknown"),
        (status = 409, description = "The name is taken (`existing_id`)"),
        (status = 413, description = "A body over 3 MiB"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "A field breaks a rule; `errors` lists every one"),
    ),
)]
pub async fn create_account(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
    request: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    // Cheap refusals first: only admins get their body read. The use case checks again.
    caller.require(Permission::Administer)?;
    let body: NewAccountBody = json_body(&request, &read_body(&request, payload).await?)?;
    let new = body.into_new().map_err(ApiError::validation)?;
    let account = access
        .create_account(new, &caller)
        .await
        .map_err(access_error)?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/accounts/{}", account.name)))
        .json(account))
}

/// `GET /api/accounts/{name}`: admins any, everyone their own.
#[utoipa::path(
    get,
    path = "/api/accounts/{name}",
    operation_id = "getAccount",
    summary = "Read an account",
    tag = "access",
    params(("name" = String, Path, description = "The account's name")),
    responses(
        (status = 200, description = "The account (admins any, everyone their own)", body = crate::openapi::Account),
        (status = 404, description = "No account has this name"),
    ),
)]
pub async fn get_account(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = account_name(&name)?;
    let account = access.account(&name, &caller).await.map_err(access_error)?;
    Ok(HttpResponse::Ok().json(account))
}

/// The grant of a grants request: the JSON body, or else `?role=&scope=`; not both, so
/// that no part of the request is silently ignored.
fn grant_of(request: &HttpRequest, body: &[u8], query: GrantQuery) -> Result<Grant, ApiError> {
    let raw = if body.iter().all(u8::is_ascii_whitespace) {
        query.into_grant().ok_or_else(|| {
            ApiError::malformed(ValidationErrors::single(
                "role",
                "send {\"role\": ..., \"scope\": ...} as JSON, or ?role=&scope=",
            ))
        })?
    } else if query.role.is_some() || query.scope.is_some() {
        return Err(ApiError::malformed(ValidationErrors::single(
            "query",
            "send the grant either as JSON or as ?role=&scope=, not both",
        )));
    } else {
        json_body(request, body)?
    };
    let mut errors = ValidationErrors::new();
    raw.parse("", &mut errors)
        .ok_or_else(|| ApiError::validation(errors))
}

/// `POST /api/accounts/{name}/grants` `{role, scope?}`: the account with the grant.
#[utoipa::path(
    post,
    path = "/api/accounts/{name}/grants",
    operation_id = "addGrant",
    summary = "Grant a role",
    tag = "access",
    params(("name" = String, Path, description = "The account's name"), GrantQuery),
    request_body(content = GrantBody, description = "The grant; or leave the body empty and pass `?role=&scope=`"),
    responses(
        (status = 200, description = "The account as it is after (granting a role held changes nothing)", body = crate::openapi::Account),
        (status = 400, description = "Unreadable JSON, a field of the wrong type, missing or unknown, no grant at all, or a grant both in the body and in the query"),
        (status = 404, description = "No account has this name"),
        (status = 413, description = "A body over 3 MiB"),
        (status = 415, description = "A body that is not JSON"),
        (status = 422, description = "A role or scope that breaks a rule"),
    ),
)]
pub async fn add_grant(
    caller: Authenticated,
    access: Data<AccessService>,
    request: HttpRequest,
    name: web::Path<String>,
    query: web::Query<GrantQuery>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    change_grant(caller, &access, &request, &name, query, payload, true).await
}

/// `DELETE /api/accounts/{name}/grants` `{role, scope?}` or `?role=&scope=`: the
/// account without the grant.
#[utoipa::path(
    delete,
    path = "/api/accounts/{name}/grants",
    operation_id = "removeGrant",
    summary = "Take a role",
    tag = "access",
    params(("name" = String, Path, description = "The account's name"), GrantQuery),
    request_body(content = GrantBody, description = "The grant; or leave the body empty and pass `?role=&scope=`"),
    responses(
        (status = 200, description = "The account as it is after (taking a role not held changes nothing)", body = crate::openapi::Account),
        (status = 400, description = "Unreadable JSON, a field of the wrong type, missing or unknown, no grant at all, or a grant both in the body and in the query"),
        (status = 404, description = "No account has this name"),
        (status = 413, description = "A body over 3 MiB"),
        (status = 415, description = "A body that is not JSON"),
        (status = 422, description = "A role or scope that breaks a rule"),
    ),
)]
pub async fn remove_grant(
    caller: Authenticated,
    access: Data<AccessService>,
    request: HttpRequest,
    name: web::Path<String>,
    query: web::Query<GrantQuery>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    change_grant(caller, &access, &request, &name, query, payload, false).await
}

async fn change_grant(
    Authenticated(caller): Authenticated,
    access: &AccessService,
    request: &HttpRequest,
    name: &str,
    query: web::Query<GrantQuery>,
    payload: Payload,
    add: bool,
) -> Result<HttpResponse, ApiError> {
    // Cheap refusals first: only admins get their body read. The use case checks again.
    caller.require(Permission::Administer)?;
    let name = account_name(name)?;
    let body = read_body(request, payload).await?;
    let grant = grant_of(request, &body, query.into_inner())?;
    let account = if add {
        access.grant(&name, grant, &caller).await
    } else {
        access.revoke_grant(&name, grant, &caller).await
    }
    .map_err(access_error)?;
    Ok(HttpResponse::Ok().json(account))
}

/// `?role=&scope=` of the grants routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    /// The role, when the body is empty.
    #[param(value_type = Option<crate::openapi::Role>)]
    role: Option<String>,
    /// The scope, when the body is empty (`*` when left out).
    scope: Option<String>,
}

impl GrantQuery {
    fn into_grant(self) -> Option<GrantBody> {
        self.role.map(|role| GrantBody {
            role,
            scope: self.scope,
        })
    }
}

/// `?account=` of `GET /api/tokens`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    /// Only this account's tokens (admins).
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")]
    account: Option<String>,
}

/// `GET /api/tokens[?account=]`: admins everyone's (or one account's), others their own.
#[utoipa::path(
    get,
    path = "/api/tokens",
    operation_id = "listTokens",
    summary = "List API tokens",
    tag = "access",
    params(TokenListQuery),
    responses(
        (status = 200, description = "Tokens, newest first: admins everyone's (or `account`'s), others their own", body = crate::openapi::TokenList),
        (status = 400, description = "A bad `account`"),
    ),
)]
pub async fn list_tokens(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
    query: web::Query<TokenListQuery>,
) -> Result<HttpResponse, ApiError> {
    let account =
        match &query.account {
            None => None,
            Some(text) => Some(AccountName::parse(text).map_err(|reason| {
                ApiError::malformed(ValidationErrors::single("account", reason))
            })?),
        };
    let tokens = access
        .list_tokens(account.as_ref(), &caller)
        .await
        .map_err(access_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": tokens })))
}

/// The body of `POST /api/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewToken, example = json!({"name": "ci", "account": "ci-robot", "expires_in": "90d"}))]
pub(crate) struct NewTokenBody {
    name: String,
    /// Whose token (admins); the caller's own when left out.
    account: Option<String>,
    /// `"90d"`, `"12h 30m"` or a number of seconds: a minute to 366 days (90 days when
    /// left out).
    #[schema(value_type = Option<crate::openapi::Lifetime>)]
    expires_in: Option<Value>,
}

/// A lifetime as sent: a humantime string (`"90d"`) or whole seconds.
fn parse_lifetime(value: &Value) -> Result<Duration, String> {
    const HINT: &str = "must be a duration such as \"90d\" or \"12h\", or a number of seconds";
    match value {
        Value::Number(number) => number
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| HINT.to_owned()),
        Value::String(text) => match text.trim().parse::<u64>() {
            Ok(seconds) => Ok(Duration::from_secs(seconds)),
            Err(_) => humantime::parse_duration(text.trim()).map_err(|_| HINT.to_owned()),
        },
        _ => Err(HINT.to_owned()),
    }
}

impl NewTokenBody {
    fn into_new(self) -> Result<NewToken, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let account = match self.account {
            None => None,
            Some(text) => errors.check("account", AccountName::parse(&text)),
        };
        let expires_in = match &self.expires_in {
            None | Some(Value::Null) => None,
            Some(value) => errors.check("expires_in", parse_lifetime(value)),
        };
        errors.into_result(|| NewToken {
            account,
            name: self.name,
            expires_in,
        })
    }
}

/// The body of `POST /api/tokens`: the record and the secret, shown this once.
#[derive(Debug, Serialize)]
pub struct IssuedTokenBody<'a> {
    pub token: &'a ApiToken,
    pub secret: &'a str,
}

/// `POST /api/tokens` `{name, account?, expires_in?}` → 201 `{token, secret}`.
#[utoipa::path(
    post,
    path = "/api/tokens",
    operation_id = "createToken",
    summary = "Issue an API token",
    tag = "access",
    request_body = NewTokenBody,
    responses(
        (status = 201, description = "Issued: the secret is shown this once", body = crate::openapi::IssuedToken),
        (status = 400, description = "Unreadable JSON, or a field of the wrong type, missing or unknown"),
        (status = 404, description = "No account has the name `account`"),
        (status = 413, description = "A body over 3 MiB"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "A field breaks a rule"),
    ),
)]
pub async fn create_token(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
    request: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewTokenBody = json_body(&request, &body)?;
    let new = body.into_new().map_err(ApiError::validation)?;
    let issued = access
        .create_token(new, &caller)
        .await
        .map_err(access_error)?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(IssuedTokenBody {
            token: &issued.token,
            secret: issued.secret.expose(),
        }))
}

/// `DELETE /api/tokens/{id}`: the revoked token. Unknown ids and other people's
/// tokens (for non-admins) are 404 alike.
#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    operation_id = "revokeToken",
    summary = "Revoke an API token",
    tag = "access",
    params(("id" = uuid::Uuid, Path, description = "The token's id")),
    responses(
        (status = 200, description = "The revoked token (revoking twice changes nothing)", body = crate::openapi::ApiToken),
        (status = 404, description = "An unknown id, or (for non-admins) someone else's token"),
    ),
)]
pub async fn revoke_token(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = TokenId::parse(&id).ok_or_else(|| ApiError::not_found("no token has this id"))?;
    let token = access
        .revoke_token(id, &caller)
        .await
        .map_err(access_error)?;
    Ok(HttpResponse::Ok().json(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_humantime_or_seconds() {
        let day = Duration::from_secs(86_400);
        assert_eq!(parse_lifetime(&Value::from("1d")), Ok(day));
        assert_eq!(parse_lifetime(&Value::from("86400")), Ok(day));
        assert_eq!(parse_lifetime(&Value::from(86_400)), Ok(day));
        assert!(parse_lifetime(&Value::from("soon")).is_err());
        assert!(parse_lifetime(&Value::from(-1)).is_err());
        assert!(parse_lifetime(&Value::Bool(true)).is_err());
    }

    #[test]
    fn grants_are_checked_field_by_field() {
        let body = NewAccountBody {
            name: "ci bot".to_owned(),
            kind: Some("alien".to_owned()),
            grants: vec![
                GrantBody {
                    role: "viewer".to_owned(),
                    scope: Some("staging/*".to_owned()),
                },
                GrantBody {
                    role: "god".to_owned(),
                    scope: None,
                },
            ],
        };
        let errors = body.into_new().expect_err("invalid");
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "kind", "grants[0].scope", "grants[1].role"]
        );
    }
}
