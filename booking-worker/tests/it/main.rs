//! The booking-worker farm against the real Redis and Postgres: concurrency,
//! fairness, the draw, and faults (a worker killed with SIGKILL, a Redis restart,
//! Postgres out of reach). `cluster` runs on a Redis Cluster of its own.

mod cluster;
mod concurrency;
mod fairness;
mod faults;
mod helpers;
mod outage;
mod promises;
