//! Which sinks hear of which deployments: rules on cluster, namespace and service
//! (each a name or a wildcard pattern, `*` any run of characters, `?` one) and events.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use wildmatch::WildMatch;

use super::{NewDelivery, Notification, NotificationEvent};
use crate::deployment::{Deployment, DeploymentStatus};

/// A pattern on one part of a deployment; absent parts match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetFilter {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub service: Option<String>,
}

impl TargetFilter {
    fn matches(&self, deployment: &Deployment) -> bool {
        let part = |pattern: &Option<String>, value: &str| {
            pattern
                .as_deref()
                .is_none_or(|pattern| WildMatch::new(pattern).matches(value))
        };
        part(&self.cluster, deployment.target.cluster.as_str())
            && part(&self.namespace, deployment.target.namespace.as_str())
            && part(&self.service, deployment.service.as_str())
    }
}

/// A rule that breaks the rules: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidRule {
    pub field: String,
    pub reason: String,
}

/// One rule: deployments matching `filter` tell `sink` of `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRule {
    sink: String,
    filter: TargetFilter,
    events: Vec<NotificationEvent>,
}

impl NotificationRule {
    /// A rule for `sink`; no events means every verdict (not the start).
    ///
    /// # Errors
    /// [`InvalidRule`] for an empty sink name or an empty pattern.
    pub fn new(
        sink: &str,
        filter: TargetFilter,
        events: Vec<NotificationEvent>,
    ) -> Result<Self, InvalidRule> {
        if sink.trim().is_empty() {
            return Err(InvalidRule {
                field: "sink".to_owned(),
                reason: "name the sink the rule sends to".to_owned(),
            });
        }
        for (field, pattern) in [
            ("cluster", &filter.cluster),
            ("namespace", &filter.namespace),
            ("service", &filter.service),
        ] {
            if pattern.as_deref().is_some_and(|p| p.trim().is_empty()) {
                return Err(InvalidRule {
                    field: field.to_owned(),
                    reason: "an empty pattern matches nothing: leave it out to match any"
                        .to_owned(),
                });
            }
        }
        let events = if events.is_empty() {
            NotificationEvent::VERDICTS.to_vec()
        } else {
            events
        };
        Ok(Self {
            sink: sink.to_owned(),
            filter,
            events,
        })
    }

    pub fn sink(&self) -> &str {
        &self.sink
    }

    pub fn events(&self) -> &[NotificationEvent] {
        &self.events
    }

    /// Whether `deployment` tells this rule's sink of `event`.
    pub fn applies(&self, deployment: &Deployment, event: NotificationEvent) -> bool {
        self.events.contains(&event) && self.filter.matches(deployment)
    }
}

/// Every rule. A sink hears of an event once, however many of its rules match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationRules {
    rules: Vec<NotificationRule>,
}

impl NotificationRules {
    pub fn new(rules: Vec<NotificationRule>) -> Self {
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule asks for `event` at all (to skip reading the deployment).
    pub fn wants(&self, event: NotificationEvent) -> bool {
        self.rules.iter().any(|rule| rule.events.contains(&event))
    }

    /// The deliveries a move of `deployment` to `status` at `at` makes: one per sink
    /// with a matching rule, all of one notification (one event id).
    pub fn deliveries(
        &self,
        deployment: &Deployment,
        status: DeploymentStatus,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> Vec<NewDelivery> {
        let Some(event) = NotificationEvent::of_status(status) else {
            return Vec::new();
        };
        let mut sinks: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if rule.applies(deployment, event) && !sinks.contains(&rule.sink()) {
                sinks.push(rule.sink());
            }
        }
        if sinks.is_empty() {
            return Vec::new();
        }
        let notification = Notification::of(deployment, event, status, at, reason);
        sinks
            .into_iter()
            .map(|sink| NewDelivery {
                id: Uuid::now_v7(),
                sink: sink.to_owned(),
                notification: notification.clone(),
            })
            .collect()
    }
}
