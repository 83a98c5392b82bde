//! Inventory's configuration.

use std::net::SocketAddr;

use platform::auth::TokenSettings;
use platform::settings::{DatabaseSettings, RedisSettings, SettingsError};

#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    /// Where the standalone inventory service listens.
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: TokenSettings,
}

impl Config {
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:8081",
            "database": { "url": "postgres://postgres@127.0.0.1:5432/onsale", "max_connections": 16 },
            "redis": { "url": "redis://127.0.0.1:6379", "key_prefix": "onsale" },
            "auth": { "issuer": "onsale", "audience": "onsale" },
        })
    }

    /// Compiled defaults, overlaid by the environment, then validated.
    pub fn load() -> Result<Self, SettingsError> {
        let config: Self = platform::settings::load(&Self::defaults())?;
        config.auth.validate().map_err(SettingsError::Invalid)?;
        Ok(config)
    }
}
