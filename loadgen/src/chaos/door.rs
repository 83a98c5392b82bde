//! The door under the same faults: scanners race on a few tickets (entries and
//! exits, through the gateway), retry every scan that got no answer with the same
//! `scan_id`, and every call and answer goes into the history. [`check`] then
//! proves, over the history and the ledger and Redis, that no ticket was admitted
//! twice and that every scan kept its first answer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proto::wire::tickets::Ticket;
use proto::{EventId, RequestId, TicketId, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::fans::{History, Op};
use crate::setup::Stack;

/// The history's `fan` of a scanner: scanners are numbered after the fans.
const SCANNER_BASE: usize = 1_000_000;

/// Issues the presold seats' tickets, as a paid order of their buyer.
pub async fn issue(
    stack: &Stack,
    event_id: EventId,
    buyer: RequestId,
    fan: UserId,
    seats: &[String],
) -> anyhow::Result<Vec<Ticket>> {
    let ring = tickets::KeyRing::new();
    let signer = ring.signer(&stack.pool, event_id).await?;
    crate::setup::paid_tickets(&stack.pool, &signer, event_id, buyer, fan, seats).await
}

/// What every scanner needs.
#[derive(Clone)]
pub struct Door {
    pub client: reqwest::Client,
    pub base: String,
    pub event_id: EventId,
    pub history: History,
    pub tickets: Vec<Ticket>,
    /// When scanners stop starting new scans (they finish the one in hand).
    pub stop: CancellationToken,
}

/// One scanner: scans a random ticket of the few, in or out, until told to stop;
/// a scan without an answer (or a 5xx) is sent again, same `scan_id`, until it has
/// one, so that the history holds every scan's final answer.
pub async fn scanner(door: Door, index: usize, token: String, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = format!("Gate {index}");
    while !door.stop.is_cancelled() {
        let ticket = &door.tickets[rng.random_range(0..door.tickets.len())];
        let direction = if rng.random_bool(0.7) {
            "entry"
        } else {
            "exit"
        };
        let scan = json!({
            "scan_id": uuid::Uuid::new_v4(),
            "code": ticket.code,
            "direction": direction,
            "scanned_at": chrono::Utc::now(),
            "device_id": device,
            "offline": false,
        });
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let invoked_ms = door.history.now_ms();
            let call = door
                .client
                .post(format!("{}/v1/events/{}/scans", door.base, door.event_id))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(5))
                .json(&json!({ "scans": [scan] }))
                .send()
                .await;
            let (status, body) = match call {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                }
                Err(error) => (0, json!({"transport": error.to_string()})),
            };
            door.history.record(Op {
                fan: SCANNER_BASE + index,
                kind: "scan",
                request: None,
                ask: Some(scan.clone()),
                invoked_ms,
                completed_ms: door.history.now_ms(),
                status,
                body,
            });
            if !(status == 0 || status == 429 || status >= 500) || attempts > 600 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
    }
}

/// What the door's check found.
#[derive(Debug, Default)]
pub struct DoorFindings {
    pub scans: usize,
    pub admitted: usize,
    pub results: BTreeMap<String, usize>,
    /// Tickets the ledger has inside twice at once, or admitted again without an
    /// exit between.
    pub doubles: usize,
    /// Scans whose answers differ between tries, or told `admitted` without the
    /// ledger having the entry.
    pub answer_problems: usize,
    /// Tickets whose door state differs between Redis and the ledger.
    pub redis_postgres_diffs: usize,
    pub violations: Vec<String>,
}

impl DoorFindings {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    ticket_id: TicketId,
    entry_no: i32,
    scan_id: uuid::Uuid,
    exit_scan_id: Option<uuid::Uuid>,
    open: bool,
}

/// Checks the door's history against the ledger and Redis.
pub async fn check(
    pool: &PgPool,
    redis: &mut platform::store::Redis,
    keys: &proto::Keys,
    event_id: EventId,
    ops: &[Op],
) -> anyhow::Result<DoorFindings> {
    let mut findings = DoorFindings::default();
    // Each scan's answers (those with a result), in the order they came back.
    let mut answers: HashMap<String, Vec<String>> = HashMap::new();
    for op in ops.iter().filter(|op| op.kind == "scan") {
        let Some(scan_id) = op.ask.as_ref().and_then(|a| a["scan_id"].as_str()) else {
            continue;
        };
        let entry = answers.entry(scan_id.to_owned()).or_default();
        if op.status == 200 {
            let result = op.body["results"][0]["result"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            entry.push(result);
        }
    }
    findings.scans = answers.len();
    let entries: Vec<EntryRow> = sqlx::query_as(
        "SELECT ticket_id, entry_no, scan_id, exit_scan_id, exited_at IS NULL AS open
         FROM tickets.entries WHERE event_id = $1 ORDER BY ticket_id, entry_no",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let entered: HashMap<String, &EntryRow> =
        entries.iter().map(|e| (e.scan_id.to_string(), e)).collect();
    for (scan_id, results) in &answers {
        let Some(first) = results.first() else {
            continue;
        };
        *findings.results.entry(first.clone()).or_default() += 1;
        if results.iter().any(|r| r != first) {
            findings.answer_problems += 1;
            findings.violation(format!("scan {scan_id} was answered {results:?}"));
        }
        if first == "admitted" {
            findings.admitted += 1;
            if !entered.contains_key(scan_id) {
                findings.answer_problems += 1;
                findings.violation(format!(
                    "scan {scan_id} was told admitted, and the ledger has no such entry"
                ));
            }
        }
    }

    // The ledger: per ticket, entries numbered 1, 2, ... and only the last open.
    let mut by_ticket: BTreeMap<TicketId, Vec<&EntryRow>> = BTreeMap::new();
    for entry in &entries {
        by_ticket.entry(entry.ticket_id).or_default().push(entry);
    }
    for (ticket, rows) in &by_ticket {
        let numbered = rows
            .iter()
            .enumerate()
            .all(|(i, row)| row.entry_no == i as i32 + 1);
        let open_early = rows[..rows.len() - 1].iter().any(|row| row.open);
        if !numbered || open_early {
            findings.doubles += 1;
            findings.violation(format!(
                "ticket {ticket}: entries {:?} (number, open)",
                rows.iter()
                    .map(|r| (r.entry_no, r.open))
                    .collect::<Vec<_>>()
            ));
        }
        // A re-entry's admission was told only after an exit was told.
        for pair in rows.windows(2) {
            let exit_told = pair[0].exit_scan_id.is_some_and(|exit| {
                answers
                    .get(&exit.to_string())
                    .is_some_and(|r| r.first().is_some_and(|r| r == "exited"))
            });
            let closed_by_reentry = pair[0].exit_scan_id.is_none();
            if !exit_told && !closed_by_reentry {
                findings.doubles += 1;
                findings.violation(format!(
                    "ticket {ticket}: entry {} recorded an exit no scanner was told",
                    pair[0].entry_no
                ));
            }
        }
    }

    // Redis: where it has a word on a ticket, the ledger's last entry agrees.
    let door: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.door(event_id))
        .query_async(redis)
        .await?;
    for (ticket, record) in &door {
        let mut parts = record.splitn(3, '|');
        let (state, n) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let ledger = ticket
            .parse::<TicketId>()
            .ok()
            .and_then(|t| by_ticket.get(&t))
            .and_then(|rows| rows.last())
            .map(|last| {
                (
                    if last.open { "in" } else { "out" },
                    last.entry_no.to_string(),
                )
            });
        let agrees = match &ledger {
            Some((l_state, l_n)) => *l_state == state && *l_n == n,
            None => false,
        };
        if !agrees {
            findings.redis_postgres_diffs += 1;
            findings.violation(format!(
                "ticket {ticket}: redis says {state}|{n}, the ledger {ledger:?}"
            ));
        }
    }
    Ok(findings)
}
