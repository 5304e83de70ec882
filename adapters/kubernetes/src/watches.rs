//! Watches shared by every rollout on one cluster.
//!
//! One watch per kind the rollouts read (Deployments, StatefulSets, DaemonSets, Jobs,
//! ReplicaSets, Pods, warning Events), across all namespaces when the credentials may
//! list that kind cluster-wide, else one per namespace that has a rollout. Each watch
//! feeds a store; a rollout subscribes to the objects it cares about (by name, by label
//! selector, or a whole namespace) in one namespace and is woken when one of them
//! changes, then reads the stores. A watch nobody subscribes to any more is closed
//! after a grace period, so a burst of deploys reuses it and an idle Kubernaut holds
//! none.
//!
//! Which scope a kind gets is found out by a probing list (`limit=1`) across all
//! namespaces the first time the kind is needed, and again once its watches have all
//! closed; a cluster-wide watch answered `403 Forbidden` (credentials that lost the
//! right) falls back to watches per namespace.
//!
//! kube-runtime's watcher resumes from the last resourceVersion, relists after `410
//! Gone` and backs off on errors. A relist replaces a store's view only once the new
//! list is complete, so a rollout never sees objects vanish or step back mid-relist;
//! objects deleted while the watch was down are gone from the new list. While a watch
//! is down its store keeps its last view: waiting, never a verdict.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::WatchConnections;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, PodTemplateSpec};
use kube::api::{Api, ListParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A kind the shared watches keep, slimmed to what the verdicts read.
pub(crate) trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Drops what no verdict reads, to keep the stores small: the managed fields and
    /// the client-side apply record (a copy of the whole object) of every kind, and
    /// whatever [`Watched::slim_more`] says of its own.
    fn slim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        self.slim_more();
    }

    /// What this kind drops besides.
    fn slim_more(&mut self) {}
}

/// The annotation `kubectl apply` (client-side) keeps the last applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

// A workload's pod template is most of its size, and no verdict reads it: they read
// the replica counts, strategy, selector and deadline of the spec, and the status.
impl Watched for Deployment {
    fn slim_more(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
        }
    }
}
impl Watched for StatefulSet {
    fn slim_more(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
            spec.volume_claim_templates = None;
        }
    }
}
impl Watched for DaemonSet {
    fn slim_more(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
        }
    }
}
impl Watched for Job {
    fn slim_more(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
        }
    }
}
impl Watched for ReplicaSet {
    fn slim_more(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.template = None;
        }
    }
}
impl Watched for CoreEvent {}
impl Watched for Pod {
    fn slim_more(&mut self) {
        // The verdicts read a pod's metadata and status; its spec is most of its size.
        self.spec = None;
    }
}

/// Which objects of a namespace a rollout wants to hear about.
#[derive(Debug, Clone)]
pub(crate) enum Wants {
    Named(String),
    Labelled(Selector),
    Everything,
}

impl Wants {
    fn matches<K: Resource>(&self, object: &K) -> bool {
        let meta = object.meta();
        match self {
            Self::Named(name) => meta.name.as_ref() == Some(name),
            Self::Labelled(selector) => {
                selector.matches(meta.labels.as_ref().unwrap_or(&BTreeMap::new()))
            }
            Self::Everything => true,
        }
    }
}

#[derive(Debug)]
struct Interest {
    namespace: String,
    wants: Wants,
    wake: Arc<Notify>,
}

/// Objects by namespace, then name.
type Objects<K> = HashMap<String, BTreeMap<String, Arc<K>>>;

/// What one watch currently sees, relists included.
#[derive(Debug)]
struct Store<K> {
    synced: bool,
    objects: Objects<K>,
    relisting: Option<Objects<K>>,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            synced: false,
            objects: HashMap::new(),
            relisting: None,
        }
    }
}

/// Which subscribers an event concerns.
#[derive(Debug)]
enum Changed<K> {
    Nothing,
    Object {
        namespace: String,
        before: Option<Arc<K>>,
        after: Arc<K>,
    },
    Everything,
}

fn place<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K: Resource> Store<K> {
    fn apply(&mut self, event: Event<K>) -> Changed<K> {
        match event {
            Event::Apply(object) => {
                let (namespace, name) = place(&object);
                let after = Arc::new(object);
                let before = self
                    .objects
                    .entry(namespace.clone())
                    .or_default()
                    .insert(name, Arc::clone(&after));
                Changed::Object {
                    namespace,
                    before,
                    after,
                }
            }
            Event::Delete(object) => {
                let (namespace, name) = place(&object);
                let before = self
                    .objects
                    .get_mut(&namespace)
                    .and_then(|names| names.remove(&name));
                Changed::Object {
                    namespace,
                    before,
                    after: Arc::new(object),
                }
            }
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Changed::Nothing
            }
            Event::InitApply(object) => {
                let (namespace, name) = place(&object);
                self.relisting
                    .as_mut()
                    .unwrap_or(&mut self.objects)
                    .entry(namespace)
                    .or_default()
                    .insert(name, Arc::new(object));
                Changed::Nothing
            }
            Event::InitDone => {
                // Objects deleted while the watch was down are not in the new list.
                if let Some(listed) = self.relisting.take() {
                    self.objects = listed;
                }
                self.synced = true;
                Changed::Everything
            }
        }
    }

    fn select(&self, namespace: &str, wants: &Wants) -> Vec<Arc<K>> {
        let Some(names) = self.objects.get(namespace) else {
            return Vec::new();
        };
        match wants {
            Wants::Named(name) => names.get(name).cloned().into_iter().collect(),
            _ => names
                .values()
                .filter(|object| wants.matches(object.as_ref()))
                .cloned()
                .collect(),
        }
    }
}

/// One watch and its store; `namespace` `None` watches every namespace.
#[derive(Debug)]
struct Watch<K> {
    namespace: Option<String>,
    store: RwLock<Store<K>>,
    /// Since when nobody subscribes to what the watch covers.
    idle_since: Mutex<Option<Instant>>,
    /// Tells the watch's task that `idle_since` changed.
    nudge: Notify,
    task: Mutex<Option<AbortHandle>>,
}

impl<K> Watch<K> {
    fn running(&self) -> bool {
        lock(&self.task)
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Not known yet, or not since the kind's watches all closed.
    Unknown,
    Cluster,
    Namespaces,
}

#[derive(Debug)]
struct KindState<K> {
    scope: Scope,
    /// By the namespace watched; `None` is the cluster-wide watch.
    watches: HashMap<Option<String>, Arc<Watch<K>>>,
    interests: HashMap<String, Vec<Arc<Interest>>>,
}

impl<K> KindState<K> {
    /// Subscribers the watch on `namespace` (`None`: all) serves.
    fn users(&self, namespace: Option<&String>) -> usize {
        match namespace {
            Some(namespace) => self.interests.get(namespace).map_or(0, Vec::len),
            None => self.interests.values().map(Vec::len).sum(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop every rollout: the data stays consistent
    // between statements.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a rollout read from a store.
#[derive(Debug)]
pub(crate) struct Snapshot<K> {
    /// Whether the watch has completed a list: before, absence means nothing.
    pub synced: bool,
    pub objects: Vec<Arc<K>>,
}

/// The shared watches of one kind on one cluster.
pub(crate) struct KindWatches<K> {
    client: Client,
    grace: Duration,
    /// Counts this kind's watch streams for the binary's metrics.
    connections: WatchConnections,
    fields: Option<&'static str>,
    state: Mutex<KindState<K>>,
    probing: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
}

impl<K> Debug for KindWatches<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindWatches")
            .field("grace", &self.grace)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl<K: Watched> KindWatches<K> {
    fn new(
        client: Client,
        grace: Duration,
        connections: &WatchConnections,
        fields: Option<&'static str>,
    ) -> Self {
        Self {
            client,
            grace,
            connections: connections.clone(),
            fields,
            state: Mutex::new(KindState {
                scope: Scope::Unknown,
                watches: HashMap::new(),
                interests: HashMap::new(),
            }),
            probing: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        }
    }

    /// Wakes `wake` whenever an object of `namespace` that `wants` selects changes, or
    /// the watch covering the namespace (re)lists, until the subscription is dropped.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        namespace: &str,
        wants: Wants,
        wake: Arc<Notify>,
    ) -> Subscription<K> {
        self.know_scope().await;
        let interest = Arc::new(Interest {
            namespace: namespace.to_owned(),
            wants,
            wake,
        });
        let mut state = lock(&self.state);
        state
            .interests
            .entry(namespace.to_owned())
            .or_default()
            .push(Arc::clone(&interest));
        let key = match state.scope {
            Scope::Namespaces => Some(namespace.to_owned()),
            Scope::Cluster | Scope::Unknown => None,
        };
        self.ensure_watch(&mut state, key);
        Subscription {
            kind: Arc::clone(self),
            interest,
        }
    }

    /// What the store covering `namespace` holds of what `wants` selects.
    pub(crate) fn read(&self, namespace: &str, wants: &Wants) -> Snapshot<K> {
        let state = lock(&self.state);
        // While falling back from a cluster-wide watch both may exist: the synced one
        // is the one to believe.
        let mut best = None;
        for key in [Some(namespace.to_owned()), None] {
            if let Some(watch) = state.watches.get(&key) {
                let store = watch
                    .store
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if store.synced {
                    return Snapshot {
                        synced: true,
                        objects: store.select(namespace, wants),
                    };
                }
                best.get_or_insert_with(|| store.select(namespace, wants));
            }
        }
        Snapshot {
            synced: false,
            objects: best.unwrap_or_default(),
        }
    }

    /// The last error a watch of this kind met, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// The namespaces of this kind's open watches (`None`: all of them).
    #[cfg(test)]
    fn watched(&self) -> Vec<Option<String>> {
        let mut keys: Vec<_> = lock(&self.state).watches.keys().cloned().collect();
        keys.sort();
        keys
    }

    async fn know_scope(&self) {
        if lock(&self.state).scope != Scope::Unknown {
            return;
        }
        let _probing = self.probing.lock().await;
        if lock(&self.state).scope != Scope::Unknown {
            return;
        }
        let probe = Api::<K>::all(self.client.clone())
            .list_metadata(&ListParams::default().limit(1))
            .await;
        let scope = match probe {
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                tracing::info!(
                    kind = K::kind(&()).as_ref(),
                    "listing across all namespaces is forbidden: watching namespace by namespace"
                );
                Scope::Namespaces
            }
            // Allowed, or not answered now: the watch finds out again, and a 403 then
            // falls back to namespaces.
            _ => Scope::Cluster,
        };
        lock(&self.state).scope = scope;
    }

    /// Starts the watch on `key` unless it runs, and keeps it from closing.
    fn ensure_watch(self: &Arc<Self>, state: &mut KindState<K>, key: Option<String>) {
        if let Some(watch) = state.watches.get(&key)
            && watch.running()
        {
            *lock(&watch.idle_since) = None;
            watch.nudge.notify_one();
            return;
        }
        let watch = Arc::new(Watch {
            namespace: key.clone(),
            store: RwLock::new(Store::default()),
            idle_since: Mutex::new(None),
            nudge: Notify::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(Arc::clone(self).run(Arc::clone(&watch)));
        *lock(&watch.task) = Some(task.abort_handle());
        state.watches.insert(key, watch);
    }

    fn unsubscribe(&self, interest: &Arc<Interest>) {
        let mut state = lock(&self.state);
        if let Some(list) = state.interests.get_mut(&interest.namespace) {
            list.retain(|other| !Arc::ptr_eq(other, interest));
            if list.is_empty() {
                state.interests.remove(&interest.namespace);
            }
        }
        for key in [Some(interest.namespace.clone()), None] {
            if state.users(key.as_ref()) == 0
                && let Some(watch) = state.watches.get(&key)
            {
                *lock(&watch.idle_since) = Some(Instant::now());
                watch.nudge.notify_one();
            }
        }
    }

    fn dispatch(&self, watch: &Watch<K>, changed: &Changed<K>) {
        let state = lock(&self.state);
        match changed {
            Changed::Nothing => {}
            Changed::Object {
                namespace,
                before,
                after,
            } => {
                for interest in state.interests.get(namespace).into_iter().flatten() {
                    let concerned = interest.wants.matches(after.as_ref())
                        || before
                            .as_ref()
                            .is_some_and(|b| interest.wants.matches(b.as_ref()));
                    if concerned {
                        interest.wake.notify_one();
                    }
                }
            }
            Changed::Everything => {
                let covered = state
                    .interests
                    .iter()
                    .filter(|(namespace, _)| {
                        watch.namespace.as_ref().is_none_or(|n| n == *namespace)
                    })
                    .flat_map(|(_, list)| list);
                for interest in covered {
                    interest.wake.notify_one();
                }
            }
        }
    }

    /// Removes the watch if nobody has needed it for the grace period.
    fn close_if_idle(&self, watch: &Arc<Watch<K>>) -> bool {
        let mut state = lock(&self.state);
        let idle_long_enough =
            (*lock(&watch.idle_since)).is_some_and(|since| since.elapsed() >= self.grace);
        let current = state
            .watches
            .get(&watch.namespace)
            .is_some_and(|w| Arc::ptr_eq(w, watch));
        if !current || !idle_long_enough || state.users(watch.namespace.as_ref()) > 0 {
            return false;
        }
        state.watches.remove(&watch.namespace);
        if state.watches.is_empty() {
            // Credentials may have changed by the next use: ask again then.
            state.scope = Scope::Unknown;
        }
        true
    }

    /// The cluster-wide watch was forbidden: watch the namespaces with rollouts instead.
    fn fall_back_to_namespaces(self: &Arc<Self>, watch: &Arc<Watch<K>>) {
        let mut state = lock(&self.state);
        state.scope = Scope::Namespaces;
        if state
            .watches
            .get(&None)
            .is_some_and(|w| Arc::ptr_eq(w, watch))
        {
            state.watches.remove(&None);
        }
        let namespaces: Vec<String> = state.interests.keys().cloned().collect();
        for namespace in namespaces {
            self.ensure_watch(&mut state, Some(namespace));
        }
    }

    async fn run(self: Arc<Self>, watch: Arc<Watch<K>>) {
        // Counted as open for as long as the task runs (reconnects included).
        let _held = self.connections.hold();
        let api = match &watch.namespace {
            Some(namespace) => Api::<K>::namespaced(self.client.clone(), namespace),
            None => Api::<K>::all(self.client.clone()),
        };
        let mut config = watcher::Config::default();
        if let Some(fields) = self.fields {
            config = config.fields(fields);
        }
        let mut stream =
            std::pin::pin!(watcher::watcher(api, config).backoff(QuickBackoff::default()));
        loop {
            let close_at = (*lock(&watch.idle_since)).map(|since| since + self.grace);
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(mut event)) => {
                        slim(&mut event);
                        let changed = watch
                            .store
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .apply(event);
                        self.dispatch(&watch, &changed);
                    }
                    Some(Err(error)) => {
                        if watch.namespace.is_none() && forbidden(&error) {
                            tracing::info!(
                                kind = K::kind(&()).as_ref(),
                                %error,
                                "the cluster-wide watch is forbidden: watching namespace by namespace"
                            );
                            self.fall_back_to_namespaces(&watch);
                            return;
                        }
                        tracing::debug!(
                            kind = K::kind(&()).as_ref(),
                            %error,
                            "a shared watch failed; it resumes with backoff"
                        );
                        *lock(&self.last_error) = Some(error.to_string());
                    }
                    None => return,
                },
                () = watch.nudge.notified() => {}
                () = tokio::time::sleep_until(close_at.unwrap_or_else(Instant::now)),
                    if close_at.is_some() =>
                {
                    if self.close_if_idle(&watch) {
                        return;
                    }
                }
            }
        }
    }
}

/// Backoff of a shared watch: every rollout of the kind waits on it, and one watch per
/// kind retrying within 2 s costs the API server little, where kube-runtime's default
/// (up to 30 s) suits a watch per object.
#[derive(Debug)]
struct QuickBackoff {
    next: Duration,
}

impl QuickBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

fn slim<K: Watched>(event: &mut Event<K>) {
    match event {
        Event::Apply(object) | Event::Delete(object) | Event::InitApply(object) => object.slim(),
        Event::Init | Event::InitDone => {}
    }
}

fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.is_forbidden(),
        watcher::Error::WatchError(status) => status.is_forbidden(),
        _ => false,
    }
}

/// A rollout's interest in some objects; dropping it ends the interest.
#[derive(Debug)]
pub(crate) struct Subscription<K: Watched> {
    kind: Arc<KindWatches<K>>,
    interest: Arc<Interest>,
}

impl<K: Watched> Drop for Subscription<K> {
    fn drop(&mut self) {
        self.kind.unsubscribe(&self.interest);
    }
}

/// The shared watches of one cluster, one set per kind the rollouts read.
#[derive(Debug)]
pub(crate) struct Watches {
    pub deployments: Arc<KindWatches<Deployment>>,
    pub stateful_sets: Arc<KindWatches<StatefulSet>>,
    pub daemon_sets: Arc<KindWatches<DaemonSet>>,
    pub jobs: Arc<KindWatches<Job>>,
    pub replica_sets: Arc<KindWatches<ReplicaSet>>,
    pub pods: Arc<KindWatches<Pod>>,
    /// Warning events only: they alone tell of failing readiness probes.
    pub events: Arc<KindWatches<CoreEvent>>,
}

impl Watches {
    pub(crate) fn new(client: &Client, grace: Duration, connections: &WatchConnections) -> Self {
        Self {
            deployments: Arc::new(KindWatches::new(client.clone(), grace, connections, None)),
            stateful_sets: Arc::new(KindWatches::new(client.clone(), grace, connections, None)),
            daemon_sets: Arc::new(KindWatches::new(client.clone(), grace, connections, None)),
            jobs: Arc::new(KindWatches::new(client.clone(), grace, connections, None)),
            replica_sets: Arc::new(KindWatches::new(client.clone(), grace, connections, None)),
            pods: Arc::new(KindWatches::new(client.clone(), grace, connections, None)),
            events: Arc::new(KindWatches::new(
                client.clone(),
                grace,
                connections,
                Some("type=Warning"),
            )),
        }
    }

    /// The last error any watch met.
    pub(crate) fn last_error(&self) -> Option<String> {
        [
            self.deployments.last_error(),
            self.stateful_sets.last_error(),
            self.daemon_sets.last_error(),
            self.jobs.last_error(),
            self.replica_sets.last_error(),
            self.pods.last_error(),
            self.events.last_error(),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, app: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]},
        }))
        .expect("a pod")
    }

    fn names(store: &Store<Pod>, wants: &Wants) -> Vec<String> {
        store
            .select("shop", wants)
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    #[test]
    fn a_relist_replaces_the_view_only_once_complete_and_forgets_what_was_deleted() {
        let mut store = Store::default();
        let all = Wants::Everything;
        store.apply(Event::Init);
        store.apply(Event::InitApply(pod("a", "web")));
        store.apply(Event::InitApply(pod("b", "web")));
        assert!(!store.synced, "not synced before the list is complete");
        assert!(matches!(store.apply(Event::InitDone), Changed::Everything));
        assert!(store.synced);
        assert_eq!(names(&store, &all), ["a", "b"]);

        // After a 410 Gone the watcher relists: until the list is complete the old view
        // stays (nothing vanishes, nothing steps back), then the new one replaces it.
        store.apply(Event::Init);
        store.apply(Event::InitApply(pod("b", "web")));
        assert_eq!(names(&store, &all), ["a", "b"]);
        assert!(store.synced, "a relist does not unsync what was synced");
        store.apply(Event::InitDone);
        assert_eq!(names(&store, &all), ["b"]);

        store.apply(Event::Apply(pod("c", "web")));
        store.apply(Event::Delete(pod("b", "web")));
        assert_eq!(names(&store, &all), ["c"]);
    }

    #[test]
    fn a_store_selects_by_name_and_by_labels_within_a_namespace() {
        let mut store = Store::default();
        store.apply(Event::Apply(pod("web-1", "web")));
        store.apply(Event::Apply(pod("api-1", "api")));
        let web: Selector = [("app", "web")].into_iter().collect();
        assert_eq!(names(&store, &Wants::Labelled(web)), ["web-1"]);
        assert_eq!(names(&store, &Wants::Named("api-1".into())), ["api-1"]);
        assert!(store.select("elsewhere", &Wants::Everything).is_empty());
    }

    #[test]
    fn a_change_names_the_object_before_and_after_so_both_selections_hear_of_it() {
        let mut store = Store::default();
        store.apply(Event::Apply(pod("p", "web")));
        let Changed::Object { before, after, .. } = store.apply(Event::Apply(pod("p", "api")))
        else {
            panic!("an object change");
        };
        let web = Wants::Labelled([("app", "web")].into_iter().collect());
        assert!(before.is_some_and(|b| web.matches(b.as_ref())));
        assert!(!web.matches(after.as_ref()));
    }

    #[test]
    fn a_shared_watch_retries_within_two_seconds_and_starts_over_after_a_success() {
        use kube::runtime::utils::Backoff;
        let mut backoff = QuickBackoff::default();
        let delays: Vec<u128> = backoff.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn workloads_are_kept_without_their_pod_template_or_apply_records() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web",
                "annotations": {
                    "deployment.kubernetes.io/revision": "3",
                    LAST_APPLIED: "{\"kind\":\"Deployment\"}",
                },
                "managedFields": [{"manager": "kubernaut", "operation": "Apply"}],
            },
            "spec": {
                "replicas": 3,
                "progressDeadlineSeconds": 60,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.local/web:1"}]},
                },
            },
            "status": {"replicas": 3, "updatedReplicas": 2},
        }))
        .expect("a deployment");
        assert!(
            deployment
                .metadata
                .annotations
                .as_ref()
                .expect("annotations")
                .contains_key(LAST_APPLIED),
            "the apply record is there before"
        );
        let mut event = Event::Apply(deployment);
        slim(&mut event);
        let Event::Apply(slimmed) = event else {
            panic!("still an apply");
        };
        let spec = slimmed.spec.as_ref().expect("the spec stays");
        assert_eq!(spec.template, PodTemplateSpec::default());
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.progress_deadline_seconds, Some(60));
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get("app")),
            Some(&"web".to_owned())
        );
        assert!(spec.strategy.is_some());
        assert_eq!(
            slimmed.status.as_ref().and_then(|s| s.updated_replicas),
            Some(2)
        );
        assert!(slimmed.metadata.managed_fields.is_none());
        let annotations = slimmed.metadata.annotations.as_ref().expect("annotations");
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(
            annotations.get("deployment.kubernetes.io/revision"),
            Some(&"3".to_owned())
        );

        let set: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web"}]}},
            },
        }))
        .expect("a replica set");
        let mut event = Event::InitApply(set);
        slim(&mut event);
        let Event::InitApply(slimmed) = event else {
            panic!("still an initial apply");
        };
        assert!(slimmed.spec.expect("the spec stays").template.is_none());
    }

    #[test]
    fn pods_are_kept_without_their_spec_or_managed_fields() {
        let mut event = Event::Apply(pod("p", "web"));
        slim(&mut event);
        let Event::Apply(slimmed) = event else {
            panic!("still an apply");
        };
        assert!(slimmed.spec.is_none());
        assert_eq!(slimmed.metadata.name.as_deref(), Some("p"));
    }

    mod against_kube_sim {
        use std::time::Duration;

        use k8s_openapi::api::core::v1::{Namespace, Pod};
        use kube::api::{Api, DeleteParams, PostParams};
        use kubernaut_testkit::sim::Simulator;
        use serde_json::json;
        use tokio::sync::Notify;

        use super::super::*;
        use crate::KubernetesCluster;

        const PATIENCE: Duration = Duration::from_secs(20);

        async fn cluster(kubeconfig: &str, grace: Duration) -> KubernetesCluster {
            let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("a kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("a client configuration");
            KubernetesCluster::from_config(config)
                .expect("a cluster")
                .with_watch_grace(grace)
        }

        async fn namespace(cluster: &KubernetesCluster, name: &str) {
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
            Api::<Namespace>::all(cluster.client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .expect("the namespace is created");
        }

        async fn create_pod(cluster: &KubernetesCluster, namespace: &str, name: &str, app: &str) {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": [{"name": "web", "image": "registry.local/web:1"}]},
            }))
            .expect("a pod");
            Api::<Pod>::namespaced(cluster.client.clone(), namespace)
                .create(&PostParams::default(), &pod)
                .await
                .expect("the pod is created");
        }

        async fn until(what: &str, mut done: impl FnMut() -> bool) {
            let by = Instant::now() + PATIENCE;
            while !done() {
                assert!(Instant::now() < by, "never: {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        fn web() -> Wants {
            Wants::Labelled([("app", "web")].into_iter().collect())
        }

        fn pod_names(kind: &KindWatches<Pod>, namespace: &str) -> Vec<String> {
            let mut names: Vec<String> = kind
                .read(namespace, &web())
                .objects
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            names.sort();
            names
        }

        #[tokio::test]
        async fn rollouts_in_many_namespaces_share_one_watch_and_hear_only_of_their_objects() {
            let sim = Simulator::start().await.expect("the simulator starts");
            let cluster = cluster(sim.kubeconfig_yaml(), Duration::from_secs(60)).await;
            let pods = &cluster.watches.pods;
            let mut held = Vec::new();
            let mut wakes = Vec::new();
            for name in ["a", "b", "c"] {
                namespace(&cluster, name).await;
                let wake = Arc::new(Notify::new());
                held.push(pods.subscribe(name, web(), Arc::clone(&wake)).await);
                wakes.push(wake);
            }
            assert_eq!(pods.watched(), [None], "one cluster-wide watch for all");
            until("the watch lists", || pods.read("a", &web()).synced).await;
            // Synced once listed; the stream opens right after.
            until("the watch stream opens", || sim.watch_streams().open >= 1).await;
            assert_eq!(sim.watch_streams().open, 1);
            // Let the first list's wake-ups pass, then look for new ones only.
            for wake in &wakes {
                let _ = tokio::time::timeout(Duration::from_millis(100), wake.notified()).await;
            }

            create_pod(&cluster, "b", "web-1", "web").await;
            tokio::time::timeout(PATIENCE, wakes[1].notified())
                .await
                .expect("the rollout in b is woken");
            until("the store shows the pod", || {
                pod_names(pods, "b") == ["web-1"]
            })
            .await;
            assert!(pod_names(pods, "a").is_empty(), "namespaces stay apart");
            create_pod(&cluster, "c", "api-1", "api").await;
            create_pod(&cluster, "b", "api-1", "api").await;
            assert!(
                tokio::time::timeout(Duration::from_millis(300), wakes[0].notified())
                    .await
                    .is_err(),
                "a rollout is not woken by other namespaces"
            );
            assert!(
                tokio::time::timeout(Duration::from_millis(300), wakes[2].notified())
                    .await
                    .is_err(),
                "nor by objects its selector does not select"
            );
            assert_eq!(sim.watch_streams().peak, 1);
        }

        #[tokio::test]
        async fn a_watch_nobody_needs_closes_after_the_grace_and_not_before() {
            let sim = Simulator::start().await.expect("the simulator starts");
            let grace = Duration::from_millis(600);
            let cluster = cluster(sim.kubeconfig_yaml(), grace).await;
            let deployments = &cluster.watches.deployments;
            let wake = Arc::new(Notify::new());
            let first = deployments
                .subscribe("default", Wants::Named("web".into()), Arc::clone(&wake))
                .await;
            until("the watch lists", || {
                deployments.read("default", &Wants::Everything).synced
            })
            .await;
            drop(first);
            tokio::time::sleep(grace / 3).await;
            // A rollout that comes within the grace reuses the open watch.
            let second = deployments
                .subscribe("default", Wants::Named("api".into()), Arc::clone(&wake))
                .await;
            tokio::time::sleep(grace).await;
            assert_eq!(deployments.watched(), [None], "still needed");
            assert_eq!(sim.watch_streams().open, 1);
            let dropped = Instant::now();
            drop(second);
            until("the watch closes", || deployments.watched().is_empty()).await;
            assert!(dropped.elapsed() >= grace, "closed before the grace");
            until("the simulator sees the stream end", || {
                sim.watch_streams().open == 0
            })
            .await;
            assert_eq!(sim.watch_streams().peak, 1, "never a second watch");
        }

        #[tokio::test]
        async fn credentials_limited_to_namespaces_get_one_watch_per_namespace_with_rollouts() {
            let sim = Simulator::start().await.expect("the simulator starts");
            let admin = cluster(sim.kubeconfig_yaml(), Duration::from_secs(60)).await;
            let cluster = cluster(
                &sim.namespace_only_kubeconfig_yaml(),
                Duration::from_millis(300),
            )
            .await;
            let pods = &cluster.watches.pods;
            let wake = Arc::new(Notify::new());
            let mut held = Vec::new();
            for name in ["a", "b"] {
                namespace(&admin, name).await;
                held.push(pods.subscribe(name, web(), Arc::clone(&wake)).await);
            }
            held.push(
                pods.subscribe("a", Wants::Everything, Arc::clone(&wake))
                    .await,
            );
            assert_eq!(pods.watched(), [Some("a".to_owned()), Some("b".to_owned())]);
            create_pod(&admin, "b", "web-1", "web").await;
            until("b's watch sees the pod", || {
                pod_names(pods, "b") == ["web-1"]
            })
            .await;
            assert!(pods.read("a", &web()).synced);
            // A store is synced once listed; its watch stream opens right after.
            until("a watch stream per namespace", || {
                sim.watch_streams().open == 2
            })
            .await;
            assert_eq!(
                sim.watch_streams().open,
                2,
                "no cluster-wide stream besides"
            );

            // b's last rollout ends: b's watch closes, a's stays.
            held.remove(1);
            until("b's watch closes", || {
                pods.watched() == [Some("a".to_owned())]
            })
            .await;
        }

        #[tokio::test]
        async fn a_cluster_wide_watch_that_becomes_forbidden_falls_back_to_namespaces() {
            let sim = Simulator::start().await.expect("the simulator starts");
            let cluster = cluster(sim.kubeconfig_yaml(), Duration::from_secs(60)).await;
            let pods = &cluster.watches.pods;
            namespace(&cluster, "a").await;
            create_pod(&cluster, "a", "web-1", "web").await;
            let wake = Arc::new(Notify::new());
            let _held = pods.subscribe("a", web(), Arc::clone(&wake)).await;
            until("the watch lists", || pod_names(pods, "a") == ["web-1"]).await;
            assert_eq!(pods.watched(), [None]);

            // The credentials lose their cluster-wide rights; the stream ends.
            sim.faults().refuse_cluster_wide(true);
            sim.faults().drop_watches();
            until("a watch on the namespace replaces it", || {
                pods.watched() == [Some("a".to_owned())] && pods.read("a", &web()).synced
            })
            .await;
            assert_eq!(pod_names(pods, "a"), ["web-1"], "nothing vanished");
            create_pod(&cluster, "a", "web-2", "web").await;
            until("the namespace watch sees new pods", || {
                pod_names(pods, "a") == ["web-1", "web-2"]
            })
            .await;
        }

        #[tokio::test]
        async fn a_relist_after_410_keeps_the_view_until_the_new_list_and_drops_what_was_deleted() {
            let sim = Simulator::start().await.expect("the simulator starts");
            let cluster = cluster(sim.kubeconfig_yaml(), Duration::from_secs(60)).await;
            let pods = &cluster.watches.pods;
            namespace(&cluster, "a").await;
            create_pod(&cluster, "a", "web-1", "web").await;
            create_pod(&cluster, "a", "web-2", "web").await;
            let wake = Arc::new(Notify::new());
            let _held = pods.subscribe("a", web(), Arc::clone(&wake)).await;
            until("the watch lists", || {
                pod_names(pods, "a") == ["web-1", "web-2"]
            })
            .await;

            // Expire every resourceVersion, end the stream and keep it down while a pod
            // is deleted: the watch must relist, and no reader may see a partial view.
            sim.faults().fail_next(3, 503);
            sim.faults().force_gone();
            let api = Api::<Pod>::namespaced(cluster.client.clone(), "a");
            while let Err(error) = api
                .delete("web-1", &DeleteParams::default().grace_period(0))
                .await
            {
                assert!(
                    matches!(&error, kube::Error::Api(status) if status.code == 503),
                    "{error}"
                );
            }
            let by = Instant::now() + PATIENCE;
            loop {
                let snapshot = pods.read("a", &web());
                assert!(snapshot.synced, "a relist never unsyncs the store");
                let names = pod_names(pods, "a");
                assert!(
                    names == ["web-1", "web-2"] || names == ["web-2"],
                    "a partial or empty view during the relist: {names:?}"
                );
                if names == ["web-2"] {
                    break;
                }
                assert!(Instant::now() < by, "the deletion never showed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
