//! The deployment engine: drives every active deployment to its verdict, on whichever
//! replica holds its lease.
//!
//! - A **supervisor** runs in every replica for as long as it serves. It claims active
//!   deployments whose lease is free or expired (every `claim_interval`, and at once
//!   when it hears of a new deployment), renews the leases it holds (every third of
//!   the TTL), and stops a driver as soon as its deployment ends elsewhere (a cancel
//!   through another replica) or its lease is lost.
//! - A **driver** per claimed deployment runs the state machine (`queued` ->
//!   `applying` -> `rolling_out` -> verdict). Every write it makes carries its lease's
//!   [`Fence`], so a driver that was paused or cut off while another replica took over
//!   changes nothing; before every action on a cluster (apply, prune) it confirms its
//!   lease with the storage.
//! - **Retries** are written once ([`RetryPolicy`]): a database error never ends a
//!   rollout; the driver keeps its watch and retries its writes with backoff until
//!   `retry_window` after the deadline.
//!
//! A replica that stops gracefully gives its leases back at once; one that dies has its
//! deployments claimed by another when their leases expire (the TTL).

mod driver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::time::Instant;

use crate::changes::{Change, ChangeFeed};
use crate::deployment::{ClusterName, DeploymentId, DeploymentStatus};
use crate::deployment_plan::Planner;
use crate::lease::{ClaimedDeployment, Fence, InstanceId};
use crate::observer::DeploymentObserver;
use crate::ports::{DeploymentRepository, LeaseRepository};

/// Backoff between retries: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay after `delay`.
    pub fn next(&self, delay: Duration) -> Duration {
        (delay * 2).min(self.max)
    }
}

/// How the engine runs; [`EngineSettings::default`] is what `kubernaut serve` uses
/// unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// This replica, as named in the leases it holds.
    pub instance: InstanceId,
    /// How long a lease lasts without a heartbeat; a dead replica's deployments are
    /// driven on by another this long after its last heartbeat. Renewed every third.
    pub lease_ttl: Duration,
    /// How often the supervisor looks for deployments with a free or expired lease.
    pub claim_interval: Duration,
    /// The most deployments this replica drives at once.
    pub max_drivers: usize,
    /// The most deployments this replica applies to one cluster at once. A driver
    /// reads its objects from the storage only once it holds one of these slots and
    /// lets them go after the apply, so a burst of a thousand deploys holds at most
    /// this many manifests per cluster in memory. Set it to the cluster's own bound on
    /// requests in flight (`max_requests`, 64 by default): more slots would only wait
    /// there, holding their objects.
    pub max_applying: usize,
    /// Retries of an unreachable cluster (and of a lost watch).
    pub cluster_retry: RetryPolicy,
    /// Retries of a failed database write.
    pub database_retry: RetryPolicy,
    /// How long past a deployment's deadline its driver keeps retrying database
    /// errors before it gives the deployment up to whichever replica claims it next.
    pub retry_window: Duration,
    /// A driver that starts after the deadline (its database was down, or its replica
    /// died) watches this long for what the cluster shows before judging: a rollout
    /// that completed is `succeeded`, one that failed `failed`, else `timed_out`.
    pub late_check: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            instance: InstanceId::unique("kubernaut"),
            lease_ttl: Duration::from_secs(15),
            claim_interval: Duration::from_secs(1),
            max_drivers: 2000,
            max_applying: 64,
            cluster_retry: RetryPolicy {
                first: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            database_retry: RetryPolicy {
                first: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            retry_window: Duration::from_secs(60),
            late_check: Duration::from_secs(10),
        }
    }
}

/// A driver this replica runs.
struct Held {
    fence: Fence,
    /// Tells the driver to stop: its deployment ended elsewhere, its lease was lost,
    /// or the replica stops.
    stop: watch::Sender<bool>,
}

pub(crate) struct Inner {
    pub(crate) deployments: Arc<dyn DeploymentRepository>,
    pub(crate) leases: Arc<dyn LeaseRepository>,
    pub(crate) changes: Arc<dyn ChangeFeed>,
    pub(crate) planner: Planner,
    pub(crate) settings: EngineSettings,
    pub(crate) observer: Arc<dyn DeploymentObserver>,
    drivers: Mutex<HashMap<DeploymentId, Held>>,
    /// Each cluster's apply slots (`max_applying` each), made on first use.
    apply_slots: Mutex<HashMap<ClusterName, Arc<Semaphore>>>,
    /// Wakes the supervisor to claim now.
    claim_now: Notify,
    stopping: watch::Sender<bool>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The engine of one replica. Cheap to clone (shared).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.inner.settings)
            .field("driving", &self.driving())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(
        deployments: Arc<dyn DeploymentRepository>,
        leases: Arc<dyn LeaseRepository>,
        changes: Arc<dyn ChangeFeed>,
        planner: Planner,
        settings: EngineSettings,
        observer: Arc<dyn DeploymentObserver>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                deployments,
                leases,
                changes,
                planner,
                settings,
                observer,
                drivers: Mutex::new(HashMap::new()),
                apply_slots: Mutex::new(HashMap::new()),
                claim_now: Notify::new(),
                stopping: watch::Sender::new(false),
                supervisor: Mutex::new(None),
            }),
        }
    }

    /// This replica's settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// How many deployments this replica drives now.
    pub fn driving(&self) -> usize {
        self.inner.drivers.lock().map_or(0, |drivers| drivers.len())
    }

    /// Starts the supervisor (once; later calls do nothing). It runs until
    /// [`Self::shutdown`].
    pub fn start(&self) {
        let Ok(mut supervisor) = self.inner.supervisor.lock() else {
            return;
        };
        if supervisor.is_none() {
            let inner = Arc::clone(&self.inner);
            *supervisor = Some(tokio::spawn(supervise(inner)));
        }
    }

    /// A deployment was just stored by this replica: claim and drive it now rather
    /// than at the next look. An engine that was not started drives nothing (the
    /// replica serves the API only): the other replicas' supervisors hear of it.
    pub(crate) fn started(&self, id: DeploymentId) {
        let running = self
            .inner
            .supervisor
            .lock()
            .is_ok_and(|supervisor| supervisor.is_some());
        if !running {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            if *inner.stopping.borrow() {
                return;
            }
            claim_and_drive(&inner, id).await;
        });
    }

    /// Stops the supervisor and every driver, then gives their leases back so that
    /// other replicas drive them on at once. Waits at most `grace` for the drivers.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.send_replace(true);
        let supervisor = self
            .inner
            .supervisor
            .lock()
            .ok()
            .and_then(|mut supervisor| supervisor.take());
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        let held: Vec<(DeploymentId, Fence)> = match self.inner.drivers.lock() {
            Ok(drivers) => {
                for held in drivers.values() {
                    held.stop.send_replace(true);
                }
                drivers.iter().map(|(id, held)| (*id, held.fence)).collect()
            }
            Err(_) => Vec::new(),
        };
        let deadline = Instant::now() + grace;
        while self.driving() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if held.is_empty() {
            return;
        }
        match self
            .inner
            .leases
            .release(&self.inner.settings.instance, &held)
            .await
        {
            Ok(()) => tracing::info!(
                released = held.len(),
                "gave the leases of unfinished deployments back"
            ),
            Err(error) => tracing::warn!(
                %error,
                "could not give leases back; other replicas take them over when they expire"
            ),
        }
    }
}

impl Inner {
    /// Waits for one of `cluster`'s apply slots; held until the permit is dropped.
    pub(crate) async fn apply_slot(&self, cluster: &ClusterName) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut slots = self
                .apply_slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                slots
                    .entry(cluster.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_applying.max(1)))),
            )
        };
        slots.acquire_owned().await.ok()
    }
}

/// The supervisor loop of one replica.
async fn supervise(inner: Arc<Inner>) {
    let heartbeat_every = (inner.settings.lease_ttl / 3).max(Duration::from_millis(50));
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut claims = tokio::time::interval(inner.settings.claim_interval);
    claims.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = inner.changes.subscribe();
    let mut stopping = inner.stopping.subscribe();
    tracing::info!(instance = %inner.settings.instance, ttl = ?inner.settings.lease_ttl, "deployment engine started");
    loop {
        tokio::select! {
            () = until_stopping(&mut stopping) => return,
            _ = heartbeat.tick() => renew(&inner).await,
            _ = claims.tick() => claim(&inner).await,
            () = inner.claim_now.notified() => claim(&inner).await,
            change = changes.recv() => match change {
                Ok(Change::Deployment { id, status: Some(status) }) if status.is_verdict() => {
                    // Ended elsewhere (a cancel through any replica): stop driving it.
                    stop_driver(&inner, id);
                }
                Ok(Change::Deployment { status: Some(DeploymentStatus::Queued), .. }) => {
                    claim(&inner).await;
                }
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    renew(&inner).await;
                    claim(&inner).await;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    changes = inner.changes.subscribe();
                }
            },
        }
    }
}

async fn until_stopping(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

fn stop_driver(inner: &Inner, id: DeploymentId) {
    if let Ok(drivers) = inner.drivers.lock()
        && let Some(held) = drivers.get(&id)
    {
        held.stop.send_replace(true);
    }
}

/// Extends the leases of every driver; stops those whose lease was lost.
async fn renew(inner: &Arc<Inner>) {
    let held: Vec<(DeploymentId, Fence)> = match inner.drivers.lock() {
        Ok(drivers) => drivers.iter().map(|(id, held)| (*id, held.fence)).collect(),
        Err(_) => return,
    };
    if held.is_empty() {
        return;
    }
    match inner
        .leases
        .renew(&inner.settings.instance, &held, inner.settings.lease_ttl)
        .await
    {
        Ok(kept) => {
            let Ok(drivers) = inner.drivers.lock() else {
                return;
            };
            for (id, fence) in held {
                let Some(driver) = drivers.get(&id).filter(|d| d.fence == fence) else {
                    continue;
                };
                if !kept.contains(&id) {
                    tracing::warn!(deployment = %id, %fence, "lost the lease of a deployment; its driver stops");
                    driver.stop.send_replace(true);
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not renew leases; drivers go on watching, and confirm their lease before acting on a cluster");
        }
    }
}

/// Claims deployments with a free or expired lease, as many as there is room for.
async fn claim(inner: &Arc<Inner>) {
    if *inner.stopping.borrow() {
        return;
    }
    let driving: Vec<DeploymentId> = match inner.drivers.lock() {
        Ok(drivers) => drivers.keys().copied().collect(),
        Err(_) => return,
    };
    let room = inner.settings.max_drivers.saturating_sub(driving.len());
    if room == 0 {
        return;
    }
    // Not those driven here already: after a database outage their leases may look
    // expired, but the heartbeat renews them (same fence) and their drivers go on.
    match inner
        .leases
        .claim(
            &inner.settings.instance,
            inner.settings.lease_ttl,
            room,
            &driving,
        )
        .await
    {
        Ok(claimed) => {
            for claimed in claimed {
                spawn_driver(inner, claimed);
            }
        }
        Err(error) => tracing::warn!(%error, "could not claim deployments"),
    }
}

/// Claims deployment `id` (just stored here) and drives it; when the database fails,
/// the supervisor is asked to look at once instead.
pub(crate) async fn claim_and_drive(inner: &Arc<Inner>, id: DeploymentId) {
    match inner
        .leases
        .claim_one(id, &inner.settings.instance, inner.settings.lease_ttl)
        .await
    {
        Ok(Some(claimed)) => spawn_driver(inner, claimed),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(deployment = %id, %error, "could not claim a new deployment; the supervisor will");
            inner.claim_now.notify_one();
        }
    }
}

pub(crate) fn spawn_driver(inner: &Arc<Inner>, claimed: ClaimedDeployment) {
    let id = claimed.deployment.id;
    let fence = claimed.fence;
    let (stop, stopped) = watch::channel(false);
    {
        let Ok(mut drivers) = inner.drivers.lock() else {
            return;
        };
        if let Some(previous) = drivers.get(&id) {
            if previous.fence >= fence {
                return;
            }
            // An older driver of ours lost its lease and we claimed again: it stops.
            previous.stop.send_replace(true);
        }
        drivers.insert(id, Held { fence, stop });
    }
    tracing::info!(deployment = %id, %fence, status = %claimed.deployment.status, "driving deployment");
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        let ended = driver::Driver::new(Arc::clone(&inner), claimed, stopped)
            .run()
            .await;
        let gave_up = matches!(ended, driver::Ended::GaveUp(_));
        if let driver::Ended::GaveUp(error) = &ended {
            tracing::error!(deployment = %id, %error, "the deployment's driver gave up on the database; whichever replica claims it next drives it on");
        }
        if let Ok(mut drivers) = inner.drivers.lock()
            && drivers.get(&id).is_some_and(|held| held.fence == fence)
        {
            drivers.remove(&id);
        }
        if gave_up {
            // Best effort: otherwise the lease runs out by itself.
            let _ = inner
                .leases
                .release(&inner.settings.instance, &[(id, fence)])
                .await;
        }
    });
}
