//! Putting an event's line back into Redis from the journal, after Redis lost the
//! event's keys: the sale hash (state, limits, rate, how far the line was served,
//! the last number given), then every journaled request no worker decided: those
//! still waiting back in line in queue-number order, with their fan's binding;
//! those that ended in the line (cancelled, rejected) as they ended, so their fans
//! can still read it; each with the request index. A request whose hash Redis still
//! has is left alone.
//!
//! Run with the event seized from the farm (see `booking_worker::restore`) and the
//! sale paused; the gateway's restore does both.
//!
//! Keys: the event's `sale`, `next`, `requests` stream, `prequeue`, `fans`, request
//! hashes, and the request index.

use platform::store::Redis;
use proto::wire::queue::{RequestState, SaleState};
use proto::{EventId, Keys};
use sqlx::PgPool;

use crate::error::Error;
use crate::{journal, sale};

/// What [`line`] put back.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    /// Requests put back in the line (numbered) or the pre-queue.
    pub queued: usize,
    pub prequeued: usize,
    /// Requests that had ended in the line (cancelled, rejected), put back so
    /// their fans can still read how they ended.
    pub ended: usize,
    /// Journaled requests whose hash Redis still had.
    pub kept: usize,
}

/// Restores the sale hash and the line from Postgres.
pub async fn line(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Restored, Error> {
    let row = sale::ensure_sale(pool, event_id).await?;
    sale::load_into_redis(redis, keys, &row).await?;
    // How far the line was served and numbered: the ledger's decisions and the
    // journal's numbers. Only raised, never lowered.
    let (served, last): (Option<i32>, Option<i32>) = sqlx::query_as(
        "SELECT (SELECT max(queue_number) FROM booking.requests WHERE event_id = $1),
                (SELECT max(queue_number) FROM waiting_room.requests WHERE event_id = $1)",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await?;
    let cohort: Option<i32> =
        sqlx::query_scalar("SELECT cohort_size FROM waiting_room.sales WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await?;
    let (current_served, current_next): (Option<i64>, Option<i64>) = redis::pipe()
        .hget(keys.sale(event_id), proto::sale_hash::SERVED)
        .get(keys.next_number(event_id))
        .query_async(redis)
        .await?;
    let mut pipe = redis::pipe();
    let served = i64::from(served.unwrap_or(0)).max(current_served.unwrap_or(0));
    pipe.hset(keys.sale(event_id), proto::sale_hash::SERVED, served)
        .ignore();
    let next = i64::from(last.unwrap_or(0)).max(current_next.unwrap_or(0));
    if next > 0 {
        pipe.set(keys.next_number(event_id), next).ignore();
    }
    if let Some(cohort) = cohort {
        pipe.hset_nx(keys.sale(event_id), proto::sale_hash::PREQUEUE_SIZE, cohort)
            .ignore();
    }
    pipe.query_async::<()>(redis).await?;

    let waiting = journal::undecided(pool, event_id).await?;
    let scheduled = row.state() == SaleState::Scheduled;
    let mut restored = Restored::default();
    let event = event_id.to_string();
    for chunk in waiting.chunks(500) {
        let mut exists = redis::pipe();
        for request in chunk {
            exists.exists(keys.request(event_id, request.request_id));
        }
        let present: Vec<bool> = exists.query_async(redis).await?;
        let mut pipe = redis::pipe();
        for (request, present) in chunk.iter().zip(present) {
            if present {
                restored.kept += 1;
                continue;
            }
            let key = keys.request(event_id, request.request_id);
            let id = request.request_id.to_string();
            let fan = request.fan_id.to_string();
            let mut fields: Vec<(&str, String)> = vec![("fan", fan.clone())];
            match request.ask.get("seats").and_then(|s| s.as_array()) {
                Some(seats) => {
                    let seats: Vec<&str> = seats.iter().filter_map(|s| s.as_str()).collect();
                    fields.push(("kind", "seats".into()));
                    fields.push(("qty", seats.len().to_string()));
                    fields.push(("seats", seats.join(" ")));
                }
                None => {
                    fields.push(("kind", "best".into()));
                    let quantity = request
                        .ask
                        .get("quantity")
                        .and_then(|q| q.as_u64())
                        .unwrap_or(1);
                    fields.push(("qty", quantity.to_string()));
                    for (name, field) in [("section", "section"), ("price_tier", "tier")] {
                        if let Some(value) = request.ask.get(name).and_then(|v| v.as_str()) {
                            fields.push((field, value.to_owned()));
                        }
                    }
                }
            }
            if let Some(ended) = request.ended.as_deref() {
                let ended = crate::journal::Ended::parse(ended).ok_or_else(|| {
                    Error::Unexpected(format!(
                        "request {} ended as {ended:?} in the journal",
                        request.request_id
                    ))
                })?;
                fields.push(("state", ended.state().as_str().to_owned()));
                if let Some(reason) = ended.reason() {
                    fields.push(("reason", reason.to_owned()));
                }
                if let Some(number) = request.queue_number {
                    fields.push(("number", number.to_string()));
                }
                pipe.hset_multiple(&key, &fields).ignore();
                pipe.set(keys.request_index(request.request_id), &event)
                    .ignore();
                restored.ended += 1;
                continue;
            }
            match request.queue_number {
                Some(number) => {
                    fields.push(("state", RequestState::Queued.as_str().into()));
                    fields.push(("number", number.to_string()));
                    pipe.hset_multiple(&key, &fields).ignore();
                    pipe.xadd(
                        keys.stream(event_id),
                        "*",
                        &[
                            ("r", id.clone()),
                            ("n", number.to_string()),
                            ("f", fan.clone()),
                        ],
                    )
                    .ignore();
                    restored.queued += 1;
                }
                None if scheduled => {
                    fields.push(("state", RequestState::Prequeue.as_str().into()));
                    pipe.hset_multiple(&key, &fields).ignore();
                    pipe.sadd(keys.prequeue(event_id), &id).ignore();
                    restored.prequeued += 1;
                }
                None => {
                    // Joined during a draw that never recorded its number: the draw
                    // resumes and numbers the latecomers.
                    fields.push(("state", RequestState::Prequeue.as_str().into()));
                    pipe.hset_multiple(&key, &fields).ignore();
                    pipe.rpush(keys.latecomers(event_id), &id).ignore();
                    restored.prequeued += 1;
                }
            }
            pipe.hset(keys.fans(event_id), &fan, &id).ignore();
            pipe.set(keys.request_index(request.request_id), &event)
                .ignore();
        }
        pipe.query_async::<()>(redis).await?;
    }
    tracing::info!(%event_id, queued = restored.queued, prequeued = restored.prequeued,
        ended = restored.ended, kept = restored.kept, "line restored from the journal");
    Ok(restored)
}
