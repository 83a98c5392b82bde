//! The ledger's rows handed back to Redis: after Redis lost an event's keys (or
//! diverged), [`decided`] writes every decided request back as the ledger has it,
//! with the holds and their expiry (so restored holds still expire), the holds by
//! section, each fan's seat count (so the per-fan cap still holds across the loss),
//! each live hold's fan binding, and the request index.
//!
//! Keys: the event's request hashes, `holds`, `secholds`, `fanseats`, `fans`, and the
//! request index. The caller keeps the farm away from the event while this runs
//! (`booking_worker::restore::seize`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId, UserId};
use sqlx::PgPool;

/// Why a restore stopped; what it wrote so far is rewritten by the next attempt.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

#[derive(sqlx::FromRow)]
struct Row {
    request_id: RequestId,
    fan_id: UserId,
    queue_number: Option<i32>,
    state: RequestState,
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
/// with the holds, section holds, per-fan seat counts and live fan bindings. No
/// drainer may be deciding the event's requests meanwhile.
pub async fn decided(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Restored, RestoreError> {
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
            let live = row.state.is_live();
            let mut fields: Vec<(&str, String)> = vec![
                ("fan", row.fan_id.to_string()),
                ("state", row.state.as_str().to_owned()),
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
                if let (RequestState::Paying, Some(until)) = (row.state, row.held_until) {
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
            if live || row.state == RequestState::Confirmed {
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
