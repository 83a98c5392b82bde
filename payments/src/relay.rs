//! The outbox relay: publishes `outbox.messages` to Kafka in `seq` order and marks
//! them published.
//!
//! One relay publishes at a time (a transaction-scoped advisory lock), in `seq`
//! order, so records of one aggregate (a request and its order) reach their
//! partition in the order their transactions committed (`platform::outbox::write`
//! numbers them so). A batch is
//! marked published only after the broker acknowledged every record of it; a crash
//! or a broker outage in between publishes the batch again, which consumers absorb
//! (they are idempotent on the envelope id). The broker may come up after the relay
//! and may lose its topics on a restart (the development broker keeps them in
//! memory): topics are (re)created whenever a send fails, and the outbox simply
//! waits meanwhile.

use std::time::Duration;

use bus::rdkafka::error::KafkaError;
use bus::rdkafka::message::{Header, OwnedHeaders};
use bus::rdkafka::producer::{FutureProducer, FutureRecord};
use chrono::{DateTime, Utc};
use platform::settings::KafkaSettings;
use proto::wire::events::{Envelope, SCHEMA_VERSION};
use proto::{EventId, RequestId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Records published per transaction.
const BATCH: i64 = 500;
/// How long an idle relay waits before looking again.
const IDLE: Duration = Duration::from_millis(20);
/// How long one record may wait for the broker before its batch is given up (and
/// sent again by a fresh producer).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The advisory lock that makes the relay single (any fixed number will do).
const RELAY_LOCK: i64 = 0x6f6e_7361_6c65; // "onsale"

#[derive(sqlx::FromRow)]
struct Row {
    id: uuid::Uuid,
    topic: String,
    kind: String,
    event_id: EventId,
    request_id: Option<RequestId>,
    payload: serde_json::Value,
    occurred_at: DateTime<Utc>,
    correlation_id: Option<String>,
    traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
}

/// Publishes one batch; returns how many records were published (0: none waiting,
/// or another relay holds the lock).
pub async fn publish_batch(
    pool: &PgPool,
    producer: &FutureProducer,
    kafka: &KafkaSettings,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !mine {
        return Ok(0);
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent FROM outbox.messages
         WHERE published_at IS NULL ORDER BY seq LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in &rows {
        let envelope = Envelope {
            id: row.id,
            kind: row.kind.clone(),
            schema_version: SCHEMA_VERSION,
            occurred_at: row.occurred_at,
            event_id: row.event_id,
            request_id: row.request_id,
            payload: row.payload.clone(),
            correlation_id: row.correlation_id.clone(),
        };
        tracing::debug!(envelope_id = %row.id, kind = %row.kind, event_id = %row.event_id,
            request_id = ?row.request_id, correlation_id = row.correlation_id.as_deref().unwrap_or(""),
            "publishing");
        let value = serde_json::to_vec(&envelope).unwrap_or_default();
        let key = row.event_id.to_string();
        let topic = proto::topics::with_suffix(&row.topic, &kafka.topic_suffix);
        let mut record = FutureRecord::to(&topic).key(&key).payload(&value);
        // The trace goes on as the W3C header Kafka instrumentations read.
        if let Some(traceparent) = &row.traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: platform::telemetry::TRACEPARENT,
                value: Some(traceparent.as_bytes()),
            }));
        }
        // Queued in order; the idempotent producer keeps that order per partition.
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(error, _)| RelayError::Kafka(error))?,
        );
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(error.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
    sqlx::query("UPDATE outbox.messages SET published_at = clock_timestamp() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let now = Utc::now();
    for row in &rows {
        let lag = (now - row.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::histogram!("onsale_outbox_lag_seconds").record(lag);
    }
    metrics::counter!("onsale_outbox_published_total").increment(rows.len() as u64);
    Ok(rows.len())
}

/// A producer, retried every 5 s until it can be made; `None` once `stop` is cancelled.
async fn make_producer(kafka: &KafkaSettings, stop: &CancellationToken) -> Option<FutureProducer> {
    loop {
        match bus::producer_with_timeout(kafka, MESSAGE_TIMEOUT) {
            Ok(producer) => return Some(producer),
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot create its producer; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = stop.cancelled() => return None,
                }
            }
        }
    }
}

/// Runs the relay until `stop`: batches back to back while there is work, a short
/// idle wait otherwise, and a growing pause (up to 5 s) while the broker or Postgres
/// is away.
///
/// After a failed batch the producer is replaced: an idempotent producer's identity
/// lives in the broker, and a broker that restarted without its state refuses the
/// old one's sequence, so its records would only time out.
pub async fn run(pool: PgPool, kafka: KafkaSettings, stop: CancellationToken) {
    let Some(mut producer) = make_producer(&kafka, &stop).await else {
        return;
    };
    let mut topics_ready = false;
    let mut backoff = Duration::from_millis(100);
    tracing::info!(brokers = %kafka.brokers, "outbox relay started");
    loop {
        if stop.is_cancelled() {
            break;
        }
        if !topics_ready {
            // Cancellable: an unreachable broker would hold a stop up for as long
            // as the admin client waits.
            let ensured = tokio::select! {
                () = stop.cancelled() => break,
                ensured = bus::ensure_topics(&kafka, proto::topics::ALL, 3) => ensured,
            };
            match ensured {
                Ok(_) => topics_ready = true,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay: broker not ready; domain events wait in the outbox");
                }
            }
        }
        let wait = if !topics_ready {
            backoff
        } else {
            // Cancellable too: rows sent but not yet marked are sent again by the
            // next relay (consumers are idempotent on the envelope id).
            let published = tokio::select! {
                () = stop.cancelled() => break,
                published = publish_batch(&pool, &producer, &kafka) => published,
            };
            match published {
                Ok(n) if n as i64 == BATCH => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    IDLE
                }
                Err(RelayError::Database(error)) => {
                    tracing::warn!(%error, "outbox relay: postgres unavailable; retrying");
                    backoff
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox relay: publishing failed; retrying with a fresh producer");
                    // The broker may have restarted and lost its topics (the in-memory
                    // development broker): make them again before the retry.
                    topics_ready = false;
                    match make_producer(&kafka, &stop).await {
                        Some(fresh) => producer = fresh,
                        None => break,
                    }
                    backoff
                }
            }
        };
        if wait == backoff {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => break,
        }
    }
    // Order: no batch is in flight here (each is awaited whole); whatever was not
    // marked published is published by the next relay.
    tracing::info!("outbox relay stopped");
}

/// How many outbox records wait to be published.
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox.messages WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
}
