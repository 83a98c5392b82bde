//! The transactional outbox's writing side: a domain event is written in the same
//! Postgres transaction as the change it reports, whoever makes the change; the
//! payments relay publishes it (`outbox.messages`, see the payments migration).

use chrono::{DateTime, Utc};
use serde::Serialize;

use proto::wire::events::EventType;
use proto::{EventId, RequestId};

/// One domain event to publish.
#[derive(Clone, Debug)]
pub struct Message {
    pub kind: EventType,
    pub event_id: EventId,
    pub request_id: Option<RequestId>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    /// The HTTP call that caused it ([`crate::correlation`]).
    pub correlation_id: Option<String>,
    /// The trace it belongs to ([`crate::telemetry`]), sent on as a Kafka header.
    pub traceparent: Option<String>,
}

impl Message {
    pub fn new(
        kind: EventType,
        event_id: EventId,
        request_id: Option<RequestId>,
        payload: &impl Serialize,
    ) -> Self {
        Self {
            kind,
            event_id,
            request_id,
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
            occurred_at: Utc::now(),
            correlation_id: crate::correlation::current(),
            traceparent: crate::telemetry::traceparent(),
        }
    }

    /// The message, caused by the call `correlation_id` names rather than by the
    /// call being served (a worker deciding a request that a join put in line).
    pub fn correlated(mut self, correlation_id: Option<String>) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// The message, part of the trace `traceparent` names rather than of the span
    /// being run (a decision, an order that keeps its hold's trace). Without one the
    /// message keeps the current span's.
    pub fn traced(mut self, traceparent: Option<String>) -> Self {
        if traceparent.is_some() {
            self.traceparent = traceparent;
        }
        self
    }
}

/// Aggregates one write may lock one by one; a write of more (a sale closed on
/// its whole pre-queue) locks its events whole instead. Each lock is a slot of
/// Postgres's shared lock table (64 per connection by default).
const BULK_AGGREGATES: i64 = 256;

/// Writes `messages` in the caller's transaction, in order (one statement).
///
/// Records of one aggregate (a request and its order, or, for a record that names
/// no request, its event) are numbered in the order their transactions commit: `seq`
/// is given under a transaction lock on the aggregate. Without it, a transaction
/// that wrote first and committed last would have the lower `seq`, and the relay,
/// which publishes by `seq`, would already have sent the later record. Writers of
/// different aggregates never wait for each other.
///
/// The locks: each event's, shared (exclusive for a write of more than
/// [`BULK_AGGREGATES`] aggregates, which takes no other), then each aggregate's,
/// exclusive, in a fixed order, so two writers cannot deadlock.
pub async fn write(tx: &mut sqlx::PgConnection, messages: &[Message]) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = messages.iter().map(|_| uuid::Uuid::now_v7()).collect();
    let topics: Vec<&str> = messages.iter().map(|m| m.kind.topic()).collect();
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    let events: Vec<uuid::Uuid> = messages.iter().map(|m| m.event_id.as_uuid()).collect();
    let requests: Vec<Option<uuid::Uuid>> = messages
        .iter()
        .map(|m| m.request_id.map(|r| r.as_uuid()))
        .collect();
    let payloads: Vec<serde_json::Value> = messages.iter().map(|m| m.payload.clone()).collect();
    let times: Vec<DateTime<Utc>> = messages.iter().map(|m| m.occurred_at).collect();
    let correlations: Vec<Option<&str>> = messages
        .iter()
        .map(|m| m.correlation_id.as_deref())
        .collect();
    sqlx::query(
        "WITH keys AS MATERIALIZED (
             SELECT DISTINCT e, r FROM UNNEST($4::uuid[], $5::uuid[]) AS a(e, r)),
         bulk AS MATERIALIZED (SELECT count(*) > $10 AS yes FROM keys),
         umbrella AS MATERIALIZED (
             SELECT DISTINCT hashtextextended('outbox:' || e::text, 0) AS k FROM keys ORDER BY 1),
         aggregates AS MATERIALIZED (
             SELECT DISTINCT hashtextextended(coalesce('outbox:' || r::text, 'outbox-event:' || e::text), 0) AS k
             FROM keys ORDER BY 1),
         locked AS (
             SELECT count(*) AS taken FROM (
                 SELECT pg_advisory_xact_lock(k) FROM umbrella WHERE (SELECT yes FROM bulk)
                 UNION ALL
                 SELECT pg_advisory_xact_lock_shared(k) FROM umbrella WHERE NOT (SELECT yes FROM bulk)
                 UNION ALL
                 SELECT pg_advisory_xact_lock(k) FROM aggregates WHERE NOT (SELECT yes FROM bulk)) AS t)
         INSERT INTO outbox.messages (id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent)
         SELECT id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::jsonb[], $7::timestamptz[], $8::text[], $9::text[])
         WITH ORDINALITY AS t(id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent, n),
         locked WHERE locked.taken >= 0
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&kinds)
    .bind(&events)
    .bind(&requests)
    .bind(&payloads)
    .bind(&times)
    .bind(&correlations)
    .bind(messages.iter().map(|m| m.traceparent.as_deref()).collect::<Vec<_>>())
    .bind(BULK_AGGREGATES)
    .execute(tx)
    .await?;
    Ok(())
}
