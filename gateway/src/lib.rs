//! The gateway: onsale's public HTTP edge.
//!
//! It owns accounts and tokens, rate limits, request ids, tracing, metrics, the
//! OpenAPI document and the static pages, and it mounts the services' routers
//! in-process (inventory, the waiting room, payments, and realtime's live sockets). The services stay independent crates; the gateway
//! is the one place that composes them, so the hot path never pays for a proxy hop.
//!
//! Layers, outermost first: request id → trace → panic catcher → metrics → per-IP
//! limit → authentication (a bearer token, when sent, must verify) → per-account
//! limit → Idempotency-Key of admin and operator requests → body size limit → routes.
//!
//! Composition is also where one service's work waits on another's: an event is
//! created (inventory) with its sale (waiting room) in one transaction, and a join
//! that finds no seat map has inventory load it.

pub mod accounts;
pub mod cancel;
pub use platform::client_address;
pub mod config;
mod contract;
pub mod idempotency;
pub mod limits;
pub mod pages;
pub mod restore;
pub mod routes;
pub mod sessions;
pub mod shared_limits;
pub mod signin;
pub mod tokens;
pub mod verification;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platform::auth::{Caller, TokenVerifier, bearer_token};
use platform::store::Redis;
use proto::{ErrorBody, Keys};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use config::Config;

use crate::accounts::Hasher;
use crate::idempotency::Idempotency;
use crate::limits::RateLimits;
use crate::tokens::TokenIssuer;

const REQUEST_ID: HeaderName = HeaderName::from_static(platform::correlation::HEADER);

/// What the gateway's own handlers and middleware need.
#[derive(Clone, FromRef)]
pub struct GatewayState {
    pub pool: PgPool,
    pub redis: Redis,
    pub verifier: Arc<TokenVerifier>,
    pub issuer: Arc<TokenIssuer>,
    pub limits: Arc<RateLimits>,
    pub hasher: Arc<Hasher>,
    pub signin: Arc<signin::SignInThrottle>,
    /// Sessions: how long one may be refreshed, and where revocations go.
    pub refresh_ttl: Duration,
    pub key_prefix: String,
    /// Sign-up emails a confirmation link (`auth.require_verified_email`).
    pub require_verified_email: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "onsale", description = "Flash-sale ticketing: a fair waiting room, seat holds, checkout."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "inventory", description = "Venues, events and seat maps"),
        (name = "waiting room", description = "The line: booking requests, positions, the lottery"),
        (name = "operations", description = "Operator levers"),
        (name = "tickets", description = "Tickets, their codes and the door"),
        (name = "system", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The complete OpenAPI document of the public API, without a running server.
pub fn openapi() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes::router().into_openapi());
    doc.merge(inventory::router().into_openapi());
    doc.merge(waiting_room::router().into_openapi());
    doc.merge(restore::router().into_openapi());
    doc.merge(cancel::router().into_openapi());
    doc.merge(payments::router().into_openapi());
    doc.merge(realtime::router().into_openapi());
    doc.merge(tickets::router().into_openapi());
    contract::complete(doc)
}

/// Builds the gateway's router around live connections; also returns the rate
/// limits (for housekeeping) and the live sockets' hub (closed at shutdown).
pub fn router(
    config: &Config,
    pool: PgPool,
    redis: Redis,
) -> anyhow::Result<(Router, Arc<RateLimits>, Arc<realtime::Hub>)> {
    // Every verifier of this process refuses what the revocation list holds; the
    // listener (below, stopped with the hub) keeps it current.
    let revocations = platform::sessions::Revocations::new();
    let verifier =
        Arc::new(TokenVerifier::new(&config.auth.token).with_revocations(revocations.clone()));
    let shared_limits = config.limits.shared.then(|| {
        shared_limits::SharedLimits::start(
            redis.clone(),
            &Keys::new(config.redis.key_prefix.clone()),
        )
    });
    let limits = Arc::new(RateLimits::new(&config.limits, shared_limits));
    let state = GatewayState {
        pool: pool.clone(),
        redis: redis.clone(),
        verifier: verifier.clone(),
        issuer: Arc::new(tokens::issuer(&config.auth)),
        limits: limits.clone(),
        hasher: Arc::new(Hasher::from_settings(&config.auth)),
        signin: Arc::new(signin::SignInThrottle::new(
            redis.clone(),
            &config.redis.key_prefix,
            config.auth.signin_failures,
            std::time::Duration::from_secs(config.auth.signin_window_seconds),
        )),
        refresh_ttl: Duration::from_secs(config.auth.refresh_ttl_seconds),
        key_prefix: config.redis.key_prefix.clone(),
        require_verified_email: config.auth.require_verified_email,
    };
    let keys = Keys::new(config.redis.key_prefix.clone());
    let (redis_for_payments, keys_for_payments) = (redis.clone(), keys.clone());
    // The live sockets answer at the same address as the rest of the API; a load
    // balancer may route their path to realtime nodes instead (docs/REALTIME.md).
    let store = platform::store::Store::open(config.redis.url.expose_secret())
        .context("parsing redis.url")?;
    let store_for_joins = store.clone();
    let hub = realtime::Hub::new(
        store.clone(),
        redis.clone(),
        pool.clone(),
        keys.clone(),
        config.live.clone(),
    );
    platform::sessions::spawn_listener(
        store,
        redis.clone(),
        config.redis.key_prefix.clone(),
        revocations,
        hub.stopping(),
    );
    let live = realtime::RealtimeState {
        hub: hub.clone(),
        verifier: verifier.clone(),
        proxies: Arc::new(limits.trusted.clone()),
    };
    let waiting_room = waiting_room::WaitingRoomState {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        verifier: verifier.clone(),
        require_verified_email: config.auth.require_verified_email,
        joiner: waiting_room::Joiner::start_with(
            pool.clone(),
            redis.clone(),
            keys.clone(),
            Some(Arc::new(InventorySeatMaps {
                pool: pool.clone(),
                redis: redis.clone(),
                keys: keys.clone(),
            })),
            waiting_room::joins::Durability {
                replicas: config.redis.replicas_to_wait,
                timeout: Duration::from_millis(config.redis.replica_wait_ms),
                store: Some(store_for_joins),
            },
        ),
    };
    let restore = restore::RestoreState {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        verifier: verifier.clone(),
    };
    let inventory = inventory::InventoryState {
        seat_maps: Arc::new(inventory::SeatMapCache::new(
            pool.clone(),
            redis.clone(),
            keys.clone(),
            inventory::snapshot::Settings::default(),
        )),
        on_event_created: Some(Arc::new(SalesWithEvents)),
        pool: pool.clone(),
        redis,
        keys,
        verifier: verifier.clone(),
    };
    let ring = Arc::new(tickets::KeyRing::new());
    let tickets = tickets::TicketsState {
        door: tickets::Door {
            pool: pool.clone(),
            redis: redis_for_payments.clone(),
            keys: keys_for_payments.clone(),
            ring: ring.clone(),
        },
        verifier: verifier.clone(),
    };
    let payments = payments::PaymentsState {
        payments: payments::Payments {
            pool: pool.clone(),
            redis: redis_for_payments,
            keys: keys_for_payments,
            provider: Arc::new(payments::Sandbox::new(
                pool.clone(),
                config.payments.sandbox_webhook_after(),
            )),
            settings: Arc::new(config.payments.clone()),
            ring,
        },
        verifier: verifier.clone(),
    };
    let cancel = cancel::CancelState {
        payments: payments.payments.clone(),
        verifier: verifier.clone(),
    };
    // A keyed request holds no connection while it runs (its claim is committed
    // first), so the keys share the gateway's pool.
    let idempotency = Idempotency {
        pool: pool.clone(),
        body_limit: config.limits.body_bytes,
        secret: config.auth.idempotency_secret(),
    };
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::router().with_state(state.clone()))
        .merge(inventory::router().with_state(inventory))
        .merge(waiting_room::router().with_state(waiting_room))
        .merge(restore::router().with_state(restore))
        .merge(cancel::router().with_state(cancel))
        .merge(payments::router().with_state(payments))
        .merge(realtime::router().with_state(live))
        .merge(tickets::router().with_state(tickets))
        .split_for_parts();

    let router = api
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(state.clone()))
        .merge(pages::router())
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", contract::complete(openapi)))
        .fallback(platform::http::not_found)
        .method_not_allowed_fallback(platform::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.limits.body_bytes))
        .layer(middleware::from_fn_with_state(idempotency, idempotency::guard))
        .layer(middleware::from_fn_with_state(limits.clone(), limits::per_user))
        .layer(middleware::from_fn_with_state(verifier, authenticate))
        .layer(middleware::from_fn_with_state(limits.clone(), limits::per_ip))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(correlate))
        .layer(CatchPanicLayer::custom(|_| {
            ErrorBody::new(proto::ErrorCode::Internal, "internal error").into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let correlation_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), correlation_id);
            // A caller's trace goes on through this call (platform::telemetry).
            let traceparent = request.headers().get(platform::telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
            platform::telemetry::continue_from(&span, traceparent);
            span
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // Before anything reads it (the span records it, the answer echoes it): an
        // `x-request-id` that is not a correlation id (spaces, quotes, too long) is
        // dropped, and the call gets a fresh one, so nobody writes fields into the
        // logs through it.
        .layer(middleware::map_request(drop_unfit_request_id))
        .layer(middleware::map_response(security_headers))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]));
    Ok((router, limits, hub))
}

/// The waiting room's seat-map loader, served by inventory.
struct InventorySeatMaps {
    pool: PgPool,
    redis: Redis,
    keys: Keys,
}

impl waiting_room::SeatMaps for InventorySeatMaps {
    fn ensure_loaded(
        &self,
        event_id: proto::EventId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let mut redis = self.redis.clone();
            inventory::seatmap::ensure_loaded(&self.pool, &mut redis, &self.keys, event_id)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Each new event's sale (its lottery seed and commitment) is set up in the event's
/// own transaction, so that no reader has to write it later.
struct SalesWithEvents;

impl inventory::OnEventCreated for SalesWithEvents {
    fn event_created<'c>(
        &'c self,
        tx: &'c mut sqlx::PgConnection,
        event_id: proto::EventId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
        Box::pin(async move {
            waiting_room::sale::create_sale(tx, event_id).await?;
            Ok(())
        })
    }
}

/// A bearer token, when present, must verify; the caller then travels in the
/// request's extensions for the per-account limit and the handlers.
async fn authenticate(
    State(verifier): State<Arc<TokenVerifier>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match bearer_token(&parts) {
        Ok(Some(token)) => match verifier.verify(token) {
            Ok(claims) => Some(Caller::from(claims)),
            Err(error) => return error.into_response(),
        },
        Ok(None) => None,
        Err(error) => return error.into_response(),
    };
    if let Some(caller) = caller {
        parts.extensions.insert(caller);
    }
    next.run(Request::from_parts(parts, body)).await
}

/// On every answer: never sniffed as another type than it says, and no address of
/// ours (an event's, an order's) sent on as a referrer. The pages add their own
/// policy (`pages::CONTENT_SECURITY_POLICY`). HSTS belongs to whatever terminates
/// TLS in front of the gateways.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Removes an `x-request-id` that [`platform::correlation::accept`] refuses.
async fn drop_unfit_request_id(mut request: Request) -> Request {
    let fit = request.headers().get(REQUEST_ID).map(|v| {
        v.to_str()
            .ok()
            .and_then(platform::correlation::accept)
            .is_some()
    });
    if fit == Some(false) {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Serves the call with its `x-request-id` as the current correlation id, so that
/// whatever it changes carries the id on (see `platform::correlation`).
async fn correlate(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(platform::correlation::accept);
    platform::correlation::scope(id, next.run(request)).await
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("onsale_http_requests_total", &labels).increment(1);
    metrics::histogram!("onsale_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Liveness: the gateway answers. Whether it can serve is `/readyz`'s question: a
/// gateway whose Redis is away needs traffic sent elsewhere, not a restart.
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok", "service": "gateway"}))
}

/// Readiness: Redis and Postgres both answer, each within two seconds; the same
/// check and answer as every other service's `/readyz`.
async fn readyz(State(state): State<GatewayState>) -> axum::response::Response {
    let check = platform::runtime::redis_and_postgres_answer(state.pool, state.redis);
    platform::runtime::check_response("gateway", check.await)
}

/// The gateway as a running server.
pub struct Application {
    listener: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz` on the operations port.
    ops: platform::runtime::OpsServer,
    router: Router,
    pool: PgPool,
    limits: Arc<RateLimits>,
    hub: Arc<realtime::Hub>,
    housekeeping: Duration,
}

/// How often answers stored for idempotency keys are checked for expiry.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(600);

impl Application {
    /// Connects, migrates, creates the bootstrap admin, and binds (port 0 picks one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().context("invalid configuration")?;
        let pool = platform::runtime::connect_postgres(&config.database).await?;
        let redis = platform::runtime::connect_redis(&config.redis).await?;
        Self::with_connections(config, pool, redis).await
    }

    /// Like [`Application::build`], on connections the caller made (and migrated).
    pub async fn with_connections(
        config: Config,
        pool: PgPool,
        redis: Redis,
    ) -> anyhow::Result<Self> {
        config.validate().context("invalid configuration")?;
        if let Some(admin) = &config.bootstrap_admin {
            let (email, password) =
                config::parse_bootstrap_admin(admin.expose_secret()).map_err(anyhow::Error::msg)?;
            accounts::ensure_admin(
                &pool,
                &Hasher::from_settings(&config.auth),
                &email,
                password,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("creating the bootstrap admin")?;
        }
        let redis_for_ops = redis.clone();
        let (router, limits, hub) = router(&config, pool.clone(), redis)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let (ready_pool, ready_redis) = (pool.clone(), redis_for_ops);
        let ops = platform::runtime::OpsServer::bind(config.ops_listen, "gateway")
            .await
            .with_context(|| format!("binding the operations port {}", config.ops_listen))?
            .with_readiness(move || {
                platform::runtime::redis_and_postgres_answer(
                    ready_pool.clone(),
                    ready_redis.clone(),
                )
            });
        Ok(Self {
            listener,
            ops,
            router,
            pool,
            limits,
            hub,
            housekeeping: Duration::from_secs(config.limits.housekeeping_seconds),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// The operations port (`/metrics`, `/healthz`, `/readyz`).
    pub fn ops_port(&self) -> u16 {
        self.ops.port()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let housekeeping = tokio::spawn({
            let (limits, stop, every) = (self.limits.clone(), stop.clone(), self.housekeeping);
            let pool = self.pool.clone();
            async move {
                let mut tick = tokio::time::interval(every);
                let mut purge = tokio::time::interval(IDEMPOTENCY_PURGE_EVERY);
                loop {
                    tokio::select! {
                        _ = tick.tick() => limits.housekeep().await,
                        _ = purge.tick() => {
                            match idempotency::purge_expired(&pool).await {
                                Ok(0) => {}
                                Ok(purged) => tracing::info!(purged, "expired idempotency keys forgotten"),
                                Err(error) => tracing::warn!(%error, "purging idempotency keys failed"),
                            }
                            match verification::purge_expired(&pool).await {
                                Ok(0) => {}
                                Ok(purged) => tracing::info!(purged, "expired confirmation tokens forgotten"),
                                Err(error) => tracing::warn!(%error, "purging confirmation tokens failed"),
                            }
                        }
                        () = stop.cancelled() => break,
                    }
                }
            }
        });
        tracing::info!(
            port = self.port(),
            ops_port = self.ops_port(),
            "gateway listening"
        );
        // The operations port stops with the public one.
        let ops_stop = CancellationToken::new();
        let ops = tokio::spawn(self.ops.run({
            let stop = ops_stop.clone();
            async move { stop.cancelled().await }
        }));
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown({
            // Live sockets are not requests the server waits for: they are closed
            // (with a Close frame) as soon as shutdown begins.
            let hub = self.hub.clone();
            async move {
                shutdown.await;
                hub.shutdown();
            }
        })
        .await
        .context("serving http");
        // Order: the listener has stopped and in-flight requests have finished;
        // now stop the operations port and the housekeeping task, then export the
        // spans still buffered.
        ops_stop.cancel();
        stop.cancel();
        let _ = housekeeping.await;
        match ops.await {
            Ok(Err(error)) => tracing::warn!(%error, "the operations port failed"),
            Err(error) => tracing::warn!(%error, "the operations port panicked"),
            Ok(Ok(())) => {}
        }
        tokio::task::spawn_blocking(platform::telemetry::flush)
            .await
            .ok();
        served
    }
}
