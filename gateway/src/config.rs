//! The gateway's configuration: compiled defaults, then `DATABASE_URL`/`REDIS_URL`,
//! then `ONSALE_*` variables (`ONSALE_AUTH__JWT_SECRET`, `ONSALE_AUTH__HASH_CONCURRENCY`,
//! `ONSALE_LIMITS__PER_IP_PER_SECOND`, `ONSALE_BOOTSTRAP_ADMIN=email:password`, ...).

use std::net::SocketAddr;

use platform::auth::TokenSettings;
use platform::settings::{DatabaseSettings, RedisSettings, SettingsError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    /// The operations port (`ONSALE_OPS_LISTEN`): `/metrics`, `/healthz` and
    /// `/readyz` for Prometheus and probes. Metrics tell orders, tickets and logins,
    /// so they are served here only, never on the public port; bind it where only
    /// the operators' network reaches.
    pub ops_listen: SocketAddr,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    /// `email:password` of an admin account created (or reset) at start-up.
    #[serde(default)]
    pub bootstrap_admin: Option<SecretString>,
    /// Checkout and the webhook (`ONSALE_PAYMENTS__*`).
    pub payments: payments::Settings,
    /// The live sockets (`ONSALE_LIVE__*`).
    pub live: realtime::Settings,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    #[serde(flatten)]
    pub token: TokenSettings,
    /// Lifetime of an access token (short: a refresh gives the next one).
    pub token_ttl_seconds: u64,
    /// How long a sign-in can be refreshed before its fan signs in again.
    pub refresh_ttl_seconds: u64,
    /// Keys the Idempotency-Key fingerprints (`ONSALE_AUTH__IDEMPOTENCY_SECRET`):
    /// its own secret, so rotating the signing key leaves retries in flight alone.
    /// Unset, the signing secret serves (and a rotation turns retries of requests
    /// made before it into `idempotency_key_reused`).
    #[serde(default)]
    pub idempotency_secret: Option<SecretString>,
    /// Password hashes (registration, login) computed at once; unset, one per core.
    /// Each takes a core for tens of milliseconds, so more at once only slows all.
    #[serde(default)]
    pub hash_concurrency: Option<usize>,
    /// Password checks that may wait for a free hasher; more are refused at once
    /// with 503 `overloaded`.
    pub hash_queue: usize,
    /// Longest wait for a free hasher before a 503 `overloaded`.
    pub hash_wait_ms: u64,
    /// Wrong passwords for one account, from anywhere, before its sign-ins are
    /// refused for the rest of the window (`signin`).
    pub signin_failures: u32,
    /// The window those failures are counted in, from the first.
    pub signin_window_seconds: u64,
    /// Joining a line needs a confirmed email address
    /// (`ONSALE_AUTH__REQUIRE_VERIFIED_EMAIL`, default off): sign-up then emails a
    /// confirmation link, and a fan whose token does not say the address is
    /// confirmed gets 403 `email_unverified` at the join. Operators and admins are
    /// exempt (an admin made them). Off, nobody is emailed at sign-up, and a fan may
    /// still ask for a link (`POST /v1/auth/verify-email/resend`).
    #[serde(default)]
    pub require_verified_email: bool,
}

impl AuthSettings {
    /// The key of the idempotency fingerprints.
    pub fn idempotency_secret(&self) -> SecretString {
        self.idempotency_secret
            .clone()
            .unwrap_or_else(|| self.token.jwt_secret.clone())
    }

    /// Hashes computed at once: the setting, or one per core.
    pub fn hash_concurrency(&self) -> usize {
        self.hash_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct LimitSettings {
    /// Sustained requests per second from one client address, and its burst, for
    /// the whole tier when `shared` (else per gateway node).
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    /// Sustained requests per second from one signed-in account, and its burst.
    pub per_user_per_second: u32,
    pub per_user_burst: u32,
    /// Whether the buckets are shared by every gateway (in Redis, batched: one
    /// script call per batch of requests) on top of each node's own. Off, each node
    /// keeps its own only, and N nodes let a client through N times its rate.
    #[serde(default = "default_shared")]
    pub shared: bool,
    /// Largest request body accepted, in bytes.
    pub body_bytes: usize,
    /// How often idle rate-limiter keys are forgotten.
    pub housekeeping_seconds: u64,
    /// Proxies (comma-separated CIDRs or addresses) whose `Forwarded` or
    /// `X-Forwarded-For` is believed; empty: the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: String,
    /// The header those proxies write: `x-forwarded-for` (default) or `forwarded`.
    #[serde(default = "default_forwarded_header")]
    pub forwarded_header: String,
}

fn default_shared() -> bool {
    true
}

fn default_forwarded_header() -> String {
    "x-forwarded-for".into()
}

impl Config {
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:8080",
            "ops_listen": "127.0.0.1:9080",
            "database": platform::settings::database_defaults(32),
            "redis": platform::settings::redis_defaults(),
            "auth": {
                "issuer": "onsale", "audience": "onsale", "token_ttl_seconds": 900,
                "refresh_ttl_seconds": 1_209_600,
                "hash_queue": 32, "hash_wait_ms": 2000,
                "signin_failures": 5, "signin_window_seconds": 60,
                "require_verified_email": false,
            },
            "limits": {
                "per_ip_per_second": 50, "per_ip_burst": 100,
                "per_user_per_second": 10, "per_user_burst": 20,
                "body_bytes": 65536, "housekeeping_seconds": 30, "shared": true,
            },
            "payments": payments::Settings::defaults(),
            "live": realtime::Settings::defaults(),
        })
    }

    pub fn load() -> Result<Self, SettingsError> {
        let config: Self = platform::settings::load(&Self::defaults())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.auth.token.validate().map_err(SettingsError::Invalid)?;
        self.payments.validate()?;
        if self.auth.token_ttl_seconds == 0 {
            return Err(SettingsError::Invalid(
                "auth.token_ttl_seconds must be positive".into(),
            ));
        }
        if self.auth.refresh_ttl_seconds < self.auth.token_ttl_seconds {
            return Err(SettingsError::Invalid(
                "auth.refresh_ttl_seconds must be at least auth.token_ttl_seconds".into(),
            ));
        }
        if let Some(secret) = &self.auth.idempotency_secret {
            if secret.expose_secret().len() < platform::auth::MIN_SECRET_BYTES {
                return Err(SettingsError::Invalid(format!(
                    "auth.idempotency_secret must be at least {} bytes",
                    platform::auth::MIN_SECRET_BYTES
                )));
            }
            platform::settings::refuse_published_secret(
                "auth.idempotency_secret (ONSALE_AUTH__IDEMPOTENCY_SECRET)",
                secret.expose_secret(),
            )
            .map_err(SettingsError::Invalid)?;
        }
        if self.auth.hash_concurrency == Some(0) {
            return Err(SettingsError::Invalid(
                "auth.hash_concurrency must be positive (unset: one per core)".into(),
            ));
        }
        if self.auth.hash_wait_ms > 60_000 {
            return Err(SettingsError::Invalid(
                "auth.hash_wait_ms must be at most 60000".into(),
            ));
        }
        let l = &self.limits;
        if [
            l.per_ip_per_second,
            l.per_ip_burst,
            l.per_user_per_second,
            l.per_user_burst,
        ]
        .contains(&0)
        {
            return Err(SettingsError::Invalid(
                "limits.* rates and bursts must be positive".into(),
            ));
        }
        crate::client_address::TrustedProxies::from_settings(
            &l.trusted_proxies,
            &l.forwarded_header,
        )
        .map_err(SettingsError::Invalid)?;
        if l.body_bytes < 1024 {
            return Err(SettingsError::Invalid(
                "limits.body_bytes must be at least 1024".into(),
            ));
        }
        if let Some(admin) = &self.bootstrap_admin {
            parse_bootstrap_admin(admin.expose_secret()).map_err(SettingsError::Invalid)?;
        }
        Ok(())
    }
}

/// Splits `ONSALE_BOOTSTRAP_ADMIN` at its first `:` into email and password.
pub fn parse_bootstrap_admin(value: &str) -> Result<(String, SecretString), String> {
    match value.split_once(':') {
        Some((email, password)) if !email.is_empty() && !password.is_empty() => {
            platform::settings::refuse_published_secret(
                "the password of ONSALE_BOOTSTRAP_ADMIN",
                password,
            )?;
            Ok((email.to_owned(), SecretString::from(password.to_owned())))
        }
        _ => Err("ONSALE_BOOTSTRAP_ADMIN must be email:password".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_admin_splits_at_the_first_colon() {
        let (email, password) = parse_bootstrap_admin("root@example.com:pa:ss").ok().unzip();
        assert_eq!(email.as_deref(), Some("root@example.com"));
        assert_eq!(
            password.map(|p| p.expose_secret().to_owned()).as_deref(),
            Some("pa:ss")
        );
        assert!(parse_bootstrap_admin("no-colon").is_err());
        assert!(parse_bootstrap_admin(":password").is_err());
        assert!(parse_bootstrap_admin("root@example.com:").is_err());
    }

    #[test]
    fn a_bootstrap_admin_password_printed_in_the_repository_is_refused() {
        // compose.yaml's old default: anyone could sign in as its admin.
        let refused =
            parse_bootstrap_admin("admin@onsale.local:change-me-now").expect_err("refused");
        assert!(refused.contains("ONSALE_BOOTSTRAP_ADMIN"), "{refused}");
        assert!(parse_bootstrap_admin("admin@onsale.local:REPLACE").is_err());
    }
}
