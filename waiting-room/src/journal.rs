//! The line's durable record: `waiting_room.requests`.
//!
//! Redis holds the line for speed (the stream, the request hashes); Postgres holds
//! every accepted request from before its fan is told, its queue number once it has
//! one, and how it ended if it ended before a booking worker decided it. After Redis
//! lost an event's keys, [`crate::restore`] puts the undecided requests back in line
//! from here, in order. Decided requests are in `booking.requests`, the booking
//! workers' record.

use proto::wire::queue::RequestState;
use proto::{EventId, RequestId, UserId};
use sqlx::PgPool;

/// An accepted request, as journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub request_id: RequestId,
    pub fan: UserId,
    /// `None` in the pre-queue.
    pub queue_number: Option<i64>,
    pub ask: serde_json::Value,
}

/// Journals accepted requests (a request already journaled is left as it is, so a
/// replayed join writes nothing new).
pub async fn record(
    pool: &PgPool,
    event_id: EventId,
    accepted: &[Accepted],
) -> Result<(), sqlx::Error> {
    if accepted.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO waiting_room.requests (request_id, event_id, fan_id, queue_number, ask)
         SELECT r, $1, f, n, a FROM UNNEST($2::uuid[], $3::uuid[], $4::int[], $5::jsonb[]) AS t(r, f, n, a)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(accepted.iter().map(|a| a.request_id.as_uuid()).collect::<Vec<_>>())
    .bind(accepted.iter().map(|a| a.fan.as_uuid()).collect::<Vec<_>>())
    .bind(accepted.iter().map(|a| a.queue_number.map(|n| n as i32)).collect::<Vec<_>>())
    .bind(accepted.iter().map(|a| a.ask.clone()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the numbers the draw gave: the cohort's from `waiting_room.draw_entries`,
/// and the latecomers' as given.
pub async fn record_numbers(
    pool: &PgPool,
    event_id: EventId,
    latecomers: &[(RequestId, i64)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE waiting_room.requests r SET queue_number = d.queue_number
         FROM waiting_room.draw_entries d
         WHERE d.event_id = $1 AND r.request_id = d.request_id AND r.queue_number IS NULL",
    )
    .bind(event_id)
    .execute(pool)
    .await?;
    if !latecomers.is_empty() {
        sqlx::query(
            "UPDATE waiting_room.requests r SET queue_number = t.n
             FROM UNNEST($1::uuid[], $2::int[]) AS t(id, n)
             WHERE r.request_id = t.id AND r.queue_number IS NULL",
        )
        .bind(
            latecomers
                .iter()
                .map(|(id, _)| id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            latecomers
                .iter()
                .map(|(_, n)| *n as i32)
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// How a request ended before any worker decided it, as the journal's `ended`
/// column spells it: `cancelled`, or `rejected:<reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended<'a> {
    Cancelled,
    Rejected(&'a str),
}

impl<'a> Ended<'a> {
    fn column(self) -> String {
        match self {
            Ended::Cancelled => RequestState::Cancelled.as_str().to_owned(),
            Ended::Rejected(reason) => format!("{}:{reason}", RequestState::Rejected.as_str()),
        }
    }

    /// The column read back; `None` for anything [`Ended::column`] does not write.
    pub fn parse(column: &'a str) -> Option<Self> {
        let (state, reason) = column.split_once(':').unwrap_or((column, ""));
        match RequestState::parse(state)? {
            RequestState::Cancelled if reason.is_empty() => Some(Ended::Cancelled),
            RequestState::Rejected => Some(Ended::Rejected(reason)),
            _ => None,
        }
    }

    /// The state the request ended in.
    pub fn state(self) -> RequestState {
        match self {
            Ended::Cancelled => RequestState::Cancelled,
            Ended::Rejected(_) => RequestState::Rejected,
        }
    }

    /// Why it was refused, when it was.
    pub fn reason(self) -> Option<&'a str> {
        match self {
            Ended::Cancelled => None,
            Ended::Rejected(reason) => Some(reason).filter(|r| !r.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ended_column_reads_back_as_it_was_written() {
        for ended in [
            Ended::Cancelled,
            Ended::Rejected("sold_out"),
            Ended::Rejected(""),
        ] {
            assert_eq!(Ended::parse(&ended.column()), Some(ended));
        }
        assert_eq!(Ended::Rejected("sold_out").reason(), Some("sold_out"));
        assert_eq!(Ended::parse("held"), None, "not a way to end in the line");
        assert_eq!(Ended::parse("cancelled:why"), None);
        assert_eq!(Ended::parse(""), None);
    }
}

/// Records that requests ended before any worker decided them.
pub async fn record_ended(
    pool: &PgPool,
    requests: &[RequestId],
    how: Ended<'_>,
) -> Result<(), sqlx::Error> {
    if requests.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE waiting_room.requests SET ended = $2 WHERE request_id = ANY($1) AND ended IS NULL",
    )
    .bind(requests.iter().map(RequestId::as_uuid).collect::<Vec<_>>())
    .bind(how.column())
    .execute(pool)
    .await?;
    Ok(())
}

/// A request no worker decided, as journaled: still waiting, or ended in the line.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Undecided {
    pub request_id: RequestId,
    pub fan_id: UserId,
    pub queue_number: Option<i32>,
    pub ask: serde_json::Value,
    /// `cancelled` or `rejected:<reason>` when it ended in the line.
    pub ended: Option<String>,
}

/// The event's requests no worker decided, numbered ones in queue order, then the
/// pre-queue.
pub async fn undecided(pool: &PgPool, event_id: EventId) -> Result<Vec<Undecided>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.request_id, r.fan_id, r.queue_number, r.ask, r.ended
         FROM waiting_room.requests r
         LEFT JOIN booking.requests b USING (request_id)
         WHERE r.event_id = $1 AND b.request_id IS NULL
         ORDER BY r.queue_number NULLS LAST, r.joined_at",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
}
