//! Configuration pieces every service shares, and the loader that layers them:
//! compiled defaults, then the well-known `DATABASE_URL`, `REDIS_URL` and
//! `KAFKA_BROKERS`, then `ONSALE_*` variables (`__` nests: `ONSALE_AUTH__ISSUER`).

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`; secret because of the password.
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RedisSettings {
    pub url: SecretString,
    /// Prefix of every key (see [`proto::Keys`]).
    pub key_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Appended to every topic name; empty in production, unique per test run.
    #[serde(default)]
    pub topic_suffix: String,
}

/// Where Postgres is when nothing says otherwise (`DATABASE_URL` overrides), with a
/// service's own pool size: the `database` section of a service's defaults.
pub fn database_defaults(max_connections: u32) -> serde_json::Value {
    serde_json::json!({
        "url": "postgres://postgres@127.0.0.1:5432/onsale",
        "max_connections": max_connections,
    })
}

/// Where Redis is when nothing says otherwise (`REDIS_URL` overrides): the `redis`
/// section of a service's defaults.
pub fn redis_defaults() -> serde_json::Value {
    serde_json::json!({ "url": "redis://127.0.0.1:6379", "key_prefix": "onsale" })
}

/// Errors while assembling a configuration, naming the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Source(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from compiled `defaults` (a JSON object) overlaid by the environment.
pub fn load<T: serde::de::DeserializeOwned>(
    defaults: &serde_json::Value,
) -> Result<T, SettingsError> {
    use config::{Config, Environment, File, FileFormat};

    let mut builder =
        Config::builder().add_source(File::from_str(&defaults.to_string(), FileFormat::Json));
    for (var, key) in [
        ("DATABASE_URL", "database.url"),
        ("REDIS_URL", "redis.url"),
        ("KAFKA_BROKERS", "kafka.brokers"),
    ] {
        // Only services that have the setting take the well-known variable.
        let wanted = defaults
            .pointer(&format!("/{}", key.replace('.', "/")))
            .is_some();
        if let (true, Ok(value)) = (wanted, std::env::var(var)) {
            builder = builder
                .set_override(key, value)
                .map_err(|e| SettingsError::Source(e.to_string()))?;
        }
    }
    builder
        .add_source(
            Environment::with_prefix("ONSALE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| {
            SettingsError::Source(format!(
                "{e} (set it with an ONSALE_ variable, `__` between levels)"
            ))
        })
}
