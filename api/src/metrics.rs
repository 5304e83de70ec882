//! `/metrics`: this replica's operational figures in the Prometheus text format
//! (version 0.0.4), with `prometheus-client`.
//!
//! Counters and histograms move as things happen (the engine's [`DeploymentObserver`]
//! calls, the HTTP middleware of [`Metrics::observe_http`]); gauges of things owned
//! elsewhere (the database pools, the engine's leases, the watches of the Kubernetes
//! adapter) are sampled at each scrape by the samplers the binary adds with
//! [`Metrics::on_scrape`], so nothing polls between scrapes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::Data;
use kubernaut_domain::Permission;
use kubernaut_domain::deployment::Target;
use kubernaut_domain::observer::{DeploymentObserver, VerdictObserved};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::Authenticated;
use crate::problem::ApiError;

/// Where a deployment went.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    cluster: String,
    namespace: String,
}

/// Where a deployment went and how it ended. `reason` is `none` after a success.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    cluster: String,
    namespace: String,
    verdict: String,
    reason: String,
}

/// A request by its route's pattern (`/api/releases/{id}`, never the raw path, so ids
/// do not make a series each), its method and its answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    replica: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 10 ms to some 45 minutes: an HTTP answer, a watch ending, a rollout.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.5, 14))
}

/// What runs at each scrape, before the figures are written.
type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

struct Inner {
    registry: Registry,
    started: Family<TargetLabels, Counter>,
    finished: Family<VerdictLabels, Counter>,
    request_to_verdict: HistogramFamily<VerdictLabels>,
    rollout_end_to_verdict: HistogramFamily<VerdictLabels>,
    deployments_active: Family<ReplicaLabels, Gauge>,
    leases_held: Family<ReplicaLabels, Gauge>,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_idle: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolLabels, Gauge>,
    watches: Family<ClusterLabels, Gauge>,
    samplers: Mutex<Vec<Sampler>>,
}

/// The figures of this replica. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubernaut");
        let started = Family::<TargetLabels, Counter>::default();
        registry.register(
            "deployments_started",
            "Rollouts this replica's engine started (queued to applying), by target",
            started.clone(),
        );
        let finished = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "deployments_finished",
            "Verdicts this replica's engine stored, by target, verdict and failure reason",
            finished.clone(),
        );
        let request_to_verdict: HistogramFamily<VerdictLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "deployment_request_to_verdict_seconds",
            "Seconds from a deployment's request to its stored verdict",
            request_to_verdict.clone(),
        );
        let rollout_end_to_verdict: HistogramFamily<VerdictLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "deployment_rollout_end_to_verdict_seconds",
            "Seconds from the end of a rollout's watch to its stored verdict (prune, rollback planning, the database write)",
            rollout_end_to_verdict.clone(),
        );
        let deployments_active = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "deployments_active",
            "Active deployments this replica drives now",
            deployments_active.clone(),
        );
        let leases_held = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "leases_held",
            "Deployment leases this replica holds now",
            leases_held.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Seconds to answer an HTTP request (to its response head), by method and route pattern",
            http_duration.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "database_pool_connections",
            "Connections open in the database pool",
            pool_connections.clone(),
        );
        let pool_idle = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "database_pool_idle_connections",
            "Open connections of the database pool that no query uses",
            pool_idle.clone(),
        );
        let pool_max = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "database_pool_max_connections",
            "The most connections the database pool opens",
            pool_max.clone(),
        );
        let watches = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "kubernetes_watches",
            "Watch connections open to each cluster's API server",
            watches.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                started,
                finished,
                request_to_verdict,
                rollout_end_to_verdict,
                deployments_active,
                leases_held,
                http_requests,
                http_duration,
                pool_connections,
                pool_idle,
                pool_max,
                watches,
                samplers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `sampler` at every scrape, before the figures are written: it sets the
    /// gauges of things owned elsewhere (see [`Self::set_pool`] and the others).
    pub fn on_scrape(&self, sampler: impl Fn(&Self) + Send + Sync + 'static) {
        if let Ok(mut samplers) = self.inner.samplers.lock() {
            samplers.push(Box::new(sampler));
        }
    }

    /// The engine of `replica` drives `active` deployments under `leases` leases.
    pub fn set_engine(&self, replica: &str, active: usize, leases: usize) {
        let labels = ReplicaLabels {
            replica: replica.to_owned(),
        };
        self.inner
            .deployments_active
            .get_or_create(&labels)
            .set(gauge_value(active));
        self.inner
            .leases_held
            .get_or_create(&labels)
            .set(gauge_value(leases));
    }

    /// The database pool `pool` holds `connections` open, `idle` of them unused, of
    /// at most `max`.
    pub fn set_pool(&self, pool: &str, connections: u32, idle: u32, max: u32) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        self.inner
            .pool_connections
            .get_or_create(&labels)
            .set(i64::from(connections));
        self.inner
            .pool_idle
            .get_or_create(&labels)
            .set(i64::from(idle));
        self.inner
            .pool_max
            .get_or_create(&labels)
            .set(i64::from(max));
    }

    /// `open` watch connections to the API server of `cluster`.
    pub fn set_watches(&self, cluster: &str, open: usize) {
        self.inner
            .watches
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_owned(),
            })
            .set(gauge_value(open));
    }

    /// An HTTP request matched `route` (a pattern; `None`: no route matched) and was
    /// answered `status` after `elapsed`.
    pub fn observe_http(&self, method: &str, route: Option<&str>, status: u16, elapsed: Duration) {
        // Methods and routes come from a fixed set, so a client cannot add series.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        let route = route.unwrap_or("unmatched");
        self.inner
            .http_requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The figures in the Prometheus text format, after running the samplers.
    ///
    /// # Errors
    /// Only when formatting fails.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        if let Ok(samplers) = self.inner.samplers.lock() {
            for sampler in samplers.iter() {
                sampler(self);
            }
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn target_labels(target: &Target) -> TargetLabels {
    TargetLabels {
        cluster: target.cluster.to_string(),
        namespace: target.namespace.to_string(),
    }
}

impl DeploymentObserver for Metrics {
    fn started(&self, target: &Target) {
        self.inner
            .started
            .get_or_create(&target_labels(target))
            .inc();
    }

    fn finished(&self, observed: &VerdictObserved<'_>) {
        let labels = VerdictLabels {
            cluster: observed.target.cluster.to_string(),
            namespace: observed.target.namespace.to_string(),
            verdict: observed.verdict.to_string(),
            reason: observed
                .reason
                .map_or("none", |reason| reason.as_str())
                .to_owned(),
        };
        self.inner.finished.get_or_create(&labels).inc();
        self.inner
            .request_to_verdict
            .get_or_create(&labels)
            .observe(observed.since_request.as_secs_f64());
        if let Some(since) = observed.since_rollout_end {
            self.inner
                .rollout_end_to_verdict
                .get_or_create(&labels)
                .observe(since.as_secs_f64());
        }
    }
}

/// Middleware (`actix_web::middleware::from_fn`) counting every request by its route
/// pattern and status, with its latency, into the [`Metrics`] of the app's data.
///
/// # Errors
/// Whatever the inner service fails with (counted with its error's status).
pub async fn record_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(metrics) = request.app_data::<Data<Metrics>>().cloned() else {
        return next.call(request).await;
    };
    let began = Instant::now();
    let method = request.method().clone();
    let route = request.match_pattern();
    let answered = next.call(request).await;
    let status = match &answered {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    metrics.observe_http(
        method.as_str(),
        route.as_deref(),
        status.as_u16(),
        began.elapsed(),
    );
    answered
}

/// The answer to a scrape.
///
/// # Errors
/// A 500 only when formatting fails.
pub fn scrape_response(metrics: &Metrics) -> Result<HttpResponse, ApiError> {
    let text = metrics
        .render()
        .map_err(|e| ApiError::internal(format!("could not write the metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text))
}

/// `GET /metrics` on the API's address: for a token that may read the metrics (admin).
pub async fn scrape(
    Authenticated(caller): Authenticated,
    metrics: Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ReadMetrics)?;
    scrape_response(&metrics)
}

/// `GET /metrics` on the separate metrics address (`metrics.bind`), which is for
/// scrapes from inside the cluster and needs no token.
pub async fn scrape_open(metrics: Data<Metrics>) -> Result<HttpResponse, ApiError> {
    scrape_response(&metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubernaut_domain::deployment::{
        ClusterName, DeploymentStatus, FailureReason, Namespace, Target,
    };

    fn target() -> Target {
        Target {
            cluster: ClusterName::parse("prod").expect("a cluster name"),
            namespace: Namespace::parse("shop").expect("a namespace"),
        }
    }

    #[test]
    fn verdicts_are_counted_by_target_verdict_and_reason() {
        let metrics = Metrics::new();
        let target = target();
        metrics.started(&target);
        metrics.finished(&VerdictObserved {
            target: &target,
            verdict: DeploymentStatus::Failed,
            reason: Some(FailureReason::CrashLoop),
            since_request: Duration::from_secs(3),
            since_rollout_end: Some(Duration::from_millis(20)),
        });
        let text = metrics.render().expect("the metrics render");
        assert!(
            text.contains(
                r#"kubernaut_deployments_finished_total{cluster="prod",namespace="shop",verdict="failed",reason="crash_loop"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubernaut_deployments_started_total{cluster="prod",namespace="shop"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubernaut_deployment_request_to_verdict_seconds_sum{cluster="prod",namespace="shop",verdict="failed",reason="crash_loop"} 3"#
            ),
            "{text}"
        );
    }

    #[test]
    fn requests_are_counted_by_route_pattern_and_unknown_methods_fold_into_other() {
        let metrics = Metrics::new();
        metrics.observe_http("GET", Some("/api/releases/{id}"), 200, Duration::ZERO);
        metrics.observe_http("GET", Some("/api/releases/{id}"), 200, Duration::ZERO);
        metrics.observe_http("BREW", None, 404, Duration::ZERO);
        let text = metrics.render().expect("the metrics render");
        assert!(
            text.contains(
                r#"kubernaut_http_requests_total{method="GET",route="/api/releases/{id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubernaut_http_requests_total{method="other",route="unmatched",status="404"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn samplers_set_their_gauges_at_each_scrape() {
        let metrics = Metrics::new();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let seen = Arc::clone(&open);
        metrics.on_scrape(move |m| {
            m.set_watches("prod", seen.load(std::sync::atomic::Ordering::Relaxed));
            m.set_pool("postgres", 4, 1, 10);
        });
        let text = metrics.render().expect("the metrics render");
        assert!(
            text.contains(r#"kubernaut_kubernetes_watches{cluster="prod"} 2"#),
            "{text}"
        );
        open.store(5, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.render().expect("the metrics render");
        assert!(
            text.contains(r#"kubernaut_kubernetes_watches{cluster="prod"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kubernaut_database_pool_idle_connections{pool="postgres"} 1"#),
            "{text}"
        );
    }
}
