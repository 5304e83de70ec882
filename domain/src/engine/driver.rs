//! One deployment's driver: the state machine from wherever the deployment is to its
//! verdict, every write fenced by the lease it was claimed with.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Inner, claim_and_drive};
use crate::access::Caller;
use crate::actor::Actor;
use crate::audit::{AuditAction, AuditEntry};
use crate::changes::Change;
use crate::cluster::{
    AppliedResource, RolloutOutcome, RolloutProgress, RolloutRequest, resource_ref_of,
};
use crate::deployment::{
    Deployment, DeploymentId, DeploymentStatus, Diagnostics, FailureReason, NewDeployment,
    ResourceRef, TimelineEntry, Transition,
};
use crate::deployment_plan::now;
use crate::deployment_service::{ClusterHandle, RequestDeploymentError};
use crate::lease::{ClaimedDeployment, Fence};
use crate::observer::VerdictObserved;
use crate::ports::{ClusterError, RepositoryError};

/// How a driver ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It stored the deployment's verdict.
    Finished,
    /// It was told to stop, or found that it may not go on: the deployment ended
    /// elsewhere (a cancel), another replica holds its lease now, or this replica stops.
    Stopped,
    /// The database kept failing past the retry window.
    GaveUp(RepositoryError),
}

/// Writes of one driver: each carries the lease's fence and is retried while the
/// database fails, until the driver's retry window closes.
#[derive(Clone)]
struct Writer {
    inner: Arc<Inner>,
    id: DeploymentId,
    fence: Fence,
    stop: watch::Receiver<bool>,
    give_up_at: Instant,
}

fn entry(phase: DeploymentStatus, message: String, resource: Option<String>) -> TimelineEntry {
    TimelineEntry {
        at: now(),
        phase,
        message,
        resource,
    }
}

impl Writer {
    /// Resolves when the driver must stop.
    async fn stopped(&self) {
        let mut stop = self.stop.clone();
        // A dropped sender means the supervisor forgot this driver: stop too.
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// Runs `write` until it succeeds, retrying database errors with backoff until the
    /// retry window closes or the driver is stopped.
    async fn persist<T, F, Fut>(&self, what: &str, mut write: F) -> Result<T, Ended>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RepositoryError>>,
    {
        let policy = self.inner.settings.database_retry;
        let mut delay = policy.first;
        loop {
            let error = match write().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if Instant::now() + delay > self.give_up_at {
                return Err(Ended::GaveUp(error));
            }
            tracing::warn!(deployment = %self.id, %error, "could not {what}; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stopped() => return Err(Ended::Stopped),
            }
            delay = policy.next(delay);
        }
    }

    /// Appends a timeline line while the lease is ours.
    async fn note(
        &self,
        phase: DeploymentStatus,
        message: String,
        resource: Option<String>,
    ) -> Result<(), Ended> {
        let line = entry(phase, message, resource);
        let appended = self
            .persist("record a timeline line", || {
                self.inner
                    .deployments
                    .append_timeline(self.id, Some(self.fence), &line)
            })
            .await?;
        if !appended {
            return Err(Ended::Stopped);
        }
        self.inner.changes.publish(Change::Deployment {
            id: self.id,
            status: None,
        });
        Ok(())
    }

    /// Moves the deployment on while the lease is ours; a move that did not happen
    /// (cancelled, or taken over) ends the driver.
    async fn step(&self, mut transition: Transition) -> Result<(), Ended> {
        transition.fence = Some(self.fence);
        let moved = self
            .persist("move the deployment on", || {
                self.inner.deployments.transition(self.id, &transition)
            })
            .await?;
        if !moved {
            return Err(Ended::Stopped);
        }
        self.inner.changes.publish(Change::Deployment {
            id: self.id,
            status: Some(transition.to),
        });
        if let Some(follow_up) = &transition.follow_up {
            self.inner.changes.publish(Change::Deployment {
                id: follow_up.deployment.id,
                status: Some(DeploymentStatus::Queued),
            });
        }
        Ok(())
    }

    /// Says why the cluster is tried again, waits `delay` (unless stopped) and lengthens
    /// it for the next time.
    async fn retry_later(
        &self,
        phase: DeploymentStatus,
        message: String,
        delay: &mut std::time::Duration,
    ) -> Result<(), Ended> {
        self.note(phase, message, None).await?;
        tokio::select! {
            () = tokio::time::sleep(*delay) => {}
            () = self.stopped() => return Err(Ended::Stopped),
        }
        *delay = self.inner.settings.cluster_retry.next(*delay);
        Ok(())
    }

    /// Confirms with the storage, extending it, that the lease is still ours: before
    /// every action on a cluster.
    async fn confirm_lease(&self) -> Result<(), Ended> {
        let settings = &self.inner.settings;
        let held = [(self.id, self.fence)];
        let kept = self
            .persist("confirm the lease", || {
                self.inner
                    .leases
                    .renew(&settings.instance, &held, settings.lease_ttl)
            })
            .await?;
        if kept.contains(&self.id) {
            Ok(())
        } else {
            Err(Ended::Stopped)
        }
    }
}

/// How the apply ended, when the driver goes on.
enum Applied {
    /// Applied: the cluster's answer, and what prune keeps.
    Done {
        applied: Vec<AppliedResource>,
        keep: Vec<ResourceRef>,
    },
    /// The deployment has its verdict (refused, or the cluster unreachable until the
    /// deadline).
    Judged,
}

pub(crate) struct Driver {
    writer: Writer,
    /// The deployment as claimed, without what the driver does not need while it
    /// waits: its objects are read again once the driver holds an apply slot of its
    /// cluster and dropped after the apply; its timeline and manifest text are never
    /// read. A burst of a thousand rollouts holds a thousand drivers, and their objects
    /// as parsed JSON were the largest part of them.
    deployment: Deployment,
    /// How many objects the manifest has, for the timeline.
    object_count: usize,
    /// What a verdict names when no object of the manifest is to blame (the first
    /// object, or the service's Deployment).
    placeholder: ResourceRef,
}

fn instant_of(at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - Utc::now()).to_std().unwrap_or_default()
}

impl Driver {
    pub(crate) fn new(
        inner: Arc<Inner>,
        claimed: ClaimedDeployment,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let deadline = claimed.deployment.started_at.map_or_else(
            || now() + chrono_duration(claimed.deployment.options.timeout),
            |_| claimed.deployment.deadline(),
        );
        let give_up_at = instant_of(deadline) + inner.settings.retry_window;
        let mut deployment = claimed.deployment;
        let placeholder = placeholder_resource(&deployment);
        let object_count = deployment.objects.len();
        deployment.objects = Vec::new();
        deployment.timeline = Vec::new();
        deployment.manifest = String::new();
        Self {
            writer: Writer {
                id: deployment.id,
                fence: claimed.fence,
                stop,
                give_up_at,
                inner,
            },
            deployment,
            object_count,
            placeholder,
        }
    }

    pub(crate) async fn run(self) -> Ended {
        match self.drive().await {
            Ok(()) => Ended::Finished,
            Err(ended) => ended,
        }
    }

    /// The deployment's objects as stored, read when the driver is about to apply
    /// them. A deployment gone or ended meanwhile (a cancel) stops the driver.
    async fn objects(&self) -> Result<Vec<serde_json::Value>, Ended> {
        let writer = &self.writer;
        writer
            .persist("read the deployment's objects", || {
                writer.inner.deployments.active_objects(writer.id)
            })
            .await?
            .ok_or(Ended::Stopped)
    }

    async fn drive(&self) -> Result<(), Ended> {
        use DeploymentStatus::{Applying, Failed, RollingOut, Succeeded, TimedOut};
        let writer = &self.writer;
        let inner = &writer.inner;
        let deployment = &self.deployment;
        let id = deployment.id;
        let Some(handle) = inner
            .planner
            .clusters
            .get(&deployment.target.cluster)
            .cloned()
        else {
            let diagnostics = Diagnostics::single(
                self.placeholder.clone(),
                FailureReason::Other,
                format!(
                    "cluster {} is no longer configured",
                    deployment.target.cluster
                ),
            );
            return self
                .finish(Failed, Some(diagnostics), Vec::new(), None)
                .await;
        };
        let started_at = deployment.started_at.unwrap_or_else(now);
        let deadline = deployment.started_at.map_or_else(
            || started_at + chrono_duration(deployment.options.timeout),
            |_| deployment.deadline(),
        );
        // Boxed: the apply's states would otherwise enlarge every waiting driver's future.
        let (applied, keep) = match Box::pin(self.apply(&handle, deadline)).await? {
            Applied::Done { applied, keep } => (applied, keep),
            Applied::Judged => return Ok(()),
        };

        let mut rolling_out = Transition::new(&[Applying, RollingOut], RollingOut, now());
        for resource in &applied {
            let generation = resource
                .generation
                .map(|g| format!(" (generation {g})"))
                .unwrap_or_default();
            rolling_out.entries.push(entry(
                Applying,
                format!("applied {}{generation}", resource.resource),
                Some(resource.resource.to_string()),
            ));
        }
        writer.step(rolling_out).await?;

        // Watch to a verdict, forwarding progress to the timeline as it comes. Past the
        // deadline already (a late start), judge by what the cluster shows now.
        let late = Utc::now() >= deadline;
        if late {
            writer
                .note(
                    RollingOut,
                    format!(
                        "past the deadline: judging by what the cluster shows within {} s",
                        inner.settings.late_check.as_secs()
                    ),
                    None,
                )
                .await?;
        }
        let request = RolloutRequest {
            deployment: id,
            namespace: deployment.target.namespace.clone(),
            resources: applied,
            started_at,
            deadline: if late {
                Utc::now() + chrono_duration(inner.settings.late_check)
            } else {
                deadline
            },
        };
        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward_progress(writer.clone(), progress_rx));
        let mut delay = inner.settings.cluster_retry.first;
        let outcome = loop {
            let watched = tokio::select! {
                outcome = handle.cluster.watch_rollout(&request, progress_tx.clone()) => outcome,
                () = writer.stopped() => {
                    forwarder.abort();
                    return Err(Ended::Stopped);
                }
            };
            match watched {
                Ok(outcome) => break outcome,
                Err(error) if Utc::now() + chrono_duration(delay) < request.deadline => {
                    writer
                        .retry_later(
                            RollingOut,
                            format!("lost the cluster while watching, retrying: {error}"),
                            &mut delay,
                        )
                        .await?;
                }
                Err(error) => {
                    break RolloutOutcome::TimedOut(Diagnostics::single(
                        self.placeholder.clone(),
                        FailureReason::TimedOut,
                        format!("the cluster stayed unreachable until the deadline: {error}"),
                    ));
                }
            }
        };
        let watch_ended = Instant::now();
        drop(progress_tx);
        // Progress lines go before the verdict's.
        if let Ok(Err(ended)) = forwarder.await {
            return Err(ended);
        }

        match outcome {
            RolloutOutcome::Succeeded { warnings } => {
                let mut lines: Vec<TimelineEntry> = warnings
                    .into_iter()
                    .map(|warning| entry(RollingOut, format!("warning: {warning}"), None))
                    .collect();
                if deployment.options.prune {
                    writer.confirm_lease().await?;
                    match handle
                        .cluster
                        .prune(&deployment.target.namespace, &deployment.service, &keep)
                        .await
                    {
                        Ok(pruned) => lines.extend(pruned.into_iter().map(|resource| {
                            entry(
                                RollingOut,
                                format!("pruned {resource}"),
                                Some(resource.to_string()),
                            )
                        })),
                        Err(error) => lines.push(entry(
                            RollingOut,
                            format!("warning: prune failed: {error}"),
                            None,
                        )),
                    }
                }
                lines.push(entry(Succeeded, "rolled out".to_owned(), None));
                self.finish(Succeeded, None, lines, Some(watch_ended)).await
            }
            RolloutOutcome::Failed(diagnostics) => {
                let line = entry(Failed, format!("failed: {}", headline(&diagnostics)), None);
                self.finish(Failed, Some(diagnostics), vec![line], Some(watch_ended))
                    .await
            }
            RolloutOutcome::TimedOut(diagnostics) => {
                let line = entry(
                    TimedOut,
                    format!("timed out: {}", headline(&diagnostics)),
                    None,
                );
                self.finish(TimedOut, Some(diagnostics), vec![line], Some(watch_ended))
                    .await
            }
        }
    }

    /// Moves the deployment to `applying` (or notes that it resumes) and applies its
    /// objects, retrying while the cluster is unreachable and time remains. A refusal
    /// or the deadline stores the verdict.
    async fn apply(
        &self,
        handle: &ClusterHandle,
        deadline: DateTime<Utc>,
    ) -> Result<Applied, Ended> {
        use DeploymentStatus::{Applying, Failed, Queued, TimedOut};
        let writer = &self.writer;
        let inner = &writer.inner;
        let deployment = &self.deployment;
        let applying = format!(
            "applying {} objects to {} (driven by {})",
            self.object_count, deployment.target, inner.settings.instance
        );
        if deployment.status == Queued {
            let mut start = Transition::new(&[Queued], Applying, now());
            start.entries.push(entry(Applying, applying, None));
            writer.step(start).await?;
            inner.observer.started(&deployment.target);
        } else {
            writer
                .note(
                    deployment.status,
                    format!(
                        "resumed by {} (lease {}): applying its objects again",
                        inner.settings.instance, writer.fence
                    ),
                    None,
                )
                .await?;
        }

        // Apply, retrying while the cluster is unreachable and time remains. The objects
        // are read in one of the cluster's apply slots and let go with it, also between
        // attempts.
        let mut delay = inner.settings.cluster_retry.first;
        loop {
            let slot = tokio::select! {
                slot = inner.apply_slot(&deployment.target.cluster) => slot,
                () = writer.stopped() => return Err(Ended::Stopped),
            };
            let Some(slot) = slot else {
                return Err(Ended::Stopped);
            };
            let objects = self.objects().await?;
            writer.confirm_lease().await?;
            let attempt = tokio::select! {
                result = handle.cluster.apply(&objects) => result,
                () = writer.stopped() => return Err(Ended::Stopped),
            };
            match attempt {
                Ok(applied) => {
                    // What prune keeps; the objects themselves are not needed any more.
                    let keep: Vec<ResourceRef> = objects.iter().map(resource_ref_of).collect();
                    return Ok(Applied::Done { applied, keep });
                }
                Err(ClusterError::Rejected { resource, message }) => {
                    let resource_ref = objects
                        .iter()
                        .map(resource_ref_of)
                        .find(|r| r.to_string() == resource)
                        .unwrap_or_else(|| self.placeholder.clone());
                    let diagnostics = Diagnostics::single(
                        resource_ref,
                        FailureReason::ApplyRejected,
                        message.clone(),
                    );
                    let refused = entry(
                        Applying,
                        format!("the cluster refused {resource}: {message}"),
                        Some(resource),
                    );
                    self.finish(Failed, Some(diagnostics), vec![refused], None)
                        .await?;
                    return Ok(Applied::Judged);
                }
                Err(ClusterError::Unavailable(message)) => {
                    drop((objects, slot));
                    if Utc::now() + chrono_duration(delay) >= deadline {
                        let diagnostics = Diagnostics::single(
                            self.placeholder.clone(),
                            FailureReason::TimedOut,
                            format!("the cluster stayed unreachable until the deadline: {message}"),
                        );
                        self.finish(TimedOut, Some(diagnostics), Vec::new(), None)
                            .await?;
                        return Ok(Applied::Judged);
                    }
                    writer
                        .retry_later(
                            Applying,
                            format!("the cluster is unreachable, retrying: {message}"),
                            &mut delay,
                        )
                        .await?;
                }
            }
        }
    }

    /// Stores the verdict with its timeline lines, its audit record and, after a
    /// failure with `rollback_on_failure`, the rollback it starts: all in one
    /// transaction, so a verdict is never stored without its rollback or twice.
    /// `watch_ended` is when the rollout's watch ended, if one ran (for the observer).
    async fn finish(
        &self,
        verdict: DeploymentStatus,
        diagnostics: Option<Diagnostics>,
        entries: Vec<TimelineEntry>,
        watch_ended: Option<Instant>,
    ) -> Result<(), Ended> {
        // Boxed: a rollback's planning makes this future large, and inline it would
        // enlarge every waiting driver's future by as much, a thousand times over in a
        // burst of deploys.
        Box::pin(self.store_verdict(verdict, diagnostics, entries, watch_ended)).await
    }

    async fn store_verdict(
        &self,
        verdict: DeploymentStatus,
        diagnostics: Option<Diagnostics>,
        mut entries: Vec<TimelineEntry>,
        watch_ended: Option<Instant>,
    ) -> Result<(), Ended> {
        let writer = &self.writer;
        let inner = &writer.inner;
        let deployment = &self.deployment;
        // The verdict's own line, whatever ended the rollout; a rollback's follows it.
        if !entries.iter().any(|e| e.phase == verdict) {
            let said = match diagnostics.as_ref() {
                Some(diagnostics) => format!("{verdict}: {}", headline(diagnostics)),
                None => verdict.to_string(),
            };
            entries.push(entry(verdict, said.replacen('_', " ", 1), None));
        }
        let mut follow_up: Option<NewDeployment> = None;
        if verdict != DeploymentStatus::Succeeded && deployment.options.rollback_on_failure {
            let caller = Caller::system("kubernaut (rollback on failure)");
            let planned = writer
                .persist("plan the automatic rollback", || async {
                    match inner
                        .planner
                        .plan_rollback(inner.deployments.as_ref(), deployment, &caller)
                        .await
                    {
                        Err(RequestDeploymentError::Repository(error)) => Err(error),
                        other => Ok(other),
                    }
                })
                .await?;
            match planned {
                Ok(rollback) => {
                    entries.push(entry(
                        verdict,
                        format!(
                            "rolling back to {} {} in deployment {}",
                            rollback.deployment.service,
                            rollback.deployment.version,
                            rollback.deployment.id
                        ),
                        None,
                    ));
                    follow_up = Some(rollback);
                }
                Err(error) => {
                    entries.push(entry(
                        verdict,
                        format!("no automatic rollback: {error}"),
                        None,
                    ));
                }
            }
        }
        let rollback_id = follow_up.as_ref().map(|f| f.deployment.id);
        let reason = diagnostics
            .as_ref()
            .and_then(|d| d.resources.first())
            .map(|resource| resource.reason);
        let mut transition = Transition::new(&DeploymentStatus::ACTIVE, verdict, now());
        transition.audit = Some(finished(deployment.id, verdict, diagnostics.as_ref()));
        transition.diagnostics = diagnostics;
        transition.entries = entries;
        transition.follow_up = follow_up.map(Box::new);
        writer.step(transition).await?;
        inner.observer.finished(&VerdictObserved {
            target: &deployment.target,
            verdict,
            reason,
            since_request: (Utc::now() - deployment.created_at)
                .to_std()
                .unwrap_or_default(),
            since_rollout_end: watch_ended.map(|ended| ended.elapsed()),
        });
        if let Some(rollback) = rollback_id {
            // Drive the rollback from here at once; the supervisors would find it too.
            claim_and_drive(inner, rollback).await;
        }
        Ok(())
    }
}

/// Writes the rollout's progress lines in order, retrying while the database fails,
/// without holding up the watch.
async fn forward_progress(
    writer: Writer,
    mut progress: mpsc::UnboundedReceiver<RolloutProgress>,
) -> Result<(), Ended> {
    while let Some(progress) = progress.recv().await {
        writer
            .note(
                DeploymentStatus::RollingOut,
                progress.message,
                progress.resource,
            )
            .await?;
    }
    Ok(())
}

/// The audit record of a deployment reaching `verdict`, decided by Kubernaut itself.
fn finished(
    id: DeploymentId,
    verdict: DeploymentStatus,
    diagnostics: Option<&Diagnostics>,
) -> AuditEntry {
    AuditEntry::new(
        Actor::named("kubernaut"),
        AuditAction::DeploymentFinished,
        format!("deployment/{id}"),
        None,
        None,
        serde_json::json!({
            "status": verdict.to_string(),
            "reason": diagnostics.map(headline),
        }),
    )
}

pub(crate) fn chrono_duration(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or_else(|_| chrono::Duration::seconds(600))
}

fn headline(diagnostics: &Diagnostics) -> String {
    diagnostics
        .resources
        .first()
        .map(|r| format!("{} {}: {}", r.resource, r.reason, r.message))
        .unwrap_or_else(|| "no diagnosis".to_owned())
}

fn placeholder_resource(deployment: &Deployment) -> ResourceRef {
    deployment
        .objects
        .first()
        .map(resource_ref_of)
        .unwrap_or_else(|| ResourceRef {
            api_version: String::new(),
            kind: "Deployment".into(),
            name: deployment.service.to_string(),
            namespace: Some(deployment.target.namespace.to_string()),
        })
}
