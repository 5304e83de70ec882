//! [`CdEventsSink`]: CDEvents as CloudEvents over HTTP, in binary mode.
//!
//! A verdict of success is `dev.cdevents.service.deployed.0.2.0` (or
//! `...service.rolledback.0.2.0` for a rollback); every other event (the start, a
//! failure, a timeout, a cancel: the environment was or may have been changed, the
//! service not deployed) is `dev.cdevents.environment.modified.0.2.0`. The CDEvent
//! (spec 0.4.1: `context` and `subject`, Kubernaut's notification in `customData`) is
//! the body; the CloudEvents attributes are `ce-` headers (binary content mode of the
//! CloudEvents HTTP binding). `ce-id` and the CDEvent's `context.id` are the
//! notification's id, the same on every retry, so receivers deduplicate on it.

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use http::header::HeaderName;
use kubernaut_domain::notification::{Notification, NotificationEvent, SinkError};
use kubernaut_domain::ports::NotificationSink;
use serde_json::{Value, json};

use crate::http::{Http, InvalidSink, accepted, checked_url};

/// The CDEvents specification version of the events.
pub const SPEC_VERSION: &str = "0.4.1";

/// A CDEvents receiver (a broker, a CloudEvents endpoint).
#[derive(Clone)]
pub struct CdEventsSink {
    http: Http,
    url: String,
    source: String,
}

impl std::fmt::Debug for CdEventsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdEventsSink")
            .field("url", &self.url)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CdEventsSink {
    /// Events to `url`, from `source` (a URI-reference naming this Kubernaut, such as
    /// its public address).
    ///
    /// # Errors
    /// [`InvalidSink`] for a URL that is not http(s), an empty source, or when TLS
    /// cannot be set up.
    pub fn new(url: &str, source: &str, timeout: Duration) -> Result<Self, InvalidSink> {
        if source.trim().is_empty() {
            return Err(InvalidSink::Setting {
                field: "source".to_owned(),
                reason: "a CloudEvents source may not be empty".to_owned(),
            });
        }
        Ok(Self {
            http: Http::new(timeout)?,
            url: checked_url(url)?,
            source: source.to_owned(),
        })
    }

    /// The CDEvent type of `notification`.
    pub fn event_type(notification: &Notification) -> &'static str {
        match notification.event {
            NotificationEvent::Succeeded if notification.deployment.rollback_of.is_some() => {
                "dev.cdevents.service.rolledback.0.2.0"
            }
            NotificationEvent::Succeeded => "dev.cdevents.service.deployed.0.2.0",
            NotificationEvent::Started
            | NotificationEvent::Failed
            | NotificationEvent::TimedOut
            | NotificationEvent::Cancelled => "dev.cdevents.environment.modified.0.2.0",
        }
    }

    /// The CDEvent (the HTTP body) of `notification`.
    pub fn event(&self, notification: &Notification) -> Value {
        let deployment = &notification.deployment;
        let environment = format!("{}/{}", deployment.cluster, deployment.namespace);
        let kind = Self::event_type(notification);
        let subject = if kind.starts_with("dev.cdevents.service.") {
            json!({
                "id": format!("{environment}/{}", deployment.service),
                "source": self.source,
                "type": "service",
                "content": {
                    "environment": {"id": environment, "source": self.source},
                    "artifactId": format!(
                        "pkg:generic/{}@{}", deployment.service, deployment.version
                    ),
                },
            })
        } else {
            json!({
                "id": environment,
                "source": self.source,
                "type": "environment",
                "content": {"name": environment},
            })
        };
        json!({
            "context": {
                "specversion": SPEC_VERSION,
                "id": notification.id.to_string(),
                "source": self.source,
                "type": kind,
                "timestamp": notification.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
            "subject": subject,
            "customData": {"kubernaut": notification},
            "customDataContentType": "application/json",
        })
    }
}

#[async_trait]
impl NotificationSink for CdEventsSink {
    async fn send(&self, notification: &Notification) -> Result<u16, SinkError> {
        let event = self.event(notification);
        let subject = event["subject"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let header = |name: &'static str, value: String| (HeaderName::from_static(name), value);
        let headers = [
            header("ce-specversion", "1.0".to_owned()),
            header("ce-id", notification.id.to_string()),
            header("ce-source", self.source.clone()),
            header("ce-type", Self::event_type(notification).to_owned()),
            header(
                "ce-time",
                notification
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            header("ce-subject", subject),
        ];
        let answer = self
            .http
            .send(
                Method::POST,
                &self.url,
                "application/json",
                &headers,
                event.to_string().into_bytes(),
            )
            .await?;
        accepted(answer, "the CDEvents receiver")
    }
}
