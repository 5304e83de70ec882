//! The `[notifications]` section: sinks, rules and the retry policy, turned into the
//! domain's rules and dispatcher settings and the notify adapter's sinks
//! (docs/operations.md, "Notifications").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kubernaut_domain::lease::InstanceId;
use kubernaut_domain::notification::{
    DispatchSettings, NotificationEvent, NotificationRule, NotificationRules, RetryPolicy,
    TargetFilter,
};
use kubernaut_domain::ports::NotificationSink;
use kubernaut_notify::{CdEventsSink, GitHubSink, SinkSecret, SlackSink, WebhookSink};
use serde::Deserialize;

use crate::settings::Secret;

/// The `[notifications]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// Deliver notifications from this replica. Each replica that does claims due
    /// deliveries; one is enough, all is fine.
    pub enabled: bool,
    /// Kubernaut's address as people reach it, for links in messages
    /// (`https://kubernaut.example.com`).
    pub public_url: Option<String>,
    pub poll_interval_ms: u64,
    /// How long a replica holds a delivery it attempts: a replica that dies mid-attempt
    /// leaves it to another this long after. At least twice `attempt_timeout_seconds`.
    pub claim_lease_seconds: u64,
    pub attempt_timeout_seconds: u64,
    pub retry_initial_delay_seconds: u64,
    pub retry_max_delay_seconds: u64,
    pub retry_max_attempts: u32,
    pub retry_max_age_hours: u64,
    /// The share (0 to 1) by which each delay is randomly shortened.
    pub retry_jitter: f64,
    pub sinks: Vec<SinkConfig>,
    pub rules: Vec<RuleConfig>,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        Self {
            enabled: true,
            public_url: None,
            poll_interval_ms: 1000,
            claim_lease_seconds: 60,
            attempt_timeout_seconds: 10,
            retry_initial_delay_seconds: retry.initial_delay.as_secs(),
            retry_max_delay_seconds: retry.max_delay.as_secs(),
            retry_max_attempts: retry.max_attempts,
            retry_max_age_hours: retry.max_age.as_secs() / 3600,
            retry_jitter: retry.jitter,
            sinks: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// One `[[notifications.sinks]]`: where notifications go. Secrets (`secret`,
/// `token`, a Slack `url`) may instead be read from the environment variable named by
/// `secret_env`, `token_env` or `url_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    /// `webhook`, `slack`, `github` or `cdevents`.
    pub kind: String,
    pub url: Option<Secret>,
    pub url_env: Option<String>,
    /// webhook: the HMAC-SHA256 key of the signature.
    pub secret: Option<Secret>,
    pub secret_env: Option<String>,
    /// github: `owner/name`.
    pub repository: Option<String>,
    /// github: the REST API (`https://api.github.com`, or GitHub Enterprise's).
    pub api_url: Option<String>,
    pub token: Option<Secret>,
    pub token_env: Option<String>,
    /// github: the deployment attribute holding the ref (default `commit`); the
    /// version when the deployment has none.
    pub ref_attribute: Option<String>,
    /// cdevents: the events' source (default: `public_url`, else `/kubernaut`).
    pub source: Option<String>,
}

/// One `[[notifications.rules]]`: deployments matching the patterns tell `sink` of
/// `events` (every verdict when left out).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub sink: String,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub service: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
}

/// A secret given inline or through an environment variable.
fn secret(
    field: &str,
    inline: Option<&Secret>,
    variable: Option<&String>,
) -> anyhow::Result<Option<String>> {
    if let Some(variable) = variable {
        let value = std::env::var(variable)
            .ok()
            .filter(|value| !value.is_empty())
            .with_context(|| {
                format!("{field}_env: the environment variable {variable} is not set")
            })?;
        return Ok(Some(value));
    }
    Ok(inline.map(|secret| secret.expose().to_owned()))
}

impl NotificationSettings {
    /// The rules, checked: every rule names a configured sink and known events.
    ///
    /// # Errors
    /// Naming the rule and the field that is wrong.
    pub fn rules(&self) -> anyhow::Result<NotificationRules> {
        let mut rules = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let at = format!("notifications.rules[{index}]");
            if !self.sinks.iter().any(|sink| sink.name == rule.sink) {
                bail!("{at}.sink: no sink is named {:?}", rule.sink);
            }
            let events = rule
                .events
                .iter()
                .map(|event| {
                    NotificationEvent::parse(event).with_context(|| {
                        format!(
                            "{at}.events: {event:?} is not an event (started, succeeded, failed, timed_out, cancelled)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let filter = TargetFilter {
                cluster: rule.cluster.clone(),
                namespace: rule.namespace.clone(),
                service: rule.service.clone(),
            };
            rules.push(
                NotificationRule::new(&rule.sink, filter, events)
                    .map_err(|e| anyhow::anyhow!("{at}.{e}"))?,
            );
        }
        Ok(NotificationRules::new(rules))
    }

    /// Every sink by name.
    ///
    /// # Errors
    /// Naming the sink and the field that is wrong or missing.
    pub fn sinks(&self) -> anyhow::Result<HashMap<String, Arc<dyn NotificationSink>>> {
        let timeout = Duration::from_secs(self.attempt_timeout_seconds.max(1));
        let mut sinks: HashMap<String, Arc<dyn NotificationSink>> = HashMap::new();
        for (index, config) in self.sinks.iter().enumerate() {
            let at = format!("notifications.sinks[{index}]");
            if config.name.trim().is_empty() {
                bail!("{at}.name: give the sink a name for rules to use");
            }
            let url = secret(
                &format!("{at}.url"),
                config.url.as_ref(),
                config.url_env.as_ref(),
            )?;
            let need_url = || {
                url.clone()
                    .with_context(|| format!("{at}.url: a {} sink needs a URL", config.kind))
            };
            let sink: Arc<dyn NotificationSink> = match config.kind.as_str() {
                "webhook" => {
                    let key = secret(
                        &format!("{at}.secret"),
                        config.secret.as_ref(),
                        config.secret_env.as_ref(),
                    )?;
                    Arc::new(
                        WebhookSink::new(&need_url()?, key.map(SinkSecret::new), timeout)
                            .with_context(|| format!("{at}.url"))?,
                    )
                }
                "slack" => Arc::new(
                    SlackSink::new(&need_url()?, self.public_url.clone(), timeout)
                        .with_context(|| format!("{at}.url"))?,
                ),
                "github" => {
                    let token = secret(
                        &format!("{at}.token"),
                        config.token.as_ref(),
                        config.token_env.as_ref(),
                    )?
                    .with_context(|| format!("{at}.token: a github sink needs a token"))?;
                    let repository = config
                        .repository
                        .as_deref()
                        .with_context(|| format!("{at}.repository: name it as owner/name"))?;
                    Arc::new(
                        GitHubSink::new(
                            config
                                .api_url
                                .as_deref()
                                .unwrap_or("https://api.github.com"),
                            repository,
                            SinkSecret::new(token),
                            config.ref_attribute.as_deref().unwrap_or("commit"),
                            self.public_url.clone(),
                            timeout,
                        )
                        .with_context(|| at.clone())?,
                    )
                }
                "cdevents" => {
                    let source = config
                        .source
                        .clone()
                        .or_else(|| self.public_url.clone())
                        .unwrap_or_else(|| "/kubernaut".to_owned());
                    Arc::new(
                        CdEventsSink::new(&need_url()?, &source, timeout)
                            .with_context(|| at.clone())?,
                    )
                }
                other => bail!(
                    "{at}.kind: {other:?} is not a sink kind (webhook, slack, github, cdevents)"
                ),
            };
            if sinks.insert(config.name.clone(), sink).is_some() {
                bail!("{at}.name: another sink is named {:?}", config.name);
            }
        }
        Ok(sinks)
    }

    /// The dispatcher's settings, for replica `instance`.
    ///
    /// # Errors
    /// When the claim lease is not longer than an attempt may take.
    pub fn dispatch_settings(&self, instance: InstanceId) -> anyhow::Result<DispatchSettings> {
        let attempt_timeout = Duration::from_secs(self.attempt_timeout_seconds.max(1));
        let claim_lease = Duration::from_secs(self.claim_lease_seconds);
        if claim_lease < attempt_timeout * 2 {
            bail!(
                "notifications.claim_lease_seconds: {} must be at least twice attempt_timeout_seconds ({}), or another replica may attempt a delivery still in flight",
                self.claim_lease_seconds,
                self.attempt_timeout_seconds
            );
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            bail!(
                "notifications.retry_jitter: {} is not between 0 and 1",
                self.retry_jitter
            );
        }
        Ok(DispatchSettings {
            instance,
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(10)),
            claim_lease,
            attempt_timeout,
            batch: 32,
            retry: RetryPolicy {
                initial_delay: Duration::from_secs(self.retry_initial_delay_seconds.max(1)),
                max_delay: Duration::from_secs(self.retry_max_delay_seconds.max(1)),
                max_attempts: self.retry_max_attempts.max(1),
                max_age: Duration::from_secs(self.retry_max_age_hours.max(1) * 3600),
                jitter: self.retry_jitter,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(name: &str, kind: &str) -> SinkConfig {
        SinkConfig {
            name: name.to_owned(),
            kind: kind.to_owned(),
            url: Some(Secret::new("http://127.0.0.1:9/hook")),
            url_env: None,
            secret: None,
            secret_env: None,
            repository: None,
            api_url: None,
            token: None,
            token_env: None,
            ref_attribute: None,
            source: None,
        }
    }

    fn rule(sink: &str, events: &[&str]) -> RuleConfig {
        RuleConfig {
            sink: sink.to_owned(),
            cluster: Some("prod-*".to_owned()),
            namespace: None,
            service: None,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn rules_name_known_sinks_and_events() {
        let settings = NotificationSettings {
            sinks: vec![sink("ops", "webhook")],
            rules: vec![rule("ops", &["started", "failed"])],
            ..NotificationSettings::default()
        };
        assert!(settings.rules().is_ok());
        assert_eq!(settings.sinks().expect("sinks").len(), 1);

        let unknown_sink = NotificationSettings {
            rules: vec![rule("nobody", &[])],
            ..settings.clone()
        };
        let error = unknown_sink.rules().expect_err("no such sink").to_string();
        assert!(error.starts_with("notifications.rules[0].sink"), "{error}");

        let unknown_event = NotificationSettings {
            rules: vec![rule("ops", &["deployed"])],
            ..settings.clone()
        };
        let error = unknown_event
            .rules()
            .expect_err("no such event")
            .to_string();
        assert!(
            error.starts_with("notifications.rules[0].events"),
            "{error}"
        );
    }

    #[test]
    fn sinks_say_which_field_is_wrong() {
        let cases = [
            (sink("a", "email"), "notifications.sinks[0].kind"),
            (
                SinkConfig {
                    url: None,
                    ..sink("a", "slack")
                },
                "notifications.sinks[0].url",
            ),
            (sink("a", "github"), "notifications.sinks[0].token"),
            (
                SinkConfig {
                    url: Some(Secret::new("ftp://x")),
                    ..sink("a", "webhook")
                },
                "notifications.sinks[0].url",
            ),
            (
                SinkConfig {
                    secret_env: Some("KUBERNAUT_TEST_SURELY_UNSET_VARIABLE".to_owned()),
                    ..sink("a", "webhook")
                },
                "notifications.sinks[0].secret_env",
            ),
        ];
        for (config, field) in cases {
            let settings = NotificationSettings {
                sinks: vec![config],
                ..NotificationSettings::default()
            };
            let error = format!("{:#}", settings.sinks().err().expect("refused"));
            assert!(error.starts_with(field), "{field}: {error}");
        }
        let twice = NotificationSettings {
            sinks: vec![sink("a", "webhook"), sink("a", "slack")],
            ..NotificationSettings::default()
        };
        assert!(twice.sinks().is_err());
    }

    #[test]
    fn a_claim_must_outlast_an_attempt() {
        let settings = NotificationSettings {
            claim_lease_seconds: 15,
            attempt_timeout_seconds: 10,
            ..NotificationSettings::default()
        };
        let error = settings
            .dispatch_settings(InstanceId::from_stored("a"))
            .expect_err("too short")
            .to_string();
        assert!(
            error.starts_with("notifications.claim_lease_seconds"),
            "{error}"
        );
        assert!(
            NotificationSettings::default()
                .dispatch_settings(InstanceId::from_stored("a"))
                .is_ok()
        );
    }
}
