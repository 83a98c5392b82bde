//! One `hold_batch.lua` call: a batch of the line decided in queue order.
//!
//! Keys: the event keys of [`proto::scripts::hold_batch_keys`] and each request's hash.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId};
use redis::{FromRedisValue, Value};

use super::DrainError;
use super::line::Entry;
use ledger::Decision;

/// What the script said of one batch.
pub enum Outcome {
    /// The lease holds another value: nothing was written.
    LeaseLost,
    Decided {
        /// The requests decided, a prefix of the batch (the script stops at the
        /// first request that must wait for held seats to come back).
        decisions: Vec<Decision>,
        /// Entries whose request hash does not exist.
        missing: Vec<Entry>,
    },
}

/// Decides `entries` with one script call under the lease value `lease`.
pub async fn hold_batch(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    lease: &str,
    sold_out_horizon_ms: u64,
    entries: &[Entry],
) -> Result<Outcome, DrainError> {
    let mut invocation = proto::scripts::HOLD_BATCH.prepare_invoke();
    for key in proto::scripts::hold_batch_keys(keys, event) {
        invocation.key(key);
    }
    for entry in entries {
        invocation.key(keys.request(event, entry.request_id));
    }
    let now = Utc::now();
    invocation
        .arg(now.timestamp_millis())
        .arg(lease)
        .arg(sold_out_horizon_ms);
    for entry in entries {
        invocation.arg(entry.request_id.to_string());
    }
    let reply: Vec<Value> = invocation.invoke_async(redis).await?;
    parse(&reply, entries, now)
}

/// The script's reply as decisions taken at `now` (the clock it was given).
fn parse(reply: &[Value], entries: &[Entry], now: DateTime<Utc>) -> Result<Outcome, DrainError> {
    let text = |v: &Value| String::from_redis_value(v.clone()).unwrap_or_default();
    match reply.first().map(text).as_deref() {
        Some("ok") => {}
        Some("lease_lost") => return Ok(Outcome::LeaseLost),
        other => {
            return Err(DrainError::Unexpected(format!(
                "hold_batch replied {other:?}"
            )));
        }
    }
    let by_id: HashMap<RequestId, &Entry> = entries.iter().map(|e| (e.request_id, e)).collect();
    let mut decisions = Vec::new();
    let mut missing = Vec::new();
    for chunk in reply[1..].chunks(5) {
        let [id, state, seats, expires, reason] = chunk else {
            return Err(DrainError::Unexpected(
                "hold_batch reply is not in fives".into(),
            ));
        };
        let request_id: RequestId = text(id)
            .parse()
            .map_err(|_| DrainError::Unexpected(format!("request id {:?}", text(id))))?;
        let Some(entry) = by_id.get(&request_id) else {
            return Err(DrainError::Unexpected(format!(
                "hold_batch decided {request_id}, not in the batch"
            )));
        };
        let state_text = text(state);
        if state_text == "missing" {
            missing.push((*entry).clone());
            continue;
        }
        let state = RequestState::parse(&state_text).ok_or_else(|| {
            DrainError::Unexpected(format!("request {request_id} in state {state_text:?}"))
        })?;
        // A redelivered entry whose request went on to pay before the ledger had its
        // hold (a drainer that died after deciding): the ledger gets the hold, with
        // its claims, so that the checkout can move it on to paying.
        let state = if state == RequestState::Paying {
            RequestState::Held
        } else {
            state
        };
        let expires_ms = i64::from_redis_value(expires.clone()).unwrap_or(0);
        tracing::debug!(%request_id, queue_number = entry.number, state = state.as_str(),
            correlation_id = entry.correlation_id.as_deref().unwrap_or(""), "decided");
        // A traced join's decision is a span of its trace; the ledger row and the
        // outbox rows carry the decision's context on (`platform::telemetry`).
        let traceparent = entry.traceparent.as_deref().and_then(|upstream| {
            let span = tracing::info_span!("decide", %request_id, state = state.as_str());
            platform::telemetry::continue_from(&span, Some(upstream));
            platform::telemetry::traceparent_of(&span)
        });
        decisions.push(Decision {
            request_id,
            fan: entry.fan,
            queue_number: entry.number,
            expires_at: matches!(state, RequestState::Held | RequestState::Paying)
                .then(|| DateTime::from_timestamp_millis(expires_ms))
                .flatten(),
            seats: text(seats)
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            reason: Some(text(reason)).filter(|r| !r.is_empty()),
            decided_at: now,
            correlation_id: entry.correlation_id.clone(),
            traceparent,
            state,
        });
    }
    Ok(Outcome::Decided { decisions, missing })
}
