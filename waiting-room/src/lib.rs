//! The waiting room: a fair line per event.
//!
//! Fans' requests get queue numbers (or wait in the pre-queue until the on-sale
//! instant, when a seeded, verifiable draw orders them), one live request per fan per
//! event, and an O(1) position. The sale's state and admission rate are the
//! operators' levers. The line itself is the event's Redis Stream, drained by the
//! booking workers. [`router`] serves the HTTP API (the gateway mounts it); the
//! binary runs the scheduler that draws each sale when its on-sale time comes.

pub mod error;
pub mod joins;
pub mod journal;
pub mod levers;
pub mod lottery;
pub mod requests;
pub mod restore;
pub mod routes;
pub mod sale;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use platform::auth::TokenVerifier;
use platform::runner::Runner;
use platform::runtime::OpsServer;
use platform::settings::{DatabaseSettings, RedisSettings, SettingsError};
use platform::store::Redis;
use proto::Keys;
use sqlx::PgPool;

pub use error::Error;
pub use joins::Joiner;
pub use routes::router;

/// Loads an event's seat map into Redis when a join finds none (after a Redis
/// restart, say). Inventory owns seat maps; whoever composes the services (the
/// gateway) supplies this, so the waiting room does not depend on inventory.
pub trait SeatMaps: Send + Sync {
    fn ensure_loaded(
        &self,
        event_id: proto::EventId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// What the waiting room's handlers need; every field is a cheap clone.
#[derive(Clone, FromRef)]
pub struct WaitingRoomState {
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
    pub verifier: Arc<TokenVerifier>,
    /// A fan joins only with a token saying its email address is confirmed
    /// (`evf`; the gateway's `ONSALE_AUTH__REQUIRE_VERIFIED_EMAIL`). Read from the
    /// token, so the join costs no query more.
    pub require_verified_email: bool,
    /// Where joins enter the line (it loads seat maps a join finds missing).
    pub joiner: joins::Joiner,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    /// Where the operations endpoint listens.
    pub listen: std::net::SocketAddr,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    /// How often the scheduler looks for sales to draw.
    pub scheduler_interval_ms: u64,
}

impl Config {
    pub fn load() -> Result<Self, SettingsError> {
        platform::settings::load(&serde_json::json!({
            "listen": "127.0.0.1:8082",
            "database": platform::settings::database_defaults(4),
            "redis": platform::settings::redis_defaults(),
            "scheduler_interval_ms": 250,
        }))
    }
}

/// Draws every sale whose on-sale time has come; returns how many it opened.
pub async fn draw_due_sales(pool: &PgPool, redis: &mut Redis, keys: &Keys) -> Result<usize, Error> {
    let mut opened = 0;
    for event_id in sale::due_for_draw(pool).await? {
        match sale::draw(pool, redis, keys, event_id, None).await {
            Ok(_) => opened += 1,
            Err(error) => {
                tracing::warn!(%event_id, %error, "draw failed; retrying on the next tick")
            }
        }
    }
    Ok(opened)
}

/// The waiting-room process: the draw scheduler and its operations endpoint.
pub struct Application {
    ops: OpsServer,
    pool: PgPool,
    redis: Redis,
    keys: Keys,
    interval: Duration,
}

/// The waiting room's scheduler, until `stop`: every `every` it draws the sales whose
/// draw is due and mirrors sold-out sales; each second it samples the active lines
/// for the operators' figures. At `stop` a draw in progress finishes its current
/// script call (a half-done draw resumes on the next start).
pub async fn schedule(
    pool: PgPool,
    mut redis: Redis,
    keys: Keys,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    let mut sampling = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sampling.tick() => {
                if let Err(error) = stats::sample_active(&mut redis, &keys).await {
                    tracing::warn!(%error, "sampling the lines failed");
                }
            }
            _ = tick.tick() => {
                if let Err(error) = draw_due_sales(&pool, &mut redis, &keys).await {
                    tracing::warn!(%error, "scheduler tick failed");
                }
                if let Err(error) = sale::mirror_farm_states(&pool, &mut redis, &keys).await {
                    tracing::warn!(%error, "mirroring the farm's sale states failed");
                }
                // Lever pulls that failed half-way and nobody retried.
                if let Err(error) = levers::finish_stale(&pool, &mut redis, &keys, 10).await {
                    tracing::warn!(%error, "finishing pending lever pulls failed");
                }
            }
            () = stop.cancelled() => break,
        }
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = platform::runtime::connect_postgres(&config.database).await?;
        let redis = platform::runtime::connect_redis(&config.redis).await?;
        let (ready_pool, ready_redis) = (pool.clone(), redis.clone());
        let readiness = move || {
            platform::runtime::redis_and_postgres_answer(ready_pool.clone(), ready_redis.clone())
        };
        Ok(Self {
            ops: OpsServer::bind(config.listen, "waiting-room")
                .await?
                .with_readiness(readiness),
            pool,
            redis,
            keys: Keys::new(config.redis.key_prefix),
            interval: Duration::from_millis(config.scheduler_interval_ms),
        })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (pool, redis, keys, every) = (self.pool, self.redis, self.keys, self.interval);
        Runner::new(self.ops)
            .with_loop("scheduler", move |stop| async move {
                schedule(pool, redis, keys, every, stop).await;
                Ok(())
            })
            .run(shutdown)
            .await
    }
}
