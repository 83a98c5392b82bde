//! The Kafka plumbing against a real Kafka-protocol broker (`KAFKA_BROKERS`).

use std::time::Duration;

use bus::rdkafka::Message;
use bus::rdkafka::consumer::{CommitMode, Consumer};
use bus::rdkafka::producer::FutureRecord;
use bus::{ConsumerOptions, consumer, ensure_topics, producer};
use platform::settings::KafkaSettings;

fn settings() -> KafkaSettings {
    let brokers = std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a Kafka-protocol broker; run the tests through deploy/test",
    );
    KafkaSettings {
        brokers,
        topic_suffix: format!("test{}", uuid::Uuid::new_v4().simple()),
    }
}

fn options(group: &str) -> ConsumerOptions {
    ConsumerOptions {
        session_timeout: Duration::from_secs(6),
        ..ConsumerOptions::new(group)
    }
}

/// Produces `count` keyed records and returns their payloads.
async fn produce(settings: &KafkaSettings, topic: &str, count: usize) -> Vec<String> {
    let producer = producer(settings).expect("producer");
    let mut sent = Vec::new();
    for i in 0..count {
        let payload = format!("{{\"schema_version\":1,\"seq\":{i}}}");
        producer
            .send(
                FutureRecord::to(topic).key("event-1").payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
        sent.push(payload);
    }
    sent
}

/// Receives `count` payloads, storing each offset as it is "done".
async fn receive(consumer: &bus::rdkafka::consumer::StreamConsumer, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a record within 60 s")
            .expect("a record");
        got.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        consumer
            .store_offset_from_message(&message)
            .expect("store offset");
    }
    got
}

#[tokio::test]
async fn a_consumer_group_receives_what_was_produced_in_order() {
    platform::runtime::init_test_tracing();
    let settings = settings();
    let topics = ensure_topics(&settings, &[proto::topics::BOOKINGS], 1)
        .await
        .expect("topics");
    let topic = &topics[0];
    let sent = produce(&settings, topic, 20).await;

    let consumer = consumer(
        &settings,
        &options(&format!("group-{}", settings.topic_suffix)),
    )
    .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    assert_eq!(receive(&consumer, sent.len()).await, sent);
}

#[tokio::test]
async fn a_restarted_group_member_resumes_after_its_stored_offsets() {
    platform::runtime::init_test_tracing();
    let settings = settings();
    let topics = ensure_topics(&settings, &[proto::topics::ORDERS], 1)
        .await
        .expect("topics");
    let topic = &topics[0];
    let sent = produce(&settings, topic, 10).await;
    let group = format!("group-{}", settings.topic_suffix);

    {
        let first = consumer(&settings, &options(&group)).expect("consumer");
        first.subscribe(&[topic]).expect("subscribe");
        assert_eq!(receive(&first, 6).await, sent[..6]);
        first
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
    }

    let second = consumer(&settings, &options(&group)).expect("consumer");
    second.subscribe(&[topic]).expect("subscribe");
    assert_eq!(receive(&second, 4).await, sent[6..]);
}
