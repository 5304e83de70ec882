#![doc = include_str!("../README.md")]

mod cdevents;
mod github;
mod http;
pub mod signature;
mod slack;
mod webhook;

pub use cdevents::CdEventsSink;
pub use github::GitHubSink;
pub use http::InvalidSink;
pub use slack::SlackSink;
pub use webhook::WebhookSink;

/// A secret (a webhook's key, a token) that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkSecret(String);

impl SinkSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkSecret(***)")
    }
}

/// The link to a deployment's page, when Kubernaut's public address is known.
pub(crate) fn deployment_link(
    public_url: Option<&str>,
    deployment: kubernaut_domain::deployment::DeploymentId,
) -> Option<String> {
    public_url.map(|base| format!("{}/deployments/{deployment}", base.trim_end_matches('/')))
}
