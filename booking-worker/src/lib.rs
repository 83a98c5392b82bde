//! The booking-worker farm: drains each event's line in queue-number order at the
//! operator's admission rate and holds seats with one Lua script per batch
//! (`hold_batch.lua`: all-or-nothing per request, adjacent seats for best-available,
//! the per-fan cap across devices, the hold's expiry). Outcomes go to Postgres in
//! batches and to the realtime service over pub/sub; expired holds return to the
//! pool. Owns the `booking` schema: the seat ledger and request outcomes.
//!
//! A farm is any number of [`Worker`]s (processes, or tasks in one). Each event is
//! drained by one worker at a time under a lease; see [`drain`] for why, and for how a
//! dead worker's entries are taken over.

pub mod drain;
pub mod ledger;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use proto::runtime::OpsServer;
use proto::settings::{DatabaseSettings, RedisSettings, SettingsError};
use proto::{EventId, Keys};
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use drain::{DrainSettings, Drainer};

#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    /// Where the operations endpoint listens.
    pub listen: std::net::SocketAddr,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    /// This worker's stable consumer name; a restarted worker finds its own pending
    /// entries under it.
    pub name: String,
    /// How often the farm looks for events to drain.
    pub discover_interval_ms: u64,
    #[serde(default)]
    pub drain: DrainSettings,
}

impl Config {
    pub fn load() -> Result<Self, SettingsError> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        proto::settings::load(&serde_json::json!({
            "listen": "127.0.0.1:8083",
            "database": { "url": "postgres://postgres@127.0.0.1:5432/onsale", "max_connections": 8 },
            "redis": { "url": "redis://127.0.0.1:6379", "key_prefix": "onsale" },
            "name": format!("{host}-{}", std::process::id()),
            "discover_interval_ms": 200,
            "drain": {
                "batch_size": 256, "lease_ms": 3000, "block_ms": 250, "max_deliveries": 5,
                "sold_out_horizon_ms": 60000, "sweep_interval_ms": 500,
            },
        }))
    }
}

/// One worker of the farm: finds active events and drains those whose lease it wins.
#[derive(Clone)]
pub struct Worker {
    pub pool: PgPool,
    pub client: redis::Client,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub name: String,
    pub settings: DrainSettings,
    pub discover_every: Duration,
}

impl Worker {
    pub async fn connect(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(config.redis.url.expose_secret()).context("parsing redis.url")?;
        let redis = client
            .get_connection_manager()
            .await
            .context("connecting to redis (redis.url)")?;
        Ok(Self {
            pool,
            client,
            redis,
            keys: Keys::new(config.redis.key_prefix.clone()),
            name: config.name.clone(),
            settings: config.drain.clone(),
            discover_every: Duration::from_millis(config.discover_interval_ms),
        })
    }

    async fn drainer(&self, event_id: EventId, token: &str) -> anyhow::Result<Drainer> {
        // Blocking reads get a connection of their own, without a response timeout:
        // a blocked read would stall every other command on a shared connection.
        let blocking = self
            .client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
            .context("opening a blocking redis connection")?;
        Ok(Drainer {
            event_id,
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            blocking,
            keys: self.keys.clone(),
            settings: self.settings.clone(),
            consumer: self.name.clone(),
            token: token.to_owned(),
            isolate: 0,
            cursor: "0".to_owned(),
            inflight: Default::default(),
        })
    }

    /// Runs until `stop`: every `discover_every`, starts a drainer for each active
    /// event not already drained here (it exits at once when another worker holds the
    /// event's lease).
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let token = format!("{}:{}", self.name, uuid::Uuid::new_v4());
        let mut drainers: HashMap<EventId, JoinHandle<()>> = HashMap::new();
        let mut redis = self.redis.clone();
        let mut tick = tokio::time::interval(self.discover_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            drainers.retain(|_, task| !task.is_finished());
            let active: Vec<String> = match redis::cmd("SMEMBERS")
                .arg(self.keys.active_events())
                .query_async(&mut redis)
                .await
            {
                Ok(active) => active,
                Err(error) => {
                    tracing::warn!(%error, "cannot list active events");
                    continue;
                }
            };
            for event_id in active.iter().filter_map(|e| e.parse::<EventId>().ok()) {
                if drainers.contains_key(&event_id) {
                    continue;
                }
                let drainer = self.drainer(event_id, &token).await?;
                let stop = stop.clone();
                drainers.insert(
                    event_id,
                    tokio::spawn(async move {
                        if let Err(error) = drainer.run(stop).await {
                            metrics::counter!("onsale_worker_errors_total").increment(1);
                            tracing::warn!(%event_id, %error, "drainer stopped; retrying on the next discovery");
                        }
                    }),
                );
            }
        }
        // Shutdown order: stop reading (the drainers see `stop`), let each finish the
        // batch in hand (its ledger write and acks), then return. Entries read but not
        // acknowledged stay pending and are taken over by the next lease holder.
        for (_, task) in drainers {
            let _ = task.await;
        }
        Ok(())
    }
}

/// The booking-worker process: `workers` workers and the operations endpoint.
pub struct Application {
    ops: OpsServer,
    worker: Worker,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = proto::runtime::connect_postgres(&config.database).await?;
        Ok(Self {
            ops: OpsServer::bind(config.listen, "booking-worker").await?,
            worker: Worker::connect(&config, pool).await?,
        })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let worker = tokio::spawn(self.worker.run(stop.clone()));
        let served = self.ops.run(shutdown).await;
        stop.cancel();
        worker.await.context("worker task")??;
        served
    }
}
