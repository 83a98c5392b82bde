//! The way from the outbox to a fan's inbox in this process: the outbox relay, the
//! notifier on a real Kafka-protocol broker (`KAFKA_BROKERS`) with topics of the
//! test's own, and an SMTP sink; and waiting for what arrives there.

use std::net::SocketAddr;
use std::time::Duration;

use notifier::sink::{MailSink, Received};
use platform::settings::KafkaSettings;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::helpers::*;
use crate::support::sale::*;

/// Long enough for the notifier's first group join (about half its 6 s session).
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Pipeline {
    pub sink: MailSink,
    pub stop: CancellationToken,
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a Kafka-protocol broker; run the tests through deploy/test",
    )
}

/// The relay and the notifier on `brokers`, with topics of this test's own.
pub async fn pipeline(app: &TestApp, brokers: &str) -> Pipeline {
    let suffix = format!("test{}", uuid::Uuid::new_v4().simple());
    let kafka = KafkaSettings {
        brokers: brokers.to_owned(),
        topic_suffix: suffix.clone(),
    };
    let stop = CancellationToken::new();
    tokio::spawn(payments::relay::run(app.pool.clone(), kafka, stop.clone()));
    let sink = MailSink::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("mail sink");
    let mut config = notifier::Config::defaults();
    config["listen"] = json!("127.0.0.1:0");
    config["ops_listen"] = json!("127.0.0.1:0");
    config["kafka"] = json!({"brokers": brokers, "topic_suffix": suffix});
    config["consumer"]["group_id"] = json!(format!("notifier-{suffix}"));
    config["consumer"]["session_timeout_ms"] = json!(6000);
    config["smtp_url"] = json!(sink.url());
    config["retry"] = json!({"initial_ms": 100, "max_ms": 1000, "alert_after_seconds": 120});
    let config: notifier::Config = serde_json::from_value(config).expect("notifier config");
    let notifier = notifier::Application::with_pool(config, app.pool.clone())
        .await
        .expect("notifier");
    let stopped = stop.clone();
    tokio::spawn(notifier.run(async move { stopped.cancelled().await }));
    Pipeline { sink, stop }
}

/// A registered fan (the notifier reads its address) holding seats.
pub async fn registered_fan_holding(
    app: &TestApp,
    event: &str,
    body: &Value,
) -> (String, String, String, Value) {
    let email = format!("fan-{}@example.com", uuid::Uuid::new_v4().simple());
    let token = app.fan_token(&email).await;
    let (request, status) = join_and_wait(app, event, &token, body).await;
    assert_eq!(status["state"], "held", "{status}");
    (email, token, request, status)
}

/// The messages to `to` whose subject contains `word`.
pub fn mails_to<'a>(messages: &'a [Received], to: &str, word: &str) -> Vec<&'a Received> {
    messages
        .iter()
        .filter(|m| m.to.iter().any(|t| t == to))
        .filter(|m| m.subject().is_some_and(|s| s.to_lowercase().contains(word)))
        .collect()
}

/// Waits until the fan has an email whose subject contains `word`; returns it, and
/// every message received by then.
pub async fn wait_for_mail(sink: &MailSink, to: &str, word: &str) -> (Received, Vec<Received>) {
    let started = tokio::time::Instant::now();
    let mut seen = sink.subscribe();
    loop {
        let messages = sink.messages();
        if let Some(mail) = mails_to(&messages, to, word).first() {
            return ((*mail).clone(), messages);
        }
        let left = WAIT.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "no '{word}' email to {to} within {WAIT:?}: {} messages",
            messages.len()
        );
        let _ = tokio::time::timeout(left, seen.changed()).await;
    }
}

/// Waits until every outbox record of the test is published and the notifier has
/// logged each of them, so that a message that should not exist had its chance.
pub async fn wait_until_quiet(app: &TestApp) {
    let started = tokio::time::Instant::now();
    loop {
        let (waiting, unlogged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox.messages WHERE published_at IS NULL),
                    (SELECT count(*) FROM outbox.messages m
                     WHERE NOT EXISTS (SELECT 1 FROM notifier.notifications n WHERE n.envelope_id = m.id))",
        )
        .fetch_one(&app.pool)
        .await
        .expect("outbox");
        if waiting == 0 && unlogged == 0 {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{waiting} unpublished, {unlogged} not handled by the notifier"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
