//! The booking-worker farm: consumer groups draining each event's request stream in
//! queue order, seat holds by Lua script, crash recovery, dead letters and hold expiry.
//! Owns the `booking` schema (the seat ledger).
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
        proto::settings::load(&serde_json::json!({ "listen": "127.0.0.1:8083" }))
    }
}

pub struct Application {
    ops: OpsServer,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            ops: OpsServer::bind(config.listen, "booking-worker").await?,
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
