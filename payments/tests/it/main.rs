//! The outbox relay against the real Postgres (a database per test) and a real
//! Kafka-protocol broker (`KAFKA_BROKERS`, topics of the test's own).

use std::collections::BTreeMap;
use std::time::Duration;

use bus::ConsumerOptions;
use bus::rdkafka::Message;
use bus::rdkafka::consumer::Consumer;
use platform::outbox::{self, Message as OutboxMessage};
use platform::settings::KafkaSettings;
use proto::wire::events::{Envelope, EventType};
use proto::{EventId, RequestId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn kafka() -> KafkaSettings {
    KafkaSettings {
        brokers: std::env::var("KAFKA_BROKERS").expect(
            "KAFKA_BROKERS must name a Kafka-protocol broker; run the tests through deploy/test",
        ),
        topic_suffix: format!("test{}", uuid::Uuid::new_v4().simple()),
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_relay_publishes_each_sales_events_in_order_once_and_marks_them(pool: PgPool) {
    platform::runtime::init_test_tracing();
    let kafka = kafka();
    // Three sales' events, interleaved, written in many transactions as the
    // services write them: 300 records on the bookings topic.
    let events: Vec<EventId> = (0..3).map(|_| EventId::new()).collect();
    let mut written: BTreeMap<EventId, Vec<u32>> = BTreeMap::new();
    for batch in 0..30u32 {
        let mut tx = pool.begin().await.expect("tx");
        let messages: Vec<OutboxMessage> = (0..10u32)
            .map(|i| {
                let n = batch * 10 + i;
                let event = events[(n % 3) as usize];
                written.entry(event).or_default().push(n);
                OutboxMessage::new(
                    EventType::RequestHeld,
                    event,
                    Some(RequestId::new()),
                    &serde_json::json!({"n": n}),
                )
            })
            .collect();
        outbox::write(&mut tx, &messages).await.expect("outbox");
        tx.commit().await.expect("commit");
    }

    let stop = CancellationToken::new();
    let relay = tokio::spawn(payments::relay::run(
        pool.clone(),
        kafka.clone(),
        stop.clone(),
    ));
    let consumer = bus::consumer(
        &kafka,
        &ConsumerOptions {
            session_timeout: Duration::from_secs(6),
            ..ConsumerOptions::new(format!("group-{}", kafka.topic_suffix))
        },
    )
    .expect("consumer");
    let topic = proto::topics::with_suffix(proto::topics::BOOKINGS, &kafka.topic_suffix);
    // The relay creates the topics; subscribing to one not there yet is retried.
    let started = tokio::time::Instant::now();
    let mut received: BTreeMap<EventId, Vec<u32>> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    consumer.subscribe(&[&topic]).expect("subscribe");
    while received.values().map(Vec::len).sum::<usize>() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "received {received:?}"
        );
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let Ok(message) = message else { continue };
        let envelope: Envelope =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("an envelope");
        assert_eq!(
            message.key(),
            Some(envelope.event_id.to_string().as_bytes()),
            "keyed by the sale"
        );
        assert_eq!(envelope.kind, "request.held");
        assert_eq!(envelope.schema_version, 1);
        assert!(envelope.request_id.is_some());
        assert!(ids.insert(envelope.id), "{} delivered twice", envelope.id);
        let n = envelope.payload["n"].as_u64().expect("n") as u32;
        received.entry(envelope.event_id).or_default().push(n);
    }
    assert_eq!(
        received, written,
        "each sale's events arrive in the order written"
    );
    // Every record is marked published, once the batch's acknowledgements are in.
    let started = tokio::time::Instant::now();
    loop {
        let unpublished = payments::relay::backlog(&pool).await.expect("backlog");
        if unpublished == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{unpublished} unpublished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    relay.await.expect("relay");
}
