//! Payments: orders, checkout against a payment provider (the sandbox one ships with
//! onsale), signed webhooks, refunds, and the outbox relay that carries every
//! domain event to Kafka.
//!
//! [`router`] serves checkout, orders and the webhook (the gateway mounts it). The
//! binary runs the loops: the outbox relay ([`relay`]), the reconciler that settles
//! orders whose outcome was lost, the sandbox's webhook sender ([`background`]), and
//! the refund loop ([`refunds`]: the money of approved refunds, cancelled events'
//! refunds ([`cancel`]), invoice PDFs).
//!
//! Redis keys touched (all the event's, see `proto::Keys`): the request hash, the
//! `holds` and section-holds zsets, the seat hash and counts, the fans hash, and
//! the drain lease (read only: no checkout write happens while a restore holds it).

pub mod background;
pub mod cancel;
pub mod card;
pub mod checkout;
pub mod error;
pub mod invoices;
pub mod money_routes;
pub mod orders;
pub mod provider;
pub mod refunds;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod settle;
pub mod signature;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use platform::auth::TokenVerifier;
use platform::runner::Runner;
use platform::runtime::OpsServer;
use platform::settings::{DatabaseSettings, KafkaSettings, RedisSettings, SettingsError};
use platform::store::Redis;
use proto::Keys;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::Error;
pub use provider::{PaymentProvider, Sandbox};
pub use routes::router;

/// The payments settings the gateway and the payments service share
/// (`ONSALE_PAYMENTS__*`).
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// The webhook's HMAC secret (`ONSALE_PAYMENTS__WEBHOOK_SECRET`), at least 16 bytes.
    pub webhook_secret: SecretString,
    /// How far past its normal end a hold may run while its payment is pending.
    pub paying_grace_seconds: u64,
    /// When the sandbox sends a pending card's webhook; `0`: never (tests send
    /// their own).
    pub sandbox_webhook_seconds: u64,
    /// Where the sandbox sends its webhooks (the gateway's webhook route).
    pub sandbox_webhook_url: String,
    /// ISO 4217 code of every price.
    pub currency: String,
    /// An order pending this long without news is looked up at the provider and
    /// settled by the reconciler.
    pub reconcile_after_seconds: u64,
    /// Who sells, as printed on invoices and credit notes.
    pub seller: billing::Seller,
    /// Days that published outbox records and applied webhook ids are kept
    /// (`payments::retention`).
    pub retention_days: u64,
}

impl Settings {
    /// Compiled defaults; the secret has none.
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "paying_grace_seconds": 120,
            "sandbox_webhook_seconds": 5,
            "sandbox_webhook_url": "http://127.0.0.1:8080/v1/payments/webhook",
            "currency": "EUR",
            "reconcile_after_seconds": 10,
            "seller": billing::Seller::defaults(),
            "retention_days": 7,
        })
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.retention_days == 0 {
            return Err(SettingsError::Invalid(
                "payments.retention_days must be at least 1".into(),
            ));
        }
        if self.webhook_secret.expose_secret().len() < 16 {
            return Err(SettingsError::Invalid(
                "payments.webhook_secret (ONSALE_PAYMENTS__WEBHOOK_SECRET) must be at least 16 bytes".into(),
            ));
        }
        platform::settings::refuse_published_secret(
            "payments.webhook_secret (ONSALE_PAYMENTS__WEBHOOK_SECRET)",
            self.webhook_secret.expose_secret(),
        )
        .map_err(SettingsError::Invalid)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(SettingsError::Invalid(
                "payments.currency must be an ISO 4217 code such as EUR".into(),
            ));
        }
        if self.paying_grace_seconds > 3600 {
            return Err(SettingsError::Invalid(
                "payments.paying_grace_seconds must be at most 3600".into(),
            ));
        }
        Ok(())
    }

    /// When the sandbox's pending charges are told by webhook.
    pub fn sandbox_webhook_after(&self) -> Option<Duration> {
        (self.sandbox_webhook_seconds > 0)
            .then(|| Duration::from_secs(self.sandbox_webhook_seconds))
    }
}

/// What payments' work needs; every field is a cheap clone.
#[derive(Clone)]
pub struct Payments {
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
    pub provider: Arc<dyn PaymentProvider>,
    pub settings: Arc<Settings>,
    /// The events' ticket keys: a paid order's tickets are signed with them.
    pub ring: Arc<tickets::KeyRing>,
}

/// The router's state: the work's, and the token verifier for its callers.
#[derive(Clone, FromRef)]
pub struct PaymentsState {
    pub payments: Payments,
    pub verifier: Arc<TokenVerifier>,
}

/// The payments service: the outbox relay, the reconciler and the sandbox's
/// webhook sender, with its operations endpoint.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Where the operations endpoint listens.
    pub listen: std::net::SocketAddr,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    /// Unset: no relay (domain events wait in the outbox).
    #[serde(default)]
    pub kafka: Option<KafkaSettings>,
    pub payments: Settings,
}

impl Config {
    pub fn load() -> Result<Self, SettingsError> {
        let mut payments = Settings::defaults();
        // The secret is required and has no default.
        payments["webhook_secret"] = serde_json::Value::Null;
        let config: Self = platform::settings::load(&serde_json::json!({
            "listen": "127.0.0.1:8084",
            "database": platform::settings::database_defaults(8),
            "redis": platform::settings::redis_defaults(),
            "kafka": { "brokers": "127.0.0.1:9092" },
            "payments": payments,
        }))?;
        config.payments.validate()?;
        Ok(config)
    }
}

/// Starts the service's loops on `tracker`; they stop when `stop` is cancelled.
/// Tests call it to run the loops in-process.
pub fn spawn_loops(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    payments: Payments,
    kafka: Option<KafkaSettings>,
) {
    if let Some(kafka) = kafka {
        tracker.spawn(relay::run(payments.pool.clone(), kafka, stop.clone()));
    } else {
        tracing::warn!("no Kafka brokers configured: domain events wait in the outbox");
    }
    tracker.spawn(background::run_reconciler(payments.clone(), stop.clone()));
    tracker.spawn(refunds::run(payments.clone(), stop.clone()));
    if payments.settings.sandbox_webhook_after().is_some() {
        tracker.spawn(background::run_sandbox_webhooks(
            payments.pool.clone(),
            (*payments.settings).clone(),
            stop.clone(),
        ));
    }
}

pub struct Application {
    ops: OpsServer,
    payments: Payments,
    kafka: Option<KafkaSettings>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = platform::runtime::connect_postgres(&config.database).await?;
        let redis = platform::runtime::connect_redis(&config.redis).await?;
        let settings = Arc::new(config.payments);
        let (ready_pool, ready_redis) = (pool.clone(), redis.clone());
        let readiness = move || {
            platform::runtime::redis_and_postgres_answer(ready_pool.clone(), ready_redis.clone())
        };
        let payments = Payments {
            provider: Arc::new(Sandbox::new(pool.clone(), settings.sandbox_webhook_after())),
            pool,
            redis,
            keys: Keys::new(config.redis.key_prefix),
            settings,
            ring: Arc::new(tickets::KeyRing::new()),
        };
        Ok(Self {
            ops: OpsServer::bind(config.listen, "payments")
                .await?
                .with_readiness(readiness),
            payments,
            kafka: config.kafka.filter(|k| !k.brokers.is_empty()),
        })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The loops finish their current pass at shutdown (a relay batch is awaited
        // whole); a loop that dies ends the process.
        let (payments, kafka) = (self.payments, self.kafka);
        let mut runner = Runner::new(self.ops);
        if let Some(kafka) = kafka {
            let pool = payments.pool.clone();
            runner = runner.with_loop("outbox relay", move |stop| async move {
                relay::run(pool, kafka, stop).await;
                Ok(())
            });
        } else {
            tracing::warn!("no Kafka brokers configured: domain events wait in the outbox");
        }
        if payments.settings.sandbox_webhook_after().is_some() {
            let (pool, settings) = (payments.pool.clone(), (*payments.settings).clone());
            runner = runner.with_loop("sandbox webhooks", move |stop| async move {
                background::run_sandbox_webhooks(pool, settings, stop).await;
                Ok(())
            });
        }
        let for_refunds = payments.clone();
        runner
            .with_loop("refunds", move |stop| async move {
                refunds::run(for_refunds, stop).await;
                Ok(())
            })
            .with_loop("reconciler", move |stop| async move {
                background::run_reconciler(payments, stop).await;
                Ok(())
            })
            .run(shutdown)
            .await
    }
}
