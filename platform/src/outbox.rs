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

/// Writes `messages` in the caller's transaction, in order (one statement).
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
        "INSERT INTO outbox.messages (id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent)
         SELECT id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::jsonb[], $7::timestamptz[], $8::text[], $9::text[])
         WITH ORDINALITY AS t(id, topic, kind, event_id, request_id, payload, occurred_at, correlation_id, traceparent, n)
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
    .execute(tx)
    .await?;
    Ok(())
}
