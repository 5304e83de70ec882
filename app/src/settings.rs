//! Typed settings: `config/default.toml` (built into the binary), an optional file, and
//! `KUBERNAUT__SECTION__KEY` environment variables, later sources winning.

use std::fmt;
use std::path::Path;

use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use kubernaut_domain::engine::EngineSettings;
use kubernaut_domain::lease::InstanceId;
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
    #[serde(default)]
    pub security: SecuritySettings,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub metrics: MetricsSettings,
    #[serde(default)]
    pub notifications: crate::notifications::NotificationSettings,
}

/// Where `/metrics` is served: the `[metrics]` section (docs/operations.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// A second address serving `/metrics` (only) without a token, for a Prometheus
    /// scrape inside the cluster. Unset: `/metrics` is served on the API's address
    /// only, to a token that may read the metrics (admin).
    pub bind: Option<String>,
}

/// The deployment engine of this replica: the `[engine]` section (docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Drive deployments in this process. `false`: it serves the API and the UI only,
    /// and other replicas drive what it stores.
    pub enabled: bool,
    /// This replica's name in the leases it holds (a random suffix is added per start).
    /// Unset: the host name.
    pub instance: Option<String>,
    /// Seconds a lease lasts without a heartbeat: how long a dead replica's deployments
    /// wait before another replica drives them on. Renewed every third of it.
    pub lease_ttl_seconds: u64,
    /// Milliseconds between looks for deployments whose lease is free or expired.
    pub claim_interval_ms: u64,
    /// The most deployments this replica drives at once.
    pub max_deployments: usize,
    /// Seconds past a deployment's deadline that its driver keeps retrying database
    /// errors before leaving it to the next replica that claims it.
    pub retry_window_seconds: u64,
    /// Seconds a driver that starts past the deadline watches for what the cluster shows
    /// before judging.
    pub late_check_seconds: u64,
    /// Seconds a stopping replica waits for its drivers before giving their leases back.
    pub shutdown_grace_seconds: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            instance: None,
            lease_ttl_seconds: 15,
            claim_interval_ms: 1000,
            max_deployments: 2000,
            retry_window_seconds: 60,
            late_check_seconds: 10,
            shutdown_grace_seconds: 5,
        }
    }
}

impl EngineConfig {
    /// The engine's settings, named after `instance` or the host.
    pub fn engine_settings(&self) -> EngineSettings {
        let name = self.instance.clone().unwrap_or_else(host_name);
        let defaults = EngineSettings::default();
        EngineSettings {
            instance: InstanceId::unique(&name),
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds.max(1)),
            claim_interval: Duration::from_millis(self.claim_interval_ms.max(10)),
            max_drivers: self.max_deployments.max(1),
            retry_window: Duration::from_secs(self.retry_window_seconds),
            late_check: Duration::from_secs(self.late_check_seconds.max(1)),
            ..defaults
        }
    }
}

/// The machine's host name (a pod's name in Kubernetes), or `kubernaut`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "kubernaut".to_owned())
}

/// Sessions, rate limits and proxies: the `[security]` section.
#[derive(Debug, Clone, Deserialize)]
pub struct SecuritySettings {
    /// The key that signs session cookies: base64 of 64 bytes. Unset: a random key per
    /// process, so sessions end when it restarts (and are not shared between replicas).
    #[serde(default)]
    pub session_key: Option<Secret>,
    /// Mark cookies `Secure`: set it when the UI is served over HTTPS.
    #[serde(default)]
    pub secure_cookies: bool,
    /// Changes (POST, PUT, PATCH, DELETE under `/api`) one token may make per minute;
    /// 0: no limit.
    #[serde(default = "default_mutations_per_minute")]
    pub mutations_per_minute: u32,
    /// Believe `X-Forwarded-For` (and only it) for the client's address: only behind a
    /// reverse proxy that sets them.
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// How long an authenticated token is trusted without reading it again: a
    /// revocation made through another replica takes effect within this time.
    #[serde(default = "default_token_cache_seconds")]
    pub token_cache_seconds: u64,
    /// Requests one token may hold open at once (`?wait=` long polls and event
    /// streams); more get 429. 0: no limit.
    #[serde(default = "default_streams_per_token")]
    pub streams_per_token: usize,
    /// Requests the process holds open at once, for all tokens; 0: no limit.
    #[serde(default = "default_streams_total")]
    pub streams_total: usize,
    /// Failed authentications one source address may make per minute; past that its
    /// requests get 429 before any lookup until the quota refills. 0: no limit.
    #[serde(default = "default_failed_authentications_per_minute")]
    pub failed_authentications_per_minute: u32,
}

fn default_failed_authentications_per_minute() -> u32 {
    30
}

/// Enough for a CI run that registers and deploys 200 services within a minute (400
/// changes in one burst), with room for its retries and cancels.
fn default_mutations_per_minute() -> u32 {
    600
}

fn default_streams_per_token() -> usize {
    16
}

fn default_streams_total() -> usize {
    1000
}

fn default_token_cache_seconds() -> u64 {
    5
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            session_key: None,
            secure_cookies: false,
            mutations_per_minute: default_mutations_per_minute(),
            trust_forwarded_headers: false,
            token_cache_seconds: default_token_cache_seconds(),
            streams_per_token: default_streams_per_token(),
            streams_total: default_streams_total(),
            failed_authentications_per_minute: default_failed_authentications_per_minute(),
        }
    }
}

/// The length of a session key, in bytes.
pub const SESSION_KEY_BYTES: usize = 64;

impl SecuritySettings {
    /// The session key: the configured one decoded, or a random one (and `true`, so the
    /// caller can warn that sessions end at restart) when none is set.
    ///
    /// # Errors
    /// When the configured key is not base64 of 64 bytes, or no randomness is available.
    pub fn session_key(&self) -> anyhow::Result<(Vec<u8>, bool)> {
        use base64::Engine as _;
        if let Some(key) = &self.session_key {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.expose().trim())
                .map_err(|_| anyhow::anyhow!("security.session_key is not base64"))?;
            anyhow::ensure!(
                bytes.len() == SESSION_KEY_BYTES,
                "security.session_key must be {SESSION_KEY_BYTES} bytes (base64 of them; e.g. `openssl rand -base64 64`), not {}",
                bytes.len()
            );
            return Ok((bytes, false));
        }
        let mut bytes = vec![0_u8; SESSION_KEY_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a session key: {e}"))?;
        Ok((bytes, true))
    }
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
    /// How many requests to this cluster's API server (applies, prunes, diagnostics;
    /// the shared watches aside) may be in flight at once; more wait for a slot. Each is
    /// a connection of its own over HTTP/1.1, so this bounds what a burst of deploys
    /// opens. At least 1.
    #[serde(default = "sixty_four")]
    pub max_requests: std::num::NonZeroUsize,
    #[serde(flatten)]
    pub rules: kubernaut_domain::cluster::ClusterSettings,
}

fn sixty() -> u64 {
    60
}

fn one() -> f64 {
    1.0
}

/// Requests in flight to one cluster's API server unless `max_requests` says otherwise.
pub const DEFAULT_MAX_REQUESTS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(64) {
    Some(requests) => requests,
    None => std::num::NonZeroUsize::MIN,
};

fn sixty_four() -> std::num::NonZeroUsize {
    DEFAULT_MAX_REQUESTS
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentSettings {
    /// How long a pod of a new revision may stay unschedulable before the deploy fails.
    pub unschedulable_grace_seconds: u64,
    /// How long a cluster's shared watch stays open after its last rollout ended.
    #[serde(default = "sixty")]
    pub watch_grace_seconds: u64,
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
            unschedulable_grace_seconds: 15,
            watch_grace_seconds: 60,
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
    /// Seconds a client gets to send a request's head; slower ones get 408.
    #[serde(default = "default_client_request_timeout")]
    pub client_request_timeout_seconds: u64,
    /// Seconds a closing connection gets to shut down cleanly.
    #[serde(default = "default_client_disconnect_timeout")]
    pub client_disconnect_timeout_seconds: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_seconds: u64,
}

fn default_client_request_timeout() -> u64 {
    10
}

fn default_client_disconnect_timeout() -> u64 {
    5
}

fn default_keep_alive() -> u64 {
    75
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://...` for PostgreSQL (replicas); empty or `sqlite:PATH` for the
    /// embedded SQLite database of one process (see [`DatabaseSettings::backend`]).
    #[serde(default = "DatabaseUrl::empty")]
    pub url: DatabaseUrl,
    /// Where the embedded database lives (`--data-dir`); unset: see
    /// [`DatabaseSettings::data_dir`].
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
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

    /// No URL: the embedded database.
    pub fn empty() -> Self {
        Self(String::new())
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
        assert_eq!(settings.security.mutations_per_minute, 600);
        assert_eq!(settings.security.token_cache_seconds, 5);
        assert!(!settings.security.secure_cookies);
        assert!(!settings.security.trust_forwarded_headers);
        assert!(settings.security.session_key.is_none());
        assert_eq!(settings.server.client_request_timeout_seconds, 10);
    }

    #[test]
    fn a_cluster_bounds_its_requests_at_64_unless_told_and_never_at_0() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[clusters]]\nname = \"a\"\n\n[[clusters]]\nname = \"b\"\nmax_requests = 8\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&path)).expect("settings");
        assert_eq!(settings.clusters[0].max_requests.get(), 64);
        assert_eq!(settings.clusters[1].max_requests.get(), 8);
        std::fs::write(&path, "[[clusters]]\nname = \"a\"\nmax_requests = 0\n").expect("write");
        let error = Settings::load(Some(&path)).expect_err("0 is refused");
        assert!(error.to_string().contains("max_requests"), "{error}");
    }

    #[test]
    fn without_a_session_key_each_process_makes_a_random_one() {
        let settings = SecuritySettings::default();
        let (first, random) = settings.session_key().expect("key");
        let (second, _) = settings.session_key().expect("key");
        assert!(random);
        assert_eq!(first.len(), SESSION_KEY_BYTES);
        assert_ne!(first, second);
    }

    #[test]
    fn a_session_key_is_base64_of_64_bytes_and_never_shown() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode([7_u8; 64]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            format!("[security]\nsession_key = \"{key}\"\nsecure_cookies = true\nmutations_per_minute = 3\n"),
        )
        .expect("write");
        let settings = Settings::load(Some(&path)).expect("settings");
        assert!(settings.security.secure_cookies);
        assert_eq!(settings.security.mutations_per_minute, 3);
        assert_eq!(settings.security.token_cache_seconds, 5);
        let (bytes, random) = settings.security.session_key().expect("key");
        assert!(!random);
        assert_eq!(bytes, vec![7_u8; 64]);
        assert!(!format!("{settings:?}").contains(&key));

        let short = SecuritySettings {
            session_key: Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode([1_u8; 32]),
            )),
            ..SecuritySettings::default()
        };
        assert!(short.session_key().is_err());
        let garbage = SecuritySettings {
            session_key: Some(Secret::new("not base64!")),
            ..SecuritySettings::default()
        };
        assert!(garbage.session_key().is_err());
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
