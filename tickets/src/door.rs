//! The door: scans in, answers out. A ticket admits once per entry whatever races,
//! retries or outages happen:
//!
//! 1. the code's signature and event are checked (no ledger read for a forgery);
//! 2. one read gives the ticket's version and state, the ledger's last entry of it,
//!    and any earlier answer to this `scan_id` (a retry gets that answer again);
//! 3. `redeem.lua` decides atomically in Redis: two scanners racing on one ticket
//!    are serialized there, and the loser is told who came first;
//! 4. the entry goes to `tickets.entries`, whose primary key (ticket, entry number)
//!    refuses a second admission should Redis have lost its word, with the scan's
//!    answer, in one statement.
//!
//! Offline scans (decided by a device without the network) are folded in the same
//! way, in the order they were scanned; one that admitted a ticket the server finds
//! already in, or void, is recorded as a conflict: offline double entry across
//! disconnected scanners is detected, not prevented.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::tickets::{Direction, Scan, ScanOutcome, ScanResult, TicketClaims};
use proto::{EventId, Keys, TicketId, UserId};
use sqlx::PgPool;

use crate::code::{self, CodeError};
use crate::keys::KeyRing;

/// Scans one call may carry (an offline device uploads in batches of this size):
/// 100 real codes are about 45 KiB, inside the gateway's 64 KiB body limit.
pub const MAX_SCANS: usize = 100;
/// Longest device name.
pub const MAX_DEVICE_ID: usize = 64;
/// How far outside its window a code still admits (scanner clocks drift).
const LEEWAY_SECONDS: i64 = 300;

/// What the door's work needs; every field is a cheap clone.
#[derive(Clone)]
pub struct Door {
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
    pub ring: Arc<KeyRing>,
}

#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// An admission raced a concurrent scan's in the ledger: nothing was stored.
    #[error("scan {0} raced another for its entry; send it again")]
    Raced(uuid::Uuid),
    #[error("unexpected: {0}")]
    Unexpected(String),
}

/// What the ledger knows of a scanned ticket, and of the scan.
#[derive(sqlx::FromRow)]
struct Known {
    version: Option<i32>,
    state: Option<String>,
    seat_id: Option<String>,
    last_entry: Option<i32>,
    exited: Option<bool>,
    previous: Option<sqlx::types::Json<ScanResult>>,
}

fn refused(scan: &Scan, result: ScanOutcome, reason: impl Into<String>) -> ScanResult {
    ScanResult {
        scan_id: scan.scan_id,
        result,
        ticket_id: None,
        seat_id: None,
        first_admitted_at: None,
        first_device_id: None,
        reason: Some(reason.into()),
        conflict: false,
    }
}

impl Door {
    /// Answers `scans` (made at `event`'s door by `staff`) in order; offline scans
    /// are folded in in the order they were scanned.
    pub async fn scan(
        &self,
        event: EventId,
        staff: UserId,
        scans: Vec<Scan>,
    ) -> Result<Vec<ScanResult>, DoorError> {
        // Online scans are answered first, in the order sent; offline ones (a
        // device's backlog) after them, by when they were made, then by id: the
        // same upload folds the same way every time.
        let mut order: Vec<usize> = (0..scans.len()).collect();
        order.sort_by_key(|&i| {
            let scan = &scans[i];
            if scan.offline {
                (1, scan.scanned_at, scan.scan_id, 0)
            } else {
                (0, DateTime::<Utc>::MIN_UTC, uuid::Uuid::nil(), i)
            }
        });
        let scans: Vec<Scan> = order.into_iter().map(|i| scans[i].clone()).collect();
        let mut results = Vec::with_capacity(scans.len());
        for scan in &scans {
            results.push(self.one(event, staff, scan).await?);
        }
        Ok(results)
    }

    /// The code's claims, or the refusal it earns; a key that cannot be read is an
    /// error (the scan is answered 503 and sent again), never a stored refusal.
    async fn verify(
        &self,
        event: EventId,
        scan: &Scan,
    ) -> Result<Result<TicketClaims, ScanResult>, DoorError> {
        let parsed = match code::parse(&scan.code) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Err(refused(scan, ScanOutcome::Invalid, e.to_string()))),
        };
        let Some(verifier) = self.ring.verifier(&self.pool, &parsed.kid).await? else {
            return Ok(Err(refused(
                scan,
                ScanOutcome::Invalid,
                CodeError::UnknownKey.to_string(),
            )));
        };
        Ok(Self::check_claims(event, scan, &parsed, &verifier))
    }

    fn check_claims(
        event: EventId,
        scan: &Scan,
        parsed: &code::Parsed<'_>,
        verifier: &crate::keys::Verifier,
    ) -> Result<TicketClaims, ScanResult> {
        let claims = parsed
            .verify(&verifier.key)
            .map_err(|e| refused(scan, ScanOutcome::Invalid, e.to_string()))?;
        if claims.ev != event || verifier.event_id != event {
            let mut result = refused(scan, ScanOutcome::WrongEvent, "a ticket for another event");
            result.ticket_id = Some(claims.tid);
            result.seat_id = Some(claims.seat);
            return Err(result);
        }
        let at = scan.scanned_at.timestamp();
        if at + LEEWAY_SECONDS < claims.nbf {
            return Err(refused(scan, ScanOutcome::Invalid, "not valid yet"));
        }
        if at - LEEWAY_SECONDS > claims.exp {
            return Err(refused(scan, ScanOutcome::Invalid, "expired"));
        }
        Ok(claims)
    }

    async fn one(
        &self,
        event: EventId,
        staff: UserId,
        scan: &Scan,
    ) -> Result<ScanResult, DoorError> {
        let claims = match self.verify(event, scan).await? {
            Ok(claims) => Some(claims),
            Err(refusal) => {
                // A refused code is recorded too (who tried what, where), once.
                return self.record(event, staff, scan, None, refusal, None).await;
            }
        };
        let ticket = claims.as_ref().map(|c| c.tid);
        let known: Known = sqlx::query_as(
            "SELECT t.version, t.state, t.seat_id, e.entry_no AS last_entry,
                    e.exited_at IS NOT NULL AS exited,
                    (SELECT answer FROM tickets.scans WHERE scan_id = $2) AS previous
             FROM (SELECT 1) one
             LEFT JOIN tickets.tickets t ON t.ticket_id = $1
             LEFT JOIN LATERAL (
                 SELECT entry_no, exited_at FROM tickets.entries
                 WHERE ticket_id = t.ticket_id ORDER BY entry_no DESC LIMIT 1
             ) e ON true",
        )
        .bind(ticket)
        .bind(scan.scan_id)
        .fetch_one(&self.pool)
        .await?;
        if let Some(previous) = known.previous {
            return self.seen_again(scan, previous.0).await;
        }
        let claims = claims.expect("verified above");
        let (Some(version), Some(state), Some(seat_id)) =
            (known.version, known.state, known.seat_id)
        else {
            let refusal = refused(scan, ScanOutcome::Invalid, "no such ticket");
            return self.record(event, staff, scan, None, refusal, None).await;
        };
        let mut answer = ScanResult {
            scan_id: scan.scan_id,
            result: ScanOutcome::Admitted,
            ticket_id: Some(claims.tid),
            seat_id: Some(seat_id),
            first_admitted_at: None,
            first_device_id: None,
            reason: None,
            conflict: false,
        };
        if state == "void" || claims.v != version {
            answer.result = ScanOutcome::Void;
            answer.reason = Some(if state == "void" {
                "void: this ticket was refunded or cancelled".into()
            } else {
                "reissued: this is an older copy of the ticket".into()
            });
            if scan.offline && scan.direction == Direction::Entry {
                answer.conflict = true;
            }
            return self
                .record(event, staff, scan, Some(claims.tid), answer, None)
                .await;
        }
        let ledger = match (known.last_entry, known.exited) {
            (Some(n), Some(true)) => format!("out|{n}"),
            (Some(n), _) => format!("in|{n}"),
            _ => "none".to_owned(),
        };
        // Online, the server's clock says when; offline, only the device knows.
        // Kept to the millisecond, as Redis keeps it.
        let at = if scan.offline {
            scan.scanned_at
        } else {
            Utc::now()
        };
        let at = DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
        let mut redis = self.redis.clone();
        let (outcome, entry_no, _first_scan, first_ms, first_device): (
            String,
            i32,
            String,
            i64,
            String,
        ) = proto::scripts::redeem(
            &self.keys,
            event,
            claims.tid,
            scan.direction,
            scan.scan_id,
            at.timestamp_millis(),
            &scan.device_id,
            &ledger,
        )
        .invoke_async(&mut redis)
        .await?;
        let outcome = ScanOutcome::parse(&outcome)
            .ok_or_else(|| DoorError::Unexpected(format!("redeem.lua answered {outcome}")))?;
        answer.result = outcome;
        let entry = Entry {
            entry_no,
            at: DateTime::from_timestamp_millis(first_ms).unwrap_or(at),
        };
        match outcome {
            ScanOutcome::AlreadyIn => {
                let (first_device, first_at) = if first_device.is_empty() {
                    // Redis took the ledger's word (it had lost its own): the
                    // ledger says who came in.
                    let first: Option<(String, DateTime<Utc>)> = sqlx::query_as(
                        "SELECT device_id, admitted_at FROM tickets.entries
                         WHERE ticket_id = $1 AND entry_no = $2",
                    )
                    .bind(claims.tid)
                    .bind(entry_no)
                    .fetch_optional(&self.pool)
                    .await?;
                    first.unwrap_or((first_device, entry.at))
                } else {
                    (first_device, entry.at)
                };
                answer.first_admitted_at = Some(first_at);
                answer.first_device_id = Some(first_device);
                answer.reason = Some("already in".into());
                answer.conflict = scan.offline;
                self.record(event, staff, scan, Some(claims.tid), answer, None)
                    .await
            }
            ScanOutcome::Admitted => {
                answer.first_admitted_at = Some(entry.at);
                answer.first_device_id = Some(first_device);
                self.record(event, staff, scan, Some(claims.tid), answer, Some(entry))
                    .await
            }
            ScanOutcome::Exited => {
                self.record(event, staff, scan, Some(claims.tid), answer, Some(entry))
                    .await
            }
            _ => {
                answer.reason = Some("not in: this ticket has not come in".into());
                self.record(event, staff, scan, Some(claims.tid), answer, None)
                    .await
            }
        }
    }

    /// A scan answered before. Sent again as an offline scan (the device asked
    /// online, got no answer in time and decided by itself), an entry the server had
    /// refused was let in on the device: the stored answer becomes a conflict.
    async fn seen_again(&self, scan: &Scan, previous: ScanResult) -> Result<ScanResult, DoorError> {
        let refused_entry = matches!(previous.result, ScanOutcome::AlreadyIn | ScanOutcome::Void);
        if !(scan.offline
            && scan.direction == Direction::Entry
            && refused_entry
            && !previous.conflict)
        {
            return Ok(previous);
        }
        let kind = if previous.result == ScanOutcome::Void {
            "void"
        } else {
            "double_entry"
        };
        let updated: Option<sqlx::types::Json<ScanResult>> = sqlx::query_scalar(
            "UPDATE tickets.scans
             SET conflict = $2, offline = true, answer = jsonb_set(answer, '{conflict}', 'true')
             WHERE scan_id = $1 AND conflict IS NULL
             RETURNING answer",
        )
        .bind(scan.scan_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        tracing::warn!(scan_id = %scan.scan_id, result = previous.result.as_str(),
            "a scan refused online was let in offline by its device");
        Ok(updated.map_or(previous, |answer| answer.0))
    }

    /// Writes the scan's answer, and the admission or exit it made, in one
    /// statement (atomic without a transaction of its own). The entry's primary key
    /// has the last word: an admission the ledger already has under another scan
    /// (Redis lost its word) is stored, and answered, as `already_in`. A re-entry
    /// closes an earlier entry whose exit never reached the ledger (Redis saw it).
    async fn record(
        &self,
        event: EventId,
        staff: UserId,
        scan: &Scan,
        ticket: Option<TicketId>,
        answer: ScanResult,
        entry: Option<Entry>,
    ) -> Result<ScanResult, DoorError> {
        let admits = entry.is_some() && answer.result == ScanOutcome::Admitted;
        let exits = entry.is_some() && answer.result == ScanOutcome::Exited;
        let (entry_no, at) = entry
            .as_ref()
            .map_or((0, scan.scanned_at), |e| (e.entry_no, e.at));
        let stored: Option<sqlx::types::Json<ScanResult>> = sqlx::query_scalar(
            "WITH live AS (
                 -- A ticket voided by a refund since it was read admits nobody: the
                 -- lock waits for the refund's transaction and reads its outcome.
                 SELECT 1 FROM tickets.tickets
                 WHERE $12 AND ticket_id = $3 AND state = 'valid' FOR SHARE
             ),
             new_entry AS (
                 INSERT INTO tickets.entries (ticket_id, entry_no, event_id, scan_id, device_id,
                                              admitted_at)
                 SELECT $3, $10, $2, $1, $5, $11 WHERE $12 AND EXISTS (SELECT 1 FROM live)
                 ON CONFLICT DO NOTHING
                 RETURNING scan_id, device_id, admitted_at
             ),
             first_entry AS (
                 SELECT scan_id, device_id, admitted_at FROM new_entry
                 UNION ALL
                 SELECT scan_id, device_id, admitted_at FROM tickets.entries
                 WHERE $12 AND ticket_id = $3 AND entry_no = $10
                   AND NOT EXISTS (SELECT 1 FROM new_entry)
             ),
             closed AS (
                 UPDATE tickets.entries SET exited_at = $11
                 WHERE $12 AND ticket_id = $3 AND entry_no < $10 AND exited_at IS NULL
                   AND EXISTS (SELECT 1 FROM new_entry)
                 RETURNING 1
             ),
             exited AS (
                 UPDATE tickets.entries SET exited_at = $11, exit_scan_id = $1, exit_device_id = $5
                 WHERE $13 AND ticket_id = $3 AND entry_no = $10 AND exited_at IS NULL
                 RETURNING 1
             ),
             decided AS (
                 SELECT CASE
                     WHEN f.scan_id IS NULL OR f.scan_id = $1 THEN $9::jsonb
                     ELSE $9::jsonb || jsonb_build_object(
                         'result', 'already_in', 'first_device_id', f.device_id,
                         'first_admitted_at', f.admitted_at, 'reason', 'already in',
                         'conflict', $7)
                 END AS answer
                 FROM (SELECT 1) one LEFT JOIN first_entry f ON true
                 -- An admission whose entry was taken by a scan committed after this
                 -- statement began, or whose ticket a refund voided meanwhile, cannot
                 -- be told apart here: nothing is stored, and the scan is answered 503
                 -- and sent again (it then reads the ticket's new state).
                 WHERE (NOT $12 OR f.scan_id IS NOT NULL)
                 -- An exit Redis decided after an admission whose ledger write has not
                 -- landed yet (two scanners, one ticket, moments apart): the entry it
                 -- closes is not here to close. Nothing is stored, the exit is answered
                 -- 503 and sent again, and finds the entry then; answering it now would
                 -- leave the entry open in the ledger and closed in Redis.
                   AND (NOT $13 OR EXISTS (
                       SELECT 1 FROM tickets.entries WHERE ticket_id = $3 AND entry_no = $10))
             ),
             stored AS (
                 INSERT INTO tickets.scans (scan_id, event_id, ticket_id, direction, result,
                                            device_id, scanned_at, offline, staff_id, conflict,
                                            answer)
                 SELECT $1, $2, $3, $4, d.answer->>'result', $5, $6, $7, $8,
                        CASE WHEN (d.answer->>'conflict')::boolean
                             THEN CASE WHEN d.answer->>'result' = 'void' THEN 'void'
                                       ELSE 'double_entry' END
                        END,
                        d.answer
                 FROM decided d
                 ON CONFLICT (scan_id) DO NOTHING
                 RETURNING answer
             )
             SELECT answer FROM stored
             UNION ALL
             SELECT answer FROM tickets.scans
             WHERE scan_id = $1 AND NOT EXISTS (SELECT 1 FROM stored)",
        )
        .bind(scan.scan_id)
        .bind(event)
        .bind(ticket)
        .bind(scan.direction.as_str())
        .bind(&scan.device_id)
        .bind(scan.scanned_at)
        .bind(scan.offline)
        .bind(staff)
        .bind(sqlx::types::Json(&answer))
        .bind(entry_no)
        .bind(at)
        .bind(admits)
        .bind(exits)
        .fetch_optional(&self.pool)
        .await?;
        let Some(stored) = stored else {
            return Err(DoorError::Raced(scan.scan_id));
        };
        let stored = stored.0;
        if admits && stored.scan_id == scan.scan_id && stored.result == ScanOutcome::AlreadyIn {
            tracing::warn!(ticket_id = ?ticket, entry_no,
                "the door's Redis admitted an entry the ledger already has; refused");
        }
        metrics::counter!("onsale_scans_total", "result" => stored.result.as_str(), "offline" => if scan.offline { "true" } else { "false" })
            .increment(1);
        if stored.conflict && stored.scan_id == scan.scan_id {
            tracing::warn!(scan_id = %scan.scan_id, ticket_id = ?ticket, device_id = scan.device_id,
                result = stored.result.as_str(), "an offline scan admitted a ticket that was already in or void");
        }
        Ok(stored)
    }
}

struct Entry {
    entry_no: i32,
    at: DateTime<Utc>,
}
