use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A Kubernetes object, named by kind and name (and namespace when it has one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    /// `apiVersion` as Kubernetes spells it; `api_version` (the name before 2026-12)
    /// is still read, for stored diagnostics and older clients.
    #[serde(rename = "apiVersion", alias = "api_version")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Why a resource failed its rollout, in the words CI and people act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Containers start and exit again and again (`CrashLoopBackOff`).
    CrashLoop,
    /// The image does not exist in its registry.
    ImageNotFound,
    /// The image could not be pulled for another reason (auth, network).
    ImagePullFailed,
    /// The container's configuration is broken (missing ConfigMap, Secret, ...).
    ContainerConfigError,
    /// The container runtime could not start the container.
    ContainerCannotRun,
    /// A readiness (or startup) probe keeps failing, so pods never become ready.
    FailedProbe,
    /// No node can take the pods.
    Unschedulable,
    /// Pods of the new revision ended in phase `Failed`.
    PodFailed,
    /// A Job ran out of retries.
    JobFailed,
    /// Kubernetes reported `ProgressDeadlineExceeded` for this rollout.
    ProgressDeadlineExceeded,
    /// The API server refused the manifest.
    ApplyRejected,
    /// The rollout did not finish before the deployment's deadline.
    TimedOut,
    /// Cancelled by a person or a superseding request.
    Cancelled,
    /// Anything else; the message says what.
    Other,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrashLoop => "crash_loop",
            Self::ImageNotFound => "image_not_found",
            Self::ImagePullFailed => "image_pull_failed",
            Self::ContainerConfigError => "container_config_error",
            Self::ContainerCannotRun => "container_cannot_run",
            Self::FailedProbe => "failed_probe",
            Self::Unschedulable => "unschedulable",
            Self::PodFailed => "pod_failed",
            Self::JobFailed => "job_failed",
            Self::ProgressDeadlineExceeded => "progress_deadline_exceeded",
            Self::ApplyRejected => "apply_rejected",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes event about one of the rollout's objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub at: Option<DateTime<Utc>>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
    pub message: String,
    /// The object the event is about, as `Kind/name`.
    pub object: String,
    pub count: i32,
}

/// The last lines a failing container wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLogs {
    pub pod: String,
    pub container: String,
    pub lines: Vec<String>,
}

/// What went wrong with one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDiagnosis {
    pub resource: ResourceRef,
    pub reason: FailureReason,
    pub message: String,
    /// Events of the resource and its new pods since the deploy started.
    #[serde(default)]
    pub events: Vec<EventRecord>,
    /// The last log lines (at most [`Diagnostics::LOG_LINES`]) of each failing container.
    #[serde(default)]
    pub logs: Vec<ContainerLogs>,
}

/// Why a deployment failed or timed out, resource by resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Diagnostics {
    pub resources: Vec<ResourceDiagnosis>,
}

impl Diagnostics {
    /// How many log lines of each failing container are kept.
    pub const LOG_LINES: usize = 25;

    pub fn single(
        resource: ResourceRef,
        reason: FailureReason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            resources: vec![ResourceDiagnosis {
                resource,
                reason,
                message: message.into(),
                events: Vec::new(),
                logs: Vec::new(),
            }],
        }
    }

    /// The reason of the first diagnosed resource: the headline of the failure.
    pub fn primary_reason(&self) -> Option<FailureReason> {
        self.resources.first().map(|r| r.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_reference_says_api_version_and_still_reads_the_old_name() {
        let reference = ResourceRef {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            name: "web".to_owned(),
            namespace: None,
        };
        let json = serde_json::to_value(&reference).expect("JSON");
        assert_eq!(json["apiVersion"], "apps/v1");
        assert!(json.get("api_version").is_none(), "{json}");
        let old: ResourceRef = serde_json::from_value(
            serde_json::json!({"api_version": "apps/v1", "kind": "Deployment", "name": "web"}),
        )
        .expect("the old name is read");
        assert_eq!(old, reference);
    }
}
