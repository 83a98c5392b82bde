//! The booking-worker farm against the real Redis and Postgres: concurrency,
//! fairness, the draw, and faults (a worker killed with SIGKILL, a Redis restart).

mod concurrency;
mod fairness;
mod faults;
mod helpers;
