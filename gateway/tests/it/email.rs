//! From a checkout to the fan's inbox, end to end: the gateway, a booking worker,
//! the outbox relay, a real Kafka-protocol broker (`KAFKA_BROKERS`), the notifier
//! and an SMTP sink, all in this process on the test's own database and topics.

use std::net::SocketAddr;
use std::time::Duration;

use notifier::sink::{MailSink, Received};
use platform::settings::KafkaSettings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::checkout::*;
use crate::helpers::*;

/// Long enough for the notifier's first group join (about half its 6 s session).
const WAIT: Duration = Duration::from_secs(60);

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
    config["kafka"] = json!({"brokers": brokers, "topic_suffix": suffix});
    config["consumer"]["group_id"] = json!(format!("notifier-{suffix}"));
    config["consumer"]["session_timeout_ms"] = json!(6000);
    config["smtp_url"] = json!(sink.url());
    config["retry"] = json!({"initial_ms": 100, "max_ms": 1000, "give_up_after_seconds": 120});
    let config: notifier::Config = serde_json::from_value(config).expect("notifier config");
    let notifier = notifier::Application::with_pool(config, app.pool.clone())
        .await
        .expect("notifier");
    let stopped = stop.clone();
    tokio::spawn(notifier.run(async move { stopped.cancelled().await }));
    Pipeline { sink, stop }
}

/// A registered fan (the notifier reads its address) holding seats.
async fn registered_fan_holding(
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
fn mails_to<'a>(messages: &'a [Received], to: &str, word: &str) -> Vec<&'a Received> {
    messages
        .iter()
        .filter(|m| m.to.iter().any(|t| t == to))
        .filter(|m| m.subject().is_some_and(|s| s.to_lowercase().contains(word)))
        .collect()
}

/// Waits until the fan has an email whose subject contains `word`; returns it, and
/// every message received by then.
async fn wait_for_mail(sink: &MailSink, to: &str, word: &str) -> (Received, Vec<Received>) {
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
async fn wait_until_quiet(app: &TestApp) {
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

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_paid_checkout_sends_one_confirmation_with_its_seats_and_amount(pool: PgPool) {
    let app = spawn_app(pool).await;
    let pipeline = pipeline(&app, &brokers()).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (email, token, request, status) =
        registered_fan_holding(&app, &event, &json!({"quantity": 2, "section": "Balcony"})).await;
    let seats: Vec<String> = status["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| s.as_str().expect("seat").to_owned())
        .collect();

    let order: Value = pay(&app, &token, &request, PAID, Some("pay")).await;
    assert_eq!(order["state"], "paid");
    let (confirmation, _) = wait_for_mail(&pipeline.sink, &email, "your tickets").await;
    let text = confirmation.part("text/plain").expect("a text part");
    let html = confirmation.part("text/html").expect("an html part");
    for body in [&text, &html] {
        assert!(body.contains("Test Show"), "the event is named: {body}");
        for seat in &seats {
            // "Balcony-A-1" reads "Section Balcony, row A, seat 1".
            let mut parts = seat.splitn(3, '-');
            let (section, row, number) = (parts.next(), parts.next(), parts.next());
            let named = format!(
                "Section {}, row {}, seat {}",
                section.unwrap_or_default(),
                row.unwrap_or_default(),
                number.unwrap_or_default()
            );
            assert!(body.contains(&named), "seat {seat} is named: {body}");
        }
        assert!(
            body.contains("198.00"),
            "the amount (2 × 99.00) is stated: {body}"
        );
    }
    // The hold's email came first; each is sent once, whatever Kafka redelivers.
    wait_until_quiet(&app).await;
    let messages = pipeline.sink.messages();
    assert_eq!(mails_to(&messages, &email, "your tickets").len(), 1);
    assert_eq!(
        messages.iter().filter(|m| m.to.contains(&email)).count(),
        2,
        "held, then paid"
    );
    let sold: Value = app.get_json(&format!("/v1/events/{event}"), None).await;
    assert!(sold["sold"].as_u64().is_some_and(|n| n >= 2), "{sold}");
    stop.cancel();
    pipeline.stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_late_webhook_after_expiry_sends_a_refund_email(pool: PgPool) {
    // The refund under test is the late webhook's: the reconciler, which would void
    // the pending charge first and take another path, stays out of the way. The hold
    // is long enough to start paying on a loaded machine (a 2 s hold once ran out
    // between "held" and the checkout).
    let app = spawn_app_with(pool, |config| {
        config.payments.paying_grace_seconds = 1;
        config.payments.reconcile_after_seconds = 3600;
    })
    .await;
    let pipeline = pipeline(&app, &brokers()).await;
    let (_, event, stop) = open_sale(&app, 8).await;
    let (email, token, request, _) =
        registered_fan_holding(&app, &event, &json!({"quantity": 1, "section": "Floor"})).await;
    let order: Value = pay(&app, &token, &request, PENDING, None).await;
    assert_eq!(order["state"], "pending", "{order}");
    wait_for_state(&app, &token, &request, &["expired"]).await;
    let order_id = order["order_id"].as_str().expect("order_id");
    let late = webhook(
        &app,
        &json!({"id": "wh_late", "type": "payment.succeeded", "order_id": order_id}),
        WEBHOOK_SECRET,
        chrono::Utc::now().timestamp(),
    )
    .await;
    assert_eq!(late.status(), StatusCode::OK);

    let (refund, _) = wait_for_mail(&pipeline.sink, &email, "refund").await;
    let text = refund.part("text/plain").expect("a text part");
    assert!(text.contains("45.00"), "how much comes back: {text}");
    wait_until_quiet(&app).await;
    let messages = pipeline.sink.messages();
    assert_eq!(mails_to(&messages, &email, "refund").len(), 1);
    assert!(
        mails_to(&messages, &email, "your tickets").is_empty(),
        "nothing was sold"
    );
    stop.cancel();
    pipeline.stop.cancel();
}

/// `onsale_notifier_consumers_replaced_total` as the process's metrics have it.
async fn consumers_replaced(app: &TestApp) -> u64 {
    let text = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    text.lines()
        .find(|l| l.starts_with("onsale_notifier_consumers_replaced_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_broker_restarts_between_the_outbox_write_and_the_publish_and_the_email_arrives_once(
    pool: PgPool,
) {
    let mut broker = testkit::PrivateBroker::start();
    let app = spawn_app(pool).await;
    let pipeline = pipeline(&app, &broker.address()).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (email, token, request, _) =
        registered_fan_holding(&app, &event, &json!({"quantity": 1, "section": "Floor"})).await;
    // The relay and the notifier work: the hold's email arrives.
    wait_for_mail(&pipeline.sink, &email, "held").await;

    // The broker dies; the sale is written to the outbox meanwhile and cannot leave.
    let replaced_before = consumers_replaced(&app).await;
    broker.kill();
    let order: Value = pay(&app, &token, &request, PAID, Some("pay")).await;
    assert_eq!(
        order["state"], "paid",
        "checkout does not wait for the broker"
    );
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox.messages WHERE request_id = $1::uuid AND published_at IS NULL",
    )
    .bind(&request)
    .fetch_one(&app.pool)
    .await
    .expect("outbox");
    assert_eq!(
        waiting, 2,
        "request.confirmed and order.paid wait in the outbox"
    );

    // The notifier has noticed (it replaces its consumer, see notifier::consumer),
    // as it would during any real restart, which takes longer than this.
    let started = tokio::time::Instant::now();
    while consumers_replaced(&app).await <= replaced_before {
        assert!(
            started.elapsed() < WAIT,
            "the notifier never noticed the broker go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It comes back empty (its topics were in memory): the relay makes them again,
    // publishes, and the notifier, which was consuming before, mails once.
    broker.restart();
    let (confirmation, _) = wait_for_mail(&pipeline.sink, &email, "your tickets").await;
    assert!(
        confirmation
            .part("text/plain")
            .is_some_and(|t| t.contains("45.00"))
    );
    wait_until_quiet(&app).await;
    let messages = pipeline.sink.messages();
    assert_eq!(mails_to(&messages, &email, "your tickets").len(), 1);
    assert_eq!(
        mails_to(&messages, &email, "held").len(),
        1,
        "the hold's email was not sent again"
    );
    stop.cancel();
    pipeline.stop.cancel();
}
