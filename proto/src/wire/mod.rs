//! Wire types of the REST API, version 1. Requests refuse unknown fields where a
//! typo would silently change meaning; responses only ever gain fields.

pub mod auth;
pub mod events;
pub mod inventory;
pub mod live;
pub mod payments;
pub mod queue;
pub mod seats;
pub mod tickets;
