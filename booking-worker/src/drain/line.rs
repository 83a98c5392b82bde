//! Reading an event's streams as the lease holder: fenced reads in order, waiting for
//! new entries, taking over what other consumers left pending, and the dead letters.
//!
//! Keys: the event's `requests` stream and `changes` stream (group `workers`), its
//! `dead` stream, and its `lease` (every read is checked against it).

use platform::store::Redis;
use proto::keys::WORKER_GROUP;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId, UserId};
use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncCommands, FromRedisValue, Value};

use super::DrainError;

/// One stream entry of the line: a request, its number and its fan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub stream_id: String,
    pub request_id: RequestId,
    pub number: i64,
    pub fan: UserId,
    /// The x-request-id of the join that put it in line (`platform::correlation`).
    pub correlation_id: Option<String>,
    /// The join's trace context (`platform::telemetry`).
    pub traceparent: Option<String>,
}

pub fn parse_entry(entry: &StreamId) -> Option<Entry> {
    let field = |name: &str| entry.get::<String>(name);
    let (correlation_id, traceparent) = platform::correlation::split_field(field("x"));
    Some(Entry {
        stream_id: entry.id.clone(),
        request_id: field("r")?.parse().ok()?,
        number: field("n")?.parse().ok()?,
        fan: field("f")?.parse().ok()?,
        correlation_id,
        traceparent,
    })
}

/// What a fenced read found.
pub enum Read {
    /// The lease holds another value: this drainer must stop.
    LeaseLost,
    Entries {
        entries: Vec<StreamId>,
        /// The stream's last id, to wait for anything newer.
        last_id: String,
    },
}

/// Reads `stream` with `read_line.lua`: the consumer's own pending entries after
/// `after`, then (with `fresh`) new ones, only while `lease` is the lease's value.
#[allow(
    clippy::too_many_arguments,
    reason = "one script call, its arguments spelled out"
)]
pub async fn read(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    stream: &str,
    lease: &str,
    consumer: &str,
    count: usize,
    after: &str,
    fresh: bool,
) -> Result<Read, DrainError> {
    let reply: Vec<Value> = proto::scripts::READ_LINE
        .key(keys.lease(event))
        .key(stream)
        .arg(lease)
        .arg(WORKER_GROUP)
        .arg(consumer)
        .arg(count)
        .arg(after)
        .arg(if fresh { "1" } else { "0" })
        .invoke_async(redis)
        .await?;
    let text = |v: &Value| String::from_redis_value(v.clone()).unwrap_or_default();
    match reply.first().map(text).as_deref() {
        Some("lease_lost") => Ok(Read::LeaseLost),
        Some("ok") => {
            let last_id = reply.get(1).map(text).unwrap_or_else(|| "0-0".into());
            let entries = match reply.get(2) {
                None | Some(Value::Nil) => Vec::new(),
                Some(value) => StreamReadReply::from_redis_value(value.clone())
                    .map_err(|e| DrainError::Unexpected(format!("read_line entries: {e}")))?
                    .keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .collect(),
            };
            Ok(Read::Entries { entries, last_id })
        }
        other => Err(DrainError::Unexpected(format!(
            "read_line replied {other:?}"
        ))),
    }
}

/// Waits up to `block_ms` for an entry after `last_id` on a connection of its own
/// (a blocked read stalls every other command on its connection).
pub async fn wait_for_new(
    blocking: &mut Redis,
    stream: &str,
    last_id: &str,
    block_ms: u64,
) -> Result<(), DrainError> {
    let _: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(stream)
        .arg(last_id)
        .query_async(blocking)
        .await?;
    Ok(())
}

/// Moves every entry that other consumers of the group hold pending on `stream` to
/// `consumer`, without counting a delivery (the next read from this consumer's
/// pending list counts it), and forgets the other consumers left with nothing
/// pending (`reclaim.lua`). Fenced by the lease: `None` when `lease` is no longer
/// the event's, and nothing moved (a drainer that lost its lease must not take the
/// entries its successor has read). Returns how many moved.
pub async fn reclaim(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    stream: &str,
    lease: &str,
    consumer: &str,
) -> Result<Option<usize>, DrainError> {
    let moved: i64 = proto::scripts::RECLAIM
        .key(keys.lease(event))
        .key(stream)
        .arg(lease)
        .arg(WORKER_GROUP)
        .arg(consumer)
        .invoke_async(redis)
        .await?;
    Ok(usize::try_from(moved).ok())
}

/// Dead letters kept per event (the oldest go first).
const DEAD_LETTERS_KEPT: usize = 10_000;

/// An entry for the dead letters: its stream id, its request (when the entry names
/// one), why.
pub struct Burial {
    pub stream_id: String,
    pub request: Option<Entry>,
    pub reason: String,
}

/// Ends the named requests of `burials` in the ledger: rejected, `dead_letter`.
pub async fn reject_buried(
    pool: &sqlx::PgPool,
    event: EventId,
    epoch: i64,
    burials: &[Burial],
) -> Result<(), DrainError> {
    let named: Vec<(RequestId, UserId, i64)> = burials
        .iter()
        .filter_map(|b| b.request.as_ref())
        .map(|e| (e.request_id, e.fan, e.number))
        .collect();
    ledger::reject_undecided(pool, event, epoch, &named, "dead_letter").await?;
    Ok(())
}

/// Adds to `pipe` the dead-letter record and acknowledgement of each entry, and ends
/// each named request in Redis as `rejected` with reason `dead_letter` so its fan
/// learns and is free to ask again.
pub fn queue_burials(pipe: &mut redis::Pipeline, keys: &Keys, event: EventId, entries: &[Burial]) {
    let (stream, dead) = (keys.stream(event), keys.dead_letters(event));
    if entries.iter().any(|b| b.request.is_some()) {
        pipe.load_script(&proto::scripts::CANCEL).ignore();
    }
    for burial in entries {
        let request = burial
            .request
            .as_ref()
            .map(|e| e.request_id.to_string())
            .unwrap_or_default();
        let fields = [
            ("entry", burial.stream_id.as_str()),
            ("r", request.as_str()),
            ("reason", burial.reason.as_str()),
        ];
        pipe.xadd_maxlen(
            &dead,
            redis::streams::StreamMaxlen::Approx(DEAD_LETTERS_KEPT),
            "*",
            &fields,
        )
        .ignore();
        if let Some(entry) = &burial.request {
            pipe.invoke_script(&proto::scripts::cancel(
                keys,
                event,
                entry.request_id,
                RequestState::Rejected,
                "dead_letter",
            ))
            .ignore();
        }
        pipe.xack(&stream, WORKER_GROUP, &[&burial.stream_id])
            .ignore();
        tracing::error!(event_id = %event, stream_id = burial.stream_id, request, reason = burial.reason,
            "entry sent to the dead letters");
    }
    if !entries.is_empty() {
        metrics::counter!("onsale_worker_dead_letters_total").increment(entries.len() as u64);
    }
}

/// Acknowledges entries on `stream`.
pub async fn ack(redis: &mut Redis, stream: &str, ids: &[&str]) -> Result<(), DrainError> {
    if !ids.is_empty() {
        let _: i64 = redis.xack(stream, WORKER_GROUP, ids).await?;
    }
    Ok(())
}
