//! The contract test (`it/contract.rs`) as a test binary of its own: schemathesis
//! keeps both cores busy for a minute or two, and cargo runs test binaries one after
//! another, so its load never overlaps the timing-sensitive tests in `it` (a broker
//! restart, a consumer group rejoining).

#[path = "it/helpers.rs"]
#[allow(
    dead_code,
    reason = "the shared helpers; this binary uses a few of them"
)]
mod helpers;

#[path = "it/contract.rs"]
mod contract;
