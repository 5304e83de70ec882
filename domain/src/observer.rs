//! What the engine tells whoever counts: a port with plain callbacks, so the domain
//! knows nothing of Prometheus (the API crate implements it with `prometheus-client`).

use std::time::Duration;

use crate::deployment::{DeploymentStatus, FailureReason, Target};

/// A verdict the engine of this replica just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictObserved<'a> {
    pub target: &'a Target,
    /// `succeeded`, `failed` or `timed_out`.
    pub verdict: DeploymentStatus,
    /// Why it failed (the first diagnosed resource's reason); `None` after a success.
    pub reason: Option<FailureReason>,
    /// From the request (the deployment's `created_at`) to the verdict being stored.
    pub since_request: Duration,
    /// From the moment the rollout's watch ended (the cluster showed the outcome, or the
    /// deadline passed) to the verdict being stored: pruning, planning an automatic
    /// rollback and the database write. `None` when no watch ran (the cluster refused
    /// the manifest, stayed unreachable or is no longer configured).
    pub since_rollout_end: Option<Duration>,
}

/// Told of what the engine does, by the engine's drivers. Implementations must be
/// cheap and must not block: they run on the drivers' tasks.
pub trait DeploymentObserver: Send + Sync + std::fmt::Debug {
    /// A driver of this replica began a deployment's rollout (`queued` -> `applying`).
    /// A deployment resumed by another replica after a takeover is not counted again.
    fn started(&self, target: &Target);

    /// A driver of this replica stored a deployment's verdict.
    fn finished(&self, verdict: &VerdictObserved<'_>);
}

/// Counts nothing: the engine's observer unless one is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl DeploymentObserver for NoObserver {
    fn started(&self, _: &Target) {}

    fn finished(&self, _: &VerdictObserved<'_>) {}
}
