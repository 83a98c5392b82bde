//! A world per test: its own database (`#[sqlx::test]`), topics (a unique suffix),
//! consumer group, SMTP sink, fan and event; and a notifier run in-process on it.

use std::net::SocketAddr;
use std::time::Duration;

use bus::rdkafka::producer::{FutureProducer, FutureRecord};
use chrono::Utc;
use notifier::sink::{MailSink, Received};
use notifier::{Config, ConsumerSettings, RetrySettings};
use platform::settings::{DatabaseSettings, KafkaSettings};
use proto::wire::events::{Envelope, OrderPayload, RequestPayload, SCHEMA_VERSION};
use proto::wire::inventory::{CreateEvent, CreateVenue};
use proto::{EventId, OrderId, RequestId, UserId, VenueId};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An event on `venue`, its sale a day away, through the inventory crate.
async fn create_event(pool: &PgPool, venue: VenueId, name: &str) -> EventId {
    let event = CreateEvent {
        venue_id: venue,
        name: name.to_owned(),
        starts_at: Utc::now() + chrono::Duration::days(30),
        onsale_at: Utc::now() + chrono::Duration::days(1),
        max_per_fan: 4,
        hold_seconds: 600,
        prices: [("standard".to_owned(), 4500)].into(),
        admission_per_second: 100,
        refund_policy: None,
        tax: None,
    };
    inventory::events::create(pool, &event)
        .await
        .expect("event")
}

/// Long enough for a first group join (about half the 6 s session) on a busy machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct World {
    pub pool: PgPool,
    pub sink: MailSink,
    pub kafka: KafkaSettings,
    pub group: String,
    pub producer: FutureProducer,
    pub event_id: EventId,
    pub fan: UserId,
    pub fan_email: String,
}

pub async fn world(pool: PgPool, event_name: &str) -> World {
    let brokers = std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a Kafka-protocol broker; run the tests through deploy/test",
    );
    world_on(pool, event_name, brokers).await
}

/// A world on the broker at `brokers`.
pub async fn world_on(pool: PgPool, event_name: &str, brokers: String) -> World {
    // One partition: records are consumed in the order the test produces them.
    world_with(pool, event_name, brokers, 1).await
}

/// A world whose topics have `partitions` partitions.
pub async fn world_with(pool: PgPool, event_name: &str, brokers: String, partitions: i32) -> World {
    platform::runtime::init_test_tracing();
    let suffix = format!("test{}", Uuid::new_v4().simple());
    let kafka = KafkaSettings {
        brokers,
        topic_suffix: suffix.clone(),
    };
    bus::ensure_topics(
        &kafka,
        &[proto::topics::BOOKINGS, proto::topics::ORDERS],
        partitions,
    )
    .await
    .expect("topics");
    let producer = bus::producer(&kafka).expect("producer");
    let sink = MailSink::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("mail sink");

    // The fan's account and the event, made by the crates that own them.
    let fan_email = format!("fan-{}@example.com", Uuid::new_v4().simple());
    let hasher = gateway::accounts::Hasher::new(1, 1, Duration::from_secs(30));
    let fan = gateway::accounts::register(
        &pool,
        &hasher,
        &fan_email,
        SecretString::from("a-fan-password-1"),
        proto::Role::Fan,
    )
    .await
    .expect("fan");
    let venue =
        inventory::venues::validate(CreateVenue::grid("Hall", &["Floor"], "standard", 10, 10))
            .expect("venue");
    let venue = inventory::venues::create(&pool, &venue)
        .await
        .expect("venue");
    let event_id = create_event(&pool, venue, event_name).await;
    World {
        pool,
        sink,
        kafka,
        group: format!("notifier-{suffix}"),
        producer,
        event_id,
        fan,
        fan_email,
    }
}

impl World {
    pub fn config(&self) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseSettings {
                url: SecretString::from("unused: the test passes its pool"),
                max_connections: 4,
            },
            kafka: self.kafka.clone(),
            consumer: ConsumerSettings {
                group_id: self.group.clone(),
                session_timeout_ms: 6000,
                partitions: 1,
            },
            smtp_url: SecretString::from(self.sink.url()),
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

    pub async fn spawn(&self) -> Running {
        self.spawn_with(self.config()).await
    }

    pub async fn spawn_with(&self, config: Config) -> Running {
        let app = notifier::Application::with_pool(config, self.pool.clone())
            .await
            .expect("notifier builds");
        let port = app.port();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(app.run(async move { shutdown.cancelled().await }));
        Running { port, stop, task }
    }

    pub fn order(&self, kind: &str, amount_cents: i64, currency: &str) -> Envelope {
        self.order_in(self.event_id, kind, amount_cents, currency)
    }

    /// An order envelope of `event` (see [`World::another_event`]).
    pub fn order_in(
        &self,
        event: EventId,
        kind: &str,
        amount_cents: i64,
        currency: &str,
    ) -> Envelope {
        let request_id = RequestId::new();
        let payload = OrderPayload {
            order_id: OrderId::new(),
            request_id,
            event_id: event,
            fan_id: self.fan,
            state: proto::wire::payments::OrderState::parse(kind.trim_start_matches("order."))
                .expect("an order event named after its state"),
            seats: vec!["Floor-R3-7".into(), "Floor-R3-8".into()],
            amount_cents,
            currency: currency.into(),
            card_last4: "4242".into(),
            reason: (kind == "order.refunded").then(|| "hold_ended".into()),
            tickets: Vec::new(),
            refund: None,
        };
        let mut envelope = self.envelope(kind, request_id, serde_json::to_value(payload).unwrap());
        envelope.event_id = event;
        envelope
    }

    /// Another event on the world's venue, for envelopes keyed to other partitions.
    pub async fn another_event(&self, name: &str) -> EventId {
        let venue = inventory::events::get(&self.pool, self.event_id)
            .await
            .expect("the world's event")
            .venue_id;
        create_event(&self.pool, venue, name).await
    }

    pub fn request(&self, kind: &str) -> Envelope {
        let request_id = RequestId::new();
        let payload = RequestPayload {
            request_id,
            event_id: self.event_id,
            fan_id: self.fan,
            state: kind.trim_start_matches("request.").into(),
            seats: vec!["Balcony-B-12".into()],
            hold_expires_at: Some("2026-12-01T18:45:00Z".parse().unwrap()),
            reason: None,
        };
        self.envelope(kind, request_id, serde_json::to_value(payload).unwrap())
    }

    fn envelope(&self, kind: &str, request_id: RequestId, payload: serde_json::Value) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind: kind.into(),
            schema_version: SCHEMA_VERSION,
            occurred_at: Utc::now(),
            event_id: self.event_id,
            request_id: Some(request_id),
            payload,
            correlation_id: Some(format!("test-{}", Uuid::new_v4().simple())),
        }
    }

    /// Produces `envelope` on its topic, keyed by the event id, as the outbox does.
    pub async fn produce(&self, envelope: &Envelope) {
        let kind = proto::wire::events::EventType::parse(&envelope.kind).expect("known type");
        let topic = proto::topics::with_suffix(kind.topic(), &self.kafka.topic_suffix);
        let key = envelope.event_id.to_string();
        let value = serde_json::to_string(envelope).unwrap();
        self.producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
    }

    /// The log row of `envelope`: (status, attempts, last_error).
    pub async fn row(&self, envelope: &Envelope) -> Option<(String, i32, Option<String>)> {
        sqlx::query_as(
            "SELECT status, attempts, last_error FROM notifier.notifications WHERE envelope_id = $1",
        )
        .bind(envelope.id)
        .fetch_optional(&self.pool)
        .await
        .expect("log row")
    }

    /// Polls the log until `envelope`'s row has `status`; returns the row.
    pub async fn row_reaches(
        &self,
        envelope: &Envelope,
        status: &str,
    ) -> (String, i32, Option<String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = self.row(envelope).await;
            if let Some(row) = row.as_ref().filter(|r| r.0 == status) {
                return row.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the row of {} is {row:?}, not {status}, after {WAIT:?}",
                envelope.kind
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The messages caught so far for `envelope` (by its Message-ID).
    pub fn emails_for(&self, envelope: &Envelope) -> Vec<Received> {
        let id = format!("<{}@onsale>", envelope.id);
        self.sink
            .messages()
            .into_iter()
            .filter(|m| m.message_id().as_deref() == Some(id.as_str()))
            .collect()
    }
}

/// A notifier running in the test's runtime.
pub struct Running {
    pub port: u16,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Shuts it down as a SIGTERM would and waits for it to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the notifier stops in time")
            .expect("the notifier task")
            .expect("the notifier ends cleanly");
    }
}
