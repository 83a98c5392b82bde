//! The booking workers' writes to Postgres: request outcomes in `booking.requests`
//! and seat claims in `booking.seat_claims`, one transaction per batch.
//!
//! Every write is an upsert or a conditional delete keyed by request id, so a batch
//! written twice (a redelivered stream entry) leaves the same rows.

use chrono::{DateTime, Utc};
use proto::{EventId, RequestId, UserId};
use sqlx::PgPool;

/// A request as the hold script decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub request_id: RequestId,
    pub fan: UserId,
    pub queue_number: i64,
    /// `held`, `rejected`, `cancelled`, `expired`, `released`, ...
    pub state: String,
    pub seats: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// Writes a batch of decisions; returns the requests whose seats Postgres refused
/// because another request already claims one of them.
pub async fn record(
    pool: &PgPool,
    event_id: EventId,
    decisions: &[Decision],
) -> Result<Vec<RequestId>, sqlx::Error> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO booking.requests
             (request_id, event_id, fan_id, queue_number, state, seats, hold_expires_at, reason)
         SELECT r, $1, f, n, s, COALESCE(string_to_array(NULLIF(seats, ''), ' '), '{}'), e, NULLIF(why, '')
         FROM UNNEST($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
              AS t(r, f, n, s, seats, e, why)
         ON CONFLICT (request_id) DO UPDATE SET
             state = EXCLUDED.state, seats = EXCLUDED.seats, hold_expires_at = EXCLUDED.hold_expires_at,
             reason = EXCLUDED.reason, queue_number = EXCLUDED.queue_number, updated_at = now()",
    )
    .bind(event_id)
    .bind(decisions.iter().map(|d| d.request_id.as_uuid()).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.fan.as_uuid()).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.queue_number as i32).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.state.as_str()).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.seats.join(" ")).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.expires_at).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.reason.clone().unwrap_or_default()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    let held: Vec<&Decision> = decisions.iter().filter(|d| d.state == "held").collect();
    let mut conflicts = Vec::new();
    if !held.is_empty() {
        let mut seats = Vec::new();
        let mut owners = Vec::new();
        let mut expiries = Vec::new();
        for decision in &held {
            for seat in &decision.seats {
                seats.push(seat.as_str());
                owners.push(decision.request_id.as_uuid());
                expiries.push(decision.expires_at);
            }
        }
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
        // The primary key has the last word: a seat claimed by another request means
        // Redis and the ledger disagreed, and this request does not get the seat.
        let lost: Vec<RequestId> = sqlx::query_scalar(
            "SELECT DISTINCT t.r FROM UNNEST($2::text[], $3::uuid[]) AS t(seat, r)
             JOIN booking.seat_claims c ON c.event_id = $1 AND c.seat_id = t.seat
             WHERE c.request_id <> t.r",
        )
        .bind(event_id)
        .bind(&seats)
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await?;
        if !lost.is_empty() {
            end_holds_in(&mut tx, event_id, &lost, "rejected").await?;
            sqlx::query("UPDATE booking.requests SET reason = 'conflict', seats = '{}' WHERE request_id = ANY($1)")
                .bind(lost.iter().map(RequestId::as_uuid).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            conflicts = lost;
        }
    }
    tx.commit().await?;
    Ok(conflicts)
}

/// Ends holds in the ledger (expired, released): the request's state changes and
/// its held claims go.
pub async fn end_holds(
    pool: &PgPool,
    event_id: EventId,
    requests: &[RequestId],
    state: &str,
) -> Result<(), sqlx::Error> {
    if requests.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    end_holds_in(&mut tx, event_id, requests, state).await?;
    tx.commit().await
}

async fn end_holds_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event_id: EventId,
    requests: &[RequestId],
    state: &str,
) -> Result<(), sqlx::Error> {
    let ids: Vec<uuid::Uuid> = requests.iter().map(RequestId::as_uuid).collect();
    sqlx::query("DELETE FROM booking.seat_claims WHERE event_id = $1 AND request_id = ANY($2) AND state = 'held'")
        .bind(event_id)
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE booking.requests SET state = $2, hold_expires_at = NULL, updated_at = now()
         WHERE request_id = ANY($1) AND state IN ('held', 'paying')",
    )
    .bind(&ids)
    .bind(state)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
