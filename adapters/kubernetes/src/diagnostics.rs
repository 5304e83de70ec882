//! What a failed or timed-out rollout leaves for people to read: the events of the
//! resource and its new pods since the deploy started, and the last log lines of each
//! failing container.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};

use kubernaut_domain::deployment::{
    ContainerLogs, Diagnostics, EventRecord, FailureReason, ResourceDiagnosis, ResourceRef,
};

use crate::KubernetesCluster;
use crate::failures::retrying;
use crate::rollout::pods::{self, FailingContainer};

/// At most this many objects' events and containers' logs per resource: a rollout of
/// 50 crash-looping pods says the same thing 50 times.
const MAX_OBJECTS: usize = 10;
const MAX_CONTAINERS: usize = 5;

/// How long reading events and logs may take in all: a cluster that stopped answering
/// must not hold the verdict back by the retries of every read.
const BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// One resource to diagnose, with the objects and containers that tell why.
#[derive(Debug)]
pub(crate) struct Subject {
    pub resource: ResourceRef,
    pub reason: FailureReason,
    pub message: String,
    pub related: Vec<String>,
    pub containers: Vec<FailingContainer>,
}

pub(crate) async fn gather(
    cluster: &KubernetesCluster,
    namespace: &str,
    started_at: DateTime<Utc>,
    subjects: Vec<Subject>,
) -> Diagnostics {
    let budget_end = tokio::time::Instant::now() + BUDGET;
    let mut resources = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let mut names = vec![subject.resource.name.clone()];
        for name in subject.related {
            if !names.contains(&name) && names.len() <= MAX_OBJECTS {
                names.push(name);
            }
        }
        let mut events = Vec::new();
        for name in &names {
            if let Ok(found) =
                tokio::time::timeout_at(budget_end, events_of(cluster, namespace, name, started_at))
                    .await
            {
                events.extend(found);
            }
        }
        events.sort_by_key(|e| e.at);
        let mut logs = Vec::new();
        let mut seen = Vec::new();
        for container in subject.containers {
            let key = (container.pod.clone(), container.container.clone());
            if seen.contains(&key) || seen.len() >= MAX_CONTAINERS {
                continue;
            }
            seen.push(key);
            if let Ok(Some(lines)) =
                tokio::time::timeout_at(budget_end, logs_of(cluster, namespace, &container)).await
            {
                logs.push(ContainerLogs {
                    pod: container.pod,
                    container: container.container,
                    lines,
                });
            }
        }
        // A pod first seen in `ImagePullBackOff` shows only "Back-off pulling image";
        // the kubelet's events still say whether the registry lacked the image.
        let reason = if subject.reason == FailureReason::ImagePullFailed
            && events.iter().any(|e| {
                e.reason == "Failed"
                    && e.message.to_ascii_lowercase().contains("image")
                    && pods::says_not_found(&e.message)
            }) {
            FailureReason::ImageNotFound
        } else {
            subject.reason
        };
        resources.push(ResourceDiagnosis {
            resource: subject.resource,
            reason,
            message: subject.message,
            events,
            logs,
        });
    }
    Diagnostics { resources }
}

fn to_chrono(time: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        time.as_second(),
        u32::try_from(time.subsec_nanosecond()).unwrap_or(0),
    )
}

/// When the event last happened, as well as the event says.
pub(crate) fn event_time(event: &Event) -> Option<DateTime<Utc>> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .and_then(to_chrono)
}

/// Whether an event belongs to this deploy. Event times have whole seconds, so the
/// second the deploy started in counts as after it.
pub(crate) fn since(event: &Event, started_at: DateTime<Utc>) -> bool {
    let floor = DateTime::from_timestamp(started_at.timestamp(), 0).unwrap_or(started_at);
    event_time(event).is_none_or(|at| at >= floor)
}

async fn events_of(
    cluster: &KubernetesCluster,
    namespace: &str,
    name: &str,
    started_at: DateTime<Utc>,
) -> Vec<EventRecord> {
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
    match retrying(&cluster.settings, || api.list(&params)).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|e| since(e, started_at))
            .map(|e| EventRecord {
                at: event_time(&e),
                event_type: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    e.involved_object.kind.as_deref().unwrap_or_default(),
                    e.involved_object.name.as_deref().unwrap_or(name)
                ),
                count: e.count.unwrap_or(1),
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, object = name, "could not list events for the diagnostics");
            Vec::new()
        }
    }
}

/// The last lines of a container: of its current run, or of the previous run when it
/// restarted and its current run wrote nothing (yet).
async fn logs_of(
    cluster: &KubernetesCluster,
    namespace: &str,
    container: &FailingContainer,
) -> Option<Vec<String>> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let tail = i64::try_from(Diagnostics::LOG_LINES).unwrap_or(25);
    let params = |previous: bool| LogParams {
        container: Some(container.container.clone()),
        tail_lines: Some(tail),
        previous,
        ..LogParams::default()
    };
    let current_params = params(false);
    let current = retrying(&cluster.settings, || {
        api.logs(&container.pod, &current_params)
    })
    .await
    .ok()
    .filter(|text| !text.trim().is_empty());
    let text = match current {
        Some(text) => Some(text),
        None if container.restarted => {
            let previous_params = params(true);
            retrying(&cluster.settings, || {
                api.logs(&container.pod, &previous_params)
            })
            .await
            .map_err(|error| {
                tracing::warn!(%error, pod = %container.pod, "could not read the logs for the diagnostics");
            })
            .ok()
        }
        None => None,
    }?;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let skip = lines.len().saturating_sub(Diagnostics::LOG_LINES);
    Some(lines.into_iter().skip(skip).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event_at(time: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "lastTimestamp": time,
        }))
        .expect("an event")
    }

    #[test]
    fn events_of_the_second_the_deploy_started_in_count_and_earlier_ones_do_not() {
        let started_at = DateTime::parse_from_rfc3339("2026-11-24T15:00:00.700Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert!(since(&event_at("2026-11-24T15:00:00Z"), started_at));
        assert!(since(&event_at("2026-11-24T15:00:05Z"), started_at));
        assert!(!since(&event_at("2026-11-24T14:59:59Z"), started_at));
    }
}
