//! The realtime node as its own process, against the real Redis and Postgres.

mod edge;
mod shards;
mod slow_reader;
mod unknown;
