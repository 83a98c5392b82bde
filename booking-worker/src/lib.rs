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
pub mod restore;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use platform::runner::Runner;
use platform::runtime::OpsServer;
use platform::settings::{DatabaseSettings, RedisSettings, SettingsError};
use platform::store::{Redis, Store};
use proto::{EventId, Keys};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use drain::{DrainSettings, Drainer};

/// The farm's heartbeat: when the discovery loop last went round. `/healthz` fails
/// when it stops going round (a wedged worker gets restarted); `/readyz` also checks
/// Redis and Postgres.
pub type Health = platform::runtime::Heartbeat;

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
        platform::settings::load(&serde_json::json!({
            "listen": "127.0.0.1:8083",
            "database": platform::settings::database_defaults(8),
            "redis": platform::settings::redis_defaults(),
            "name": format!("{host}-{}", std::process::id()),
            "discover_interval_ms": 200,
            "drain": {
                "batch_size": 256, "lease_ms": 3000, "block_ms": 250, "max_deliveries": 5,
                "sold_out_horizon_ms": 60000, "sweep_interval_ms": 500,
                "retention_seconds": 86400,
            },
        }))
    }
}

/// One worker of the farm: finds active events and drains those whose lease it wins.
#[derive(Clone)]
pub struct Worker {
    pub pool: PgPool,
    pub store: Store,
    pub redis: Redis,
    pub keys: Keys,
    pub name: String,
    pub settings: DrainSettings,
    pub discover_every: Duration,
    pub health: Health,
}

impl Worker {
    pub async fn connect(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        let store = Store::open(config.redis.url.expose_secret()).context("parsing redis.url")?;
        let redis = store
            .shared()
            .await
            .context("connecting to redis (redis.url)")?;
        Ok(Self {
            pool,
            store,
            redis,
            keys: Keys::new(config.redis.key_prefix.clone()),
            name: config.name.clone(),
            settings: config.drain.clone(),
            discover_every: Duration::from_millis(config.discover_interval_ms),
            health: Health::default(),
        })
    }

    async fn drainer(&self, event_id: EventId, token: &str) -> anyhow::Result<Drainer> {
        // Blocking reads get a connection of their own, without a response timeout:
        // a blocked read would stall every other command on a shared connection.
        let blocking = self
            .store
            .blocking()
            .await
            .context("opening a blocking redis connection")?;
        Ok(Drainer::new(
            event_id,
            self.pool.clone(),
            self.redis.clone(),
            blocking,
            self.keys.clone(),
            self.settings.clone(),
            self.name.clone(),
            token,
        ))
    }

    /// Runs until `stop`: every `discover_every`, starts a drainer for each active
    /// event not already drained here (it exits at once when another worker holds the
    /// event's lease). Nothing one event does stops the loop: a drainer that fails is
    /// started again on a later round.
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
            self.health.tick();
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
                // An event another worker drains needs nothing from here: a drainer
                // would open a blocking connection (on a cluster, one per master)
                // only to find the lease taken. One that is free is raced for.
                match redis::cmd("EXISTS")
                    .arg(self.keys.lease(event_id))
                    .query_async::<bool>(&mut redis)
                    .await
                {
                    Ok(false) => {}
                    Ok(true) => continue,
                    Err(error) => {
                        tracing::warn!(%event_id, %error, "cannot read the event's lease");
                        continue;
                    }
                }
                let drainer = match self.drainer(event_id, &token).await {
                    Ok(drainer) => drainer,
                    Err(error) => {
                        metrics::counter!("onsale_worker_errors_total").increment(1);
                        tracing::warn!(%event_id, error = format!("{error:#}"), "cannot start a drainer; retrying on the next discovery");
                        continue;
                    }
                };
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
        let pool = platform::runtime::connect_postgres(&config.database).await?;
        let worker = Worker::connect(&config, pool).await?;
        // Rare events' counters exist from the start, at zero, so that a dashboard
        // asking for them finds a series before the first one happens (on the
        // recorder /metrics renders, installed here if it is not yet).
        platform::runtime::metrics();
        for name in [
            "onsale_worker_dead_letters_total",
            "onsale_ledger_conflicts_total",
            "onsale_worker_batch_failures_total",
            "onsale_worker_entries_reclaimed_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        // Alive while the discovery loop goes round; ready while Redis and Postgres
        // answer too.
        let stale_after =
            Duration::from_millis(config.discover_interval_ms * 20).max(Duration::from_secs(10));
        let liveness = worker.health.liveness(stale_after, "the discovery loop");
        let (ready_pool, ready_redis, ready_live) =
            (worker.pool.clone(), worker.redis.clone(), liveness.clone());
        let readiness = move || {
            let (pool, redis, live) = (ready_pool.clone(), ready_redis.clone(), ready_live.clone());
            Box::pin(async move {
                live().await?;
                platform::runtime::redis_and_postgres_answer(pool, redis).await
            }) as platform::runtime::Check
        };
        Ok(Self {
            ops: OpsServer::bind(config.listen, "booking-worker")
                .await?
                .with_liveness(liveness)
                .with_readiness(readiness),
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    /// Runs the farm's discovery loop under [`platform::runner::Runner`]: at
    /// shutdown every drainer finishes its ledger writes in flight and gives its
    /// lease up, then the operations endpoint closes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let worker = self.worker;
        Runner::new(self.ops)
            .with_loop("discovery", |stop| worker.run(stop))
            .run(shutdown)
            .await
    }
}
