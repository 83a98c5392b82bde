//! Inventory: venues (sections, rows, seats, price tiers), events on them, and each
//! event's seat map.
//!
//! Postgres (`inventory` schema) holds venues and events; the seat state of a sale
//! lives in Redis for speed and is rebuilt from the Postgres ledger on demand
//! ([`seatmap::rebuild`]). Anonymous seat-map reads are served from one shared
//! snapshot per event ([`snapshot`]). [`router`] serves the HTTP API; the gateway
//! mounts it, and [`Application`] serves it on its own.

pub mod config;
pub mod error;
pub mod events;
pub mod routes;
pub mod seatmap;
pub mod snapshot;
pub mod venues;

use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::FromRef;
use platform::auth::TokenVerifier;
use platform::store::Redis;
use proto::{EventId, Keys};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use routes::router;
pub use snapshot::SeatMapCache;

/// Work another service does for each new event, inside the transaction that
/// creates it, so that the event and what hangs on it commit together or not at
/// all. The waiting room's sale is such work; whoever composes the services (the
/// gateway) supplies it, so inventory does not depend on the waiting room.
pub trait OnEventCreated: Send + Sync {
    fn event_created<'c>(
        &'c self,
        tx: &'c mut sqlx::PgConnection,
        event_id: EventId,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;
}

/// What inventory's handlers need; every field is a cheap clone.
#[derive(Clone, FromRef)]
pub struct InventoryState {
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
    pub verifier: Arc<TokenVerifier>,
    /// The shared seat-map snapshots anonymous readers get.
    pub seat_maps: Arc<SeatMapCache>,
    /// Run in each new event's transaction (none when inventory runs alone).
    pub on_event_created: Option<Arc<dyn OnEventCreated>>,
}

/// Connects to Postgres (running pending migrations) and to Redis.
pub async fn connect(config: &Config) -> anyhow::Result<(PgPool, Redis)> {
    Ok((
        platform::runtime::connect_postgres(&config.database).await?,
        platform::runtime::connect_redis(&config.redis).await?,
    ))
}

/// The inventory service on its own: its routes plus health and metrics.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (pool, redis) = connect(&config).await?;
        let keys = Keys::new(config.redis.key_prefix.clone());
        let (ready_pool, ready_redis) = (pool.clone(), redis.clone());
        let state = InventoryState {
            seat_maps: Arc::new(SeatMapCache::new(
                pool.clone(),
                redis.clone(),
                keys.clone(),
                snapshot::Settings::default(),
            )),
            pool,
            redis,
            keys,
            verifier: Arc::new(TokenVerifier::new(&config.auth)),
            on_event_created: None,
        };
        let (router, _api) = router().with_state(state).split_for_parts();
        let metrics = platform::runtime::metrics();
        let router = router
            .route(
                "/healthz",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({"status": "ok", "service": "inventory"}))
                }),
            )
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let check = platform::runtime::redis_and_postgres_answer(
                        ready_pool.clone(),
                        ready_redis.clone(),
                    );
                    async move { platform::runtime::check_response("inventory", check.await) }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || std::future::ready(metrics.render())),
            )
            .fallback(platform::http::not_found)
            .method_not_allowed_fallback(platform::http::method_not_allowed);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self { listener, router })
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
        tracing::info!(port = self.port(), "inventory listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving http")
    }
}
