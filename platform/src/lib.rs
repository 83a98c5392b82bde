//! What every onsale service runs on, below the services and above the contracts in
//! `proto`: the connection to one Redis or a cluster ([`store`]), configuration
//! ([`settings`]), the runtime every binary starts with ([`runtime`]: tracing, the
//! metrics recorder, the ops server, the shutdown signal), bearer-token auth
//! ([`auth`]), the client's address behind trusted proxies ([`client_address`]),
//! the HTTP extractors ([`http`]), the correlation id ([`correlation`]),
//! the trace context and span export ([`telemetry`]), the transactional outbox
//! writer ([`outbox`]) and the reads of Redis structures
//! that several services answer from ([`reads`]).
//!
//! A service crate depends on `proto` and `platform`, never on another service crate.

pub mod auth;
pub mod client_address;
pub mod correlation;
pub mod http;
pub mod outbox;
pub mod reads;
pub mod runner;
pub mod runtime;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod telemetry;
