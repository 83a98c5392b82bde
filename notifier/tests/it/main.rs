//! The notifier against the real Postgres (`DATABASE_URL`, a database per test), the
//! real Kafka-protocol broker (`KAFKA_BROKERS`, topics with a unique suffix per
//! test) and the in-crate SMTP sink: what reaches the fan, once, through
//! redeliveries, crashes and SMTP outages. (`verification` needs no broker.)

mod broker;
mod delivery;
mod group;
mod helpers;
mod outage;
mod redelivery;
mod verification;
