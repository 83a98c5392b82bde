//! The booking workers' writes to Postgres: request outcomes in `booking.requests`,
//! seat claims in `booking.seat_claims`, and the drainers' fence epochs in
//! `booking.drain_fences`. One transaction per batch.
//!
//! Every write is fenced: it runs only while the event's fence epoch is the writing
//! drainer's own (see [`raise_fence`]), so a drainer that stalled past its lease
//! writes nothing once its successor took over. Every write is an upsert or a
//! conditional delete keyed by request id, so a batch written twice (a redelivered
//! stream entry) leaves the same rows; and a request that reached a terminal state
//! is never moved back, so a late write cannot put a hold back after it ended.
//!
//! Every state change is reported in the same transaction through the outbox
//! (`request.held`, `request.rejected`, `request.expired`, `request.released`): only
//! rows the statement really changed are reported, so a redelivered batch reports
//! nothing twice.

pub mod checkout;
pub mod restore;
pub mod seed;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use platform::outbox::{self, Message};
use proto::wire::events::{EventType, RequestPayload};
use proto::wire::queue::RequestState;
use proto::{EventId, RequestId, UserId};
use sqlx::PgPool;

/// A request as the hold script decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub request_id: RequestId,
    pub fan: UserId,
    pub queue_number: i64,
    pub state: RequestState,
    pub seats: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// When the line decided it: the clock the hold script was given, not when the
    /// ledger got the write (which may come seconds later, after an outage). Kept as
    /// `line_decided_at`; `decided_at` stays the ledger's own time.
    pub decided_at: DateTime<Utc>,
    /// The join's x-request-id, from the stream entry (`platform::correlation`).
    pub correlation_id: Option<String>,
    /// The decision's trace context (`platform::telemetry`), kept on the request's
    /// row for its checkout.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// Another drainer took the event over: this one must stop writing.
    #[error("fenced: this drainer's epoch is {mine}, the event's is {current:?}")]
    Fenced { mine: i64, current: Option<i64> },
}

/// A hold Postgres refused: some of its seats are claimed by other requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub request_id: RequestId,
    /// The seats the ledger gives to others, with their claim.
    pub taken: Vec<Claim>,
}

/// A live claim on a seat, as the ledger has it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Claim {
    pub seat_id: String,
    pub request_id: RequestId,
    pub state: ClaimState,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A seat claim's state in `booking.seat_claims`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ClaimState {
    /// A hold, which expires at the claim's `expires_at`.
    Held,
    /// Paid for.
    Sold,
}

impl ClaimState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Held => "held",
            ClaimState::Sold => "sold",
        }
    }
}

/// How long a fenced ledger transaction may sit idle (its drainer stalled between
/// two statements: a pause, SIGSTOP) before Postgres ends it. It holds the fence row
/// shared, and a successor's [`raise_fence`] waits for it: this bounds the wait.
pub(crate) const STALLED_TRANSACTION_MS: u32 = 5_000;
/// How long [`raise_fence`] waits for the fence row before giving up (the caller
/// tries again later); longer than [`STALLED_TRANSACTION_MS`].
const RAISE_WAIT_MS: u32 = 15_000;

/// Takes the event over for a drainer: raises the fence epoch and returns it. Waits
/// for the previous drainer's open ledger transactions (they hold the fence row),
/// after which none of its writes can commit; a stalled one is ended by Postgres
/// within [`STALLED_TRANSACTION_MS`].
pub async fn raise_fence(
    pool: &PgPool,
    event_id: EventId,
    holder: &str,
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = {RAISE_WAIT_MS}"))
        .execute(&mut *tx)
        .await?;
    let epoch = sqlx::query_scalar(
        "INSERT INTO booking.drain_fences (event_id, epoch, holder) VALUES ($1, 1, $2)
         ON CONFLICT (event_id) DO UPDATE
             SET epoch = booking.drain_fences.epoch + 1, holder = EXCLUDED.holder, taken_at = now()
         RETURNING epoch",
    )
    .bind(event_id)
    .bind(holder)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(epoch)
}

/// Checks inside `tx` that `epoch` is still the event's, and keeps the fence row
/// locked (shared) until the transaction ends. Every fenced ledger write begins with
/// it; a transaction that then sits idle longer than [`STALLED_TRANSACTION_MS`] is
/// ended by Postgres.
pub async fn check_fence(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event_id: EventId,
    epoch: i64,
) -> Result<(), LedgerError> {
    // A drainer that stalls mid-transaction must not hold the fence row for good:
    // the idle timeout is set for this transaction in the same round trip.
    let current: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT epoch FROM booking.drain_fences,
                set_config('idle_in_transaction_session_timeout', '{STALLED_TRANSACTION_MS}', true)
         WHERE event_id = $1 FOR SHARE OF drain_fences"
    ))
    .bind(event_id)
    .fetch_optional(&mut **tx)
    .await?;
    if current != Some(epoch) {
        return Err(LedgerError::Fenced {
            mine: epoch,
            current,
        });
    }
    Ok(())
}

/// A seat of a decided hold that the ledger gives to another request: the refused
/// request, the seat, its owner, the claim's state and expiry.
type TakenSeat = (
    uuid::Uuid,
    String,
    uuid::Uuid,
    ClaimState,
    Option<DateTime<Utc>>,
);

/// States a decision may overwrite: a request moves forward only.
const OPEN_STATES: &str = "('queued', 'held')";

/// Writes a batch of decisions under the drainer's fence `epoch`. Returns the holds
/// Postgres refused because another request claims one of their seats; nothing of
/// those is written (their entries are decided again, see the drainer).
pub async fn record(
    pool: &PgPool,
    event_id: EventId,
    epoch: i64,
    decisions: &[Decision],
) -> Result<Vec<Conflict>, LedgerError> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, event_id, epoch).await?;

    // The primary key of seat_claims has the last word: a seat another request claims
    // means Redis and the ledger disagree, and this request does not get it.
    let mut seats = Vec::new();
    let mut owners = Vec::new();
    for decision in decisions.iter().filter(|d| d.state == RequestState::Held) {
        for seat in &decision.seats {
            seats.push(seat.as_str());
            owners.push(decision.request_id.as_uuid());
        }
    }
    let taken: Vec<TakenSeat> = if seats.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT t.r, c.seat_id, c.request_id, c.state, c.expires_at
             FROM UNNEST($2::text[], $3::uuid[]) AS t(seat, r)
             JOIN booking.seat_claims c ON c.event_id = $1 AND c.seat_id = t.seat
             WHERE c.request_id <> t.r
             FOR SHARE OF c",
        )
        .bind(event_id)
        .bind(&seats)
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await?
    };
    let mut conflicts: BTreeMap<uuid::Uuid, Vec<Claim>> = BTreeMap::new();
    for (loser, seat_id, owner, state, expires_at) in taken {
        conflicts.entry(loser).or_default().push(Claim {
            seat_id,
            request_id: RequestId::from(owner),
            state,
            expires_at,
        });
    }
    let kept: Vec<&Decision> = decisions
        .iter()
        .filter(|d| !conflicts.contains_key(&d.request_id.as_uuid()))
        .collect();

    // A request moves forward only: a row that is paying or ended is left as it is,
    // and only rows that are held after the upsert get seat claims. A row already in
    // the decided state (a redelivered entry) is not written again, so `written` is
    // exactly the rows this batch changed, the ones the outbox reports.
    let written: Vec<uuid::Uuid> = sqlx::query_scalar(&format!(
        "INSERT INTO booking.requests
             (request_id, event_id, fan_id, queue_number, state, seats, hold_expires_at, reason, traceparent,
              line_decided_at)
         SELECT r, $1, f, n, s, COALESCE(string_to_array(NULLIF(seats, ''), ' '), '{{}}'), e, NULLIF(why, ''), tp,
                d
         FROM UNNEST($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::text[],
                     $10::timestamptz[])
              AS t(r, f, n, s, seats, e, why, tp, d)
         ON CONFLICT (request_id) DO UPDATE SET
             state = EXCLUDED.state, seats = EXCLUDED.seats, hold_expires_at = EXCLUDED.hold_expires_at,
             reason = EXCLUDED.reason, queue_number = EXCLUDED.queue_number,
             traceparent = COALESCE(EXCLUDED.traceparent, booking.requests.traceparent), updated_at = now(),
             line_decided_at = EXCLUDED.line_decided_at
         WHERE booking.requests.state IN {OPEN_STATES} AND booking.requests.state <> EXCLUDED.state
         RETURNING request_id"
    ))
    .bind(event_id)
    .bind(kept.iter().map(|d| d.request_id.as_uuid()).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.fan.as_uuid()).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.queue_number as i32).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.state.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.seats.join(" ")).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.expires_at).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.reason.clone().unwrap_or_default()).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.traceparent.as_deref()).collect::<Vec<_>>())
    .bind(kept.iter().map(|d| d.decided_at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let written: std::collections::HashSet<uuid::Uuid> = written.into_iter().collect();

    let mut seats = Vec::new();
    let mut owners = Vec::new();
    let mut expiries = Vec::new();
    for decision in kept
        .iter()
        .filter(|d| d.state == RequestState::Held && written.contains(&d.request_id.as_uuid()))
    {
        for seat in &decision.seats {
            seats.push(seat.as_str());
            owners.push(decision.request_id.as_uuid());
            expiries.push(decision.expires_at);
        }
    }
    if !seats.is_empty() {
        sqlx::query(
            "INSERT INTO booking.seat_claims (event_id, seat_id, request_id, state, expires_at)
             SELECT $1, seat, r, 'held', e FROM UNNEST($2::text[], $3::uuid[], $4::timestamptz[]) AS t(seat, r, e)
             ON CONFLICT (event_id, seat_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(&seats)
        .bind(&owners)
        .bind(&expiries)
        .execute(&mut *tx)
        .await?;
    }
    let messages: Vec<Message> = kept
        .iter()
        .filter(|d| written.contains(&d.request_id.as_uuid()))
        .filter_map(|d| {
            let kind = match d.state {
                RequestState::Held => EventType::RequestHeld,
                RequestState::Rejected => EventType::RequestRejected,
                // The hold ended before the ledger had it (a redelivered entry).
                RequestState::Expired => EventType::RequestExpired,
                RequestState::Released => EventType::RequestReleased,
                _ => return None,
            };
            Some(
                request_message(
                    kind,
                    event_id,
                    d.request_id,
                    d.fan,
                    d.state,
                    d.seats.clone(),
                    d.expires_at,
                    d.reason.clone(),
                )
                .correlated(d.correlation_id.clone())
                .traced(d.traceparent.clone()),
            )
        })
        .collect();
    outbox::write(&mut tx, &messages).await?;
    tx.commit().await?;
    Ok(conflicts
        .into_iter()
        .map(|(request, taken)| Conflict {
            request_id: RequestId::from(request),
            taken,
        })
        .collect())
}

/// Ends holds in the ledger (expired, released, rejected) under the drainer's fence:
/// the request's state changes and its held claims go.
pub async fn end_holds(
    pool: &PgPool,
    event_id: EventId,
    epoch: i64,
    requests: &[RequestId],
    state: RequestState,
) -> Result<(), LedgerError> {
    if requests.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, event_id, epoch).await?;
    let ids: Vec<uuid::Uuid> = requests.iter().map(RequestId::as_uuid).collect();
    sqlx::query("DELETE FROM booking.seat_claims WHERE event_id = $1 AND request_id = ANY($2) AND state = 'held'")
        .bind(event_id)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    let ended: Vec<(RequestId, UserId, Vec<String>)> = sqlx::query_as(
        "UPDATE booking.requests SET state = $2, hold_expires_at = NULL, held_until = NULL,
             updated_at = now()
         WHERE request_id = ANY($1) AND state IN ('held', 'paying')
         RETURNING request_id, fan_id, seats",
    )
    .bind(&ids)
    .bind(state.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let kind = match state {
        RequestState::Expired => Some(EventType::RequestExpired),
        RequestState::Released => Some(EventType::RequestReleased),
        RequestState::Rejected => Some(EventType::RequestRejected),
        _ => None,
    };
    if let Some(kind) = kind {
        let messages: Vec<Message> = ended
            .into_iter()
            .map(|(request, fan, seats)| {
                request_message(kind, event_id, request, fan, state, seats, None, None)
            })
            .collect();
        outbox::write(&mut tx, &messages).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records requests that ended without being decided by the hold script (sent to
/// the dead letters): rejected with `reason`, unless the ledger already has them in
/// a later state.
pub async fn reject_undecided(
    pool: &PgPool,
    event_id: EventId,
    epoch: i64,
    requests: &[(RequestId, UserId, i64)],
    reason: &str,
) -> Result<(), LedgerError> {
    if requests.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, event_id, epoch).await?;
    let rejected: Vec<(RequestId, UserId)> = sqlx::query_as(
        "INSERT INTO booking.requests (request_id, event_id, fan_id, queue_number, state, reason)
         SELECT r, $1, f, n, 'rejected', $5 FROM UNNEST($2::uuid[], $3::uuid[], $4::int[]) AS t(r, f, n)
         ON CONFLICT (request_id) DO UPDATE SET state = 'rejected', reason = $5, seats = '{}',
             hold_expires_at = NULL, updated_at = now()
         WHERE booking.requests.state = 'queued'
         RETURNING request_id, fan_id"
    )
    .bind(event_id)
    .bind(requests.iter().map(|r| r.0.as_uuid()).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| r.1.as_uuid()).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| r.2 as i32).collect::<Vec<_>>())
    .bind(reason)
    .fetch_all(&mut *tx)
    .await?;
    let messages: Vec<Message> = rejected
        .into_iter()
        .map(|(request, fan)| {
            request_message(
                EventType::RequestRejected,
                event_id,
                request,
                fan,
                RequestState::Rejected,
                Vec::new(),
                None,
                Some(reason.to_owned()),
            )
        })
        .collect();
    outbox::write(&mut tx, &messages).await?;
    tx.commit().await?;
    Ok(())
}

/// A `request.*` outbox message.
#[allow(
    clippy::too_many_arguments,
    reason = "the payload's fields, named at each call"
)]
pub(crate) fn request_message(
    kind: EventType,
    event_id: EventId,
    request_id: RequestId,
    fan_id: UserId,
    state: RequestState,
    seats: Vec<String>,
    hold_expires_at: Option<DateTime<Utc>>,
    reason: Option<String>,
) -> Message {
    Message::new(
        kind,
        event_id,
        Some(request_id),
        &RequestPayload {
            request_id,
            event_id,
            fan_id,
            state: state.as_str().to_owned(),
            seats,
            hold_expires_at,
            reason,
        },
    )
}

/// A held request as the ledger has it, for putting it back into Redis.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HeldRequest {
    pub request_id: RequestId,
    pub fan_id: UserId,
    pub queue_number: Option<i32>,
    pub state: RequestState,
    pub seats: Vec<String>,
    pub hold_expires_at: Option<DateTime<Utc>>,
}

/// The ledger's rows of `requests`.
pub async fn requests(
    pool: &PgPool,
    requests: &[RequestId],
) -> Result<Vec<HeldRequest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_id, fan_id, queue_number, state, seats, hold_expires_at
         FROM booking.requests WHERE request_id = ANY($1)",
    )
    .bind(requests.iter().map(RequestId::as_uuid).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
}
