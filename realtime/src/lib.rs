//! Realtime: each fan's WebSocket, fed by Redis pub/sub: queue position and wait time,
//! hold results, seat-map changes and sale state.
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
        proto::settings::load(&serde_json::json!({ "listen": "127.0.0.1:8086" }))
    }
}

pub struct Application {
    ops: OpsServer,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            ops: OpsServer::bind(config.listen, "realtime").await?,
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
