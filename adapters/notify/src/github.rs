//! [`GitHubSink`]: GitHub deployment statuses through the REST API.
//!
//! For each Kubernaut deployment one GitHub deployment (of the ref and environment)
//! carries `{"kubernaut_deployment_id": ...}` in its payload; the sink finds it
//! (`GET /repos/{owner}/{repo}/deployments?ref=&environment=`) or creates it
//! (`POST /repos/{owner}/{repo}/deployments`), then posts the status
//! (`POST /repos/{owner}/{repo}/deployments/{id}/statuses`). A retry finds the one it
//! made before, so GitHub shows one deployment per Kubernaut deployment.

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use http::header::{ACCEPT, AUTHORIZATION, HeaderName};
use kubernaut_domain::notification::{Notification, NotificationEvent, SinkError};
use kubernaut_domain::ports::NotificationSink;
use serde_json::{Value, json};

use crate::http::{Http, InvalidSink, accepted, checked_url};
use crate::{SinkSecret, deployment_link};

/// The REST API's version this sink speaks.
const API_VERSION: &str = "2022-11-28";

/// GitHub deployment statuses for one repository.
#[derive(Clone)]
pub struct GitHubSink {
    http: Http,
    api_url: String,
    repository: String,
    token: SinkSecret,
    ref_attribute: String,
    public_url: Option<String>,
}

impl std::fmt::Debug for GitHubSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSink")
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl GitHubSink {
    /// A sink for `repository` (`owner/name`) at `api_url` (`https://api.github.com`,
    /// or a GitHub Enterprise `https://host/api/v3`) with `token` (a fine-grained token
    /// with the "Deployments: write" permission). The GitHub deployment's ref is the
    /// deployment's attribute `ref_attribute` (a commit SHA, a tag), else its version.
    ///
    /// # Errors
    /// [`InvalidSink`] for a URL that is not http(s), a repository that is not
    /// `owner/name`, or when TLS cannot be set up.
    pub fn new(
        api_url: &str,
        repository: &str,
        token: SinkSecret,
        ref_attribute: &str,
        public_url: Option<String>,
        timeout: Duration,
    ) -> Result<Self, InvalidSink> {
        let valid = repository.split('/').count() == 2
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if !valid {
            return Err(InvalidSink::Setting {
                field: "repository".to_owned(),
                reason: format!("{repository:?} is not owner/name"),
            });
        }
        Ok(Self {
            http: Http::new(timeout)?,
            api_url: checked_url(api_url)?.trim_end_matches('/').to_owned(),
            repository: repository.to_owned(),
            token,
            ref_attribute: ref_attribute.to_owned(),
            public_url,
        })
    }

    /// The GitHub state of `event`.
    pub fn state(event: NotificationEvent) -> &'static str {
        match event {
            NotificationEvent::Started => "in_progress",
            NotificationEvent::Succeeded => "success",
            NotificationEvent::Failed => "failure",
            NotificationEvent::TimedOut | NotificationEvent::Cancelled => "error",
        }
    }

    /// The environment of `notification`: `cluster/namespace`.
    pub fn environment(notification: &Notification) -> String {
        format!(
            "{}/{}",
            notification.deployment.cluster, notification.deployment.namespace
        )
    }

    fn git_ref<'a>(&self, notification: &'a Notification) -> &'a str {
        notification
            .deployment
            .attributes
            .get(&self.ref_attribute)
            .unwrap_or(&notification.deployment.version)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, SinkError> {
        let headers = [
            (ACCEPT, "application/vnd.github+json".to_owned()),
            (AUTHORIZATION, format!("Bearer {}", self.token.expose())),
            (
                HeaderName::from_static("x-github-api-version"),
                API_VERSION.to_owned(),
            ),
        ];
        let body = body.map_or_else(Vec::new, |body| body.to_string().into_bytes());
        let answer = self
            .http
            .send(
                method,
                &format!("{}{path}", self.api_url),
                "application/json",
                &headers,
                body,
            )
            .await?;
        let raw = answer.body.clone();
        accepted(answer, "GitHub")?;
        serde_json::from_slice(&raw)
            .map_err(|e| SinkError::new(None, format!("GitHub's answer is not JSON: {e}")))
    }

    /// The id of the GitHub deployment of `notification`'s deployment, made when none
    /// exists yet.
    async fn deployment(&self, notification: &Notification) -> Result<i64, SinkError> {
        let ours = notification.deployment.id.to_string();
        let environment = Self::environment(notification);
        let git_ref = self.git_ref(notification);
        let listed = self
            .call(
                Method::GET,
                &format!(
                    "/repos/{}/deployments?ref={}&environment={}&per_page=100",
                    self.repository,
                    encode(git_ref),
                    encode(&environment)
                ),
                None,
            )
            .await?;
        let found = listed.as_array().and_then(|deployments| {
            deployments.iter().find_map(|deployment| {
                (deployment["payload"]["kubernaut_deployment_id"].as_str() == Some(&ours))
                    .then(|| deployment["id"].as_i64())
                    .flatten()
            })
        });
        if let Some(id) = found {
            return Ok(id);
        }
        let deployment = &notification.deployment;
        let created = self
            .call(
                Method::POST,
                &format!("/repos/{}/deployments", self.repository),
                Some(&json!({
                    "ref": git_ref,
                    "task": "deploy",
                    "environment": environment,
                    "description": format!(
                        "{} {} by Kubernaut", deployment.service, deployment.version
                    ),
                    "auto_merge": false,
                    "required_contexts": [],
                    "payload": {
                        "kubernaut_deployment_id": ours,
                        "service": deployment.service,
                        "version": deployment.version,
                    },
                    "transient_environment": false,
                })),
            )
            .await?;
        created["id"].as_i64().ok_or_else(|| {
            SinkError::new(None, "GitHub made the deployment but gave no id".to_owned())
        })
    }

    /// The status body for `notification`.
    pub fn status(&self, notification: &Notification) -> Value {
        let deployment = &notification.deployment;
        let mut description = format!(
            "{} {} {}",
            deployment.service,
            deployment.version,
            notification.event.as_str().replace('_', " ")
        );
        if let Some(reason) = &deployment.reason {
            description = format!("{description}: {reason}");
        }
        // GitHub refuses descriptions over 140 characters.
        let description: String = description.chars().take(140).collect();
        let mut status = json!({
            "state": Self::state(notification.event),
            "description": description,
            "environment": Self::environment(notification),
            "auto_inactive": true,
        });
        if let Some(link) = deployment_link(self.public_url.as_deref(), deployment.id) {
            status["log_url"] = Value::String(link);
        }
        status
    }
}

#[async_trait]
impl NotificationSink for GitHubSink {
    async fn send(&self, notification: &Notification) -> Result<u16, SinkError> {
        let id = self.deployment(notification).await?;
        self.call(
            Method::POST,
            &format!("/repos/{}/deployments/{id}/statuses", self.repository),
            Some(&self.status(notification)),
        )
        .await?;
        Ok(201)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("staging/shop"), "staging%2Fshop");
        assert_eq!(encode("v1.2.3-rc_1~x"), "v1.2.3-rc_1~x");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
