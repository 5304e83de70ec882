//! The contract of the notification outbox: deliveries stored with the move they tell
//! of (and never without it), claims that one replica holds at a time until they
//! expire, and every attempt recorded.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use kubernaut_domain::deployment::{Deployment, DeploymentStatus};
use kubernaut_domain::lease::InstanceId;
use kubernaut_domain::notification::{
    Attempt, DeliveryStatus, NewDelivery, NextStep, Notification, NotificationEvent,
};
use uuid::Uuid;

use crate::contract::Backend;
use crate::contract::deployment::{Harness, at, deployment, target, transition};

fn delivery(deployment: &Deployment, status: DeploymentStatus, sink: &str) -> NewDelivery {
    let event = NotificationEvent::of_status(status).expect("a status that is told");
    NewDelivery {
        id: Uuid::now_v7(),
        sink: sink.to_owned(),
        notification: Notification::of(deployment, event, status, at(60), None),
    }
}

fn attempt(number: u32, replica: &str, status_code: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        number,
        at: Utc::now(),
        duration_ms: 12,
        status_code,
        error: error.map(str::to_owned),
        replica: replica.to_owned(),
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// A stored queued deployment and the harness it is in.
async fn queued<B: Backend>() -> (Harness<B>, Deployment) {
    let harness = Harness::<B>::with_pool_size(6);
    let release = harness.release("payments", "1.0.0").await;
    let queued = deployment(&release, target("staging", "shop"), 0);
    harness.insert(&queued).await;
    (harness, queued)
}

pub async fn notifications_are_stored_with_the_move_and_only_when_it_happens<B: Backend>() {
    let (harness, queued) = queued::<B>().await;
    let outbox = harness.backend.notifications();
    let id = queued.id;

    // A move that does not happen (the deployment is not applying) stores nothing.
    let mut lost = transition(
        &[DeploymentStatus::Applying],
        DeploymentStatus::Succeeded,
        60,
    );
    lost.notifications = vec![delivery(&queued, DeploymentStatus::Succeeded, "slack")];
    assert!(!harness.transition(id, &lost).await);
    assert!(outbox.deliveries(id).await.expect("listed").is_empty());

    let mut start = transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 10);
    let started = delivery(&queued, DeploymentStatus::Applying, "github");
    start.notifications = vec![started.clone()];
    assert!(harness.transition(id, &start).await);

    let mut verdict = transition(
        &[DeploymentStatus::Applying],
        DeploymentStatus::Succeeded,
        60,
    );
    let to_slack = delivery(&queued, DeploymentStatus::Succeeded, "slack");
    let mut to_hook = to_slack.clone();
    to_hook.id = Uuid::now_v7();
    to_hook.sink = "hook".to_owned();
    verdict.notifications = vec![to_slack.clone(), to_hook.clone()];
    assert!(harness.transition(id, &verdict).await);

    let stored = outbox.deliveries(id).await.expect("listed");
    let seen: Vec<(Uuid, &str, NotificationEvent, DeliveryStatus, usize)> = stored
        .iter()
        .map(|d| {
            (
                d.id,
                d.sink.as_str(),
                d.notification.event,
                d.status,
                d.attempts.len(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                started.id,
                "github",
                NotificationEvent::Started,
                DeliveryStatus::Pending,
                0
            ),
            (
                to_slack.id,
                "slack",
                NotificationEvent::Succeeded,
                DeliveryStatus::Pending,
                0
            ),
            (
                to_hook.id,
                "hook",
                NotificationEvent::Succeeded,
                DeliveryStatus::Pending,
                0
            ),
        ]
    );
    // The notification reads back as written; one event, one id, whatever the sink.
    assert_eq!(stored[1].notification, to_slack.notification);
    assert_eq!(stored[2].notification.id, stored[1].notification.id);
    assert!(stored.iter().all(|d| d.next_attempt_at.is_some()));
}

pub async fn a_move_whose_notifications_cannot_be_stored_does_not_happen<B: Backend>() {
    let (harness, queued) = queued::<B>().await;
    let outbox = harness.backend.notifications();
    let mut start = transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 10);
    let started = delivery(&queued, DeploymentStatus::Applying, "hook");
    start.notifications = vec![started.clone()];
    assert!(harness.transition(queued.id, &start).await);

    // The same delivery again breaks the outbox's key: the verdict goes with it.
    let mut verdict = transition(&[DeploymentStatus::Applying], DeploymentStatus::Failed, 60);
    verdict.notifications = vec![started];
    assert!(
        harness
            .deployments
            .transition(queued.id, &verdict)
            .await
            .is_err()
    );
    assert_eq!(
        harness.find(queued.id).await.status,
        DeploymentStatus::Applying
    );
    assert_eq!(outbox.deliveries(queued.id).await.expect("listed").len(), 1);
}

pub async fn a_claim_is_held_by_one_replica_and_every_attempt_is_recorded<B: Backend>() {
    let (harness, queued) = queued::<B>().await;
    let outbox = harness.backend.notifications();
    let mut start = transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 10);
    let new = delivery(&queued, DeploymentStatus::Applying, "hook");
    start.notifications = vec![new.clone()];
    assert!(harness.transition(queued.id, &start).await);
    let (a, b) = (InstanceId::from_stored("a"), InstanceId::from_stored("b"));

    let claimed = outbox.claim(&a, LEASE, 10).await.expect("claimed");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, new.id);
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].notification, new.notification);
    assert!(
        outbox
            .claim(&b, LEASE, 10)
            .await
            .expect("claimed")
            .is_empty()
    );
    // Only the holder records.
    let refused = attempt(1, "b", Some(200), None);
    assert!(
        !outbox
            .record_attempt(new.id, &b, &refused, NextStep::Delivered)
            .await
            .expect("ran")
    );

    // A failure due again at once frees the delivery for anyone.
    let failed = attempt(1, "a", Some(500), Some("the receiver answered 500"));
    assert!(
        outbox
            .record_attempt(new.id, &a, &failed, NextStep::RetryAfter(Duration::ZERO))
            .await
            .expect("ran")
    );
    let again = outbox.claim(&b, LEASE, 10).await.expect("claimed");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    let timed_out = attempt(2, "b", None, Some("no answer within 1000 ms"));
    assert!(
        outbox
            .record_attempt(
                new.id,
                &b,
                &timed_out,
                NextStep::RetryAfter(Duration::from_secs(3600))
            )
            .await
            .expect("ran")
    );
    // Not due for an hour.
    assert!(
        outbox
            .claim(&a, LEASE, 10)
            .await
            .expect("claimed")
            .is_empty()
    );
    let pending = outbox.deliveries(queued.id).await.expect("listed");
    let due = pending[0]
        .next_attempt_at
        .expect("pending deliveries are due");
    assert!(due > Utc::now() + chrono::TimeDelta::minutes(59), "{due}");

    // Due now (as if the hour had passed): delivered on the third attempt.
    harness.backend.execute(
        "UPDATE notification_deliveries SET next_attempt_at = '2000-01-01T00:00:00.000000Z'",
    );
    assert_eq!(outbox.claim(&a, LEASE, 10).await.expect("claimed").len(), 1);
    let accepted = attempt(3, "a", Some(204), None);
    assert!(
        outbox
            .record_attempt(new.id, &a, &accepted, NextStep::Delivered)
            .await
            .expect("ran")
    );
    assert!(
        outbox
            .claim(&b, LEASE, 10)
            .await
            .expect("claimed")
            .is_empty()
    );
    let delivered = outbox.deliveries(queued.id).await.expect("listed");
    assert_eq!(delivered[0].status, DeliveryStatus::Delivered);
    assert_eq!(delivered[0].next_attempt_at, None);
    let round = |mut attempt: Attempt| {
        attempt.at = delivered[0].attempts[usize::try_from(attempt.number - 1).expect("small")].at;
        attempt
    };
    assert_eq!(
        delivered[0].attempts,
        vec![round(failed), round(timed_out), round(accepted)]
    );
    // A delivered one is not recorded again.
    assert!(
        !outbox
            .record_attempt(
                new.id,
                &a,
                &attempt(4, "a", Some(200), None),
                NextStep::Delivered
            )
            .await
            .expect("ran")
    );
}

pub async fn an_expired_claim_passes_to_another_replica_and_a_dead_delivery_rests<B: Backend>() {
    let (harness, queued) = queued::<B>().await;
    let outbox = harness.backend.notifications();
    let mut start = transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 10);
    let new = delivery(&queued, DeploymentStatus::Applying, "hook");
    start.notifications = vec![new.clone()];
    assert!(harness.transition(queued.id, &start).await);
    let (a, b) = (InstanceId::from_stored("a"), InstanceId::from_stored("b"));

    // `a` dies holding a claim of 50 ms.
    assert_eq!(
        outbox
            .claim(&a, Duration::from_millis(50), 10)
            .await
            .expect("claimed")
            .len(),
        1
    );
    assert!(
        outbox
            .claim(&b, LEASE, 10)
            .await
            .expect("claimed")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(outbox.claim(&b, LEASE, 10).await.expect("claimed").len(), 1);
    // `a` comes back too late: its attempt is not recorded.
    assert!(
        !outbox
            .record_attempt(
                new.id,
                &a,
                &attempt(1, "a", Some(200), None),
                NextStep::Delivered
            )
            .await
            .expect("ran")
    );
    let given_up = attempt(1, "b", Some(410), Some("the receiver answered 410"));
    assert!(
        outbox
            .record_attempt(new.id, &b, &given_up, NextStep::GiveUp)
            .await
            .expect("ran")
    );
    harness
        .backend
        .execute("UPDATE notification_deliveries SET claim_owner = NULL, claim_expires_at = NULL");
    assert!(
        outbox
            .claim(&a, LEASE, 10)
            .await
            .expect("claimed")
            .is_empty()
    );
    let dead = outbox.deliveries(queued.id).await.expect("listed");
    assert_eq!(dead[0].status, DeliveryStatus::Dead);
    assert_eq!(dead[0].attempts.len(), 1);
    assert_eq!(dead[0].attempts[0].replica, "b");
}

pub async fn concurrent_claimers_never_share_a_delivery<B: Backend>() {
    let (harness, queued) = queued::<B>().await;
    let outbox = harness.backend.notifications();
    let mut start = transition(&[DeploymentStatus::Queued], DeploymentStatus::Applying, 10);
    start.notifications = (0..24)
        .map(|n| delivery(&queued, DeploymentStatus::Applying, &format!("sink-{n}")))
        .collect();
    assert!(harness.transition(queued.id, &start).await);

    let claimers = (0..4).map(|n| {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let owner = InstanceId::from_stored(format!("replica-{n}"));
            let mut mine = Vec::new();
            for _ in 0..10 {
                mine.extend(
                    outbox
                        .claim(&owner, LEASE, 3)
                        .await
                        .expect("claimed")
                        .into_iter()
                        .map(|claimed| claimed.id),
                );
            }
            mine
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("the claimer ran"));
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 24, "every delivery claimed once: {all:?}");
    assert_eq!(unique.len(), 24);
}
