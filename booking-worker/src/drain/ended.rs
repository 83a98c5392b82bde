//! Holds that end: the sweep of expired holds, and carrying every ended hold
//! (expired, released by its fan, undone) from the event's `changes` stream into the
//! ledger.
//!
//! `release.lua` writes the ended hold to the `changes` stream in the same step as it
//! frees the seats, and the drainer acknowledges the entry only after the ledger
//! has it: a crash or a Postgres outage in between loses nothing.
//!
//! Keys: the event's `holds` zset, `changes` stream (group `workers`), `live` channel,
//! and the seat keys `release.lua` touches.

use std::collections::HashMap;

use chrono::Utc;
use platform::store::Redis;
use proto::keys::WORKER_GROUP;
use proto::wire::live::Published;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId};
use redis::{AsyncCommands, Value};
use sqlx::PgPool;

use super::DrainError;
use super::line::{self, Read};

/// Releases holds that have expired in Redis, up to 500 per call, as the drainer
/// holding `lease` (a drainer that lost it releases nothing); returns how many.
pub async fn sweep(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    lease: &str,
) -> Result<usize, DrainError> {
    let now = Utc::now().timestamp_millis();
    let due: Vec<String> = redis
        .zrangebyscore_limit(keys.holds(event), "-inf", now, 0, 500)
        .await?;
    let due: Vec<RequestId> = due.iter().filter_map(|id| id.parse().ok()).collect();
    if due.is_empty() {
        return Ok(0);
    }
    // One round trip for every due hold; the script is loaded first because a
    // pipeline does not reload it after NOSCRIPT.
    let mut pipe = redis::pipe();
    pipe.load_script(&proto::scripts::RELEASE).ignore();
    let invocations: Vec<_> = due
        .iter()
        .map(|request| {
            proto::scripts::release(
                keys,
                event,
                *request,
                RequestState::Expired,
                now,
                true,
                lease,
            )
        })
        .collect();
    for invocation in &invocations {
        pipe.invoke_script(invocation);
    }
    let replies: Vec<Vec<Value>> = pipe.query_async(redis).await?;
    let expired: Vec<RequestId> = due
        .into_iter()
        .zip(replies)
        .filter(|(_, reply)| matches!(reply.first(), Some(Value::Int(1))))
        .map(|(request, _)| request)
        .collect();
    if !expired.is_empty() {
        metrics::counter!("onsale_holds_expired_total").increment(expired.len() as u64);
        let message = Published::Expired {
            request_ids: expired.clone(),
        };
        let _: i64 = message.publish(keys, event).query_async(redis).await?;
    }
    Ok(expired.len())
}

/// Whether ended holds wait to be carried into the ledger (one round trip: the
/// changes group's lag and pending count).
pub async fn changes_waiting(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
) -> Result<bool, DrainError> {
    let groups: redis::streams::StreamInfoGroupsReply =
        match redis.xinfo_groups(keys.changes(event)).await {
            Ok(groups) => groups,
            // No stream yet: nothing has ended.
            Err(error)
                if error.kind()
                    == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
    Ok(groups
        .groups
        .iter()
        .find(|g| g.name == WORKER_GROUP)
        .is_some_and(|g| g.pending > 0 || g.lag != Some(0)))
}

/// Carries ended holds into the ledger under the drainer's fence, then acknowledges
/// them: an entry whose write failed is read again from this consumer's pending list.
/// `None` when the lease was lost.
pub async fn apply_changes(
    redis: &mut Redis,
    pool: &PgPool,
    keys: &Keys,
    event: EventId,
    lease: &str,
    epoch: i64,
    consumer: &str,
) -> Result<Option<usize>, DrainError> {
    let stream = keys.changes(event);
    let mut applied = 0;
    // Own pending entries first (a write that failed before), then new ones, until
    // none is left.
    let mut after = "0".to_owned();
    loop {
        let read = line::read(
            redis, keys, event, &stream, lease, consumer, 500, &after, true,
        )
        .await?;
        let entries = match read {
            Read::LeaseLost => return Ok(None),
            Read::Entries { entries, .. } => entries,
        };
        if entries.is_empty() {
            return Ok(Some(applied));
        }
        let mut ended: HashMap<RequestState, Vec<RequestId>> = HashMap::new();
        for entry in &entries {
            let Some(request) = entry.get::<String>("r").and_then(|r| r.parse().ok()) else {
                tracing::warn!(event_id = %event, id = %entry.id, "change without a request id");
                continue;
            };
            let state = entry
                .get::<String>("s")
                .and_then(|s| RequestState::parse(&s))
                .unwrap_or(RequestState::Released);
            if !matches!(
                state,
                RequestState::Expired | RequestState::Released | RequestState::Rejected
            ) {
                tracing::warn!(event_id = %event, id = %entry.id, state = state.as_str(), "change with an unexpected state");
                continue;
            }
            ended.entry(state).or_default().push(request);
        }
        for (state, requests) in &ended {
            ledger::end_holds(pool, event, epoch, requests, *state).await?;
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        line::ack(redis, &stream, &ids).await?;
        applied += entries.len();
        after = entries.last().map(|e| e.id.clone()).unwrap_or(after);
    }
}
