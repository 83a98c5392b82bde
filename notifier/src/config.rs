//! The notifier's configuration: compiled defaults, then the environment
//! (`DATABASE_URL`, `KAFKA_BROKERS`, `ONSALE_SMTP_URL`, `ONSALE_MAIL_FROM`,
//! `ONSALE_PUBLIC_URL`, `ONSALE_RETRY__INITIAL_MS`, ...), then [`Config::validate`].
//! Also owns the reading of `smtp_url`, because lettre's own URL parser is compiled
//! only with a TLS backend, which the workspace does not build.

use std::net::SocketAddr;
use std::time::Duration;

use lettre::message::Mailbox;
use platform::settings::{DatabaseSettings, KafkaSettings, SettingsError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Where the operations endpoint (`/healthz`, `/readyz`, `/metrics`) listens.
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub consumer: ConsumerSettings,
    /// `smtp://[user[:password]@]host[:port]` (`ONSALE_SMTP_URL`); plain SMTP, no TLS.
    pub smtp_url: SecretString,
    /// How long one SMTP conversation may take before it counts as failed.
    pub smtp_timeout_ms: u64,
    /// The From of every email, e.g. `onsale <tickets@onsale.local>`.
    pub mail_from: String,
    /// Where fans open the site; links in emails start with it.
    pub public_url: String,
    pub retry: RetrySettings,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ConsumerSettings {
    /// The Kafka consumer group; every notifier process of a deployment shares it.
    pub group_id: String,
    /// A member silent this long loses its partitions to the others.
    pub session_timeout_ms: u64,
    /// Partitions of the topics this notifier creates when they are missing.
    pub partitions: i32,
}

/// How one email is retried while SMTP (or Postgres) fails transiently.
#[derive(Clone, Debug, Deserialize)]
pub struct RetrySettings {
    /// The first pause after a failed attempt; doubled after each further one.
    pub initial_ms: u64,
    /// The longest pause between attempts.
    pub max_ms: u64,
    /// After this long failing, the email is reported stuck (a warning, and the
    /// `onsale_email_stuck_seconds` gauge, to alert on); it is still retried, for as
    /// long as it takes. Only a permanent refusal writes an email off.
    pub alert_after_seconds: u64,
}

impl RetrySettings {
    pub fn initial(&self) -> Duration {
        Duration::from_millis(self.initial_ms)
    }

    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }

    pub fn alert_after(&self) -> Duration {
        Duration::from_secs(self.alert_after_seconds)
    }
}

impl Config {
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:8085",
            "database": platform::settings::database_defaults(4),
            "kafka": { "brokers": "127.0.0.1:9092", "topic_suffix": "" },
            "consumer": { "group_id": "onsale-notifier", "session_timeout_ms": 10000, "partitions": 3 },
            "smtp_url": "smtp://127.0.0.1:2525",
            "smtp_timeout_ms": 30000,
            "mail_from": "onsale <tickets@onsale.local>",
            "public_url": "http://127.0.0.1:8080",
            "retry": { "initial_ms": 500, "max_ms": 30000, "alert_after_seconds": 300 },
        })
    }

    pub fn load() -> Result<Self, SettingsError> {
        let config: Self = platform::settings::load(&Self::defaults())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |message: &str| Err(SettingsError::Invalid(message.to_owned()));
        SmtpTarget::parse(self.smtp_url.expose_secret()).map_err(SettingsError::Invalid)?;
        if self.mail_from.parse::<Mailbox>().is_err() {
            return invalid("mail_from (ONSALE_MAIL_FROM) must be a mailbox: `name <user@host>`");
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return invalid("public_url (ONSALE_PUBLIC_URL) must start with http:// or https://");
        }
        // One connection holds the per-envelope lock while another writes the log.
        if self.database.max_connections < 2 {
            return invalid("database.max_connections must be at least 2");
        }
        if self.consumer.partitions < 1 || self.consumer.session_timeout_ms < 1000 {
            return invalid(
                "consumer.partitions must be positive, consumer.session_timeout_ms at least 1000",
            );
        }
        let r = &self.retry;
        if r.initial_ms == 0 || r.max_ms < r.initial_ms {
            return invalid("retry.initial_ms must be positive and at most retry.max_ms");
        }
        if self.smtp_timeout_ms == 0 {
            return invalid("smtp_timeout_ms must be positive");
        }
        Ok(())
    }

    /// The public site's base, without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}

/// Where and how to reach the SMTP server, read from `smtp_url`.
#[derive(Clone, Debug)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, SecretString)>,
}

impl SmtpTarget {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("smtp://").ok_or_else(|| {
            "smtp_url (ONSALE_SMTP_URL) must start with smtp:// (TLS is not built in)".to_owned()
        })?;
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("smtp_url: bad port {port:?}"))?,
            ),
            None => (hostport, 25),
        };
        if host.is_empty() || host.contains('/') {
            return Err("smtp_url: missing or bad host".into());
        }
        let credentials = userinfo.map(|userinfo| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                percent_decode(user),
                SecretString::from(percent_decode(password)),
            )
        });
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_parse_with_and_without_credentials() {
        let plain = SmtpTarget::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 2525));
        assert!(plain.credentials.is_none());

        let auth = SmtpTarget::parse("smtp://me%40x:p%3Ass@mail.example:587/").unwrap();
        let (user, password) = auth.credentials.unwrap();
        assert_eq!(user, "me@x");
        assert_eq!(password.expose_secret(), "p:ss");
        assert_eq!((auth.host.as_str(), auth.port), ("mail.example", 587));

        assert_eq!(SmtpTarget::parse("smtp://mail.example").unwrap().port, 25);
        assert!(SmtpTarget::parse("smtps://mail.example").is_err());
        assert!(SmtpTarget::parse("smtp://:25").is_err());
        assert!(SmtpTarget::parse("smtp://host:none").is_err());
    }

    #[test]
    fn the_defaults_are_valid() {
        let config: Config = serde_json::from_value(Config::defaults()).unwrap();
        config.validate().unwrap();
        assert_eq!(config.public_base(), "http://127.0.0.1:8080");
    }
}
