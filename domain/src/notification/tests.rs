//! Rules and the outbox writer: which moves make which deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::*;
use crate::actor::Actor;
use crate::deployment::{
    ClusterName, Deployment, DeploymentId, DeploymentOptions, DeploymentStatus, Namespace, Target,
    Transition,
};
use crate::ports::{DeploymentRepository, MockDeploymentRepository};
use crate::release::{ReleaseId, ServiceName, Version};

fn deployment(cluster: &str, namespace: &str, service: &str) -> Deployment {
    let at = Utc
        .with_ymd_and_hms(2026, 12, 4, 12, 0, 0)
        .single()
        .expect("a time");
    Deployment {
        id: DeploymentId::generate(),
        release_id: ReleaseId::from_uuid(Uuid::now_v7()),
        service: ServiceName::parse(service).expect("service"),
        version: Version::parse("1.0.0").expect("version"),
        target: Target {
            cluster: ClusterName::parse(cluster).expect("cluster"),
            namespace: Namespace::parse(namespace).expect("namespace"),
        },
        requested_by: Actor::named("ci"),
        attributes: BTreeMap::new(),
        options: DeploymentOptions::default(),
        manifest: String::new(),
        objects: Vec::new(),
        status: DeploymentStatus::RollingOut,
        created_at: at,
        started_at: Some(at),
        finished_at: None,
        timeline: Vec::new(),
        diagnostics: None,
        rollback_of: None,
    }
}

fn filter(cluster: Option<&str>, namespace: Option<&str>, service: Option<&str>) -> TargetFilter {
    TargetFilter {
        cluster: cluster.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
        service: service.map(str::to_owned),
    }
}

fn rules() -> NotificationRules {
    NotificationRules::new(vec![
        NotificationRule::new("slack", filter(Some("prod-*"), None, None), vec![]).expect("a rule"),
        NotificationRule::new(
            "github",
            filter(None, Some("shop"), Some("pay?ents")),
            vec![NotificationEvent::Started, NotificationEvent::Succeeded],
        )
        .expect("a rule"),
        // A second rule to the same sink: still one delivery per event.
        NotificationRule::new("slack", filter(None, None, Some("payments")), vec![])
            .expect("a rule"),
    ])
}

fn sinks(deliveries: &[NewDelivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.sink.as_str()).collect()
}

#[test]
fn each_matching_sink_gets_one_delivery_of_one_event() {
    let rules = rules();
    let at = Utc::now();
    let payments = deployment("prod-eu", "shop", "payments");
    let succeeded = rules.deliveries(&payments, DeploymentStatus::Succeeded, at, None);
    assert_eq!(sinks(&succeeded), ["slack", "github"]);
    assert_eq!(succeeded[0].notification, succeeded[1].notification);
    assert_ne!(succeeded[0].id, succeeded[1].id);
    assert_eq!(
        succeeded[0].notification.event,
        NotificationEvent::Succeeded
    );
    assert_eq!(succeeded[0].notification.deployment.finished_at, Some(at));
    assert_eq!(
        succeeded[0].notification.deployment.status,
        DeploymentStatus::Succeeded
    );

    // No events named: every verdict, not the start.
    let started = rules.deliveries(&payments, DeploymentStatus::Applying, at, None);
    assert_eq!(sinks(&started), ["github"]);
    assert_eq!(started[0].notification.event, NotificationEvent::Started);
    let failed = rules.deliveries(&payments, DeploymentStatus::Failed, at, Some("why".into()));
    assert_eq!(sinks(&failed), ["slack"]);
    assert_eq!(
        failed[0].notification.deployment.reason.as_deref(),
        Some("why")
    );
    // Moves nobody is told of.
    assert!(
        rules
            .deliveries(&payments, DeploymentStatus::RollingOut, at, None)
            .is_empty()
    );
    assert!(
        rules
            .deliveries(&payments, DeploymentStatus::Queued, at, None)
            .is_empty()
    );

    // The patterns: `prod-*` is not `staging`, `pay?ents` is not `web`.
    let staging = deployment("staging", "shop", "web");
    assert!(
        rules
            .deliveries(&staging, DeploymentStatus::Succeeded, at, None)
            .is_empty()
    );
    let other_namespace = deployment("staging", "billing", "payments");
    assert_eq!(
        sinks(&rules.deliveries(&other_namespace, DeploymentStatus::Succeeded, at, None)),
        ["slack"]
    );
}

#[test]
fn a_rule_needs_a_sink_and_no_empty_pattern() {
    assert_eq!(
        NotificationRule::new(" ", TargetFilter::default(), vec![])
            .expect_err("no sink")
            .field,
        "sink"
    );
    assert_eq!(
        NotificationRule::new("a", filter(None, Some(""), None), vec![])
            .expect_err("empty")
            .field,
        "namespace"
    );
}

#[test]
fn events_name_the_statuses_they_tell_of() {
    for event in NotificationEvent::ALL {
        assert_eq!(NotificationEvent::parse(event.as_str()), Some(event));
    }
    assert_eq!(NotificationEvent::parse("deployed"), None);
    let told: Vec<Option<NotificationEvent>> = DeploymentStatus::ALL
        .into_iter()
        .map(NotificationEvent::of_status)
        .collect();
    assert_eq!(
        told,
        [
            None,
            Some(NotificationEvent::Started),
            None,
            Some(NotificationEvent::Succeeded),
            Some(NotificationEvent::Failed),
            Some(NotificationEvent::TimedOut),
            Some(NotificationEvent::Cancelled),
        ]
    );
}

#[tokio::test]
async fn a_move_a_rule_asks_for_carries_its_deliveries_to_the_repository() {
    let stored = deployment("prod-eu", "shop", "payments");
    let id = stored.id;
    let mut inner = MockDeploymentRepository::new();
    let found = stored.clone();
    inner
        .expect_find()
        .returning(move |_| Ok(Some(found.clone())));
    inner
        .expect_transition()
        .withf(|_, t| t.to == DeploymentStatus::Succeeded)
        .times(1)
        .returning(|_, t| {
            assert_eq!(t.notifications.len(), 2, "slack and github");
            Ok(true)
        });
    inner
        .expect_transition()
        .withf(|_, t| t.to == DeploymentStatus::RollingOut)
        .times(1)
        .returning(|_, t| {
            assert!(t.notifications.is_empty());
            Ok(true)
        });
    let wake = Arc::new(Notify::new());
    let notifying =
        NotifyingDeployments::new(Arc::new(inner), Arc::new(rules()), Arc::clone(&wake));
    let woken = wake.notified();
    let rolling = Transition::new(
        &[DeploymentStatus::Applying],
        DeploymentStatus::RollingOut,
        Utc::now(),
    );
    assert!(notifying.transition(id, &rolling).await.expect("moved"));
    let verdict = Transition::new(
        &[DeploymentStatus::RollingOut],
        DeploymentStatus::Succeeded,
        Utc::now(),
    );
    assert!(notifying.transition(id, &verdict).await.expect("moved"));
    tokio::time::timeout(Duration::from_secs(1), woken)
        .await
        .expect("the dispatcher is woken");
}
