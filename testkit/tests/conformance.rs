//! Differential conformance: one script of API calls runs against kube-sim and against a
//! real control plane (etcd, kube-apiserver, kube-controller-manager and kube-scheduler
//! built by `scripts/build-control-plane`, testkit's fake kubelet for the pods), and
//! what a client reads of each answer (HTTP codes, `Status` reasons and details, status
//! fields, condition types and reasons, event types and reasons) is compared key by
//! key.
//!
//! Every difference is either fixed in kube-sim or listed, with its reason, in the
//! allow-list of `testkit/README.md` (the table between the `conformance-allow-list`
//! markers). The test fails on a difference the list does not name, and on an entry
//! that no longer differs, so the list cannot go stale.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http_body_util::BodyExt;
use kubernaut_testkit::control_plane::SharedControlPlane;
use kubernaut_testkit::sim::Simulator;
use serde_json::{Value, json};

/// The README whose marked table is the allow-list.
const README: &str = include_str!("../README.md");
const ALLOW_START: &str = "<!-- conformance-allow-list:start -->";
const ALLOW_END: &str = "<!-- conformance-allow-list:end -->";

/// The namespace the script works in, on both servers.
const NAMESPACE: &str = "conformance";

/// How long the script waits for a controller to reach a state.
const WAIT: Duration = Duration::from_secs(30);

/// The real fake kubelet runs ten times faster than the wall clock; kube-sim the same.
const TIME_SCALE: f64 = 10.0;

/// One server the script runs against.
struct Server {
    client: kube::Client,
    /// Keeps kube-sim running; `None` on the real control plane.
    sim: Option<Simulator>,
    /// What a client saw, by a stable key.
    seen: BTreeMap<String, Value>,
}

/// An HTTP answer: the code and the JSON body (a string when it is not JSON).
struct Reply {
    code: u16,
    body: Value,
}

async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("the kubeconfig reads"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("a client configuration");
    kube::Client::try_from(config).expect("a client")
}

fn core(plural: &str) -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/{plural}")
}

fn apps(plural: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NAMESPACE}/{plural}")
}

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";

impl Server {
    async fn sim() -> Self {
        let sim = Simulator::builder()
            .time_scale(TIME_SCALE)
            .nodes(1)
            .start()
            .await
            .expect("kube-sim starts");
        Self {
            client: client_for(sim.kubeconfig_path()).await,
            sim: Some(sim),
            seen: BTreeMap::new(),
        }
    }

    async fn real() -> Self {
        let plane = SharedControlPlane::get().expect("the real control plane starts");
        Self {
            client: client_for(plane.kubeconfig_path()).await,
            sim: None,
            seen: BTreeMap::new(),
        }
    }

    fn see(&mut self, key: &str, value: Value) {
        self.seen.insert(key.to_owned(), value);
    }

    fn request(
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> http::Request<Vec<u8>> {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .expect("a request")
    }

    async fn call_as(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Reply {
        let response = self
            .client
            .send(Self::request(method, path, content_type, body).map(kube::client::Body::from))
            .await
            .unwrap_or_else(|e| panic!("{method} {path} is answered: {e}"));
        let code = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .expect("the body reads");
        // A body that is not JSON is kept as text, to be compared as such.
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply { code, body }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.call_as(method, path, "application/json", body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    /// The events of a watch, read until `enough` says so or the time runs out.
    async fn watch(&self, path: &str, enough: impl Fn(&[Value]) -> bool) -> (u16, Vec<Value>) {
        let response = self
            .client
            .send(
                Self::request("GET", path, "application/json", None).map(kube::client::Body::from),
            )
            .await
            .unwrap_or_else(|e| panic!("the watch {path} is answered: {e}"));
        let code = response.status().as_u16();
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !enough(&events) {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                _ => break,
            };
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if let Ok(event) = serde_json::from_slice::<Value>(&line) {
                    events.push(event);
                }
            }
        }
        (code, events)
    }

    /// Polls `path` until `done` holds for its body, and returns that body; after
    /// [`WAIT`], the last body (whatever it shows is then compared as a difference).
    async fn wait_for(&self, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let reply = self.get(path).await;
            if done(&reply.body) {
                return reply.body;
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!("{}: timed out waiting for {what}", self.name());
                return reply.body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn name(&self) -> &'static str {
        if self.sim.is_some() {
            "kube-sim"
        } else {
            "control plane"
        }
    }
}

/// What a client reads of an error: the code and the whole `Status` (uids and
/// continue tokens left out).
fn status_view(reply: &Reply) -> Value {
    let mut body = reply.body.clone();
    if let Some(details) = body.get_mut("details").and_then(Value::as_object_mut) {
        details.remove("uid");
    }
    // Continue tokens are opaque: whether there is one is what a client can tell.
    if let Some(token) = body.pointer_mut("/metadata/continue") {
        *token = json!("<token>");
    }
    json!({"code": reply.code, "status": body})
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The sorted keys of an object's metadata.
fn metadata_keys(object: &Value) -> Value {
    let keys: BTreeSet<&String> = object
        .get("metadata")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    json!(keys)
}

/// The managedFields entries without their times, sorted by manager.
fn managed_fields(object: &Value) -> Value {
    let mut entries: Vec<Value> = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            if let Some(e) = e.as_object_mut() {
                e.remove("time");
            }
            e
        })
        .collect();
    entries.sort_by_key(|e| text(e, "/manager").to_owned());
    json!(entries)
}

/// A status's fields without the conditions' times and messages, the conditions as
/// `type/status/reason`.
fn status_fields(object: &Value) -> Value {
    let mut status = object.get("status").cloned().unwrap_or(Value::Null);
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        let mut views: Vec<Value> = conditions
            .iter()
            .map(|c| {
                json!(format!(
                    "{}/{}/{}",
                    text(c, "/type"),
                    text(c, "/status"),
                    text(c, "/reason")
                ))
            })
            .collect();
        views.sort_by_key(Value::to_string);
        *conditions = views;
    }
    status
}

/// Replaces volatile numbers (resourceVersions in messages) with `N`.
fn without_numbers(message: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

fn config_map(name: &str, labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": data,
    })
}

fn pod_template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, image),
        },
    })
}

fn replica_set(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, "nginx:1.27"),
        },
    })
}

/// Whether a Deployment's rollout is complete, as `kubectl rollout status` judges it.
fn rolled_out(deployment: &Value) -> bool {
    let desired = int(deployment, "/spec/replicas");
    int(deployment, "/status/observedGeneration") >= int(deployment, "/metadata/generation")
        && int(deployment, "/status/updatedReplicas") == desired
        && int(deployment, "/status/replicas") == desired
        && int(deployment, "/status/availableReplicas") == desired
        && deployment
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
            })
}

/// Runs the whole script on one server.
async fn script(server: &mut Server) {
    namespace(server).await;
    server_side_apply(server).await;
    reads_and_errors(server).await;
    paging(server).await;
    watches(server).await;
    rollout(server).await;
    propagation(server).await;
    replication_controller(server).await;
    events(server).await;
    namespace_deletion(server).await;
}

async fn namespace(server: &mut Server) {
    let reply = server
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            ),
        )
        .await;
    server.see(
        "namespace.create",
        json!({"code": reply.code, "status": reply.body["status"], "spec": reply.body["spec"],
               "labels": reply.body.pointer("/metadata/labels")}),
    );
    server
        .wait_for(
            "the default ServiceAccount",
            &core("serviceaccounts/default"),
            |sa| text(sa, "/kind") == "ServiceAccount",
        )
        .await;
}

async fn server_side_apply(server: &mut Server) {
    let path = format!("{}/settings", core("configmaps"));
    let apply = |data: Value| config_map("settings", json!({"set": "apply"}), data);
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=alice"),
            APPLY,
            Some(&apply(json!({"colour": "blue"}))),
        )
        .await;
    server.see(
        "apply.create",
        json!({"code": reply.code, "data": reply.body["data"], "metadata": metadata_keys(&reply.body),
               "managedFields": managed_fields(&reply.body)}),
    );
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=alice"),
            APPLY,
            Some(&apply(json!({"colour": "green", "size": "L"}))),
        )
        .await;
    server.see(
        "apply.update",
        json!({"code": reply.code, "data": reply.body["data"], "managedFields": managed_fields(&reply.body)}),
    );
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=bob"),
            APPLY,
            Some(&apply(json!({"colour": "red"}))),
        )
        .await;
    server.see("apply.conflict", status_view(&reply));
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=bob&force=true"),
            APPLY,
            Some(&apply(json!({"colour": "red"}))),
        )
        .await;
    server.see(
        "apply.force",
        json!({"code": reply.code, "data": reply.body["data"], "managedFields": managed_fields(&reply.body)}),
    );
    // Alice gives the size up: the field goes, as no other manager owns it.
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=alice"),
            APPLY,
            Some(&apply(json!({}))),
        )
        .await;
    server.see(
        "apply.release_fields",
        json!({"code": reply.code, "data": reply.body["data"], "managedFields": managed_fields(&reply.body)}),
    );
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=alice"),
            MERGE,
            Some(&json!({"data": {"note": "merged"}})),
        )
        .await;
    server.see(
        "patch.merge",
        json!({"code": reply.code, "data": reply.body["data"], "managedFields": managed_fields(&reply.body)}),
    );
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=alice"),
            "text/plain",
            Some(&json!({})),
        )
        .await;
    server.see("patch.unsupported_media_type", status_view(&reply));
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}-missing?fieldManager=alice"),
            MERGE,
            Some(&json!({"data": {}})),
        )
        .await;
    server.see("patch.missing", status_view(&reply));
}

async fn reads_and_errors(server: &mut Server) {
    let path = format!("{}/settings", core("configmaps"));
    let reply = server.get(&path).await;
    server.see(
        "get",
        json!({"code": reply.code, "kind": reply.body["kind"], "apiVersion": reply.body["apiVersion"],
               "data": reply.body["data"], "metadata": metadata_keys(&reply.body)}),
    );
    let stale = reply.body.clone();
    let reply = server.get(&format!("{}/absent", core("configmaps"))).await;
    server.see("get.missing", status_view(&reply));
    let reply = server.get(&format!("{}/absent", apps("deployments"))).await;
    server.see("get.missing_in_group", status_view(&reply));
    let reply = server
        .get("/api/v1/namespaces/no-such-namespace/configmaps/absent")
        .await;
    server.see("get.missing_namespace", status_view(&reply));
    let reply = server.get(&core("no-such-things")).await;
    server.see("get.unknown_resource", status_view(&reply));

    let reply = server
        .call(
            "POST",
            &core("configmaps"),
            Some(&config_map("settings", json!({}), json!({}))),
        )
        .await;
    server.see("create.already_exists", status_view(&reply));

    // The first write succeeds; the same resourceVersion again is stale.
    let mut update = stale.clone();
    update["data"]["note"] = json!("first");
    let reply = server.call("PUT", &path, Some(&update)).await;
    server.see(
        "update.current",
        json!({"code": reply.code, "data": reply.body["data"]}),
    );
    update["data"]["note"] = json!("second");
    let reply = server.call("PUT", &path, Some(&update)).await;
    server.see("update.stale", status_view(&reply));
    let reply = server
        .call(
            "PUT",
            &format!("{}/absent", core("configmaps")),
            Some(&config_map("absent", json!({}), json!({}))),
        )
        .await;
    server.see("update.missing", status_view(&reply));
    let reply = server
        .call(
            "PUT",
            &path,
            Some(&config_map("other-name", json!({}), json!({}))),
        )
        .await;
    server.see("update.name_mismatch", status_view(&reply));

    let reply = server
        .call(
            "POST",
            &core("configmaps"),
            Some(&config_map("Bad_Name", json!({}), json!({}))),
        )
        .await;
    server.see("create.invalid_name", status_view(&reply));
    let mut no_containers = deployment("broken", "nginx:1.27", 1);
    no_containers["spec"]["template"]["spec"]["containers"] = json!([]);
    let reply = server
        .call("POST", &apps("deployments"), Some(&no_containers))
        .await;
    server.see("create.invalid_deployment", status_view(&reply));
    let mut mismatched = deployment("mismatched", "nginx:1.27", 1);
    mismatched["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let reply = server
        .call("POST", &apps("deployments"), Some(&mismatched))
        .await;
    server.see("create.selector_mismatch", status_view(&reply));
    let mut wrong_kind = config_map("wrong-kind", json!({}), json!({}));
    wrong_kind["kind"] = json!("Secret");
    let reply = server
        .call("POST", &core("configmaps"), Some(&wrong_kind))
        .await;
    server.see("create.wrong_kind", status_view(&reply));
    let reply = server
        .call_as("POST", &core("configmaps"), "application/json", None)
        .await;
    server.see(
        "create.empty_body",
        json!({"code": reply.code, "reason": reply.body["reason"]}),
    );

    let reply = server
        .call(
            "POST",
            &path,
            Some(&config_map("settings", json!({}), json!({}))),
        )
        .await;
    server.see("method_not_allowed.post_to_name", status_view(&reply));
    let reply = server
        .call("DELETE", "/api/v1/componentstatuses/etcd-0", None)
        .await;
    server.see("method_not_allowed.read_only_kind", status_view(&reply));
}

async fn paging(server: &mut Server) {
    for n in 0..5 {
        server
            .call(
                "POST",
                &core("configmaps"),
                Some(&config_map(
                    &format!("page-{n}"),
                    json!({"set": "paging"}),
                    json!({}),
                )),
            )
            .await;
    }
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let mut path = format!("{}?labelSelector=set%3Dpaging&limit=2", core("configmaps"));
        if !token.is_empty() {
            path.push_str(&format!("&continue={token}"));
        }
        let reply = server.get(&path).await;
        let names: Vec<&str> = reply.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| text(i, "/metadata/name"))
            .collect();
        pages.push(json!({
            "code": reply.code, "kind": reply.body["kind"], "apiVersion": reply.body["apiVersion"],
            "names": names, "remainingItemCount": reply.body.pointer("/metadata/remainingItemCount"),
            "continues": !text(&reply.body, "/metadata/continue").is_empty(),
        }));
        token = text(&reply.body, "/metadata/continue").to_owned();
        if token.is_empty() || pages.len() > 5 {
            break;
        }
    }
    server.see("list.pages", json!(pages));
    let reply = server
        .get(&format!(
            "{}?limit=2&continue=not-a-token",
            core("configmaps")
        ))
        .await;
    server.see(
        "list.bad_continue",
        json!({"code": reply.code, "reason": reply.body["reason"]}),
    );
    let reply = server
        .get(&format!(
            "{}?labelSelector=set%3D%3D%3D",
            core("configmaps")
        ))
        .await;
    server.see(
        "list.bad_selector",
        json!({"code": reply.code, "reason": reply.body["reason"]}),
    );
}

async fn watches(server: &mut Server) {
    let list = server
        .get(&format!("{}?labelSelector=set%3Dwatch", core("configmaps")))
        .await;
    let from = text(&list.body, "/metadata/resourceVersion").to_owned();
    let path = format!("{}/watched", core("configmaps"));
    server
        .call(
            "POST",
            &core("configmaps"),
            Some(&config_map(
                "watched",
                json!({"set": "watch"}),
                json!({"n": "1"}),
            )),
        )
        .await;
    server
        .call_as("PATCH", &path, MERGE, Some(&json!({"data": {"n": "2"}})))
        .await;
    // Leaving the selector reads as a deletion to a watcher with it.
    server
        .call_as(
            "PATCH",
            &path,
            MERGE,
            Some(&json!({"metadata": {"labels": {"set": "gone"}}})),
        )
        .await;
    server
        .call_as(
            "PATCH",
            &path,
            MERGE,
            Some(&json!({"metadata": {"labels": {"set": "watch"}}})),
        )
        .await;
    server.call("DELETE", &path, None).await;
    let (code, events) = server
        .watch(
            &format!(
                "{}?watch=true&labelSelector=set%3Dwatch&resourceVersion={from}&timeoutSeconds=60",
                core("configmaps")
            ),
            |events| events.len() >= 5,
        )
        .await;
    let seen: Vec<Value> = events
        .iter()
        .map(|e| {
            json!([
                e["type"],
                e["object"]["kind"],
                text(e, "/object/metadata/name"),
                e["object"]["data"]
            ])
        })
        .collect();
    server.see(
        "watch.from_resource_version",
        json!({"code": code, "events": seen}),
    );

    // A page's continue token, then both forget their history: the real server's etcd
    // is compacted (as the API server itself does every five minutes), kube-sim is
    // told to.
    let first_page = server.get(&format!("{}?limit=1", core("configmaps"))).await;
    let token = text(&first_page.body, "/metadata/continue").to_owned();
    // A write after the page, so that compacting up to now reaches the page's version.
    server
        .call(
            "POST",
            &core("configmaps"),
            Some(&config_map("after-the-page", json!({}), json!({}))),
        )
        .await;
    match &server.sim {
        Some(sim) => sim.faults().force_gone(),
        None => {
            SharedControlPlane::get()
                .expect("the real control plane runs")
                .compact_etcd()
                .await
                .expect("etcd compacts");
        }
    }
    let reply = server
        .get(&format!("{}?limit=1&continue={token}", core("configmaps")))
        .await;
    server.see("list.continue_too_old", status_view(&reply));
    let (code, events) = server
        .watch(
            &format!(
                "{}?watch=true&resourceVersion=1&timeoutSeconds=10",
                core("configmaps")
            ),
            |events| !events.is_empty(),
        )
        .await;
    let seen: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut object = e["object"].clone();
            if let Some(message) = object.get("message").and_then(Value::as_str) {
                object["message"] = json!(without_numbers(message));
            }
            if object["kind"] != "Status" {
                object = json!({"kind": object["kind"], "name": object.pointer("/metadata/name")});
            }
            json!({"type": e["type"], "object": object})
        })
        .collect();
    server.see("watch.too_old", json!({"code": code, "events": seen}));
    let reply = server
        .get(&format!(
            "{}?watch=true&resourceVersion=not-a-number",
            core("configmaps")
        ))
        .await;
    server.see("watch.bad_resource_version", status_view(&reply));
}

/// A Deployment's status as it changes, until the rollout is complete: per condition
/// type, the reasons in the order they first appear, and the final status.
async fn observe_rollout(server: &mut Server, key: &str, from: &str) {
    let (_, events) = server
        .watch(
            &format!(
                "{}?watch=true&fieldSelector=metadata.name%3Dweb&resourceVersion={from}&timeoutSeconds=120",
                apps("deployments")
            ),
            |events| events.last().is_some_and(|e| rolled_out(&e["object"])),
        )
        .await;
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in &events {
        for c in event
            .pointer("/object/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let seen = reasons.entry(text(c, "/type").to_owned()).or_default();
            let reason = format!("{}/{}", text(c, "/status"), text(c, "/reason"));
            if seen.last() != Some(&reason) {
                seen.push(reason);
            }
        }
    }
    let last = events
        .last()
        .map(|e| e["object"].clone())
        .unwrap_or_default();
    if !rolled_out(&last) {
        eprintln!("{}: {key} did not complete", server.name());
    }
    server.see(&format!("{key}.conditions"), json!(reasons));
    server.see(&format!("{key}.status"), status_fields(&last));
    server.see(
        &format!("{key}.revision"),
        last.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .cloned()
            .unwrap_or_default(),
    );
}

async fn rollout(server: &mut Server) {
    let path = format!("{}/web", apps("deployments"));
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=conformance"),
            APPLY,
            Some(&deployment("web", "nginx:1.27", 2)),
        )
        .await;
    server.see(
        "rollout.create.reply",
        json!({"code": reply.code, "generation": reply.body.pointer("/metadata/generation"),
               "status": reply.body["status"], "strategy": reply.body.pointer("/spec/strategy"),
               "progressDeadlineSeconds": reply.body.pointer("/spec/progressDeadlineSeconds"),
               "revisionHistoryLimit": reply.body.pointer("/spec/revisionHistoryLimit"),
               "template": reply.body.pointer("/spec/template/spec")}),
    );
    let from = text(&reply.body, "/metadata/resourceVersion").to_owned();
    observe_rollout(server, "rollout.create", &from).await;

    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}?fieldManager=conformance"),
            APPLY,
            Some(&deployment("web", "nginx:1.28", 2)),
        )
        .await;
    server.see(
        "rollout.update.reply",
        json!({"code": reply.code, "generation": reply.body.pointer("/metadata/generation"),
               "observedGeneration": reply.body.pointer("/status/observedGeneration")}),
    );
    let from = text(&reply.body, "/metadata/resourceVersion").to_owned();
    observe_rollout(server, "rollout.update", &from).await;
    let sets = server
        .wait_for(
            "the old ReplicaSet scaled to 0",
            &format!("{}?labelSelector=app%3Dweb", apps("replicasets")),
            |list| {
                list["items"].as_array().is_some_and(|items| {
                    items.len() == 2
                        && items
                            .iter()
                            .all(|rs| int(rs, "/status/replicas") == int(rs, "/spec/replicas"))
                })
            },
        )
        .await;
    let mut views: Vec<Value> = sets["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rs| {
            json!({
                "revision": rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
                "desired": rs.pointer("/metadata/annotations/deployment.kubernetes.io~1desired-replicas"),
                "max": rs.pointer("/metadata/annotations/deployment.kubernetes.io~1max-replicas"),
                "hashLabel": rs.pointer("/metadata/labels/pod-template-hash").is_some(),
                "nameEndsWithHash": text(rs, "/metadata/name").ends_with(text(rs, "/metadata/labels/pod-template-hash")),
                "owner": rs.pointer("/metadata/ownerReferences/0/kind"),
                "replicas": rs.pointer("/spec/replicas"),
                "status": status_fields(rs),
            })
        })
        .collect();
    views.sort_by_key(|v| v["revision"].to_string());
    server.see("rollout.replica_sets", json!(views));
    let scale = server.get(&format!("{path}/scale")).await;
    server.see(
        "rollout.scale",
        json!({"code": scale.code, "kind": scale.body["kind"], "apiVersion": scale.body["apiVersion"],
               "spec": scale.body["spec"], "status": scale.body["status"]}),
    );
}

async fn propagation(server: &mut Server) {
    for policy in ["Background", "Foreground", "Orphan"] {
        let name = format!("keep-{}", policy.to_ascii_lowercase());
        let path = format!("{}/{name}", apps("replicasets"));
        server
            .call("POST", &apps("replicasets"), Some(&replica_set(&name, 2)))
            .await;
        server
            .wait_for("the ReplicaSet's pods ready", &path, |rs| {
                int(rs, "/status/readyReplicas") == 2
            })
            .await;
        let reply = server
            .call(
                "DELETE",
                &path,
                Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy})),
            )
            .await;
        server.see(
            &format!("delete.{policy}.reply"),
            json!({"code": reply.code, "kind": reply.body["kind"], "status": reply.body.get("status").filter(|_| reply.body["kind"] == "Status"),
                   "finalizers": reply.body.pointer("/metadata/finalizers"),
                   "deletionTimestamp": reply.body.pointer("/metadata/deletionTimestamp").is_some()}),
        );
        let pods_path = format!("{}?labelSelector=app%3D{name}", core("pods"));
        server
            .wait_for("the ReplicaSet gone", &path, |rs| rs["code"] == 404)
            .await;
        let pods = server
            .wait_for("the dependents settled", &pods_path, |list| {
                list["items"].as_array().is_some_and(|items| {
                    items.iter().all(|p| {
                        p.pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .is_none_or(Vec::is_empty)
                    })
                })
            })
            .await;
        let owners: Vec<Value> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| json!(p.pointer("/metadata/ownerReferences")))
            .collect();
        server.see(&format!("delete.{policy}.pods_after"), json!(owners));
        // Orphans are left behind by design; they would otherwise be counted below.
        server
            .call(
                "DELETE",
                &format!("{}?labelSelector=app%3D{name}", core("pods")),
                None,
            )
            .await;
    }
}

async fn replication_controller(server: &mut Server) {
    let path = format!("{}/legacy", core("replicationcontrollers"));
    let reply = server
        .call(
            "POST",
            &core("replicationcontrollers"),
            Some(&json!({
                "apiVersion": "v1", "kind": "ReplicationController",
                "metadata": {"name": "legacy"},
                "spec": {"replicas": 2, "minReadySeconds": 1, "template": pod_template("legacy", "nginx:1.27")},
            })),
        )
        .await;
    server.see(
        "rc.create",
        json!({"code": reply.code, "selector": reply.body.pointer("/spec/selector"),
               "labels": reply.body.pointer("/metadata/labels"), "status": reply.body["status"],
               "generation": reply.body.pointer("/metadata/generation")}),
    );
    let settled = |want: i64| {
        move |rc: &Value| {
            int(rc, "/status/replicas") == want
                && int(rc, "/status/availableReplicas") == want
                && int(rc, "/status/readyReplicas") == want
                && int(rc, "/status/observedGeneration") == int(rc, "/metadata/generation")
        }
    };
    let rc = server
        .wait_for("the RC's two pods available", &path, settled(2))
        .await;
    server.see("rc.two", status_fields(&rc));
    let scale = server.get(&format!("{path}/scale")).await;
    server.see(
        "rc.scale",
        json!({"code": scale.code, "kind": scale.body["kind"], "apiVersion": scale.body["apiVersion"],
               "spec": scale.body["spec"], "status": scale.body["status"]}),
    );
    let reply = server
        .call_as(
            "PATCH",
            &format!("{path}/scale"),
            MERGE,
            Some(&json!({"spec": {"replicas": 3}})),
        )
        .await;
    server.see(
        "rc.scale_up.reply",
        json!({"code": reply.code, "spec": reply.body["spec"]}),
    );
    let rc = server
        .wait_for("the RC's three pods available", &path, settled(3))
        .await;
    server.see("rc.three", status_fields(&rc));
    let reply = server
        .call_as(
            "PATCH",
            &path,
            MERGE,
            Some(&json!({"spec": {"replicas": 1}})),
        )
        .await;
    server.see(
        "rc.scale_down.reply",
        json!({"code": reply.code, "generation": reply.body.pointer("/metadata/generation")}),
    );
    let rc = server
        .wait_for("the RC down to one pod", &path, settled(1))
        .await;
    server.see("rc.one", status_fields(&rc));
    let pods = server
        .get(&format!("{}?labelSelector=app%3Dlegacy", core("pods")))
        .await;
    let owners: Vec<Value> = pods.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            json!({
                "owner": p.pointer("/metadata/ownerReferences/0/kind"),
                "controller": p.pointer("/metadata/ownerReferences/0/controller"),
                "blockOwnerDeletion": p.pointer("/metadata/ownerReferences/0/blockOwnerDeletion"),
                "generateName": p.pointer("/metadata/generateName"),
                "labels": p.pointer("/metadata/labels"),
            })
        })
        .collect();
    server.see("rc.pods", json!(owners));
}

/// The events a client lists: by involved kind, type and reason, each once.
async fn events(server: &mut Server) {
    let reply = server.get(&core("events")).await;
    let seen: BTreeSet<String> = reply.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| text(e, "/involvedObject/kind") != "Pod")
        .map(|e| {
            format!(
                "{} {} {} ({})",
                text(e, "/involvedObject/kind"),
                text(e, "/type"),
                text(e, "/reason"),
                text(e, "/source/component"),
            )
        })
        .collect();
    server.see("events", json!(seen));
}

async fn namespace_deletion(server: &mut Server) {
    let reply = server
        .call("DELETE", &format!("/api/v1/namespaces/{NAMESPACE}"), None)
        .await;
    server.see(
        "namespace.delete",
        json!({"code": reply.code, "kind": reply.body["kind"], "phase": reply.body.pointer("/status/phase"),
               "deletionTimestamp": reply.body.pointer("/metadata/deletionTimestamp").is_some()}),
    );
}

/// The allow-list: each key the README's marked table names, with its reason.
fn allow_list() -> BTreeMap<String, String> {
    let start = README
        .find(ALLOW_START)
        .expect("the README marks the allow-list's start");
    let end = README
        .find(ALLOW_END)
        .expect("the README marks the allow-list's end");
    README[start + ALLOW_START.len()..end]
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let key = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((
                key.to_owned(),
                cells.get(1).copied().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn kube_sim_answers_as_a_real_control_plane_does() {
    let (mut sim, mut real) = tokio::join!(Server::sim(), Server::real());
    tokio::join!(script(&mut sim), script(&mut real));
    let keys: BTreeSet<&String> = sim.seen.keys().chain(real.seen.keys()).collect();
    let differing: BTreeMap<&String, (Option<&Value>, Option<&Value>)> = keys
        .into_iter()
        .map(|k| (k, (sim.seen.get(k), real.seen.get(k))))
        .filter(|(_, (a, b))| a != b)
        .collect();
    let allowed = allow_list();
    let mut report = String::new();
    for (key, (sim_value, real_value)) in &differing {
        let listed = if allowed.contains_key(key.as_str()) {
            "allowed"
        } else {
            "NOT ALLOWED"
        };
        report.push_str(&format!(
            "{key} ({listed})\n  kube-sim:      {}\n  control plane: {}\n",
            sim_value.map_or("-".to_owned(), Value::to_string),
            real_value.map_or("-".to_owned(), Value::to_string),
        ));
    }
    eprintln!(
        "{} observations, {} differences:\n{report}",
        sim.seen.len(),
        differing.len()
    );
    let unexpected: Vec<&&String> = differing
        .keys()
        .filter(|k| !allowed.contains_key(k.as_str()))
        .collect();
    let stale: Vec<&String> = allowed
        .keys()
        .filter(|k| !differing.keys().any(|d| *d == *k))
        .collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "differences the allow-list of testkit/README.md does not name: {unexpected:?}; \
         entries that no longer differ (remove them): {stale:?}\n{report}"
    );
}
