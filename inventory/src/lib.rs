//! Inventory: venues (sections, rows, seats, price tiers), events on them, and each
//! event's seat map.
//!
//! Postgres (`inventory` schema) holds venues and events; the seat state of a sale
//! lives in Redis for speed and is rebuilt from the Postgres ledger on demand
//! ([`seatmap::rebuild`]). Anonymous seat-map reads are served from one shared
//! snapshot per event ([`snapshot`]). [`router`] serves the HTTP API, which the
//! gateway mounts with the waiting room's sale setup for each new event; inventory
//! never serves it alone (an event made without its sale could never go on sale).
//! The `inventory` binary runs the operators' commands on the seat map.

pub mod config;
pub mod error;
pub mod events;
pub mod routes;
pub mod seatmap;
pub mod snapshot;
pub mod venues;

use std::pin::Pin;
use std::sync::Arc;

use axum::extract::FromRef;
use platform::auth::TokenVerifier;
use platform::store::Redis;
use proto::{EventId, Keys};
use sqlx::PgPool;

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
    /// Run in each new event's transaction (the gateway sets up the event's sale).
    pub on_event_created: Option<Arc<dyn OnEventCreated>>,
}

/// Connects to Postgres (running pending migrations) and to Redis, for the
/// operators' commands.
pub async fn connect(config: &Config) -> anyhow::Result<(PgPool, Redis)> {
    Ok((
        platform::runtime::connect_postgres(&config.database).await?,
        platform::runtime::connect_redis(&config.redis).await?,
    ))
}
