//! Reads of Redis structures that more than one service answers from: one place, so
//! a fan sees the same request whether asked over REST or pushed over the live socket.

use crate::store::Redis;

use crate::wire::queue::RequestStatus;
use crate::{EventId, Keys, RequestId};

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
        .arg("served")
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
#[cfg(feature = "sqlx")]
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
