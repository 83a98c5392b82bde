//! Contracts shared by every onsale service, and nothing else: ids, wire types with
//! their schema versions, the error-code vocabulary, Redis key builders, the Lua
//! scripts, Kafka topic names and the workspace's migrations.
//!
//! Behaviour lives in the service crates, and what every service runs on (the Redis
//! store, the runtime, auth, the outbox writer) in `platform`. The optional features
//! carry only what a contract needs to be used: the error body's HTTP form (`axum`),
//! the scripts as `redis::Script`s (`redis`), the migrations and the ids' column
//! encodings (`sqlx`).

pub mod error;
pub mod ids;
pub mod keys;
pub mod roles;
pub mod sale_hash;
pub mod topics;
pub mod wire;

#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "sqlx")]
pub mod migrations;
#[cfg(feature = "redis")]
pub mod scripts;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{EventId, OrderId, RefundId, RequestId, SeatId, TicketId, UserId, VenueId};
pub use keys::Keys;
pub use roles::Role;
