#![doc = include_str!("../README.md")]

pub mod cli;
pub mod copy;
pub mod notifications;
pub mod sandbox;
pub mod settings;
pub mod storage;
pub mod telemetry;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::Server;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use anyhow::Context as _;
use kubernaut_api::auth::SecuritySettings;
use kubernaut_api::{ApiServices, Metrics};
use kubernaut_domain::ReleaseService;
use kubernaut_domain::access::{AccountKind, AccountName};
use kubernaut_domain::access_service::{AccessService, AuthenticationCache, NewAccount};
use kubernaut_domain::changes::ChangeFeed;
use kubernaut_domain::cluster::ClusterSettings;
use kubernaut_domain::deployment::ClusterName;
use kubernaut_domain::deployment_service::{ClusterHandle, DeploymentService};
use kubernaut_domain::notification::{Dispatcher, NotifyingDeployments};
use kubernaut_domain::ports::DeploymentRepository;
use kubernaut_domain::token::TokenSecret;
use kubernaut_domain::{Caller, Grant, Role, Scope};
use kubernaut_kubernetes::KubernetesCluster;
use kubernaut_registry::{Credentials, DockerRegistries, DockerRegistry, Password};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder, TracingLogger};

pub use settings::Settings;
pub use storage::Storage;

/// Opens the database named in `settings` (see [`Storage::open`]), applying pending
/// migrations when `migrate` is set (SQLite always migrates).
///
/// # Errors
/// When the database cannot be reached, created, locked or migrated.
pub async fn open_database(settings: &Settings, migrate: bool) -> anyhow::Result<Storage> {
    Storage::open(&settings.database, migrate).await
}

/// Issues an API token for `account` straight through the database (migrating it when
/// `database.migrate_on_start` allows): the first admin token of a fresh install, or a
/// token for a robot, with no server running. Creates the account (a robot) when it is
/// missing and grants it `role` for `scope` (`*` when `None`) when it lacks that.
/// Recorded in the audit trail as done by `kubernaut admin`.
///
/// # Errors
/// When the account name, scope or lifetime is invalid, or the database fails.
pub async fn bootstrap_token(
    settings: &Settings,
    account: &str,
    role: Role,
    scope: Option<Scope>,
    expires_in: Option<Duration>,
) -> anyhow::Result<TokenSecret> {
    let storage = open_database(settings, settings.database.migrate_on_start).await?;
    issue_token(&storage, account, role, scope, expires_in).await
}

/// [`bootstrap_token`] on a database already open (a server's own, see
/// [`Application::storage`]: an SQLite file admits one opener).
///
/// # Errors
/// When the account name, scope or lifetime is invalid, or the database fails.
pub async fn issue_token(
    storage: &Storage,
    account: &str,
    role: Role,
    scope: Option<Scope>,
    expires_in: Option<Duration>,
) -> anyhow::Result<TokenSecret> {
    let name = AccountName::parse(account).map_err(|e| anyhow::anyhow!(e))?;
    let grant = Grant::new(role, scope.unwrap_or_else(Scope::global))
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?;
    let repositories = storage.repositories();
    let access = AccessService::new(repositories.access, repositories.audit);
    let issued = access
        .bootstrap(
            NewAccount {
                name,
                kind: AccountKind::Robot,
                grants: vec![grant],
            },
            account,
            expires_in,
            &Caller::system("kubernaut admin"),
        )
        .await
        .context("could not issue the token")?;
    tracing::info!(
        token = %issued.token.id,
        account = %issued.token.account,
        expires_at = %issued.token.expires_at,
        "issued an API token"
    );
    Ok(issued.secret)
}

/// The request spans of [`TracingLogger`], built only when the log keeps them: the
/// default builder gathers the route, host, client and user agent of every request
/// before asking, and that cost GET by id a tenth of its CPU at log level `warn`.
/// Failed requests are still logged (by the middleware and by `ApiError`).
#[derive(Debug)]
pub struct RequestSpans;

impl RootSpanBuilder for RequestSpans {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // The target and level of the span `DefaultRootSpanBuilder` makes.
        if tracing::enabled!(
            target: "tracing_actix_web::root_span_builder",
            tracing::Level::INFO
        ) {
            DefaultRootSpanBuilder::on_request_start(request)
        } else {
            Span::none()
        }
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Serves `/metrics` (and nothing else) on `bind` without a token, for a Prometheus
/// scrape from inside the cluster (`metrics.bind`). Returns the port and the server.
fn serve_metrics(bind: &str, metrics: Metrics) -> anyhow::Result<(u16, Server)> {
    let listener = TcpListener::bind(bind)
        .with_context(|| format!("could not listen on {bind} (metrics.bind)"))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new().app_data(Data::new(metrics.clone())).route(
            "/metrics",
            web::get().to(kubernaut_api::metrics::scrape_open),
        )
    })
    .disable_signals()
    .workers(1)
    .listen(listener)?
    .run();
    Ok((port, server))
}

/// A built Kubernaut server, listening, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    /// The port and server of `metrics.bind`, when set.
    metrics_server: Option<(u16, Server)>,
    storage: Storage,
    deployments: DeploymentService,
    dispatcher: Dispatcher,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Builds a handle for every configured cluster; without any, the current context of
/// `KUBECONFIG` / `~/.kube/config`, named after it, when there is one. Each cluster's
/// open watches are sampled into `metrics` at every scrape.
///
/// # Errors
/// When a configured cluster's credentials cannot be loaded or its name is invalid.
pub async fn connect_clusters(
    settings: &Settings,
    metrics: &Metrics,
) -> anyhow::Result<Vec<ClusterHandle>> {
    let watched = |name: &ClusterName, cluster: &KubernetesCluster| {
        let name = name.to_string();
        let watches = cluster.watch_connections();
        metrics.on_scrape(move |metrics| metrics.set_watches(&name, watches.open()));
    };
    let grace = Duration::from_secs(settings.deployments.unschedulable_grace_seconds);
    let watch_grace = Duration::from_secs(settings.deployments.watch_grace_seconds);
    let mut handles = Vec::new();
    if settings.clusters.is_empty() {
        if !settings.deployments.use_current_kubeconfig_context {
            return Ok(handles);
        }
        let Some(context) = kubernaut_kubernetes::current_context_name(None) else {
            tracing::warn!(
                "no cluster is configured and no kubeconfig was found: deploys will be refused"
            );
            return Ok(handles);
        };
        let name = ClusterName::parse(&context)
            .map_err(|e| anyhow::anyhow!("the kubeconfig context {context:?} {e}"))?;
        let cluster = KubernetesCluster::from_kubeconfig(None, None)
            .await
            .with_context(|| format!("could not load the kubeconfig context {context}"))?
            .with_unschedulable_grace(grace)
            .with_watch_grace(watch_grace);
        watched(&name, &cluster);
        handles.push(ClusterHandle {
            name,
            settings: ClusterSettings::default(),
            cluster: Arc::new(cluster),
        });
        return Ok(handles);
    }
    for config in &settings.clusters {
        let name = ClusterName::parse(&config.name)
            .map_err(|e| anyhow::anyhow!("cluster name {:?} {e}", config.name))?;
        let cluster = if config.in_cluster {
            KubernetesCluster::in_cluster()
                .with_context(|| format!("cluster {name}: no in-cluster credentials"))?
        } else {
            KubernetesCluster::from_kubeconfig(
                config.kubeconfig.as_deref(),
                config.context.as_deref(),
            )
            .await
            .with_context(|| format!("cluster {name}: could not load its kubeconfig"))?
        };
        watched(&name, &cluster);
        handles.push(ClusterHandle {
            name,
            settings: config.rules.clone(),
            cluster: Arc::new(
                cluster
                    .with_unschedulable_grace(grace)
                    .with_watch_grace(watch_grace)
                    .with_clock_scale(config.clock_scale)
                    .with_max_requests(config.max_requests.get()),
            ),
        });
    }
    Ok(handles)
}

/// A client for every configured container registry.
///
/// # Errors
/// When a registry's URL is not usable or TLS cannot be set up.
pub fn connect_registries(settings: &Settings) -> anyhow::Result<DockerRegistries> {
    settings
        .registries
        .iter()
        .map(|config| {
            let credentials = config.username.as_ref().map(|username| Credentials {
                username: username.clone(),
                password: Password::new(config.password.as_ref().map_or("", |p| p.expose())),
            });
            DockerRegistry::new(&config.url, config.host.as_deref(), credentials)
                .with_context(|| format!("registry {}", config.url))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(DockerRegistries::new)
}

impl Application {
    /// Opens the database, wires the services and binds the listener (port 0 picks a
    /// free port, see [`Application::port`]).
    ///
    /// # Errors
    /// When the database cannot be opened or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let storage = open_database(&settings, settings.database.migrate_on_start).await?;
        Self::build_on(settings, storage).await
    }

    /// [`Self::build`] on a database already open.
    ///
    /// # Errors
    /// When a cluster or registry cannot be set up or the address cannot be bound.
    pub async fn build_on(settings: Settings, storage: Storage) -> anyhow::Result<Self> {
        let repositories = storage.repositories();
        let release_repository = repositories.releases.clone();
        let mut releases = ReleaseService::new(release_repository.clone());
        let registries = connect_registries(&settings)?;
        if !registries.is_empty() {
            releases = releases.with_registry(Arc::new(registries));
        }
        let metrics = Metrics::new();
        let clusters = connect_clusters(&settings, &metrics).await?;
        let changes: Arc<dyn ChangeFeed> = storage.changes(&settings.database)?;
        let mut engine_settings = settings.engine.engine_settings();
        // Applies in flight to a cluster match its bound on requests in flight: a
        // driver with an apply slot reads its objects and sends them at once.
        if let Some(most) = settings.clusters.iter().map(|c| c.max_requests.get()).max() {
            engine_settings.max_applying = most;
        }
        // Notifications: the rules decide which moves write deliveries to the outbox
        // (in the move's transaction); the dispatcher sends them.
        let notify = &settings.notifications;
        let rules = notify.rules()?;
        let sinks = notify.sinks()?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let outbox = storage.notification_outbox();
        let deployment_repository: Arc<dyn DeploymentRepository> = if rules.is_empty() {
            repositories.deployments.clone()
        } else {
            Arc::new(NotifyingDeployments::new(
                repositories.deployments.clone(),
                Arc::new(rules),
                Arc::clone(&wake),
            ))
        };
        let dispatcher = Dispatcher::new(
            Arc::clone(&outbox),
            sinks,
            notify.dispatch_settings(engine_settings.instance.clone())?,
            wake,
        );
        let deployments = DeploymentService::new(
            release_repository,
            deployment_repository,
            repositories.leases.clone(),
            Arc::clone(&changes),
            clusters,
        )
        .with_digest_pinning(settings.deployments.pin_image_digest)
        .with_engine_settings(engine_settings)
        .with_observer(Arc::new(metrics.clone()))
        .with_notifications(outbox);
        let engine = deployments.engine().clone();
        let replica = engine.settings().instance.to_string();
        metrics.on_scrape(move |metrics| {
            let driving = engine.driving();
            metrics.set_engine(&replica, driving, driving);
        });
        let pools = storage.clone();
        metrics.on_scrape(move |metrics| {
            let (pool, connections, idle, max) = pools.pool_use();
            metrics.set_pool(pool, connections, idle, max);
        });
        let (session_key, random_key) = settings.security.session_key()?;
        if random_key {
            tracing::warn!(
                "security.session_key is not set: a random key signs this process's sessions, so everyone signed in to the web UI is signed out when it restarts (and replicas do not share sessions)"
            );
        }
        let access = AccessService::new(repositories.access.clone(), repositories.audit.clone())
            .with_cache(AuthenticationCache {
                ttl: Duration::from_secs(settings.security.token_cache_seconds),
                ..AuthenticationCache::default()
            });
        access.follow_changes(changes.subscribe());
        let services = ApiServices {
            releases,
            deployments: deployments.clone(),
            access,
            security: SecuritySettings {
                session_key,
                secure_cookies: settings.security.secure_cookies,
                mutations_per_minute: settings.security.mutations_per_minute,
                trust_forwarded_headers: settings.security.trust_forwarded_headers,
                streams_per_credential: settings.security.streams_per_token,
                streams_total: settings.security.streams_total,
                failed_authentications_per_minute: settings
                    .security
                    .failed_authentications_per_minute,
            },
            metrics: metrics.clone(),
        };

        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("could not listen on {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let security = services.security.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(kubernaut_api::auth::security_headers_for(&security))
                .wrap(from_fn(kubernaut_api::metrics::record_requests))
                .wrap(TracingLogger::<RequestSpans>::new())
                // Gzip for clients that accept it; the event stream opts out (it says
                // `Content-Encoding: identity`) so that each event leaves at once.
                .wrap(actix_web::middleware::Compress::default())
                .configure(kubernaut_api::configure(services.clone()))
        })
        // Signals are ours (`run_until_stopped`): the engine stops before the server.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_seconds)
        .client_request_timeout(Duration::from_secs(
            settings.server.client_request_timeout_seconds,
        ))
        .client_disconnect_timeout(Duration::from_secs(
            settings.server.client_disconnect_timeout_seconds,
        ))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_seconds));
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.listen(listener)?.run();
        let metrics_server = match &settings.metrics.bind {
            Some(bind) => Some(serve_metrics(bind, metrics)?),
            None => None,
        };
        if settings.engine.enabled {
            deployments.engine().start();
        }
        // Every replica may deliver (claims keep them apart), whether or not it drives
        // deployments; without sinks there is nothing to deliver.
        if notify.enabled && !notify.sinks.is_empty() {
            dispatcher.start();
        }
        Ok(Self {
            port,
            server,
            metrics_server,
            storage,
            deployments,
            dispatcher,
            shutdown_grace: Duration::from_secs(settings.engine.shutdown_grace_seconds),
        })
    }

    /// The database the server runs on (to issue tokens on it while it runs).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The deployment use cases the server runs (tests wait on them).
    pub fn deployments(&self) -> &DeploymentService {
        &self.deployments
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate metrics address (`metrics.bind`), when one is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// Serves until the process is told to stop (SIGINT, SIGTERM). Then the engine
    /// stops first and gives its leases back, so other replicas drive its deployments
    /// on at once, and the server finishes its requests in flight.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let metrics_handle = self.metrics_server.map(|(_, server)| {
            let handle = server.handle();
            tokio::spawn(server);
            handle
        });
        let engine = self.deployments.engine().clone();
        let grace = self.shutdown_grace;
        let dispatcher = self.dispatcher.clone();
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stopping: giving deployments back to the other replicas");
            engine.shutdown(grace).await;
            dispatcher.shutdown(grace).await;
            handle.stop(true).await;
            if let Some(metrics) = metrics_handle {
                metrics.stop(true).await;
            }
        });
        let served = self.server.await;
        self.dispatcher.shutdown(self.shutdown_grace).await;
        // Stopped some other way (the server failed): the leases go back all the same.
        self.deployments
            .engine()
            .shutdown(self.shutdown_grace)
            .await;
        served
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
