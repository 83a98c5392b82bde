//! Realtime: each fan's WebSocket, fed by Redis pub/sub: queue position and wait
//! time, the request's state, seat-map changes and the sale's state
//! (docs/REALTIME.md).
//!
//! - [`feed`]: one task per event per node, shared by its sockets;
//! - [`shards`]: the node's one sharded pub/sub connection, shared by its feeds;
//! - [`socket`]: one fan's socket, from the snapshot to the close;
//! - [`routes`]: the socket route and its REST fallback, mounted by the gateway too.
//!
//! A node serves the live routes beside `/healthz`, `/readyz` and `/metrics`.

pub mod feed;
pub mod routes;
pub mod shards;
pub mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use platform::auth::{TokenSettings, TokenVerifier};
use platform::client_address::TrustedProxies;
use platform::runner::Runner;
use platform::runtime::OpsServer;
use platform::settings::{DatabaseSettings, RedisSettings, SettingsError};
use proto::Keys;
use secrecy::ExposeSecret;

pub use feed::Hub;
pub use routes::{RealtimeState, router};

#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    /// Where the node listens: the live routes and the operations endpoints.
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: TokenSettings,
    pub live: Settings,
    /// Whose forwarding header to believe (`ONSALE_LIMITS__TRUSTED_PROXIES`,
    /// `ONSALE_LIMITS__FORWARDED_HEADER`: the gateway's own settings).
    pub limits: ProxySettings,
}

/// The load balancers in front of the node, as the gateway names them.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ProxySettings {
    pub trusted_proxies: String,
    pub forwarded_header: String,
}

impl ProxySettings {
    pub fn proxies(&self) -> Result<TrustedProxies, String> {
        TrustedProxies::from_settings(&self.trusted_proxies, &self.forwarded_header)
    }
}

/// How the sockets behave (`ONSALE_LIVE__*`).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Settings {
    /// How often a feed re-reads its line and sends coalesced seat deltas.
    pub tick_ms: u64,
    /// How often a socket re-reads a hold (and checks its peer is alive).
    pub refresh_seconds: u64,
    /// Pings go out every this many refreshes.
    pub pings_every: u64,
    /// A peer silent this long is dropped.
    pub idle_seconds: u64,
    /// A send that cannot finish this fast closes the socket.
    pub send_timeout_seconds: u64,
    /// Seat-delta messages a socket may fall behind before it is told to refetch.
    pub seat_buffer: usize,
    /// Largest frame or message accepted from a browser.
    pub max_frame_bytes: usize,
    /// The socket's read buffer.
    pub buffer_bytes: usize,
    /// Most bytes queued for a peer before a send fails.
    pub max_write_buffer_bytes: usize,
    /// Sockets one account may hold open on one node; more are refused with 429
    /// `rate_limited` (a fan has a tab or two, not a hundred).
    pub max_sockets_per_account: usize,
    /// Frames a peer may send in a minute (it has nothing to say: the socket only
    /// sends); past it the socket is closed (1008).
    pub max_inbound_per_minute: u32,
    /// How long an event id found unknown is answered 404 from memory, not from
    /// Postgres (a flood of made-up ids costs no queries).
    pub unknown_event_seconds: u64,
    /// Sockets one address (an IPv6 /64) may hold open on one node; more are
    /// refused with 429 `rate_limited`. Generous: a venue's or a carrier's NAT
    /// puts many fans behind one address.
    pub max_sockets_per_address: usize,
    /// Upgrades, tickets and snapshots one address may ask a node for per second,
    /// and in a burst; past it, 429 `rate_limited` with `retry-after`, before any
    /// token is checked or Redis is asked.
    pub requests_per_second_per_address: u32,
    pub requests_burst_per_address: u32,
    /// Events the node may look up in Postgres per second (and in a burst), for
    /// every address together: ids it knows are answered from memory, so this
    /// only bounds what made-up or new ids cost (past it, 429 `rate_limited`).
    pub event_lookups_per_second: u32,
}

impl Settings {
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "tick_ms": 100, "refresh_seconds": 5, "pings_every": 4, "idle_seconds": 60,
            "send_timeout_seconds": 10, "seat_buffer": 64, "max_frame_bytes": 4096,
            "buffer_bytes": 1024, "max_write_buffer_bytes": 1_048_576,
            "max_sockets_per_account": 10, "max_inbound_per_minute": 60,
            "unknown_event_seconds": 30, "max_sockets_per_address": 200,
            "requests_per_second_per_address": 10, "requests_burst_per_address": 40,
            "event_lookups_per_second": 50,
        })
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(10))
    }
    pub fn refresh(&self) -> Duration {
        Duration::from_secs(self.refresh_seconds.max(1))
    }
    pub fn pings_every(&self) -> u64 {
        self.pings_every.max(1)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_seconds.max(1))
    }
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_seconds.max(1))
    }
}

impl Default for Settings {
    fn default() -> Self {
        serde_json::from_value(Self::defaults()).expect("the defaults parse")
    }
}

impl Config {
    pub fn load() -> Result<Self, SettingsError> {
        let config: Self = platform::settings::load(&serde_json::json!({
            "listen": "127.0.0.1:8086",
            "database": platform::settings::database_defaults(4),
            "redis": platform::settings::redis_defaults(),
            "auth": { "issuer": "onsale", "audience": "onsale" },
            "live": Settings::defaults(),
            "limits": { "trusted_proxies": "", "forwarded_header": "x-forwarded-for" },
        }))?;
        config.auth.validate().map_err(SettingsError::Invalid)?;
        config.limits.proxies().map_err(SettingsError::Invalid)?;
        Ok(config)
    }
}

pub struct Application {
    ops: OpsServer,
    hub: Arc<Hub>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = platform::runtime::connect_postgres(&config.database).await?;
        let store = platform::store::Store::open(config.redis.url.expose_secret())
            .context("parsing redis.url")?;
        let redis = platform::runtime::connect_redis(&config.redis).await?;
        // Ready while Redis (the feeds) and Postgres (the events) answer.
        let (ready_pool, ready_redis) = (pool.clone(), redis.clone());
        let readiness = move || {
            platform::runtime::redis_and_postgres_answer(ready_pool.clone(), ready_redis.clone())
        };
        let revocations = platform::sessions::Revocations::new();
        let hub = Hub::new(
            store.clone(),
            redis.clone(),
            pool,
            Keys::new(config.redis.key_prefix.clone()),
            config.live.clone(),
        );
        platform::sessions::spawn_listener(
            store,
            redis,
            config.redis.key_prefix.clone(),
            revocations.clone(),
            hub.stopping(),
        );
        let state = RealtimeState {
            hub: hub.clone(),
            verifier: Arc::new(TokenVerifier::new(&config.auth).with_revocations(revocations)),
            proxies: Arc::new(config.limits.proxies().map_err(anyhow::Error::msg)?),
        };
        let (routes, _) = router().with_state(state).split_for_parts();
        let ops = OpsServer::bind(config.listen, "realtime")
            .await
            .with_context(|| format!("binding {}", config.listen))?
            .with_readiness(readiness)
            .with_routes(routes);
        Ok(Self { ops, hub })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serves until `shutdown` resolves. Order: the sockets are closed first (each
    /// with a Close frame, "going away"), then the listener stops.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Every socket gets a Close frame first; the endpoint, which serves them,
        // closes once they are gone.
        let hub = self.hub.clone();
        Runner::new(self.ops)
            .on_shutdown(move || hub.shutdown())
            .run(shutdown)
            .await
    }
}
