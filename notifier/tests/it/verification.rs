//! The "confirm your email address" email, without a broker: the notifier handed the
//! `account.verification_requested` envelope as the consumer would, twice (a
//! redelivery). It goes to the address being confirmed, links to the page with the
//! token in the fragment, and is sent once.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use notifier::deliver::Sleep;
use notifier::sink::MailSink;
use notifier::{Config, ConsumerSettings, RetrySettings};
use platform::settings::{DatabaseSettings, KafkaSettings};
use proto::UserId;
use proto::wire::events::{Envelope, NO_SALE, SCHEMA_VERSION, VerificationPayload};
use secrecy::SecretString;
use uuid::Uuid;

fn config(sink: &MailSink) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: DatabaseSettings {
            url: SecretString::from("unused: the test passes its pool"),
            max_connections: 4,
        },
        // Never reached: the envelope is handed over directly.
        kafka: KafkaSettings {
            brokers: "127.0.0.1:1".into(),
            topic_suffix: String::new(),
        },
        consumer: ConsumerSettings {
            group_id: "unused".into(),
            session_timeout_ms: 6000,
            partitions: 1,
        },
        smtp_url: SecretString::from(sink.url()),
        smtp_timeout_ms: 10_000,
        mail_from: "onsale <tickets@onsale.local>".into(),
        public_url: "http://tickets.test/".into(),
        retry: RetrySettings {
            initial_ms: 50,
            max_ms: 400,
            alert_after_seconds: 600,
        },
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_confirmation_request_emails_the_link_once(pool: sqlx::PgPool) {
    platform::runtime::init_test_tracing();
    let sink = MailSink::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("mail sink");
    let hasher = gateway::accounts::Hasher::new(1, 1, Duration::from_secs(30));
    let email = format!("new-{}@example.com", Uuid::new_v4().simple());
    let user_id = gateway::accounts::register(
        &pool,
        &hasher,
        &email,
        SecretString::from("a-fan-password-1"),
        proto::Role::Fan,
    )
    .await
    .expect("account");
    let envelope = envelope(user_id, &email, "tok-EN_123");
    let notifier = notifier::Notifier::new(&config(&sink), pool.clone()).expect("notifier");

    assert_eq!(
        notifier.process(&envelope, None, &mut Sleep).await,
        Some(notifier::Done::Sent)
    );
    assert_eq!(
        notifier.process(&envelope, None, &mut Sleep).await,
        Some(notifier::Done::Duplicate),
        "a redelivery sends nothing"
    );

    let caught = sink
        .wait_for(1, Duration::from_secs(30))
        .await
        .expect("the email");
    assert_eq!(caught.len(), 1);
    let mail = &caught[0];
    assert_eq!(mail.to, vec![email.clone()]);
    assert_eq!(
        mail.subject().as_deref(),
        Some("Confirm your email address for onsale")
    );
    let link = "http://tickets.test/verify#token=tok-EN_123";
    for part in ["text/plain", "text/html"] {
        let body = mail.part(part).expect("the part");
        assert!(body.contains(link), "{part}: {body}");
    }
    let (status, kind, recipient): (String, String, String) = sqlx::query_as(
        "SELECT status, kind, recipient FROM notifier.notifications WHERE envelope_id = $1",
    )
    .bind(envelope.id)
    .fetch_one(&pool)
    .await
    .expect("the log row");
    assert_eq!(
        (status.as_str(), kind.as_str(), recipient.as_str()),
        ("sent", "account.verification_requested", email.as_str())
    );
}

fn envelope(user_id: UserId, email: &str, token: &str) -> Envelope {
    let payload = VerificationPayload {
        user_id,
        email: email.to_owned(),
        token: token.to_owned(),
        expires_at: Utc::now() + chrono::Duration::hours(24),
    };
    Envelope {
        id: Uuid::now_v7(),
        kind: "account.verification_requested".into(),
        schema_version: SCHEMA_VERSION,
        occurred_at: Utc::now(),
        event_id: NO_SALE,
        request_id: None,
        payload: serde_json::to_value(payload).expect("payload"),
        correlation_id: None,
    }
}
