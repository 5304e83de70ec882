//! Typed settings: `config/default.toml` (built into the binary), an optional file, and
//! `KUBERNAUT__SECTION__KEY` environment variables, later sources winning.

use std::fmt;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    /// The clusters deploys may target. Empty: the current context of `KUBECONFIG` (or
    /// `~/.kube/config`), named after the context, when there is one.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub deployments: DeploymentSettings,
    /// The container registries whose images are checked when a release is registered.
    /// Empty: no image is checked.
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
}

/// One container registry (Docker Registry HTTP API v2).
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryConfig {
    /// Where its API answers: `https://registry.example.com`, `http://127.0.0.1:5000`.
    pub url: String,
    /// The registry part of the image references it holds; unset: the URL's
    /// `host[:port]`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// A secret setting that never reaches a log: `Debug` shows `***`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One cluster: how to reach it and its rules.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterConfig {
    pub name: String,
    /// A kubeconfig file; unset: `KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A context of that kubeconfig; unset: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account Kubernaut runs under inside the cluster.
    #[serde(default)]
    pub in_cluster: bool,
    /// How many times faster than the wall clock the cluster's clock runs: 1 for real
    /// clusters; more for an accelerated simulator (`kube-sim --time-scale`).
    #[serde(default = "one")]
    pub clock_scale: f64,
    #[serde(flatten)]
    pub rules: kubernaut_domain::cluster::ClusterSettings,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentSettings {
    /// Resume watching the deployments a previous process left unfinished.
    pub resume_on_start: bool,
    /// How long a pod of a new revision may stay unschedulable before the deploy fails.
    pub unschedulable_grace_seconds: u64,
    /// With no `[[clusters]]`, use the current context of `KUBECONFIG` / `~/.kube/config`.
    pub use_current_kubeconfig_context: bool,
    /// Deploy a release whose image digest was recorded as `registry/repository@digest`
    /// rather than by its tag.
    #[serde(default)]
    pub pin_image_digest: bool,
}

impl Default for DeploymentSettings {
    fn default() -> Self {
        Self {
            resume_on_start: true,
            unschedulable_grace_seconds: 15,
            use_current_kubeconfig_context: true,
            pin_image_digest: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub pool_size: u32,
    pub connect_timeout_seconds: u64,
    pub migrate_on_start: bool,
    pub create_if_missing: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A database URL whose password never reaches a log: `Debug` and `Display` hide it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the connection pool only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> String {
        // postgres://user:password@host/db -> postgres://user:***@host/db
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".to_owned();
        };
        match rest.split_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Settings {
    /// Loads the defaults, then `file` when given, then the environment.
    ///
    /// # Errors
    /// When the file cannot be read or a value has the wrong type.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(File::from(file).required(true));
        }
        builder
            .add_source(
                Environment::with_prefix("KUBERNAUT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_load() {
        let settings = Settings::load(None).expect("defaults");
        assert_eq!(settings.database.pool_size, 16);
        assert!(settings.database.migrate_on_start);
        assert_eq!(settings.log.format, LogFormat::Text);
    }

    #[test]
    fn a_password_in_the_database_url_is_never_shown() {
        let url = DatabaseUrl::new("postgres://kubernaut:hunter2@db:5432/kubernaut");
        assert_eq!(
            url.to_string(),
            "postgres://kubernaut:***@db:5432/kubernaut"
        );
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(url.expose().contains("hunter2"));
    }

    #[test]
    fn registries_are_read_with_their_credentials_and_the_password_is_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "[deployments]\npin_image_digest = true\n\n[[registries]]\nurl = \"http://127.0.0.1:5000\"\n\n[[registries]]\nurl = \"https://registry.example.com\"\nhost = \"images.example.com\"\nusername = \"jenkins\"\npassword = \"hunter2\"\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&path)).expect("settings");
        assert!(settings.deployments.pin_image_digest);
        assert_eq!(settings.registries.len(), 2);
        assert_eq!(settings.registries[0].url, "http://127.0.0.1:5000");
        assert!(settings.registries[0].password.is_none());
        let private = &settings.registries[1];
        assert_eq!(private.host.as_deref(), Some("images.example.com"));
        assert_eq!(private.username.as_deref(), Some("jenkins"));
        assert_eq!(
            private.password.as_ref().map(Secret::expose),
            Some("hunter2")
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn by_default_no_registry_is_checked_and_deploys_use_tags() {
        let settings = Settings::load(None).expect("defaults");
        assert!(settings.registries.is_empty());
        assert!(!settings.deployments.pin_image_digest);
    }

    #[test]
    fn a_file_overrides_the_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[server]\nbind = \"0.0.0.0:9999\"\n").expect("write");
        let settings = Settings::load(Some(&path)).expect("settings");
        assert_eq!(settings.server.bind, "0.0.0.0:9999");
        assert_eq!(settings.database.pool_size, 16);
    }
}
