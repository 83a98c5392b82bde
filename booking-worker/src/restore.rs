//! Putting back into Redis what the ledger knows of an event's decided requests,
//! after Redis lost the event's keys (or diverged): every decided request's hash,
//! the holds and their expiry (so restored holds still expire), the holds by
//! section, each fan's seat count (so the per-fan cap still holds across the loss),
//! each live hold's fan binding, and the request index.
//!
//! The restore first [`seize`]s the event: it raises the drain fence (waiting for
//! any drainer's ledger write in flight; none can commit after) and takes the lease
//! away from whichever drainer holds it, so no drainer decides anything while Redis
//! is rebuilt. Ended holds still waiting on the changes stream are carried into the
//! ledger first. [`hand_back`] lets the farm take the event over again.
//!
//! Keys: the event's `lease`, `changes`, request hashes, `holds`, `secholds`,
//! `fanseats`, `fans`, and the request index.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use proto::store::Redis;
use proto::{EventId, Keys, RequestId, UserId};
use sqlx::PgPool;

use crate::drain::DrainError;
use crate::ledger;

/// The event, seized from the farm for a restore.
pub struct Seized {
    event_id: EventId,
    /// The lease value the restore holds.
    value: String,
    epoch: i64,
    consumer: String,
}

/// Takes the event away from the farm for `ttl_ms` at most: raises the fence, then
/// sets the lease to the restore's own value whoever held it (a drainer finds its
/// lease gone at its next read or batch and stops), then carries ended holds into
/// the ledger.
pub async fn seize(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    ttl_ms: u64,
) -> Result<Seized, DrainError> {
    let consumer = format!("restore-{}", uuid::Uuid::new_v4().simple());
    let epoch = ledger::raise_fence(pool, event_id, &consumer).await?;
    let value = format!("{consumer}#{epoch}");
    let _: () = redis::cmd("SET")
        .arg(keys.lease(event_id))
        .arg(&value)
        .arg("PX")
        .arg(ttl_ms)
        .query_async(redis)
        .await?;
    let seized = Seized {
        event_id,
        value,
        epoch,
        consumer,
    };
    // Ended holds that a drainer had not yet carried into the ledger go first, so
    // the ledger read below is the latest word. (After a loss of the event's keys
    // there are none: those releases are gone, and their holds expire instead.)
    let changes = keys.changes(event_id);
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&changes)
        .arg(proto::keys::WORKER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(redis)
        .await;
    if let Err(error) = created
        && error.code() != Some("BUSYGROUP")
    {
        return Err(error.into());
    }
    crate::drain::claim_orphans(redis, &changes, &seized.consumer).await?;
    crate::drain::apply_changes(
        redis,
        pool,
        keys,
        event_id,
        &seized.value,
        seized.epoch,
        &seized.consumer,
    )
    .await?;
    Ok(seized)
}

/// Gives the event back to the farm: the restore's lease ends at once.
pub async fn hand_back(redis: &mut Redis, keys: &Keys, seized: Seized) -> Result<(), DrainError> {
    let _: i64 = proto::scripts::LEASE
        .key(keys.lease(seized.event_id))
        .arg(&seized.value)
        .arg(&seized.value)
        .arg(1)
        .invoke_async(redis)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    request_id: RequestId,
    fan_id: UserId,
    queue_number: Option<i32>,
    state: String,
    seats: Vec<String>,
    hold_expires_at: Option<DateTime<Utc>>,
    /// A paying request's normal hold end (a decline goes back to it).
    held_until: Option<DateTime<Utc>>,
    reason: Option<String>,
}

/// What [`decided`] put back.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub requests: usize,
    pub holds: usize,
    pub fans: usize,
}

/// Writes every decided request of the event back into Redis as the ledger has it,
/// with the holds, section holds, per-fan seat counts and live fan bindings. The
/// event must be seized.
pub async fn decided(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    _seized: &Seized,
    event_id: EventId,
) -> Result<Restored, DrainError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT request_id, fan_id, queue_number, state, seats, hold_expires_at, held_until, reason
         FROM booking.requests WHERE event_id = $1 ORDER BY queue_number",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let mut restored = Restored::default();
    let mut seats_of_fan: HashMap<UserId, usize> = HashMap::new();
    let event = event_id.to_string();
    for chunk in rows.chunks(1_000) {
        let mut pipe = redis::pipe();
        for row in chunk {
            let key = keys.request(event_id, row.request_id);
            let live = matches!(row.state.as_str(), "held" | "paying");
            let mut fields: Vec<(&str, String)> = vec![
                ("fan", row.fan_id.to_string()),
                ("state", row.state.clone()),
                ("seats", row.seats.join(" ")),
            ];
            if let Some(number) = row.queue_number {
                fields.push(("number", number.to_string()));
            }
            if let Some(reason) = &row.reason {
                fields.push(("reason", reason.clone()));
            }
            let expires = row.hold_expires_at.map(|t| t.timestamp_millis());
            if let (true, Some(expires)) = (live, expires) {
                fields.push(("expires", expires.to_string()));
                if let (true, Some(until)) = (row.state == "paying", row.held_until) {
                    fields.push(("held_until", until.timestamp_millis().to_string()));
                }
                pipe.zadd(keys.holds(event_id), row.request_id.to_string(), expires)
                    .ignore();
                let mut sections: Vec<&str> = row
                    .seats
                    .iter()
                    .filter_map(|s| s.split('-').next())
                    .collect();
                sections.dedup();
                for section in sections {
                    pipe.zadd(
                        keys.section_holds(event_id),
                        format!("{section}|{}", row.request_id),
                        expires,
                    )
                    .ignore();
                }
                pipe.hset(
                    keys.fans(event_id),
                    row.fan_id.to_string(),
                    row.request_id.to_string(),
                )
                .ignore();
                restored.holds += 1;
            }
            if live || row.state == "confirmed" {
                *seats_of_fan.entry(row.fan_id).or_default() += row.seats.len();
            }
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.set(keys.request_index(row.request_id), &event)
                .ignore();
            restored.requests += 1;
        }
        pipe.query_async::<()>(redis).await?;
    }
    let counts: Vec<(String, usize)> = seats_of_fan
        .into_iter()
        .map(|(fan, seats)| (fan.to_string(), seats))
        .collect();
    restored.fans = counts.len();
    for chunk in counts.chunks(1_000) {
        let _: () = redis::cmd("HSET")
            .arg(keys.fan_seats(event_id))
            .arg(chunk)
            .query_async(redis)
            .await?;
    }
    Ok(restored)
}
