//! The [`Dispatcher`]: every replica's loop that claims due deliveries, sends them and
//! records each attempt, with the retry policy deciding what follows a failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::{Attempt, ClaimedDelivery, NextStep, SinkError};
use crate::lease::InstanceId;
use crate::ports::{NotificationOutbox, NotificationSink};

/// When a failed delivery is tried again, and when it is given up: exponential
/// backoff from `initial_delay`, doubling per failure up to `max_delay`, each delay
/// shortened by a random part of up to `jitter` (0 to 1) of it so that the
/// deliveries of one outage do not all come back at once; dead after `max_attempts`
/// attempts, or when the next one would fall after `max_age` from the event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 s, 10 s, 20 s ... up to 10 minutes; 15 attempts (about an hour and a half)
    /// within a day.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(600),
            max_attempts: 15,
            max_age: Duration::from_secs(24 * 3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay after the `failures`-th failure (1 for the first) before jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial_delay
            .saturating_mul(1_u32 << doublings.min(31))
            .min(self.max_delay)
    }

    /// [`Self::backoff`] shortened by `random` (0 to 1) times the jitter.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        self.backoff(failures).mul_f64(1.0 - jitter)
    }

    /// What follows failed attempt number `attempt` of an event of `created_at`, at
    /// `now`.
    pub fn after_failure(
        &self,
        attempt: u32,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
        random: f64,
    ) -> NextStep {
        if attempt >= self.max_attempts {
            return NextStep::GiveUp;
        }
        let delay = self.delay(attempt, random);
        let due = TimeDelta::from_std(delay)
            .ok()
            .and_then(|delay| now.checked_add_signed(delay));
        let deadline = TimeDelta::from_std(self.max_age)
            .ok()
            .and_then(|age| created_at.checked_add_signed(age));
        match (due, deadline) {
            (Some(due), Some(deadline)) if due > deadline => NextStep::GiveUp,
            _ => NextStep::RetryAfter(delay),
        }
    }
}

/// How a dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// This replica, as named in the claims it holds and the attempts it records.
    pub instance: InstanceId,
    /// How often it looks for due deliveries when nothing wakes it.
    pub poll_interval: Duration,
    /// How long a claim lasts: a replica that dies mid-attempt leaves the delivery to
    /// another this long after it claimed it. Longer than `attempt_timeout`.
    pub claim_lease: Duration,
    /// The longest one attempt may take before it counts as failed.
    pub attempt_timeout: Duration,
    /// The most deliveries it claims (and sends concurrently) at once.
    pub batch: usize,
    pub retry: RetryPolicy,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            instance: InstanceId::unique("kubernaut"),
            poll_interval: Duration::from_secs(1),
            claim_lease: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
            batch: 32,
            retry: RetryPolicy::default(),
        }
    }
}

struct Inner {
    outbox: Arc<dyn NotificationOutbox>,
    sinks: HashMap<String, Arc<dyn NotificationSink>>,
    settings: DispatchSettings,
    wake: Arc<Notify>,
    stopping: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Delivers the outbox: claims due deliveries, sends each through its sink, records
/// the attempt. Cheap to clone (shared).
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("instance", &self.inner.settings.instance)
            .field("sinks", &self.inner.sinks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A random number in `[0, 1)` from the operating system, for jitter (0 when it has
/// none to give: no jitter is still a correct delay).
fn random_fraction() -> f64 {
    let mut bytes = [0_u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

impl Dispatcher {
    /// A dispatcher of `outbox` through `sinks` (by name); `wake` makes it look at
    /// once (see [`super::NotifyingDeployments`]).
    pub fn new(
        outbox: Arc<dyn NotificationOutbox>,
        sinks: HashMap<String, Arc<dyn NotificationSink>>,
        settings: DispatchSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                outbox,
                sinks,
                settings,
                wake,
                stopping: watch::channel(false).0,
                task: Mutex::new(None),
            }),
        }
    }

    /// Starts the loop (once).
    pub fn start(&self) {
        let Ok(mut task) = self.inner.task.lock() else {
            return;
        };
        if task.is_none() {
            let inner = Arc::clone(&self.inner);
            *task = Some(tokio::spawn(run(inner)));
        }
    }

    /// Stops looking for deliveries and waits up to `grace` for the attempts in flight;
    /// those still running are dropped, unrecorded, and their claims expire.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.send_replace(true);
        let task = self.inner.task.lock().ok().and_then(|mut task| task.take());
        if let Some(mut task) = task
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    /// One round: claims what is due and delivers it; returns how many it attempted.
    /// (The loop runs rounds; tests run them one at a time.)
    pub async fn round(&self) -> usize {
        round(&self.inner).await
    }
}

async fn run(inner: Arc<Inner>) {
    let mut stopping = inner.stopping.subscribe();
    loop {
        if *stopping.borrow() {
            return;
        }
        if round(&inner).await > 0 {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(inner.settings.poll_interval) => {}
            () = inner.wake.notified() => {}
            _ = stopping.changed() => {}
        }
    }
}

async fn round(inner: &Arc<Inner>) -> usize {
    let settings = &inner.settings;
    let claimed = match inner
        .outbox
        .claim(&settings.instance, settings.claim_lease, settings.batch)
        .await
    {
        Ok(claimed) => claimed,
        Err(error) => {
            tracing::warn!(error = %error, "could not claim notifications");
            return 0;
        }
    };
    let count = claimed.len();
    let mut attempts = JoinSet::new();
    for delivery in claimed {
        let inner = Arc::clone(inner);
        attempts.spawn(async move { deliver(&inner, delivery).await });
    }
    while attempts.join_next().await.is_some() {}
    count
}

async fn deliver(inner: &Inner, delivery: ClaimedDelivery) {
    let settings = &inner.settings;
    let number = delivery.attempts.saturating_add(1);
    let at = Utc::now();
    let clock = Instant::now();
    let sink = inner.sinks.get(&delivery.sink);
    let result = match sink {
        Some(sink) => {
            tokio::time::timeout(settings.attempt_timeout, sink.send(&delivery.notification))
                .await
                .unwrap_or_else(|_| {
                    Err(SinkError::new(
                        None,
                        format!(
                            "no answer within {} ms",
                            settings.attempt_timeout.as_millis()
                        ),
                    ))
                })
        }
        None => Err(SinkError::new(
            None,
            format!("no sink named {:?} is configured", delivery.sink),
        )),
    };
    let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (next, attempt) = match result {
        Ok(status) => (
            NextStep::Delivered,
            Attempt {
                number,
                at,
                duration_ms,
                status_code: Some(status),
                error: None,
                replica: settings.instance.to_string(),
            },
        ),
        Err(error) => {
            let next = if sink.is_none() {
                NextStep::GiveUp
            } else {
                settings.retry.after_failure(
                    number,
                    delivery.notification.occurred_at,
                    Utc::now(),
                    random_fraction(),
                )
            };
            tracing::info!(
                delivery = %delivery.id,
                sink = %delivery.sink,
                attempt = number,
                error = %error.message,
                ?next,
                "a notification was not accepted"
            );
            (
                next,
                Attempt {
                    number,
                    at,
                    duration_ms,
                    status_code: error.status,
                    error: Some(error.message),
                    replica: settings.instance.to_string(),
                },
            )
        }
    };
    // The attempt was made: record it even through a short database outage, while the
    // claim lasts.
    let deadline = Instant::now() + settings.claim_lease / 2;
    loop {
        match inner
            .outbox
            .record_attempt(delivery.id, &settings.instance, &attempt, next)
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "the claim on a notification was lost before its attempt was recorded");
                return;
            }
            Err(error) if Instant::now() < deadline => {
                tracing::warn!(error = %error, delivery = %delivery.id, "could not record a notification attempt; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => {
                tracing::error!(error = %error, delivery = %delivery.id, "could not record a notification attempt");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            max_attempts: 8,
            max_age: Duration::from_secs(3600),
            jitter: 0.5,
        }
    }

    #[test]
    fn the_backoff_doubles_per_failure_up_to_its_cap() {
        let delays: Vec<u64> = (1..=8).map(|n| policy().backoff(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(policy().backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_only_shortens_a_delay_and_by_at_most_its_share() {
        let policy = policy();
        assert_eq!(policy.delay(3, 0.0), Duration::from_secs(8));
        assert_eq!(policy.delay(3, 1.0), Duration::from_secs(4));
        for _ in 0..100 {
            let delay = policy.delay(3, random_fraction());
            assert!(delay > Duration::from_secs(4) && delay <= Duration::from_secs(8));
        }
    }

    #[test]
    fn a_delivery_is_given_up_after_its_last_attempt_or_past_its_age() {
        let policy = policy();
        let created = Utc::now();
        assert_eq!(
            policy.after_failure(1, created, created, 0.0),
            NextStep::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            policy.after_failure(8, created, created, 0.0),
            NextStep::GiveUp
        );
        let late = created + TimeDelta::seconds(3598);
        assert_eq!(
            policy.after_failure(2, created, late, 0.0),
            NextStep::GiveUp
        );
    }
}
