//! Payments: orders, checkout against a sandbox provider, signed webhooks, refunds,
//! and the transactional outbox that carries domain events to Kafka.
//!
//! Today the service runs its operations endpoint (`/healthz`, `/metrics`) so a
//! deployment can already place, probe and scrape it.

use std::net::SocketAddr;

use proto::runtime::OpsServer;
use proto::settings::SettingsError;

#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    /// Where the operations endpoint listens.
    pub listen: SocketAddr,
}

impl Config {
    pub fn load() -> Result<Self, SettingsError> {
        proto::settings::load(&serde_json::json!({ "listen": "127.0.0.1:8084" }))
    }
}

pub struct Application {
    ops: OpsServer,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            ops: OpsServer::bind(config.listen, "payments").await?,
        })
    }

    pub fn port(&self) -> u16 {
        self.ops.port()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.ops.run(shutdown).await
    }
}
