//! The HTTP front: routing, query parameters, fault injection, list and watch.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::api::{self, PatchType, Propagation};
use super::error::{ApiError, ApiResult};
use super::resources::{self, Resource};
use super::schema::{self, FieldValidation, Schema};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, EventType};
use super::{Shared, table};

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(qs: &str) -> Self {
        Self(
            actix_web::web::Query::<Vec<(String, String)>>::from_query(qs)
                .map(actix_web::web::Query::into_inner)
                .unwrap_or_default(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn json_response(code: u16, body: &Value) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

fn error_response(e: &ApiError) -> HttpResponse {
    json_response(e.code, &e.status())
}

fn random_fraction() -> f64 {
    let n = uuid::Uuid::new_v4().as_u128() as u64;
    (n >> 11) as f64 / (1_u64 << 53) as f64
}

/// The decision of the fault injector for one request.
async fn injected_fault(shared: &Shared) -> Option<HttpResponse> {
    let (delay, failure) = {
        let mut f = shared.faults.lock().ok()?;
        let failure = if f.fail_next > 0 {
            f.fail_next -= 1;
            Some((f.fail_next_code, f.retry_after_seconds))
        } else if f.error_rate > 0.0 && random_fraction() < f.error_rate {
            Some((f.error_code, f.retry_after_seconds))
        } else {
            None
        };
        (f.delay, failure)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (code, retry_after) = failure?;
    let reason = match code {
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let err = ApiError::new(code, reason, format!("injected fault: {reason}"));
    let mut resp = error_response(&err);
    if (code == 429 || code == 503)
        && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&retry_after.to_string())
    {
        resp.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    Some(resp)
}

/// Handles every request: discovery, resources, subresources.
pub(crate) async fn handle(
    req: HttpRequest,
    body: Bytes,
    shared: Data<Arc<Shared>>,
) -> HttpResponse {
    if let Some(resp) = injected_fault(&shared).await {
        return resp;
    }
    let path = req.path().to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = Query::parse(req.query_string());
    let custom = shared.lock_world().custom.clone();
    match segs.as_slice() {
        [] => json_response(
            200,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]}),
        ),
        ["version"] => json_response(200, &resources::version_info()),
        ["healthz" | "livez" | "readyz", ..] => {
            HttpResponse::Ok().content_type("text/plain").body("ok")
        }
        ["api"] => json_response(200, &resources::api_versions()),
        ["apis"] => {
            shared
                .group_lists
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            json_response(200, &resources::api_group_list(&custom))
        }
        ["api", "v1"] => discovery(resources::api_resource_list(&custom, "", "v1")),
        ["apis", group] => discovery(resources::api_group(&custom, group)),
        ["apis", group, version] => {
            discovery(resources::api_resource_list(&custom, group, version))
        }
        ["openapi", "v3"] => json_response(200, &resources::openapi_v3_root(&custom)),
        ["openapi", "v3", "api", version] => {
            discovery(resources::openapi_v3_group_version(&custom, "", version))
        }
        ["openapi", "v3", "apis", group, version] => {
            discovery(resources::openapi_v3_group_version(&custom, group, version))
        }
        ["api", "v1", rest @ ..] => {
            resource_request(&req, &body, &shared, &query, "", "v1", rest).await
        }
        ["apis", group, version, rest @ ..] => {
            resource_request(&req, &body, &shared, &query, group, version, rest).await
        }
        _ => error_response(&ApiError::not_served()),
    }
}

fn discovery(doc: Option<Value>) -> HttpResponse {
    match doc {
        Some(d) => json_response(200, &d),
        None => error_response(&ApiError::not_served()),
    }
}

struct Target<'a> {
    resource: &'static Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_target<'a>(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> ApiResult<Target<'a>> {
    let not_found = || ApiError::not_served();
    let (namespace, tail): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..]
            if !tail.is_empty() && !matches!(tail, ["status" | "finalize"]) =>
        {
            (Some(*ns), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, subresource) = match tail {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    let resource = resources::by_path(custom, group, version, plural).ok_or_else(not_found)?;
    if !resource.namespaced && namespace.is_some() {
        return Err(not_found());
    }
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    match subresource {
        None => {}
        Some("status") if resource.has_status => {}
        Some("log") if resource.kind == "Pod" => {}
        Some("scale") if resources::has_scale(resource) => {}
        Some("token") if resource.kind == "ServiceAccount" => {}
        Some(_) => return Err(not_found()),
    }
    Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

fn manager_of(req: &HttpRequest, query: &Query) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    req.headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn parse_body(req: &HttpRequest, body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    if super::protobuf::is_protobuf(content_type, body) {
        return super::protobuf::decode(body);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    let yaml_allowed = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    if yaml_allowed {
        return serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    Err(ApiError::bad_request(
        "the body of the request could not be decoded as JSON",
    ))
}

async fn resource_request(
    req: &HttpRequest,
    body: &Bytes,
    shared: &Arc<Shared>,
    query: &Query,
    group: &str,
    version: &str,
    rest: &[&str],
) -> HttpResponse {
    let custom = shared.lock_world().custom.clone();
    let target = match parse_target(&custom, group, version, rest) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let method = req.method().as_str().to_owned();
    if target.subresource.is_none() && !target.resource.verbs.contains(&"create") && method != "GET"
    {
        return error_response(&ApiError::method_not_allowed());
    }
    if method == "GET"
        && target.name.is_none()
        && target.namespace.is_none()
        && target.resource.namespaced
        && cluster_wide_refused(req, shared)
    {
        return error_response(&ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:kubernaut:kubernaut\" cannot {} resource \"{}\" in API group \"{}\" at the cluster scope",
                target.resource.plural,
                if query.flag("watch") { "watch" } else { "list" },
                target.resource.plural,
                target.resource.group,
            ),
        ));
    }
    if method == "GET" && target.name.is_none() && query.flag("watch") {
        return watch(shared, &target, query);
    }
    if method == "GET" && target.subresource == Some("log") {
        return logs(shared, &target, query);
    }
    let wants_table = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let mut warnings = Vec::new();
    let result = dispatch(req, body, shared, query, &target, &method, &mut warnings);
    if target.resource.kind == "CustomResourceDefinition" && method != "GET" {
        super::crd::sync(&mut shared.lock_world());
    }
    let mut response = match result {
        Ok((code, value)) => {
            if wants_table && method == "GET" {
                json_response(code, &table::to_table(target.resource, &value))
            } else {
                json_response(code, &value)
            }
        }
        Err(e) => error_response(&e),
    };
    for warning in warnings {
        if let Ok(v) =
            actix_web::http::header::HeaderValue::from_str(&schema::warning_header(&warning))
        {
            response
                .headers_mut()
                .append(actix_web::http::header::WARNING, v);
        }
    }
    response
}

fn dispatch(
    req: &HttpRequest,
    body: &Bytes,
    shared: &Arc<Shared>,
    query: &Query,
    target: &Target<'_>,
    method: &str,
    warnings: &mut Vec<String>,
) -> ApiResult<(u16, Value)> {
    let r = target.resource;
    let ns = target.namespace.unwrap_or_default();
    let mut world = shared
        .world
        .lock()
        .map_err(|_| ApiError::new(500, "InternalError", "the simulator state is poisoned"))?;
    if target.subresource == Some("scale")
        && let Some(name) = target.name
    {
        return scale(&mut world, req, body, query, r, ns, name, method);
    }
    if target.subresource == Some("token")
        && let Some(name) = target.name
    {
        let body = parse_body(req, body)?;
        return super::token::request(&world.store, r, ns, name, method, &body);
    }
    match (method, target.name) {
        ("GET", None) => list(&world.store, target, query).map(|v| (200, v)),
        ("GET", Some(name)) => world
            .store
            .get(r, ns, name)
            .cloned()
            .map(|v| (200, v))
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name)),
        ("POST", None) => {
            if r.namespaced && target.namespace.is_none() {
                return Err(ApiError::not_served());
            }
            if body.is_empty() {
                return Err(ApiError::bad_request("Object 'Kind' is missing in ''"));
            }
            let mut body = parse_body(req, body)?;
            let validation = FieldValidation::parse(query.get("fieldValidation"), "CreateOptions")?;
            if let Some(schema) = Schema::of(r) {
                warnings.extend(schema.check_write(&mut body, validation)?);
            }
            let dry_run = query.get("dryRun").is_some();
            api::create(&mut world, r, ns, body, &manager_of(req, query), dry_run).map(|v| (201, v))
        }
        ("PUT", Some(name)) => {
            let mut body = parse_body(req, body)?;
            let validation = FieldValidation::parse(query.get("fieldValidation"), "UpdateOptions")?;
            if let Some(schema) = Schema::of(r) {
                warnings.extend(schema.check_write(&mut body, validation)?);
            }
            api::replace(
                &mut world,
                r,
                ns,
                name,
                body,
                &manager_of(req, query),
                target.subresource,
            )
            .map(|v| (200, v))
        }
        ("PATCH", Some(name)) => {
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let patch_type = if content_type.starts_with("application/apply-patch") {
                PatchType::Apply
            } else if content_type.starts_with("application/merge-patch+json") {
                PatchType::Merge
            } else if content_type.starts_with("application/strategic-merge-patch+json") {
                PatchType::Strategic
            } else if content_type.starts_with("application/json-patch+json") {
                PatchType::Json
            } else {
                return Err(ApiError::unsupported_media_type());
            };
            let mut body = parse_body(req, body)?;
            let validation = FieldValidation::parse(query.get("fieldValidation"), "PatchOptions")?;
            if let Some(schema) = Schema::of(r) {
                match patch_type {
                    PatchType::Apply => schema.check_apply(&body, name)?,
                    PatchType::Merge | PatchType::Strategic => {
                        warnings.extend(schema.check_patch(&mut body, validation)?);
                    }
                    PatchType::Json => {}
                }
            }
            let manager = query
                .get("fieldManager")
                .map(str::to_owned)
                .or_else(|| (patch_type != PatchType::Apply).then(|| manager_of(req, query)));
            let (obj, created) = api::patch(
                &mut world,
                r,
                ns,
                name,
                patch_type,
                body,
                manager.as_deref(),
                query.flag("force"),
                target.subresource,
            )?;
            Ok((if created { 201 } else { 200 }, obj))
        }
        ("DELETE", Some(name)) => {
            let options = parse_body(req, body).unwrap_or_else(|_| json!({}));
            let policy = query
                .get("propagationPolicy")
                .or_else(|| options.get("propagationPolicy").and_then(Value::as_str));
            let propagation = match policy {
                Some("Foreground") => Some(Propagation::Foreground),
                Some("Orphan") => Some(Propagation::Orphan),
                Some("Background") => Some(Propagation::Background),
                _ if options.get("orphanDependents") == Some(&json!(true)) => {
                    Some(Propagation::Orphan)
                }
                _ => None,
            };
            let grace = query
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse::<i64>().ok())
                .or_else(|| options.get("gracePeriodSeconds").and_then(Value::as_i64));
            let deleted = api::delete_with_grace(&mut world, r, ns, name, propagation, grace)?;
            // Removed at once: most kinds answer with a Status, as the real server.
            if world.store.get(r, ns, name).is_none() && !api::returns_deleted_object(r) {
                return Ok((200, api::deleted_status(r, &deleted)));
            }
            Ok((200, deleted))
        }
        ("DELETE", None) => {
            let listed = list(&world.store, target, query)?;
            let names: Vec<(String, String)> = listed["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        i.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect();
            let mut deleted = Vec::new();
            for (ns, name) in names {
                if let Ok(obj) = api::delete(&mut world, r, &ns, &name, None) {
                    deleted.push(obj);
                }
            }
            Ok((
                200,
                list_document(r, world.store.resource_version(), deleted, None, None),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the request context of a subresource"
)]
fn scale(
    world: &mut super::World,
    req: &HttpRequest,
    body: &Bytes,
    query: &Query,
    r: &'static Resource,
    ns: &str,
    name: &str,
    method: &str,
) -> ApiResult<(u16, Value)> {
    let current = api::get_scale(world, r, ns, name)?;
    let wanted = match method {
        "GET" => return Ok((200, current)),
        "PUT" => parse_body(req, body)?,
        "PATCH" => {
            let patch = parse_body(req, body)?;
            let mut patched = current;
            super::merge::merge_patch(&mut patched, &patch);
            patched
        }
        _ => {
            return Err(ApiError::method_not_allowed());
        }
    };
    // Scale's `spec.replicas` is a plain int32 with `omitempty`: absent means 0.
    let replicas = wanted
        .pointer("/spec/replicas")
        .filter(|v| !v.is_null())
        .map_or(Some(0), Value::as_i64)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                "spec.replicas",
                "Invalid value: must be an integer",
            )
        })?;
    api::set_scale(world, r, ns, name, replicas, &manager_of(req, query)).map(|v| (200, v))
}

fn list_document(
    r: &Resource,
    rv: u64,
    items: Vec<Value>,
    cont: Option<String>,
    remaining: Option<usize>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(n) = remaining {
        meta["remainingItemCount"] = json!(n);
    }
    json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta, "items": items})
}

/// What a list or watch selects.
#[derive(Clone)]
struct Filter {
    kind: &'static str,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(target: &Target<'_>, query: &Query) -> ApiResult<Self> {
        Ok(Self {
            kind: target.resource.key,
            namespace: target.namespace.map(str::to_owned),
            labels: LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// The event a watcher with this filter sees for a change, if any.
    fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
        if change.kind != self.kind {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.old.as_ref().is_some_and(|o| self.matches(o));
        let event = match change.event_type {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if before || now => "DELETED",
            _ => return None,
        };
        Some((event, change.object.clone()))
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn list(store: &super::store::Store, target: &Target<'_>, query: &Query) -> ApiResult<Value> {
    let r = target.resource;
    let filter = Filter::new(target, query)?;
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded =
                unhex(token).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            let (rv, key) = decoded
                .split_once('|')
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
            if rv < store.compacted() {
                return Err(ApiError::continue_expired(hex(&format!(
                    "{}|{key}",
                    store.resource_version()
                ))));
            }
            (rv, Some(key.to_owned()))
        }
        None => (store.resource_version(), None),
    };
    let key_of = |o: &Value| {
        format!(
            "{}/{}",
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )
    };
    let matching: Vec<&Value> = store
        .list(r, target.namespace)
        .into_iter()
        .filter(|o| filter.matches(o))
        .filter(|o| after.as_ref().is_none_or(|a| key_of(o) > *a))
        .collect();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = matching.len();
    let page: Vec<Value> = matching.into_iter().take(limit).cloned().collect();
    // The real server counts what remains only when it need not filter.
    let filtered = query.get("labelSelector").is_some_and(|l| !l.is_empty())
        || query.get("fieldSelector").is_some_and(|f| !f.is_empty());
    let (cont, remaining) = if total > page.len() {
        let last = page.last().map(key_of).unwrap_or_default();
        (
            Some(hex(&format!("{list_rv}|{last}"))),
            (!filtered).then(|| total - page.len()),
        )
    } else {
        (None, None)
    };
    Ok(list_document(r, list_rv, page, cont, remaining))
}

/// Whether the request may not list or watch namespaced kinds across all namespaces.
fn cluster_wide_refused(req: &HttpRequest, shared: &Shared) -> bool {
    let namespace_only = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(super::NAMESPACE_ONLY_TOKEN);
    namespace_only || shared.faults.lock().is_ok_and(|f| f.refuse_cluster_wide)
}

/// Counts a watch stream from its start until the stream is dropped.
struct Counted(Arc<Shared>);

impl Counted {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.watches.opened();
        Self(Arc::clone(shared))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.watches.closed();
    }
}

fn watch_line(event: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": event, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(r: &Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta}),
    )
}

struct WatchState {
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<Change>>,
    kill: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    ticker: tokio::time::Interval,
    filter: Filter,
    resource: &'static Resource,
    start_rv: u64,
    last_rv: u64,
    bookmarks: bool,
    done: bool,
    _counted: Counted,
}

fn watch(shared: &Arc<Shared>, target: &Target<'_>, query: &Query) -> HttpResponse {
    let filter = match Filter::new(target, query) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let r = target.resource;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1800);
    let requested_rv = query.get("resourceVersion").filter(|v| !v.is_empty());
    let mut pending = VecDeque::new();
    let mut done = false;
    let Ok(world) = shared.world.lock() else {
        return error_response(&ApiError::new(
            500,
            "InternalError",
            "the simulator state is poisoned",
        ));
    };
    let store = &world.store;
    let rx = store.subscribe();
    let current = store.resource_version();
    let mut start_rv = current;
    let from_state = send_initial || matches!(requested_rv, None | Some("0"));
    if from_state {
        for obj in store.list(r, filter.namespace.as_deref()) {
            if filter.matches(obj) {
                pending.push_back(watch_line("ADDED", obj));
            }
        }
        if send_initial {
            pending.push_back(bookmark(r, current, true));
        }
    } else if let Some(rv_text) = requested_rv {
        let Ok(rv) = rv_text.parse::<u64>() else {
            return error_response(&ApiError::bad_request(format!(
                "invalid resource version: {rv_text}"
            )));
        };
        if rv < store.compacted() {
            let status = ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                store.compacted()
            ))
            .status();
            pending.push_back(watch_line("ERROR", &status));
            done = true;
        } else {
            for change in store.changes_since(rv) {
                if let Some((event, obj)) = filter.event_for(&change) {
                    pending.push_back(watch_line(event, &obj));
                }
            }
            start_rv = current.max(rv);
        }
    }
    drop(world);
    let mut kill = shared.watch_kill.subscribe();
    kill.borrow_and_update();
    let mut ticker =
        tokio::time::interval(Duration::from_millis(shared.config.bookmark_interval_ms));
    ticker.reset();
    let state = WatchState {
        pending,
        rx,
        kill,
        deadline: Instant::now() + Duration::from_secs(timeout),
        ticker,
        filter,
        resource: r,
        start_rv,
        last_rv: start_rv,
        bookmarks,
        done,
        _counted: Counted::new(shared),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(line), st));
            }
            if st.done {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep_until(st.deadline) => return None,
                _ = st.kill.changed() => return None,
                _ = st.ticker.tick() => {
                    if st.bookmarks {
                        st.pending.push_back(bookmark(st.resource, st.last_rv, false));
                    }
                }
                received = st.rx.recv() => match received {
                    Ok(change) => {
                        if change.rv > st.start_rv {
                            st.last_rv = change.rv;
                            if let Some((event, obj)) = st.filter.event_for(&change) {
                                st.pending.push_back(watch_line(event, &obj));
                            }
                        }
                    }
                    // A watcher that falls behind is closed; the client resumes from its last version.
                    Err(_) => return None,
                },
            }
        }
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache, private"))
        .streaming(stream)
}

fn logs(shared: &Arc<Shared>, target: &Target<'_>, query: &Query) -> HttpResponse {
    let ns = target.namespace.unwrap_or_default();
    let name = target.name.unwrap_or_default();
    let result = shared
        .world
        .lock()
        .map_err(|_| ApiError::new(500, "InternalError", "the simulator state is poisoned"))
        .and_then(|world| {
            super::kubelet::read_logs(
                &world,
                ns,
                name,
                query.get("container"),
                query.flag("previous"),
            )
        });
    match result {
        Ok(lines) => {
            let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok());
            let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
            let mut text = String::new();
            for line in lines.iter().skip(skip) {
                text.push_str(line);
                text.push('\n');
            }
            HttpResponse::Ok().content_type("text/plain").body(text)
        }
        Err(e) => error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_with_empty_pairs_are_tolerated() {
        let q = Query::parse("&force=true&&fieldManager=kubernaut&labelSelector=app%3Dweb");
        assert!(q.flag("force"));
        assert_eq!(q.get("fieldManager"), Some("kubernaut"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
    }

    #[test]
    fn continue_tokens_round_trip() {
        assert_eq!(
            unhex(&hex("42|default/web")).as_deref(),
            Some("42|default/web")
        );
        assert_eq!(unhex("zz"), None);
    }
}
