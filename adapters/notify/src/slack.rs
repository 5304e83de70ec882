//! [`SlackSink`]: a message to a Slack incoming webhook.

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use kubernaut_domain::notification::{Notification, NotificationEvent, SinkError};
use kubernaut_domain::ports::NotificationSink;
use serde_json::{Value, json};

use crate::deployment_link;
use crate::http::{Http, InvalidSink, accepted, checked_url};

/// A Slack incoming webhook (`https://hooks.slack.com/services/...`).
#[derive(Clone)]
pub struct SlackSink {
    http: Http,
    url: String,
    public_url: Option<String>,
}

impl std::fmt::Debug for SlackSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The webhook's URL is its secret.
        f.debug_struct("SlackSink").finish_non_exhaustive()
    }
}

impl SlackSink {
    /// `public_url` is Kubernaut's address as people reach it, for links.
    ///
    /// # Errors
    /// [`InvalidSink`] for a URL that is not http(s), or when TLS cannot be set up.
    pub fn new(
        url: &str,
        public_url: Option<String>,
        timeout: Duration,
    ) -> Result<Self, InvalidSink> {
        Ok(Self {
            http: Http::new(timeout)?,
            url: checked_url(url)?,
            public_url,
        })
    }

    /// The message Slack is sent for `notification`.
    pub fn message(&self, notification: &Notification) -> Value {
        let deployment = &notification.deployment;
        let (emoji, what) = match notification.event {
            NotificationEvent::Started => (":rocket:", "started"),
            NotificationEvent::Succeeded => (":white_check_mark:", "succeeded"),
            NotificationEvent::Failed => (":x:", "failed"),
            NotificationEvent::TimedOut => (":hourglass:", "timed out"),
            NotificationEvent::Cancelled => (":no_entry_sign:", "was cancelled"),
        };
        let kind = if deployment.rollback_of.is_some() {
            "Rollback"
        } else {
            "Deployment"
        };
        let text = format!(
            "{kind} of {} {} to {}/{} {what}",
            deployment.service, deployment.version, deployment.cluster, deployment.namespace
        );
        let headline = match deployment_link(self.public_url.as_deref(), deployment.id) {
            Some(link) => format!("{emoji} <{link}|{text}>"),
            None => format!("{emoji} {text}"),
        };
        let mut lines = vec![format!("*{headline}*")];
        if let Some(reason) = &deployment.reason {
            lines.push(format!("> {reason}"));
        }
        json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}},
                {"type": "context", "elements": [{
                    "type": "mrkdwn",
                    "text": format!(
                        "requested by {} · deployment `{}`",
                        deployment.requested_by, deployment.id
                    ),
                }]},
            ],
        })
    }
}

#[async_trait]
impl NotificationSink for SlackSink {
    async fn send(&self, notification: &Notification) -> Result<u16, SinkError> {
        let body = serde_json::to_vec(&self.message(notification))
            .map_err(|e| SinkError::new(None, format!("the message does not serialise: {e}")))?;
        let answer = self
            .http
            .send(Method::POST, &self.url, "application/json", &[], body)
            .await?;
        accepted(answer, "Slack")
    }
}
