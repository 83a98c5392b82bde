//! Booking requests in the line: what a fan may ask for, reading where a request
//! stands, leaving. Joining is [`crate::joins`].
//!
//! Position is `queue number − served`, where `served` is the last number the
//! workers have decided: O(1), no scans.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::queue::{CreateRequest, RequestState, RequestStatus};
use proto::{ErrorCode, EventId, Keys, RequestId, SeatId, UserId};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::lottery::to_hex;

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
pub use proto::wire::queue::MAX_SEATS_PER_REQUEST;
/// Seat, section and tier names are short; anything longer is not one of ours.
pub const MAX_NAME: usize = 64;

/// A validated ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    Seats(Vec<SeatId>),
    Best {
        quantity: u32,
        section: Option<String>,
        price_tier: Option<String>,
    },
}

impl Ask {
    /// Checks the shape of a request body. Limits that depend on the event (the
    /// per-fan cap, which seats exist) are checked atomically in `join.lua`.
    pub fn parse(body: CreateRequest) -> Result<Self, Error> {
        let invalid = |m: &str| Error::refused(ErrorCode::InvalidRequest, m);
        match body {
            CreateRequest {
                seats: Some(seats),
                quantity: None,
                section: None,
                price_tier: None,
            } => {
                if seats.is_empty() {
                    return Err(invalid("seats must name at least one seat"));
                }
                if seats.len() > MAX_SEATS_PER_REQUEST as usize {
                    return Err(invalid(&format!(
                        "at most {MAX_SEATS_PER_REQUEST} seats per request"
                    )));
                }
                let mut seen = HashSet::new();
                let mut parsed = Vec::with_capacity(seats.len());
                for seat in &seats {
                    let id = SeatId::parse(seat)
                        .filter(|_| seat.len() <= MAX_NAME * 2)
                        .ok_or_else(|| {
                            Error::refused(
                                ErrorCode::UnknownSeat,
                                format!("{seat:?} is not a seat id"),
                            )
                        })?;
                    if !seen.insert(id.clone()) {
                        return Err(invalid(&format!("seat {seat} is named twice")));
                    }
                    parsed.push(id);
                }
                Ok(Ask::Seats(parsed))
            }
            CreateRequest {
                seats: None,
                quantity: Some(quantity),
                section,
                price_tier,
            } => {
                if quantity == 0 || quantity > MAX_SEATS_PER_REQUEST {
                    return Err(invalid(&format!(
                        "quantity must be 1 to {MAX_SEATS_PER_REQUEST}"
                    )));
                }
                if section.is_some() && price_tier.is_some() {
                    return Err(invalid("name a section or a price tier, not both"));
                }
                for name in section.iter().chain(&price_tier) {
                    if name.is_empty()
                        || name.len() > MAX_NAME
                        || name.contains(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    {
                        return Err(invalid(&format!("{name:?} is not a section or tier name")));
                    }
                }
                Ok(Ask::Best {
                    quantity,
                    section,
                    price_tier,
                })
            }
            _ => Err(invalid(
                "send either {seats: [...]} or {quantity, section?, price_tier?}",
            )),
        }
    }

    pub fn quantity(&self) -> u32 {
        match self {
            Ask::Seats(seats) => seats.len() as u32,
            Ask::Best { quantity, .. } => *quantity,
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Ask::Seats(seats) => serde_json::json!({"seats": seats}),
            Ask::Best {
                quantity,
                section,
                price_tier,
            } => {
                serde_json::json!({"quantity": quantity, "section": section, "price_tier": price_tier})
            }
        }
    }
}

/// Checks an `Idempotency-Key` and turns it into a safe Redis key part.
pub fn idempotency_digest(key: &str) -> Result<String, Error> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::refused(
            ErrorCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(to_hex(&Sha256::digest(key.as_bytes())))
}

/// The event a request belongs to (see [`platform::reads::event_of_request`]).
pub async fn event_of(
    redis: &mut Redis,
    keys: &Keys,
    pool: &sqlx::PgPool,
    request_id: RequestId,
) -> Result<EventId, Error> {
    platform::reads::event_of_request(redis, keys, pool, request_id)
        .await?
        .ok_or(Error::RequestNotFound(request_id))
}

/// The fan who made a request, as Redis has it.
pub async fn owner_of(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    request_id: RequestId,
) -> Result<UserId, Error> {
    let fan: Option<String> = redis::cmd("HGET")
        .arg(keys.request(event_id, request_id))
        .arg("fan")
        .query_async(redis)
        .await?;
    fan.and_then(|f| f.parse().ok())
        .ok_or(Error::RequestNotFound(request_id))
}

/// Where a request stands.
pub async fn status_of(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    request_id: RequestId,
) -> Result<RequestStatus, Error> {
    platform::reads::request_status(redis, keys, event_id, request_id)
        .await?
        .ok_or(Error::RequestNotFound(request_id))
}

#[derive(sqlx::FromRow)]
struct Recorded {
    event_id: EventId,
    fan_id: UserId,
    queue_number: Option<i32>,
    decided: Option<String>,
    ended: Option<String>,
    seats: Option<Vec<String>>,
    hold_expires_at: Option<DateTime<Utc>>,
    reason: Option<String>,
}

/// A request as Postgres records it, with its fan, for when Redis no longer has it
/// (its sale ended and the keys expired, or Redis lost them): the booking workers'
/// decision, else how it ended in the line, else still waiting.
pub async fn recorded(
    pool: &sqlx::PgPool,
    request_id: RequestId,
) -> Result<Option<(UserId, RequestStatus)>, Error> {
    let row: Option<Recorded> = sqlx::query_as(
        "SELECT j.event_id, j.fan_id, COALESCE(b.queue_number, j.queue_number) AS queue_number,
                b.state AS decided, j.ended, b.seats, b.hold_expires_at, b.reason
         FROM waiting_room.requests j
         LEFT JOIN booking.requests b USING (request_id)
         WHERE j.request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (state, reason) = match (&row.decided, &row.ended) {
        (Some(decided), _) => (RequestState::parse(decided), row.reason.clone()),
        (None, Some(ended)) => {
            let (state, reason) = ended.split_once(':').unwrap_or((ended.as_str(), ""));
            (
                RequestState::parse(state),
                Some(reason.to_owned()).filter(|r| !r.is_empty()),
            )
        }
        (None, None) if row.queue_number.is_some() => (Some(RequestState::Queued), None),
        (None, None) => (Some(RequestState::Prequeue), None),
    };
    let Some(state) = state else {
        return Err(Error::Unexpected(format!(
            "request {request_id} recorded in an unknown state"
        )));
    };
    let holds_seats = matches!(
        state,
        RequestState::Held | RequestState::Paying | RequestState::Confirmed
    );
    Ok(Some((
        row.fan_id,
        RequestStatus {
            request_id,
            event_id: row.event_id,
            state,
            queue_number: row.queue_number.map(|n| n as u64),
            position: None,
            seats: row
                .seats
                .filter(|_| holds_seats)
                .map(|seats| seats.iter().filter_map(|s| SeatId::parse(s)).collect()),
            hold_expires_at: row
                .hold_expires_at
                .filter(|_| matches!(state, RequestState::Held | RequestState::Paying)),
            reason,
        },
    )))
}

/// Leaves the line, or releases the hold. Returns the request's state afterwards.
pub async fn leave(
    pool: &sqlx::PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    request_id: RequestId,
) -> Result<RequestStatus, Error> {
    let (changed, state): (i64, String) =
        proto::scripts::cancel(keys, event_id, request_id, RequestState::Cancelled, "")
            .invoke_async(redis)
            .await?;
    // The request's state as the script found it; `None`: no such request.
    let state = RequestState::parse(&state);
    if changed == 1 {
        crate::journal::record_ended(pool, &[request_id], crate::journal::Ended::Cancelled).await?;
    }
    if changed == 0 && state == Some(RequestState::Held) {
        let reply: Vec<redis::Value> = proto::scripts::release(
            keys,
            event_id,
            request_id,
            RequestState::Released,
            Utc::now().timestamp_millis(),
            false,
            "",
        )
        .invoke_async(redis)
        .await?;
        // The script also told the booking workers (the event's changes stream), who
        // bring the ledger up to date.
        match reply.as_slice() {
            [redis::Value::Int(1), ..] => {
                metrics::counter!("onsale_holds_released_total", "by" => "fan").increment(1);
            }
            [_, why]
                if redis::from_redis_value::<String>(why.clone())
                    .is_ok_and(|w| RequestState::parse(&w) == Some(RequestState::Paying)) =>
            {
                // Its fan started paying between the two scripts.
                return Err(Error::refused(
                    ErrorCode::PaymentInFlight,
                    format!("a payment for request {request_id} is in flight"),
                ));
            }
            [_, why]
                if redis::from_redis_value::<String>(why.clone())
                    .is_ok_and(|w| w == "restoring") =>
            {
                // A restore is rebuilding the event from the ledger; the hold is
                // released once it is done.
                return Err(Error::LineLost(event_id));
            }
            _ => {}
        }
    } else if changed == 0 && state == Some(RequestState::Paying) {
        return Err(Error::refused(
            ErrorCode::PaymentInFlight,
            format!(
                "a payment for request {request_id} is in flight; its seats are released if it fails and the hold runs out"
            ),
        ));
    } else if changed == 0 && state.is_none() {
        return Err(Error::RequestNotFound(request_id));
    }
    status_of(redis, keys, event_id, request_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<Ask, Error>) -> Option<ErrorCode> {
        match result {
            Err(Error::Refused { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn an_ask_is_either_seats_or_a_quantity() {
        let seats = CreateRequest {
            seats: Some(vec!["Floor-A-1".into()]),
            ..Default::default()
        };
        assert_eq!(Ask::parse(seats).ok().map(|a| a.quantity()), Some(1));
        let best = CreateRequest {
            quantity: Some(3),
            section: Some("Floor".into()),
            ..Default::default()
        };
        assert_eq!(Ask::parse(best).ok().map(|a| a.quantity()), Some(3));
        let both = CreateRequest {
            seats: Some(vec!["Floor-A-1".into()]),
            quantity: Some(1),
            ..Default::default()
        };
        assert_eq!(code(Ask::parse(both)), Some(ErrorCode::InvalidRequest));
        assert_eq!(
            code(Ask::parse(CreateRequest::default())),
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn bad_asks_are_refused() {
        let cases = [
            (
                CreateRequest {
                    seats: Some(vec![]),
                    ..Default::default()
                },
                ErrorCode::InvalidRequest,
            ),
            (
                CreateRequest {
                    seats: Some(vec!["nope".into()]),
                    ..Default::default()
                },
                ErrorCode::UnknownSeat,
            ),
            (
                CreateRequest {
                    seats: Some(vec!["Floor-A-1".into(), "Floor-A-1".into()]),
                    ..Default::default()
                },
                ErrorCode::InvalidRequest,
            ),
            (
                CreateRequest {
                    quantity: Some(0),
                    ..Default::default()
                },
                ErrorCode::InvalidRequest,
            ),
            (
                CreateRequest {
                    quantity: Some(51),
                    ..Default::default()
                },
                ErrorCode::InvalidRequest,
            ),
            (
                CreateRequest {
                    quantity: Some(2),
                    section: Some("A".into()),
                    price_tier: Some("b".into()),
                    ..Default::default()
                },
                ErrorCode::InvalidRequest,
            ),
            (
                CreateRequest {
                    quantity: Some(2),
                    section: Some("Flo or".into()),
                    ..Default::default()
                },
                ErrorCode::InvalidRequest,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(code(Ask::parse(body.clone())), Some(expected), "{body:?}");
        }
    }

    #[test]
    fn idempotency_keys_are_checked_and_digested() {
        assert_eq!(
            idempotency_digest("abc-123").ok().map(|d| d.len()),
            Some(64)
        );
        assert!(idempotency_digest("").is_err());
        assert!(idempotency_digest("has space").is_err());
        assert!(idempotency_digest(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)).is_err());
    }
}
