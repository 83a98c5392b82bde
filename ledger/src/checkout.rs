//! The ledger's side of checkout: a held request starts paying, goes back to held
//! after a declined card, or is sold. Called by payments inside its own transaction,
//! so an order and the ledger move together.
//!
//! These writes are not a drainer's and carry no fence epoch. Each takes the event's
//! fence row shared instead: a restore, which raises the fence before it reads the
//! ledger, therefore waits for a checkout write in flight and then reads its result.
//! Each is conditional on the request's state, so a retry changes nothing twice.

use chrono::{DateTime, Utc};
use platform::outbox::{self, Message};
use proto::wire::events::EventType;
use proto::wire::queue::RequestState;
use proto::{EventId, RequestId, UserId};
use sqlx::PgConnection;

/// Where the ledger has a request that is to start paying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginPaying {
    /// Now paying until the deadline; these are its seats.
    /// `traceparent`: the decision's trace context, for the payment's spans and
    /// messages (`platform::telemetry`).
    Paying {
        seats: Vec<String>,
        traceparent: Option<String>,
    },
    /// The ledger does not have the hold yet (the drainer's batch is still on its
    /// way): try again shortly.
    NotYetRecorded,
    /// The ledger has the request in another state.
    Other(RequestState),
}

async fn share_fence(tx: &mut PgConnection, event_id: EventId) -> Result<(), sqlx::Error> {
    // A checkout stalled mid-transaction must not hold the fence row for good (a
    // drainer taking over, a restore, wait for it): Postgres ends it when idle.
    sqlx::query(&format!(
        "SELECT 1 FROM booking.drain_fences,
                set_config('idle_in_transaction_session_timeout', '{}', true)
         WHERE event_id = $1 FOR SHARE OF drain_fences",
        super::STALLED_TRANSACTION_MS
    ))
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn state_of(
    tx: &mut PgConnection,
    request_id: RequestId,
) -> Result<Option<RequestState>, sqlx::Error> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM booking.requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(state.as_deref().and_then(RequestState::parse))
}

/// A held request starts paying: its hold (and its seat claims) run until `deadline`.
pub async fn begin_paying(
    tx: &mut PgConnection,
    event_id: EventId,
    request_id: RequestId,
    deadline: DateTime<Utc>,
) -> Result<BeginPaying, sqlx::Error> {
    share_fence(tx, event_id).await?;
    let paying: Option<(Vec<String>, Option<String>)> = sqlx::query_as(
        "UPDATE booking.requests SET state = 'paying', held_until = hold_expires_at,
             hold_expires_at = $2, updated_at = now()
         WHERE request_id = $1 AND state = 'held' RETURNING seats, traceparent",
    )
    .bind(request_id)
    .bind(deadline)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seats, traceparent)) = paying else {
        return Ok(match state_of(tx, request_id).await? {
            // Held now, yet not when the update looked: the drainer's batch committed
            // between the two statements. Asked again, the update finds it.
            None | Some(RequestState::Queued | RequestState::Held) => BeginPaying::NotYetRecorded,
            Some(state) => BeginPaying::Other(state),
        });
    };
    sqlx::query(
        "UPDATE booking.seat_claims SET expires_at = $2
         WHERE event_id = $3 AND request_id = $1 AND state = 'held'",
    )
    .bind(request_id)
    .bind(deadline)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    Ok(BeginPaying::Paying { seats, traceparent })
}

/// A declined payment: the paying request is held again until `held_until`.
/// Returns whether it was paying.
pub async fn back_to_held(
    tx: &mut PgConnection,
    event_id: EventId,
    request_id: RequestId,
    held_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    share_fence(tx, event_id).await?;
    let changed = sqlx::query(
        "UPDATE booking.requests SET state = 'held', hold_expires_at = $2, held_until = NULL,
             updated_at = now()
         WHERE request_id = $1 AND state = 'paying'",
    )
    .bind(request_id)
    .bind(held_until)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE booking.seat_claims SET expires_at = $2
         WHERE event_id = $3 AND request_id = $1 AND state = 'held'",
    )
    .bind(request_id)
    .bind(held_until)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    Ok(true)
}

/// Why the ledger refused to sell.
#[derive(Debug, thiserror::Error)]
pub enum SellError {
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// The request is not paying in the ledger (it ended, or was never held).
    #[error("request {request_id} is {state:?} in the ledger, not paying")]
    NotPaying {
        request_id: RequestId,
        state: Option<RequestState>,
    },
    /// Some of its seats are not its held claims in the ledger.
    #[error("request {request_id} holds {claimed} of its {seats} seats in the ledger")]
    SeatsNotHeld {
        request_id: RequestId,
        claimed: u64,
        seats: usize,
    },
}

/// Sells a paying request's seats: the request is confirmed and its claims become
/// sold, with `request.confirmed` in the outbox. Returns the fan and the seats.
/// Either everything is written or, on an error, the caller rolls back.
pub async fn sell(
    tx: &mut PgConnection,
    event_id: EventId,
    request_id: RequestId,
) -> Result<(UserId, Vec<String>), SellError> {
    share_fence(tx, event_id).await?;
    let row: Option<(UserId, Vec<String>)> = sqlx::query_as(
        "UPDATE booking.requests SET state = 'confirmed', hold_expires_at = NULL, held_until = NULL,
             updated_at = now()
         WHERE request_id = $1 AND state = 'paying' RETURNING fan_id, seats",
    )
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((fan, seats)) = row else {
        return Err(SellError::NotPaying {
            request_id,
            state: state_of(tx, request_id).await?,
        });
    };
    let claimed = sqlx::query(
        "UPDATE booking.seat_claims SET state = 'sold', expires_at = NULL
         WHERE event_id = $1 AND request_id = $2 AND state = 'held' AND seat_id = ANY($3)",
    )
    .bind(event_id)
    .bind(request_id)
    .bind(&seats)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed != seats.len() as u64 {
        return Err(SellError::SeatsNotHeld {
            request_id,
            claimed,
            seats: seats.len(),
        });
    }
    let message: Message = super::request_message(
        EventType::RequestConfirmed,
        event_id,
        request_id,
        fan,
        RequestState::Confirmed,
        seats.clone(),
        None,
        None,
    );
    outbox::write(tx, &[message]).await?;
    Ok((fan, seats))
}

/// A refund gives seats of a confirmed request back: their sold claims go (each
/// once: a claim already gone is not counted) and the request keeps the rest of its
/// seats, so a restore rebuilds the seat map and the fan's seat count without them.
/// Returns the seats whose claims went.
pub async fn unsell(
    tx: &mut PgConnection,
    event_id: EventId,
    request_id: RequestId,
    seats: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    share_fence(tx, event_id).await?;
    let released: Vec<String> = sqlx::query_scalar(
        "DELETE FROM booking.seat_claims
         WHERE event_id = $1 AND request_id = $2 AND state = 'sold' AND seat_id = ANY($3)
         RETURNING seat_id",
    )
    .bind(event_id)
    .bind(request_id)
    .bind(seats)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE booking.requests
         SET seats = ARRAY(SELECT s FROM unnest(seats) s WHERE s <> ALL($2)), updated_at = now()
         WHERE request_id = $1",
    )
    .bind(request_id)
    .bind(&released)
    .execute(&mut *tx)
    .await?;
    Ok(released)
}
