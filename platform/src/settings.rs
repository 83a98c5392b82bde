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
    /// Replicas that must hold a batch of joins (`WAIT`) before its fans are told
    /// their queue numbers: a failover to a replica then cannot lose a number it
    /// handed out and hand it out again. 0 (the default): no waiting, for a server
    /// without replicas. Set it to the replicas each master has.
    #[serde(default)]
    pub replicas_to_wait: u32,
    /// How long a batch waits for them; past it, its joins are answered 503 and
    /// kept in line (asked again, they are answered once replicated).
    #[serde(default = "default_replica_wait_ms")]
    pub replica_wait_ms: u64,
}

fn default_replica_wait_ms() -> u64 {
    500
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

/// Secrets that have been printed in this repository's manifests and docs (the
/// compose file's old defaults among them): anyone can read them, so a service
/// refuses to start with one, as it refuses a secret too short.
const PUBLISHED_SECRETS: &[&str] = &[
    "compose-only-jwt-secret-replace-me-0123456789abcdef",
    "compose-only-webhook-secret",
    "change-me-now",
];

/// `Err` naming `setting` when `value` is a secret anyone could know: one printed in
/// the repository, or a placeholder (`replace`, `change-me`, `changeme`, `example`,
/// in any case).
pub fn refuse_published_secret(setting: &str, value: &str) -> Result<(), String> {
    let lower = value.to_ascii_lowercase();
    let placeholder = ["replace", "change-me", "changeme", "example"]
        .iter()
        .any(|word| lower.contains(word));
    if placeholder || PUBLISHED_SECRETS.contains(&value) {
        return Err(format!(
            "{setting} is an example value anyone can read; set a secret of your own \
             (for example `openssl rand -hex 32`)"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_secrets_and_placeholders_are_refused() {
        for value in [
            "compose-only-jwt-secret-replace-me-0123456789abcdef",
            "compose-only-webhook-secret",
            "change-me-now",
            "REPLACE_ME",
            "my-example-secret-0123456789abcdef",
        ] {
            let refused = refuse_published_secret("auth.jwt_secret", value).expect_err(value);
            assert!(refused.contains("auth.jwt_secret"), "{refused}");
        }
        assert!(refuse_published_secret("x", "9f2c4e1a7b3d5f6e8a0c2e4f6a8b0d1e").is_ok());
    }
}
