//! [`WebhookSink`]: the notification as JSON to any URL, signed.

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use http::header::HeaderName;
use kubernaut_domain::notification::{Notification, SinkError};
use kubernaut_domain::ports::NotificationSink;

use crate::SinkSecret;
use crate::http::{Http, InvalidSink, accepted, checked_url};
use crate::signature;

/// A generic webhook: `POST url` with the notification as its JSON body; with a
/// secret, signed in `X-Kubernaut-Signature`.
#[derive(Clone)]
pub struct WebhookSink {
    http: Http,
    url: String,
    secret: Option<SinkSecret>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// # Errors
    /// [`InvalidSink`] for a URL that is not http(s), or when TLS cannot be set up.
    pub fn new(
        url: &str,
        secret: Option<SinkSecret>,
        timeout: Duration,
    ) -> Result<Self, InvalidSink> {
        Ok(Self {
            http: Http::new(timeout)?,
            url: checked_url(url)?,
            secret,
        })
    }
}

#[async_trait]
impl NotificationSink for WebhookSink {
    async fn send(&self, notification: &Notification) -> Result<u16, SinkError> {
        let body = serde_json::to_vec(notification).map_err(|e| {
            SinkError::new(None, format!("the notification does not serialise: {e}"))
        })?;
        let mut headers = vec![
            (
                HeaderName::from_static("x-kubernaut-event"),
                notification.event.as_str().to_owned(),
            ),
            (
                HeaderName::from_static("x-kubernaut-event-id"),
                notification.id.to_string(),
            ),
        ];
        if let Some(secret) = &self.secret {
            let now = chrono::Utc::now().timestamp();
            headers.push((
                HeaderName::from_static(signature::HEADER),
                signature::header_value(secret.expose().as_bytes(), now, &body),
            ));
        }
        let answer = self
            .http
            .send(Method::POST, &self.url, "application/json", &headers, body)
            .await?;
        accepted(answer, "the webhook")
    }
}
