//! The notification log, `notifier.notifications`: one row per envelope, the
//! notifier's memory of what it told whom. Owns every query on the `notifier`
//! schema (see the migration `20261130000005_notifier.sql` for the states).
//!
//! Rows move `sending` → `sent` | `dead`, or are born `skipped`. A final row
//! (`sent`, `skipped`, `dead`) is never changed again, whatever a redelivery does.

use chrono::{DateTime, Utc};
use proto::UserId;
use proto::wire::events::Envelope;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Sending,
    Sent,
    Skipped,
    Dead,
}

impl Status {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sending" => Status::Sending,
            "sent" => Status::Sent,
            "skipped" => Status::Skipped,
            "dead" => Status::Dead,
            _ => return None,
        })
    }

    /// Whether the envelope is dealt with for good.
    pub fn is_final(self) -> bool {
        self != Status::Sending
    }
}

/// A row as the notifier needs it back.
#[derive(Clone, Debug)]
pub struct Entry {
    pub status: Status,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

type EntryRow = (String, i32, DateTime<Utc>);

fn entry((status, attempts, created_at): EntryRow) -> Entry {
    Entry {
        // The CHECK constraint admits only the four states.
        status: Status::parse(&status).unwrap_or(Status::Sending),
        attempts,
        created_at,
    }
}

/// The Message-ID of an envelope's email, the same on every attempt so receivers
/// can recognise a resend.
pub fn message_id(envelope_id: Uuid) -> String {
    format!("<{envelope_id}@onsale>")
}

/// The Postgres advisory lock (two-key form, in its own key space) that serialises
/// attempts on one envelope across notifier processes: during a rebalance two
/// members can hold the same record for a while. Collisions only serialise.
pub fn lock_key(envelope_id: Uuid) -> (i32, i32) {
    const NOTIFIER: i32 = 0x6e6f_7469; // "noti"
    let (hi, lo) = envelope_id.as_u64_pair();
    let folded = hi ^ lo;
    (
        NOTIFIER,
        ((folded >> 32) ^ (folded & 0xffff_ffff)) as u32 as i32,
    )
}

pub async fn find(
    db: impl PgExecutor<'_>,
    envelope_id: Uuid,
) -> Result<Option<Entry>, sqlx::Error> {
    let row: Option<EntryRow> = sqlx::query_as(
        "SELECT status, attempts, created_at FROM notifier.notifications WHERE envelope_id = $1",
    )
    .bind(envelope_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(entry))
}

/// Records an envelope that needs no email; `false` if it already had a row.
pub async fn skip(
    pool: &PgPool,
    envelope: &Envelope,
    fan_id: Option<UserId>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifier.notifications
             (envelope_id, event_id, request_id, fan_id, kind, status, occurred_at)
         VALUES ($1, $2, $3, $4, $5, 'skipped', $6)
         ON CONFLICT (envelope_id) DO NOTHING",
    )
    .bind(envelope.id)
    .bind(envelope.event_id)
    .bind(envelope.request_id)
    .bind(fan_id)
    .bind(&envelope.kind)
    .bind(envelope.occurred_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Marks an attempt as under way, committed before the SMTP conversation starts:
/// a crash after the server accepted the message then leaves a `sending` row
/// instead of nothing. Returns the row with its attempt counted; `None` if the
/// envelope already has a final row.
pub async fn claim(
    pool: &PgPool,
    envelope: &Envelope,
    fan_id: UserId,
    recipient: &str,
    subject: &str,
) -> Result<Option<Entry>, sqlx::Error> {
    let row: Option<EntryRow> = sqlx::query_as(
        "INSERT INTO notifier.notifications
             (envelope_id, event_id, request_id, fan_id, kind, recipient, subject, message_id,
              status, attempts, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'sending', 1, $9)
         ON CONFLICT (envelope_id) DO UPDATE
             SET attempts = notifications.attempts + 1, recipient = EXCLUDED.recipient,
                 subject = EXCLUDED.subject, updated_at = now()
             WHERE notifications.status = 'sending'
         RETURNING status, attempts, created_at",
    )
    .bind(envelope.id)
    .bind(envelope.event_id)
    .bind(envelope.request_id)
    .bind(fan_id)
    .bind(&envelope.kind)
    .bind(recipient)
    .bind(subject)
    .bind(message_id(envelope.id))
    .bind(envelope.occurred_at)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(entry))
}

pub async fn mark_sent(
    pool: &PgPool,
    envelope_id: Uuid,
    sent_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifier.notifications
         SET status = 'sent', sent_at = $2, last_error = NULL, updated_at = now()
         WHERE envelope_id = $1 AND status = 'sending'",
    )
    .bind(envelope_id)
    .bind(sent_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Notes why an attempt failed; the row stays `sending` for the next one.
pub async fn note_failure(
    pool: &PgPool,
    envelope_id: Uuid,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifier.notifications SET last_error = $2, updated_at = now()
         WHERE envelope_id = $1 AND status = 'sending'",
    )
    .bind(envelope_id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes the envelope off (the dead letter), unless it already has a final row.
pub async fn bury(
    pool: &PgPool,
    envelope: &Envelope,
    fan_id: Option<UserId>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifier.notifications
             (envelope_id, event_id, request_id, fan_id, kind, message_id, status, attempts,
              last_error, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'dead', 0, $7, $8)
         ON CONFLICT (envelope_id) DO UPDATE
             SET status = 'dead', last_error = EXCLUDED.last_error, updated_at = now()
             WHERE notifications.status = 'sending'",
    )
    .bind(envelope.id)
    .bind(envelope.event_id)
    .bind(envelope.request_id)
    .bind(fan_id)
    .bind(&envelope.kind)
    .bind(message_id(envelope.id))
    .bind(error)
    .bind(envelope.occurred_at)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_and_lock_keys_are_stable_per_envelope() {
        let id = Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
        assert_eq!(
            message_id(id),
            "<0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@onsale>"
        );
        assert_eq!(lock_key(id), lock_key(id));
        assert_ne!(lock_key(id), lock_key(Uuid::now_v7()));
        assert!(Status::Dead.is_final() && !Status::Sending.is_final());
    }
}
