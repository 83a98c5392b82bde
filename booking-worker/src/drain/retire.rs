//! Keeping what an event leaves in Redis bounded, and ending it.
//!
//! While the event is drained, its streams are trimmed below the oldest entry still
//! pending or undelivered (decided entries are in the ledger). Once the sale has
//! ended (closed or sold out), its line is empty, no hold is left and every ended
//! hold is in the ledger, the drainer retires the event: every key of the event
//! (and each request's index entry) gets the retention time as its TTL, the event
//! leaves the farm's active set, and the drainer stops. Postgres keeps the record;
//! fans still read their requests from it after Redis forgot them.
//!
//! Keys: every key under the event's hash tag, the request index, `active`.

use platform::store::Redis;
use proto::keys::WORKER_GROUP;
use proto::sale_hash;
use proto::wire::queue::SaleState;
use proto::{EventId, Keys};
use redis::AsyncCommands;
use redis::streams::StreamInfoGroupsReply;

use super::DrainError;

/// The worker group's state on `stream`: (pending, lag, last delivered id); `None`
/// when the stream or the group does not exist.
async fn group(
    redis: &mut Redis,
    stream: &str,
) -> Result<Option<(usize, Option<usize>, String)>, DrainError> {
    let reply: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(redis)
        .await;
    let groups = match reply {
        Ok(groups) => groups,
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
        {
            return Ok(None);
        }
        Err(error) => return Err(error.into()),
    };
    Ok(groups
        .groups
        .into_iter()
        .find(|g| g.name == WORKER_GROUP)
        .map(|g| (g.pending, g.lag, g.last_delivered_id)))
}

/// Trims `stream` below its oldest entry the group still needs: the oldest pending
/// one, else the next undelivered one. Returns how many entries went.
pub async fn trim(redis: &mut Redis, stream: &str) -> Result<u64, DrainError> {
    let Some((pending, _, last_delivered)) = group(redis, stream).await? else {
        return Ok(0);
    };
    let keep_from = if pending > 0 {
        let summary: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
            .arg(stream)
            .arg(WORKER_GROUP)
            .query_async(redis)
            .await?;
        match summary {
            redis::streams::StreamPendingReply::Data(data) => data.start_id,
            _ => last_delivered,
        }
    } else {
        // Everything up to the last delivered entry is decided: keep only what
        // comes after it (MINID keeps ids at or above it).
        last_delivered
    };
    if keep_from == "0-0" {
        return Ok(0);
    }
    let removed: u64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(&keep_from)
        .query_async(redis)
        .await?;
    Ok(removed)
}

/// Whether the event is over for the farm: the sale ended, nothing waits in the line
/// or on the changes stream, and no hold is left.
pub async fn finished(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    sale_state: Option<SaleState>,
) -> Result<bool, DrainError> {
    if !matches!(sale_state, Some(SaleState::Closed | SaleState::SoldOut)) {
        return Ok(false);
    }
    for stream in [keys.stream(event), keys.changes(event)] {
        if let Some((pending, lag, _)) = group(redis, &stream).await?
            && (pending > 0 || lag != Some(0))
        {
            return Ok(false);
        }
    }
    let holds: u64 = redis::cmd("ZCARD")
        .arg(keys.holds(event))
        .query_async(redis)
        .await?;
    Ok(holds == 0)
}

/// Gives every key of the event, and each of its requests' index entries,
/// `retention_seconds` to live, and takes the event off the farm's active list.
/// Returns how many keys got a TTL.
pub async fn retire(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    retention_seconds: u64,
) -> Result<usize, DrainError> {
    let changed = set_ttl(redis, keys, event, Some(retention_seconds)).await?;
    let _: i64 = redis.srem(keys.active_events(), event.to_string()).await?;
    // A refund may have opened the sale again meanwhile (`unsell.lua`, then the list
    // from payments): if it did, the event stays on the list, and the worker that
    // takes it next keeps its keys (`revive`).
    let state: Option<String> = redis.hget(keys.sale(event), sale_hash::STATE).await?;
    if state.as_deref() == Some(SaleState::Open.as_str()) {
        let _: i64 = redis.sadd(keys.active_events(), event.to_string()).await?;
        tracing::info!(event_id = %event, "the sale opened again while it was retired: kept on the farm");
    }
    Ok(changed)
}

/// Brings a retired event back (refunded seats opened its sold-out sale again and
/// put it back on the farm): its keys, whose retirement set them to expire, are
/// kept again. Returns how many keys it kept; 0 when the event was not retired.
pub async fn revive(redis: &mut Redis, keys: &Keys, event: EventId) -> Result<usize, DrainError> {
    let ttl: i64 = redis::cmd("PTTL")
        .arg(keys.sale(event))
        .query_async(redis)
        .await?;
    if ttl < 0 {
        return Ok(0);
    }
    set_ttl(redis, keys, event, None).await
}

/// Sets the TTL of every key of the event and of each of its requests' index
/// entries (`None`: no TTL). Returns how many event keys it set.
async fn set_ttl(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    ttl_seconds: Option<u64>,
) -> Result<usize, DrainError> {
    let tag = Keys::event_tag(event)
        .replace('{', "\\{")
        .replace('}', "\\}");
    let pattern = format!("{}:{tag}:*", keys.prefix());
    let request_prefix = keys.request_named(event, "");
    let lease = keys.lease(event);
    let set = |pipe: &mut redis::Pipeline, key: &str| {
        match ttl_seconds {
            Some(ttl) => pipe.expire(key, ttl as i64).ignore(),
            None => pipe.persist(key).ignore(),
        };
    };
    let mut cursor: u64 = 0;
    let mut changed = 0;
    loop {
        // On a cluster, the scan runs on the node holding the event's slot.
        let (next, found) = redis
            .scan_near(&keys.sale(event), cursor, &pattern, 1_000)
            .await?;
        let mut pipe = redis::pipe();
        // The lease keeps its own time: a retired event's lease lapses as usual, so
        // a worker may take the event again at once if its sale opens again.
        let found: Vec<&String> = found.iter().filter(|key| **key != lease).collect();
        for key in &found {
            set(&mut pipe, key);
            if let Some(request) = key
                .strip_prefix(&request_prefix)
                .and_then(|id| id.parse().ok())
            {
                set(&mut pipe, &keys.request_index(request));
            }
        }
        if !found.is_empty() {
            pipe.query_async::<()>(redis).await?;
        }
        changed += found.len();
        if next == 0 {
            return Ok(changed);
        }
        cursor = next;
    }
}
