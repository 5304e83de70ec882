//! What a pod of the new revision tells about the rollout: doomed, unschedulable,
//! running but failing its readiness probe, or on its way.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kubernaut_domain::deployment::FailureReason;

/// A container whose logs belong in the diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailingContainer {
    pub pod: String,
    pub container: String,
    /// The container exited and was restarted: its current run may have written
    /// nothing yet, so the previous run's logs are wanted.
    pub restarted: bool,
}

/// Why a pod will never become ready without a change to the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doom {
    pub reason: FailureReason,
    pub message: String,
    pub containers: Vec<FailingContainer>,
}

/// How strict the doom rules are: a Job's pods fail and are retried as part of the
/// Job's own rules, so only what no retry can fix dooms them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    Service,
    Batch,
}

pub(crate) fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn all_container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status.iter().flat_map(|status| {
        status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
    })
}

/// Whether a pull failure's message says the registry has no such image.
pub(crate) fn says_not_found(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    // Not "repository does not exist": registries say so also for a private
    // repository without credentials ("... or may require authorization").
    ["not found", "manifest unknown"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// Whether the pod is doomed (krane's rules), and why.
pub(crate) fn doom(pod: &Pod, rules: Rules) -> Option<Doom> {
    let pod_name = name(pod);
    for status in all_container_statuses(pod) {
        let failing = |restarted: bool| {
            vec![FailingContainer {
                pod: pod_name.clone(),
                container: status.name.clone(),
                restarted,
            }]
        };
        let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
        let reason = waiting
            .and_then(|w| w.reason.as_deref())
            .unwrap_or_default();
        let message = waiting
            .and_then(|w| w.message.as_deref())
            .unwrap_or_default();
        let found = match reason {
            "CrashLoopBackOff" if rules == Rules::Service => {
                let last = status
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| {
                        format!(
                            " (last exit code {}{})",
                            t.exit_code,
                            t.reason
                                .as_deref()
                                .map(|r| format!(", {r}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                Some((
                    FailureReason::CrashLoop,
                    format!(
                        "container {} of pod {pod_name} is crash looping{last}",
                        status.name
                    ),
                    failing(true),
                ))
            }
            "ErrImagePull" | "ImagePullBackOff" if says_not_found(message) => Some((
                FailureReason::ImageNotFound,
                format!(
                    "image {} of pod {pod_name} was not found: {message}",
                    status.image
                ),
                Vec::new(),
            )),
            // A first failed pull may be a passing registry hiccup; a back-off means
            // the kubelet has failed it again.
            "ImagePullBackOff" => Some((
                FailureReason::ImagePullFailed,
                format!(
                    "image {} of pod {pod_name} cannot be pulled: {message}",
                    status.image
                ),
                Vec::new(),
            )),
            "CreateContainerConfigError"
                if !(message.contains("failed to sync") && message.contains("cache")) =>
            {
                Some((
                    FailureReason::ContainerConfigError,
                    format!(
                        "container {} of pod {pod_name} is misconfigured: {message}",
                        status.name
                    ),
                    Vec::new(),
                ))
            }
            _ => None,
        };
        if let Some((reason, message, containers)) = found {
            return Some(Doom {
                reason,
                message,
                containers,
            });
        }
        let cannot_run = [status.state.as_ref(), status.last_state.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| s.terminated.as_ref())
            .find(|t| t.reason.as_deref() == Some("ContainerCannotRun") && t.exit_code != 128);
        if let Some(terminated) = cannot_run {
            return Some(Doom {
                reason: FailureReason::ContainerCannotRun,
                message: format!(
                    "container {} of pod {pod_name} cannot run: {}",
                    status.name,
                    terminated.message.as_deref().unwrap_or_default()
                ),
                containers: failing(false),
            });
        }
    }
    let status = pod.status.as_ref()?;
    let evicted = matches!(status.reason.as_deref(), Some("Evicted" | "Preempting"));
    if rules == Rules::Service && status.phase.as_deref() == Some("Failed") && !evicted {
        return Some(Doom {
            reason: FailureReason::PodFailed,
            message: format!(
                "pod {pod_name} failed{}",
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            containers: exited_containers(pod),
        });
    }
    None
}

/// The containers of a pod that exited with an error (or restarted after one).
pub(crate) fn exited_containers(pod: &Pod) -> Vec<FailingContainer> {
    all_container_statuses(pod)
        .filter_map(|status| {
            let exited = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                s.and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code != 0)
            };
            if exited(status.state.as_ref()) {
                Some((status, false))
            } else if exited(status.last_state.as_ref()) {
                Some((status, true))
            } else {
                None
            }
        })
        .map(|(status, restarted)| FailingContainer {
            pod: name(pod),
            container: status.name.clone(),
            restarted,
        })
        .collect()
}

/// Containers of a pod that are not ready, for the diagnostics of a timeout.
pub(crate) fn unready_containers(pod: &Pod) -> Vec<FailingContainer> {
    all_container_statuses(pod)
        .filter(|status| !status.ready)
        .map(|status| FailingContainer {
            pod: name(pod),
            container: status.name.clone(),
            restarted: status.restart_count > 0,
        })
        .collect()
}

/// The scheduler's message when it found no node for the pod.
pub(crate) fn unschedulable(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .filter(|c| c.reason.as_deref() == Some("Unschedulable"))
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| "no node fits".to_owned())
        })
}

/// Whether every container runs and the pod is still not ready: what a failing
/// readiness probe looks like.
pub(crate) fn running_unready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let all_running = status
        .container_statuses
        .iter()
        .flatten()
        .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()) && !c.ready);
    status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .as_ref()
            .is_some_and(|c| !c.is_empty())
        && all_running
        && !is_ready(pod)
}

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A short state of the pod worth a timeline line, when it is not simply starting.
pub(crate) fn notable_state(pod: &Pod) -> Option<String> {
    if unschedulable(pod).is_some() {
        return Some("Unschedulable".to_owned());
    }
    if let Some(reason) = all_container_statuses(pod)
        .filter_map(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|r| !matches!(r.as_str(), "ContainerCreating" | "PodInitializing"))
    {
        return Some(reason);
    }
    let phase = pod.status.as_ref()?.phase.as_deref()?;
    if phase == "Failed" {
        return Some("Failed".to_owned());
    }
    None
}

/// Whether the pod's controller is the object with this uid.
pub(crate) fn controlled_by(
    pod_meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    pod_meta
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

pub(crate) fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1"},
            "status": status,
        }))
        .expect("a pod")
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "web", "image": "web:2", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}))
    }

    #[test]
    fn a_crash_loop_dooms_a_service_pod_but_not_a_job_pod() {
        let crashing = waiting("CrashLoopBackOff", "back-off 10s");
        let doom = doom(&crashing, Rules::Service).expect("doomed");
        assert_eq!(doom.reason, FailureReason::CrashLoop);
        assert!(doom.containers[0].restarted);
        assert!(super::doom(&crashing, Rules::Batch).is_none());
    }

    #[test]
    fn pull_failures_are_told_apart_by_the_registry_message() {
        let missing = waiting(
            "ErrImagePull",
            "failed to resolve reference: web:2: not found",
        );
        assert_eq!(
            doom(&missing, Rules::Service).map(|d| d.reason),
            Some(FailureReason::ImageNotFound)
        );
        let first_failure = waiting("ErrImagePull", "i/o timeout");
        assert!(doom(&first_failure, Rules::Service).is_none());
        let denied = waiting(
            "ErrImagePull",
            "pull access denied, repository does not exist or may require authorization",
        );
        assert!(doom(&denied, Rules::Service).is_none());
        let backing_off = waiting("ImagePullBackOff", "unauthorized");
        assert_eq!(
            doom(&backing_off, Rules::Batch).map(|d| d.reason),
            Some(FailureReason::ImagePullFailed)
        );
    }

    #[test]
    fn a_config_error_dooms_unless_it_is_a_cache_still_syncing() {
        let missing = waiting("CreateContainerConfigError", "secret \"db\" not found");
        assert_eq!(
            doom(&missing, Rules::Service).map(|d| d.reason),
            Some(FailureReason::ContainerConfigError)
        );
        let syncing = waiting(
            "CreateContainerConfigError",
            "failed to sync secret cache: timed out waiting for the condition",
        );
        assert!(doom(&syncing, Rules::Service).is_none());
    }

    #[test]
    fn failed_pods_are_doomed_unless_evicted() {
        let failed = pod(json!({"phase": "Failed"}));
        assert_eq!(
            doom(&failed, Rules::Service).map(|d| d.reason),
            Some(FailureReason::PodFailed)
        );
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert!(doom(&evicted, Rules::Service).is_none());
    }

    #[test]
    fn a_starting_pod_is_not_doomed() {
        let starting = waiting("ContainerCreating", "");
        assert!(doom(&starting, Rules::Service).is_none());
        assert!(notable_state(&starting).is_none());
    }
}
