//! The gateway end to end: the real app on port 0 against the real Postgres (a fresh
//! database per test) and Redis (a key prefix per test).

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bad_input;
mod browser;
mod checkout;
mod checkout_faults;
mod checkout_input;
mod client;
mod email;
mod idempotency;
mod inventory;
mod limits;
mod live;
mod money;
mod ops;
mod queue;
mod restore;
mod sessions;
mod system;
mod tickets;
mod verification;
