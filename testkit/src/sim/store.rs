//! The object store: objects by type, namespace and name, a global resourceVersion
//! counter, and a bounded history of changes that watches are served from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::Resource;

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change to one object, as kept in the history.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub kind: &'static str,
    pub event_type: EventType,
    pub object: Value,
    /// The object before the change, to tell watchers with selectors that it left their view.
    pub old: Option<Value>,
}

pub(crate) type ObjectKey = (String, String);

/// All stored objects.
#[derive(Debug)]
pub(crate) struct Store {
    objects: HashMap<&'static str, BTreeMap<ObjectKey, Value>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches must start at or after this resourceVersion; older ones are `Expired`.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn without_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(mf) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
            for entry in mf {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    v
}

fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            objects: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit,
            compacted: 1,
            tx,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Changes after `rv`, oldest first.
    pub fn changes_since(&self, rv: u64) -> Vec<Arc<Change>> {
        self.history.iter().filter(|c| c.rv > rv).cloned().collect()
    }

    /// Forgets all history, so every resourceVersion handed out so far is too old to watch from.
    pub fn compact_all(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
    }

    pub fn get(&self, r: &Resource, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(r.key)
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
    }

    /// Objects of a type, in one namespace or all, ordered by namespace and name.
    pub fn list(&self, r: &Resource, ns: Option<&str>) -> Vec<&Value> {
        match self.objects.get(r.key) {
            None => Vec::new(),
            Some(m) => match ns {
                None => m.values().collect(),
                Some(ns) => m
                    .range((ns.to_owned(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v)
                    .collect(),
            },
        }
    }

    pub fn list_owned(&self, r: &Resource, ns: Option<&str>) -> Vec<Value> {
        self.list(r, ns).into_iter().cloned().collect()
    }

    fn record(
        &mut self,
        kind: &'static str,
        event_type: EventType,
        object: Value,
        old: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            event_type,
            object,
            old,
        });
        self.history.push_back(Arc::clone(&change));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // Nobody listening is fine.
        let _ = self.tx.send(change);
    }

    /// Stores a new object, filling the server-owned metadata.
    pub fn insert_new(&mut self, r: &'static Resource, mut obj: Value) -> Value {
        self.rv += 1;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        let meta = &mut obj["metadata"];
        if meta
            .get("uid")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
        meta["creationTimestamp"] = json!(now_rfc3339());
        if r.has_generation {
            meta["generation"] = json!(1);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("generation");
        }
        self.objects
            .entry(r.key)
            .or_default()
            .insert((ns, name), obj.clone());
        self.record(r.key, EventType::Added, obj.clone(), None);
        obj
    }

    /// Replaces a stored object. Keeps identity fields, bumps `generation` when anything
    /// outside metadata and status changed, and does nothing when nothing changed.
    pub fn replace(&mut self, r: &'static Resource, mut obj: Value) -> Option<Value> {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let key = (ns, name);
        let old = self.objects.get(r.key)?.get(&key)?.clone();
        for field in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            match old["metadata"].get(field) {
                Some(v) => obj["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        if without_volatile(&obj) == without_volatile(&old) {
            return Some(old);
        }
        if r.has_generation && spec_part(&obj) != spec_part(&old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects
            .entry(r.key)
            .or_default()
            .insert(key, obj.clone());
        self.record(r.key, EventType::Modified, obj.clone(), Some(old));
        Some(obj)
    }

    /// Removes an object; the DELETED event carries a fresh resourceVersion.
    pub fn remove(&mut self, r: &'static Resource, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(r.key)?
            .remove(&(ns.to_owned(), name.to_owned()))?;
        self.rv += 1;
        let old = obj.clone();
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(r.key, EventType::Deleted, obj.clone(), Some(old));
        Some(obj)
    }

    /// Every stored object, for garbage collection.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.objects
            .iter()
            .flat_map(|(kind, m)| m.values().map(move |v| (*kind, v)))
    }
}
