//! Reads of Redis structures that more than one service answers from: one place, so
//! a fan sees the same request whether asked over REST or pushed over the live socket.

use crate::store::Redis;

use proto::sale_hash;
use proto::wire::queue::{RequestStatus, SaleState};
use proto::{EventId, Keys, RequestId};

/// A request as its fan sees it (one round trip: its hash and the sale's `served`);
/// `None` when Redis has no such request.
pub async fn request_status(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    request_id: RequestId,
) -> redis::RedisResult<Option<RequestStatus>> {
    let (fields, served): (Vec<Option<String>>, Option<u64>) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.request(event_id, request_id))
        .arg(&RequestStatus::HASH_FIELDS)
        .cmd("HGET")
        .arg(keys.sale(event_id))
        .arg(sale_hash::SERVED)
        .query_async(redis)
        .await?;
    Ok(RequestStatus::from_hash(
        request_id, event_id, &fields, served,
    ))
}

/// The event a request belongs to: from Redis's request index, or, when the index
/// has no entry or cannot be read (on a cluster it lives on whichever master owns
/// its slot, not the event's), from the waiting room's journal, which every accepted
/// join is written to before its fan hears of it. `None`: no such request.
pub async fn event_of_request(
    redis: &mut Redis,
    keys: &Keys,
    pool: &sqlx::PgPool,
    request_id: RequestId,
) -> Result<Option<EventId>, sqlx::Error> {
    let indexed: Result<Option<String>, redis::RedisError> = redis::cmd("GET")
        .arg(keys.request_index(request_id))
        .query_async(redis)
        .await;
    match indexed {
        Ok(Some(event)) => {
            if let Ok(event) = event.parse() {
                return Ok(Some(event));
            }
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, %request_id, "request index unreadable; asking the journal")
        }
    }
    let journaled: Option<(EventId,)> =
        sqlx::query_as("SELECT event_id FROM waiting_room.requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(pool)
            .await?;
    Ok(journaled.map(|(event,)| event))
}

/// Each event's sale state as Redis has it, in the order asked (one round trip per
/// event's slot; `None` where Redis has no sale for the event).
pub async fn sale_states(
    redis: &mut Redis,
    keys: &Keys,
    events: &[EventId],
) -> redis::RedisResult<Vec<Option<SaleState>>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for event in events {
        pipe.hget(keys.sale(*event), sale_hash::STATE);
    }
    let states: Vec<Option<String>> = pipe.query_async(redis).await?;
    Ok(states
        .iter()
        .map(|s| s.as_deref().and_then(SaleState::parse))
        .collect())
}
