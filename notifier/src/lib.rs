//! The notifier: a Kafka consumer group that turns domain events into emails to
//! fans (HTML and text), exactly once per event as the fan sees it, with a
//! notification log. Owns the `notifier` schema; reads `gateway.users` (the fan's
//! address) and `inventory.events` (the event's name).
//!
//! - [`consumer`]: the group on the bookings and orders topics, offsets stored only
//!   after an envelope is done;
//! - [`deliver`]: one envelope: lookups, rendering, SMTP, retries, dead letters, and
//!   how the send/log window is closed;
//! - [`compose`]: which events email and what the emails say (the templates);
//! - [`log`]: the notification log's queries;
//! - [`sink`]: an SMTP sink for development and tests (`notifier catch-mail`).
//!
//! Metrics: `onsale_emails_total{kind, outcome}` (outcome `sent`, `skipped`,
//! `duplicate`, `dead`, `retry` per failed attempt, `malformed` for records that are
//! not envelopes) and the histogram `onsale_email_lag_seconds` (from the event's
//! `occurred_at` to the SMTP server's acceptance).

pub mod compose;
pub mod config;
pub mod consumer;
pub mod deliver;
pub mod log;
pub mod mailer;
pub mod qr;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use platform::runner::Runner;
use platform::runtime::OpsServer;
use sqlx::PgPool;

pub use config::{Config, ConsumerSettings, RetrySettings};
pub use consumer::EventConsumer;
pub use deliver::{Done, Notifier};

/// The notifier process: the consumer and the operations endpoint.
pub struct Application {
    ops: OpsServer,
    consumer: EventConsumer,
}

impl Application {
    /// Connects to Postgres (running pending migrations) and binds the endpoint.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = platform::runtime::connect_postgres(&config.database).await?;
        Self::with_pool(config, pool).await
    }

    /// Like [`Application::build`] with a pool the caller made (and migrated).
    pub async fn with_pool(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        config.validate()?;
        let notifier = Arc::new(Notifier::new(&config, pool.clone())?);
        let consumer = EventConsumer::new(&config, notifier);
        // Alive while the consumer loop goes round (it does at least every few
        // seconds, and between retries); ready while Postgres answers too. SMTP
        // being down makes neither fail: the retries are the answer to that.
        let stale_after =
            Duration::from_millis(config.smtp_timeout_ms * 2).max(Duration::from_secs(60));
        let liveness = consumer.health().liveness(stale_after, "the consumer loop");
        let live = liveness.clone();
        let readiness = move || {
            let (pool, live) = (pool.clone(), live.clone());
            Box::pin(async move {
                live().await?;
                platform::runtime::postgres_answers(pool).await
            }) as platform::runtime::Check
        };
        Ok(Self {
            ops: OpsServer::bind(config.listen, "notifier")
                .await
                .with_context(|| format!("binding the operations endpoint on {}", config.listen))?
                .with_liveness(liveness)
                .with_readiness(readiness),
            consumer,
        })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    /// Serves until `shutdown`, then: stop consuming, finish the email in hand (or
    /// leave it unacknowledged if it is between retries), commit the stored
    /// offsets, leave the group, stop the endpoint.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The endpoint keeps answering (unready is honest, dead is not) until the
        // consumer has committed and left the group.
        let consumer = self.consumer;
        Runner::new(self.ops)
            .with_loop("consumer", |stop| consumer.run(stop))
            .run(shutdown)
            .await
    }
}
