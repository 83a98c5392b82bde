//! Start-up and shutdown pieces every binary uses: the tracing subscriber, the
//! Prometheus recorder and the shutdown signal.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `RUST_LOG` filters (default `info`);
/// `ONSALE_LOG_FORMAT=json` switches to one JSON object per line; with
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported as traces over OTLP
/// (see [`crate::telemetry`]).
pub fn init_tracing(service: &'static str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("ONSALE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let lines = if json {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(false).boxed()
    };
    let endpoint = std::env::var(crate::telemetry::ENDPOINT_VARIABLE)
        .ok()
        .filter(|e| !e.is_empty());
    let (traces, refused) = match endpoint
        .as_deref()
        .map(|e| crate::telemetry::otlp_provider(service, e))
    {
        Some(Ok(provider)) => (Some(crate::telemetry::layer(service, provider)), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(traces)
        .try_init();
    if installed.is_ok() {
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            traces_to = endpoint.as_deref().unwrap_or("nowhere"),
            "starting"
        );
        if let Some(error) = refused {
            tracing::error!(%error, "the OTLP exporter could not be built; spans are not exported");
        }
    }
}

/// Installs tracing for a test binary: silent unless `TEST_LOG=1`.
pub fn init_test_tracing() {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// The process's Prometheus recorder, installed on first use. Every application
/// in the process (tests run several) renders the same registry.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle then
            // renders an empty registry, which /metrics shows honestly.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// A service loop's heartbeat: the loop ticks it every time round, and `/healthz`
/// fails when it has not for too long (a wedged loop gets its process restarted).
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    last_tick_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    rounds: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Heartbeat {
    pub fn tick(&self) {
        use std::sync::atomic::Ordering;
        self.last_tick_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the loop has gone round.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long ago the loop last went round; `None` before its first.
    pub fn since_last_tick(&self) -> Option<std::time::Duration> {
        let last = self.last_tick_ms.load(std::sync::atomic::Ordering::Relaxed);
        (last > 0).then(|| {
            std::time::Duration::from_millis(
                (chrono::Utc::now().timestamp_millis() - last).max(0) as u64
            )
        })
    }

    /// A liveness check: fails when `what` (e.g. "the discovery loop") has not gone
    /// round for longer than `stale_after`.
    pub fn liveness(
        &self,
        stale_after: std::time::Duration,
        what: &'static str,
    ) -> impl Fn() -> Check + Clone + Send + Sync + 'static {
        let heartbeat = self.clone();
        move || {
            let since = heartbeat.since_last_tick();
            Box::pin(async move {
                match since {
                    Some(since) if since > stale_after => {
                        Err(format!("{what} last ran {} ms ago", since.as_millis()))
                    }
                    _ => Ok(()),
                }
            }) as Check
        }
    }
}

/// A health check's answer: `Err` says what is wrong.
pub type Check = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = std::sync::Arc<dyn Fn() -> Check + Send + Sync>;

/// A service's operations endpoint: `/healthz` (liveness: the process still does its
/// work), `/readyz` (readiness: its dependencies answer too) and `/metrics`. Either
/// check answers 503 with `{"code": "not_ready", "message": ...}` when it fails.
pub struct OpsServer {
    listener: tokio::net::TcpListener,
    service: &'static str,
    liveness: Option<CheckFn>,
    readiness: Option<CheckFn>,
    routes: Option<axum::Router>,
}

impl OpsServer {
    pub async fn bind(addr: std::net::SocketAddr, service: &'static str) -> std::io::Result<Self> {
        Ok(Self {
            listener: tokio::net::TcpListener::bind(addr).await?,
            service,
            liveness: None,
            readiness: None,
            routes: None,
        })
    }

    /// What `/healthz` checks (by default: nothing, the process answers).
    pub fn with_liveness(mut self, check: impl Fn() -> Check + Send + Sync + 'static) -> Self {
        self.liveness = Some(std::sync::Arc::new(check));
        self
    }

    /// What `/readyz` checks (by default: the same as `/healthz`).
    pub fn with_readiness(mut self, check: impl Fn() -> Check + Send + Sync + 'static) -> Self {
        self.readiness = Some(std::sync::Arc::new(check));
        self
    }

    /// The service's own routes, served beside the operations endpoints (a realtime
    /// node's sockets).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.routes = Some(routes);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use axum::routing::get;
        let metrics = metrics();
        let service = self.service;
        let answer = move |check: Option<CheckFn>| async move {
            let outcome = match check {
                Some(check) => check().await,
                None => Ok(()),
            };
            check_response(service, outcome)
        };
        let liveness = self.liveness.clone();
        let readiness = self.readiness.clone().or_else(|| self.liveness.clone());
        let port = self.port();
        let router = self
            .routes
            .unwrap_or_default()
            .route("/healthz", get(move || answer(liveness.clone())))
            .route("/readyz", get(move || answer(readiness.clone())))
            .route(
                "/metrics",
                get(move || std::future::ready(metrics.render())),
            )
            .fallback(crate::http::not_found);
        tracing::info!(service, port, "operations endpoint listening");
        // With the peer's address: a realtime node limits sockets per address.
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        Ok(())
    }
}

/// How long a readiness check waits for a dependency before calling it away (a
/// stopped server can leave a connection attempt hanging much longer).
const DEPENDENCY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// A health check's answer: 200 `{"status": "ok", "service"}`, or 503 `{"code":
/// "not_ready", "message"}` saying what failed.
pub fn check_response(
    service: &'static str,
    outcome: Result<(), String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match outcome {
        Ok(()) => {
            axum::Json(serde_json::json!({"status": "ok", "service": service})).into_response()
        }
        Err(message) => {
            tracing::warn!(service, %message, "health check failed");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"code": "not_ready", "message": message})),
            )
                .into_response()
        }
    }
}

/// The readiness check of a service that needs Redis and Postgres: both answer,
/// each within two seconds.
pub fn redis_and_postgres_answer(pool: sqlx::PgPool, redis: crate::store::Redis) -> Check {
    Box::pin(async move {
        redis_answers(redis).await?;
        postgres_answers(pool).await
    })
}

/// Redis answers a PING within two seconds.
pub async fn redis_answers(mut redis: crate::store::Redis) -> Result<(), String> {
    match tokio::time::timeout(DEPENDENCY_DEADLINE, redis.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("redis: {e}")),
        Err(_) => Err("redis: no answer within 2 s".into()),
    }
}

/// Postgres answers a `SELECT 1` within two seconds.
pub async fn postgres_answers(pool: sqlx::PgPool) -> Result<(), String> {
    match tokio::time::timeout(DEPENDENCY_DEADLINE, sqlx::query("SELECT 1").execute(&pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("postgres: {e}")),
        Err(_) => Err("postgres: no answer within 2 s".into()),
    }
}

/// A Postgres pool for `settings`, with every pending migration applied.
pub async fn connect_postgres(
    settings: &crate::settings::DatabaseSettings,
) -> anyhow::Result<sqlx::PgPool> {
    use anyhow::Context;
    use secrecy::ExposeSecret;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(settings.url.expose_secret())
        .await
        .context("connecting to postgres (database.url)")?;
    proto::migrations::MIGRATOR
        .run(&pool)
        .await
        .context("running migrations")?;
    Ok(pool)
}

/// The shared, reconnecting Redis connection for everything that does not block.
pub async fn connect_redis(
    settings: &crate::settings::RedisSettings,
) -> anyhow::Result<crate::store::Redis> {
    use anyhow::Context;
    use secrecy::ExposeSecret;
    crate::store::Store::open(settings.url.expose_secret())
        .context("parsing redis.url")?
        .shared()
        .await
        .context("connecting to redis (redis.url)")
}
