//! Kafka plumbing shared by the producing side (the payments outbox relay) and the
//! consuming side (the notifier), kept in one crate so only they pay for building
//! librdkafka.
//!
//! The delivery contract is at least once, never transactions (the development
//! broker accepts them and does not honour them):
//! - producers are idempotent with `acks=all`, so a retried send is not duplicated
//!   by the broker;
//! - consumers store an offset only after the record's work is durable
//!   (`enable.auto.offset.store=false`, then [`Consumer::store_offset_from_message`]);
//!   stored offsets are committed in the background;
//! - every consumer is idempotent on the event id, because a crash between the work
//!   and the offset commit replays the record.
//!
//! [`Consumer::store_offset_from_message`]: rdkafka::consumer::Consumer::store_offset_from_message

use std::time::Duration;

use platform::settings::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

pub use rdkafka;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// How a consumer group behaves.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub group_id: String,
    /// A member silent this long is considered dead and its partitions move on.
    /// The first join of a group takes about half of it.
    pub session_timeout: Duration,
    /// Where a group with no committed offset starts.
    pub start_at_earliest: bool,
}

impl ConsumerOptions {
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            session_timeout: Duration::from_secs(10),
            start_at_earliest: true,
        }
    }
}

fn base(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "onsale")
        // The development broker listens on IPv4 only.
        .set("broker.address.family", "v4");
    config
}

/// An idempotent producer that waits for every in-sync replica.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, BusError> {
    producer_with_timeout(settings, Duration::from_secs(30))
}

/// Like [`producer`], giving up on a record after `message_timeout` (its send then
/// fails with `MessageTimedOut`).
pub fn producer_with_timeout(
    settings: &KafkaSettings,
    message_timeout: Duration,
) -> Result<FutureProducer, BusError> {
    Ok(base(settings)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        )
        .create()?)
}

/// A consumer in a group that stores offsets only when told to.
pub fn consumer(
    settings: &KafkaSettings,
    options: &ConsumerOptions,
) -> Result<StreamConsumer, BusError> {
    let session_ms = options.session_timeout.as_millis().to_string();
    let heartbeat_ms = (options.session_timeout.as_millis() / 3)
        .max(100)
        .to_string();
    Ok(base(settings)
        .set("group.id", &options.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if options.start_at_earliest {
                "earliest"
            } else {
                "latest"
            },
        )
        .set("session.timeout.ms", &session_ms)
        .set("heartbeat.interval.ms", &heartbeat_ms)
        .set("enable.partition.eof", "false")
        .create()?)
}

/// Creates `topics` (with the settings' suffix) where they do not exist yet.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
) -> Result<Vec<String>, BusError> {
    let admin: AdminClient<DefaultClientContext> = base(settings).create()?;
    let names: Vec<String> = topics
        .iter()
        .map(|t| proto::topics::with_suffix(t, &settings.topic_suffix))
        .collect();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(BusError::CreateTopic { topic, code }),
        }
    }
    Ok(names)
}
