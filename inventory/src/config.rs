//! The configuration of the `inventory` operator commands: where the ledger and the
//! seat maps are.

use platform::settings::{DatabaseSettings, RedisSettings, SettingsError};

#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
}

impl Config {
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "database": platform::settings::database_defaults(4),
            "redis": platform::settings::redis_defaults(),
        })
    }

    /// Compiled defaults, overlaid by the environment.
    pub fn load() -> Result<Self, SettingsError> {
        platform::settings::load(&Self::defaults())
    }
}
