//! The Kafka side: the `onsale-notifier` consumer group on the bookings, orders and
//! accounts topics ([`TOPICS`]). One record at a time, in partition order; its offset
//! is stored only once the [`Notifier`] is done with it (sent and logged, skipped, a
//! duplicate, or a dead letter written), and committed in the background (and once
//! more at shutdown).
//!
//! While one email is retried in place, the consumer keeps polling (librdkafka
//! counts a member that does not poll for `max.poll.interval.ms`, 5 min, as dead,
//! and an outage can last longer): the assigned partitions are paused, and anything
//! that still arrives is kept, in order, and processed next.
//!
//! A broker restart (the development broker keeps topics in memory) surfaces as
//! unknown-topic errors: the topics are created again and subscribed anew; other
//! errors are logged and the loop goes on.
//!
//! When every broker is gone, the consumer is replaced by a fresh one before the
//! broker returns: librdkafka 2.12 can crash on the first fetch answer of a broker
//! that came back without its topics (an entry with neither name nor id reaches
//! its metadata cache; confluentinc/librdkafka#5280), and a consumer that never saw
//! the old topics holds no stale ids to fetch by.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::ConsumerOptions;
use bus::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use bus::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use bus::rdkafka::message::{Headers, Message, OwnedMessage};
use bus::rdkafka::{Offset, TopicPartitionList};
use platform::settings::KafkaSettings;
use proto::wire::events::Envelope;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deliver::{Notifier, Pause};

/// How long an idle poll waits before the loop goes round (and ticks [`Health`]).
const TICK: Duration = Duration::from_secs(5);
/// How often re-creating lost topics is tried until it works.
const ENSURE_RETRY: Duration = Duration::from_secs(1);
/// Unknown-topic errors that follow a re-creation this closely are its echo.
const ENSURE_SETTLE: Duration = Duration::from_secs(3);
/// A consumer younger than this is not replaced when the brokers go (it has had no
/// time to learn topic ids; this also bounds replacements while they stay down).
const REPLACE_AFTER: Duration = Duration::from_secs(1);

/// The topics consumed: what emails a fan (`sales` does not).
pub const TOPICS: [&str; 3] = [
    proto::topics::BOOKINGS,
    proto::topics::ORDERS,
    proto::topics::ACCOUNTS,
];

/// The consumer loop's heartbeat, for `/healthz`.
pub type Health = platform::runtime::Heartbeat;

pub struct EventConsumer {
    notifier: Arc<Notifier>,
    kafka: KafkaSettings,
    options: ConsumerOptions,
    partitions: i32,
    health: Health,
}

impl EventConsumer {
    pub fn new(config: &Config, notifier: Arc<Notifier>) -> Self {
        Self {
            notifier,
            kafka: config.kafka.clone(),
            options: ConsumerOptions {
                session_timeout: Duration::from_millis(config.consumer.session_timeout_ms),
                ..ConsumerOptions::new(config.consumer.group_id.clone())
            },
            partitions: config.consumer.partitions,
            health: Health::default(),
        }
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Consumes until `stop`. Returns an error only when the consumer cannot be made.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut consumer = bus::consumer(&self.kafka, &self.options)
            .map_err(|e| anyhow::anyhow!("creating the kafka consumer: {e}"))?;
        let mut created = Instant::now();
        self.health.tick();
        let Some(topics) = self.ensure_topics_until_done(&stop).await else {
            return Ok(());
        };
        subscribe(&consumer, &topics);
        tracing::info!(?topics, group = self.options.group_id, "consuming");

        let mut buffered: VecDeque<OwnedMessage> = VecDeque::new();
        let mut lost = LostTopics::default();
        loop {
            // Records kept from a retry do not outlive a shutdown: unacknowledged,
            // they go to the next owner.
            if stop.is_cancelled() {
                break;
            }
            if lost.due() {
                self.recreate_topics(&consumer, &topics, &mut lost).await;
            }
            let message = match buffered.pop_front() {
                Some(message) => message,
                None => {
                    let wait = if lost.wanted { ENSURE_RETRY } else { TICK };
                    let received = tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        received = tokio::time::timeout(wait, consumer.recv()) => received,
                    };
                    self.health.tick();
                    match received {
                        Err(_idle) => continue,
                        Ok(Ok(message)) => message.detach(),
                        Ok(Err(error)) => {
                            if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
                                && created.elapsed() >= REPLACE_AFTER
                            {
                                consumer = self.replace(consumer, &topics)?;
                                created = Instant::now();
                            }
                            lost.on_error(&error);
                            tokio::select! {
                                () = stop.cancelled() => break,
                                () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                            }
                        }
                    }
                }
            };
            let mut keepalive = KeepAlive {
                consumer: &consumer,
                buffered: &mut buffered,
                paused: None,
                lost: &mut lost,
                stop: &stop,
                health: &self.health,
            };
            let finished = self.handle(&message, &mut keepalive).await;
            keepalive.resume();
            if !finished {
                break;
            }
            if let Err(error) =
                consumer.store_offset(message.topic(), message.partition(), message.offset())
            {
                // The partition moved to another member meanwhile; it finds the log row.
                tracing::debug!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %error, "cannot store the offset");
            }
        }
        // Shutdown order: consuming has stopped; the in-flight email either finished
        // (its offset is stored) or was left unacknowledged for the next owner. Commit
        // the stored offsets now instead of at the next auto-commit, then leave the
        // group (dropping the consumer closes it) so a successor is assigned at once.
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "cannot commit offsets at shutdown"),
        }
        drop(consumer);
        tracing::info!("consumer stopped");
        Ok(())
    }

    /// A fresh consumer in place of one whose brokers all went away (see the module
    /// docs). The old one is closed in the background: closing may wait for a
    /// broker. Offsets it stored but had not committed are delivered again, and the
    /// notification log answers them as duplicates.
    ///
    /// The old consumer's stored offsets are forgotten first. Closing a consumer
    /// commits the stored offset of every partition it gives up, and librdkafka keeps
    /// that commit until a coordinator answers: when the broker that comes back is a
    /// new one (its topics recreated, their logs starting again at 0), an offset from
    /// the old log would make the fresh consumer skip the new log's first records.
    fn replace(&self, old: StreamConsumer, topics: &[String]) -> anyhow::Result<StreamConsumer> {
        forget_stored_offsets(&old);
        tokio::task::spawn_blocking(move || drop(old));
        let fresh = bus::consumer(&self.kafka, &self.options)
            .map_err(|e| anyhow::anyhow!("creating the kafka consumer: {e}"))?;
        subscribe(&fresh, topics);
        metrics::counter!("onsale_notifier_consumers_replaced_total").increment(1);
        tracing::warn!("every broker is down; consumer replaced by a fresh one");
        Ok(fresh)
    }

    /// `false` when it stopped with the record unfinished.
    async fn handle(&self, message: &OwnedMessage, keepalive: &mut KeepAlive<'_>) -> bool {
        let envelope = match message.payload().map(serde_json::from_slice::<Envelope>) {
            Some(Ok(envelope)) => envelope,
            Some(Err(error)) => {
                self.malformed(message, &error.to_string());
                return true;
            }
            None => {
                self.malformed(message, "empty record");
                return true;
            }
        };
        let traceparent = message
            .headers()
            .and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == platform::telemetry::TRACEPARENT)
            })
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok());
        self.notifier
            .process(&envelope, traceparent, keepalive)
            .await
            .is_some()
    }

    fn malformed(&self, message: &OwnedMessage, error: &str) {
        // Without an envelope id there is nothing to log it under; skipping it is
        // the only way past it, and the warning the only trace.
        metrics::counter!("onsale_emails_total", "kind" => "unknown", "outcome" => "malformed")
            .increment(1);
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            error,
            "record is not an envelope; skipping it"
        );
    }

    /// Creates the topics again after a broker lost them, and subscribes anew so
    /// librdkafka looks them up now instead of at its next metadata refresh.
    async fn recreate_topics(
        &self,
        consumer: &StreamConsumer,
        topics: &[String],
        lost: &mut LostTopics,
    ) {
        lost.last_try = Some(Instant::now());
        match bus::ensure_topics(&self.kafka, &TOPICS, self.partitions).await {
            Ok(_) => {
                consumer.unsubscribe();
                subscribe(consumer, topics);
                (lost.wanted, lost.last_done) = (false, Some(Instant::now()));
                tracing::info!(?topics, "topics created again; subscribed anew");
            }
            Err(error) => tracing::warn!(%error, "cannot create the topics again; retrying"),
        }
    }

    async fn ensure_topics_until_done(&self, stop: &CancellationToken) -> Option<Vec<String>> {
        let mut delay = Duration::from_millis(500);
        loop {
            // Cancellable: an unreachable broker would hold a stop up for as long
            // as the admin client waits.
            let ensured = tokio::select! {
                () = stop.cancelled() => return None,
                ensured = bus::ensure_topics(&self.kafka, &TOPICS, self.partitions) => ensured,
            };
            match ensured {
                Ok(topics) => return Some(topics),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot ensure the topics exist");
                }
            }
            self.health.tick();
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

fn subscribe(consumer: &StreamConsumer, topics: &[String]) {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(error) = consumer.subscribe(&names) {
        tracing::warn!(%error, "cannot subscribe");
    }
}

/// Whether the subscribed topics must be created again. librdkafka reports a
/// missing subscribed topic once, not on every poll, so the wish is kept until a
/// re-creation works.
#[derive(Debug, Default)]
struct LostTopics {
    wanted: bool,
    last_try: Option<Instant>,
    last_done: Option<Instant>,
}

impl LostTopics {
    fn on_error(&mut self, error: &KafkaError) {
        let missing = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        );
        if !missing {
            tracing::warn!(%error, "kafka consumer error");
            return;
        }
        let echo = self.last_done.is_some_and(|t| t.elapsed() < ENSURE_SETTLE);
        if !echo && !self.wanted {
            tracing::warn!(%error, "a subscribed topic is missing (broker restarted?); creating it again");
            self.wanted = true;
        }
    }

    fn due(&self) -> bool {
        self.wanted && self.last_try.is_none_or(|t| t.elapsed() >= ENSURE_RETRY)
    }
}

/// Pauses between attempts on one email while keeping the group membership alive.
struct KeepAlive<'a> {
    consumer: &'a StreamConsumer,
    buffered: &'a mut VecDeque<OwnedMessage>,
    paused: Option<TopicPartitionList>,
    lost: &'a mut LostTopics,
    stop: &'a CancellationToken,
    health: &'a Health,
}

impl KeepAlive<'_> {
    fn pause_assignment(&mut self) {
        match self.consumer.assignment() {
            Ok(assigned) => {
                if let Err(error) = self.consumer.pause(&assigned) {
                    tracing::warn!(%error, "cannot pause the assigned partitions");
                }
                self.paused = Some(assigned);
            }
            Err(error) => tracing::warn!(%error, "cannot read the assignment"),
        }
    }

    fn resume(self) {
        if let Some(paused) = self.paused
            && let Err(error) = self.consumer.resume(&paused)
        {
            tracing::warn!(%error, "cannot resume the paused partitions");
        }
    }
}

impl Pause for KeepAlive<'_> {
    async fn pause(&mut self, delay: Duration) -> bool {
        if self.paused.is_none() {
            self.pause_assignment();
        }
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return false,
                () = &mut until => return true,
                received = self.consumer.recv() => {
                    self.health.tick();
                    match received {
                        // Fetched before the pause, or from partitions assigned since:
                        // kept for later, and whatever is assigned now is paused too.
                        Ok(message) => {
                            self.buffered.push_back(message.detach());
                            self.pause_assignment();
                        }
                        Err(error) => self.lost.on_error(&error),
                    }
                }
            }
        }
    }
}

/// Clears the offsets `consumer` stored for its partitions, so that closing it
/// commits none of them (librdkafka commits only valid stored offsets).
fn forget_stored_offsets(consumer: &StreamConsumer) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let mut forget = TopicPartitionList::new();
    for partition in assigned.elements() {
        if let Err(error) =
            forget.add_partition_offset(partition.topic(), partition.partition(), Offset::Invalid)
        {
            tracing::debug!(%error, "cannot forget a stored offset");
        }
    }
    if let Err(error) = consumer.store_offsets(&forget) {
        tracing::debug!(%error, "cannot forget the stored offsets");
    }
}
