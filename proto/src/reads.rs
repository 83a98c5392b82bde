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
