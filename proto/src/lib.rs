//! Contracts shared by every onsale service, and nothing else: ids, wire types with
//! their schema versions, the error-code vocabulary, Redis key builders, the Lua
//! scripts, Kafka topic names and the workspace's migrations.
//!
//! Behaviour lives in the service crates. The optional features carry the little
//! plumbing that must be identical everywhere (how an error becomes a response, how
//! a bearer token is verified, how a binary starts its telemetry).

pub mod error;
pub mod ids;
pub mod keys;
pub mod roles;
pub mod settings;
pub mod topics;
pub mod wire;

#[cfg(feature = "axum")]
pub mod auth;
#[cfg(any(feature = "axum", feature = "sqlx"))]
pub mod correlation;
#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "sqlx")]
pub mod migrations;
#[cfg(feature = "sqlx")]
pub mod outbox;
#[cfg(feature = "redis")]
pub mod reads;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "redis")]
pub mod scripts;
#[cfg(feature = "redis")]
pub mod store;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{EventId, OrderId, RequestId, SeatId, UserId, VenueId};
pub use keys::Keys;
pub use roles::Role;
