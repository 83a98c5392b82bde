//! What the gateway's test binaries share: the app on port 0 against the real
//! Postgres and Redis ([`helpers`]), a sale to check out from ([`sale`]), a fan's
//! live socket ([`live`]) and the way from the outbox to an inbox ([`mail`]).
//! Each binary uses part of it.
#![allow(dead_code, reason = "each test binary uses part of the shared support")]

pub mod helpers;
pub mod live;
pub mod mail;
pub mod sale;
