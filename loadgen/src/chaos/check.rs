//! The checker: reads the history, Redis and Postgres after a chaos run and proves
//! the hot path's promises over the whole history, not at one chosen moment.
//!
//! - no seat held or sold twice: in the ledger's record of every hold (its seats from
//!   when it was decided to when it ended), and in what fans saw (two requests seen
//!   held, with a seat in common, over overlapping stretches of time);
//! - every accepted request reached a terminal state;
//! - queue numbers unique and gap-free over every request of the event;
//! - no fairness inversion: an earlier request refused for want of seats while a
//!   later one with the same ask got seats (unless a refund gave seats back between
//!   the two decisions);
//! - Redis equal to Postgres, seat for seat and request for request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::fans::Op;

/// What the checker found; a run is green when `violations` is empty.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub operations: BTreeMap<String, usize>,
    pub accepted: usize,
    pub final_states: BTreeMap<String, usize>,
    pub holds: usize,
    pub doubles: usize,
    pub stranded: usize,
    pub inversions: usize,
    pub number_problems: usize,
    pub redis_postgres_diffs: usize,
    pub violations: Vec<String>,
}

impl Findings {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }
}

/// A request as the ledger has it.
#[derive(sqlx::FromRow)]
struct LedgerRequest {
    request_id: RequestId,
    queue_number: Option<i32>,
    state: String,
    seats: Vec<String>,
    reason: Option<String>,
    decided_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// When the line decided it (the ledger's `decided_at` is when it got the write).
    line_decided_at: DateTime<Utc>,
}

/// A hold in the ledger: from its decision to its end, and whose.
type LedgerSpan = (DateTime<Utc>, DateTime<Utc>, RequestId);

/// Every key matching `pattern` (SCAN, so Redis is never blocked).
async fn scan(redis: &mut Redis, pattern: &str) -> anyhow::Result<Vec<String>> {
    Ok(redis.scan_everywhere(pattern).await?)
}

/// A request as Redis has it.
struct LiveRequest {
    state: String,
    number: Option<u64>,
}

async fn live_requests(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> anyhow::Result<HashMap<RequestId, LiveRequest>> {
    let prefix = keys.request_named(event_id, "");
    let pattern = format!("{}*", prefix.replace('{', "\\{").replace('}', "\\}"));
    let names = scan(redis, &pattern).await?;
    let mut live = HashMap::new();
    for chunk in names.chunks(500) {
        let mut pipe = redis::pipe();
        for name in chunk {
            pipe.cmd("HMGET").arg(name).arg(&["state", "number"]);
        }
        let rows: Vec<(Option<String>, Option<u64>)> = pipe.query_async(redis).await?;
        for (name, (state, number)) in chunk.iter().zip(rows) {
            let Some(id) = name.strip_prefix(&prefix).and_then(|id| id.parse().ok()) else {
                continue;
            };
            live.insert(
                id,
                LiveRequest {
                    state: state.unwrap_or_default(),
                    number,
                },
            );
        }
    }
    Ok(live)
}

/// The normalized ask of a join body, so equal asks compare equal.
fn ask_key(ask: &Value) -> String {
    let mut fields: Vec<(String, String)> = ask
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    fields.sort();
    format!("{fields:?}")
}

pub async fn check(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    ops: &[Op],
) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();
    for op in ops {
        let kind = match (op.kind, op.status) {
            (kind, 0) => format!("{kind}: no answer"),
            (kind, status) => format!("{kind}: {status}"),
        };
        *findings.operations.entry(kind).or_default() += 1;
    }

    // Accepted requests and their asks, from the history.
    let mut asks: HashMap<RequestId, String> = HashMap::new();
    for op in ops
        .iter()
        .filter(|op| op.kind == "join" && op.status == 202)
    {
        if let Some(id) = op.body["request_id"].as_str().and_then(|r| r.parse().ok()) {
            asks.insert(id, op.ask.as_ref().map(ask_key).unwrap_or_default());
        }
    }
    findings.accepted = asks.len();

    let ledger: Vec<LedgerRequest> = sqlx::query_as(
        "SELECT request_id, queue_number, state, seats, reason, decided_at, updated_at,
                coalesce(line_decided_at, decided_at) AS line_decided_at
         FROM booking.requests WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let ledger_by_id: HashMap<RequestId, &LedgerRequest> =
        ledger.iter().map(|r| (r.request_id, r)).collect();
    let live = live_requests(redis, keys, event_id).await?;

    // Every accepted request ended, in Redis, and the ledger agrees.
    for id in asks.keys() {
        let state = live.get(id).map(|l| l.state.as_str()).unwrap_or("missing");
        *findings.final_states.entry(state.to_owned()).or_default() += 1;
        let ended = RequestState::parse(state).is_some_and(RequestState::is_terminal);
        if !ended {
            findings.stranded += 1;
            findings.violation(format!("request {id} is {state}, not terminal"));
        }
    }
    for row in &ledger {
        let in_redis = live.get(&row.request_id).map(|l| l.state.as_str());
        if in_redis != Some(row.state.as_str()) {
            findings.redis_postgres_diffs += 1;
            findings.violation(format!(
                "request {}: ledger {} but redis {in_redis:?}",
                row.request_id, row.state
            ));
        }
    }
    let seat_diff = inventory::seatmap::diff_against_ledger(pool, redis, keys, event_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for diff in &seat_diff {
        findings.redis_postgres_diffs += 1;
        findings.violation(format!(
            "seat {}: redis {:?}, ledger {:?}",
            diff.seat_id, diff.redis, diff.ledger
        ));
    }

    // No seat held twice, by the ledger's record of each hold.
    let far = DateTime::<Utc>::MAX_UTC;
    let mut by_seat: BTreeMap<&str, Vec<LedgerSpan>> = BTreeMap::new();
    for row in &ledger {
        let held_once = matches!(
            row.state.as_str(),
            "held" | "paying" | "confirmed" | "expired" | "released"
        );
        if !held_once {
            continue;
        }
        findings.holds += 1;
        let end = if matches!(row.state.as_str(), "expired" | "released") {
            row.updated_at
        } else {
            far
        };
        for seat in &row.seats {
            by_seat
                .entry(seat.as_str())
                .or_default()
                .push((row.decided_at, end, row.request_id));
        }
    }
    for (seat, mut spans) in by_seat {
        spans.sort();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                findings.doubles += 1;
                findings.violation(format!(
                    "seat {seat} held by {} until {} and by {} from {}",
                    pair[0].2, pair[0].1, pair[1].2, pair[1].0
                ));
            }
        }
    }
    // ... and by what fans saw: a request is surely held between the end of its first
    // "held" answer and the start of its last.
    let mut seen: HashMap<RequestId, (u64, u64, Vec<String>)> = HashMap::new();
    for op in ops
        .iter()
        .filter(|op| op.kind == "status" && op.status == 200)
    {
        if op.body["state"] != "held" {
            continue;
        }
        let (Some(id), Some(seats)) = (op.request, op.body["seats"].as_array()) else {
            continue;
        };
        let seats: Vec<String> = seats
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        let entry = seen
            .entry(id)
            .or_insert((op.completed_ms, op.invoked_ms, seats));
        entry.0 = entry.0.min(op.completed_ms);
        entry.1 = entry.1.max(op.invoked_ms);
    }
    let mut observed: BTreeMap<String, Vec<(u64, u64, RequestId)>> = BTreeMap::new();
    for (id, (from, to, seats)) in &seen {
        if from < to {
            for seat in seats {
                observed
                    .entry(seat.clone())
                    .or_default()
                    .push((*from, *to, *id));
            }
        }
    }
    for (seat, mut spans) in observed {
        spans.sort();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 && pair[0].2 != pair[1].2 {
                findings.doubles += 1;
                findings.violation(format!(
                    "seat {seat} seen held by {} and by {} at once ({}..{} ms and {}..{} ms)",
                    pair[0].2, pair[1].2, pair[0].0, pair[0].1, pair[1].0, pair[1].1
                ));
            }
        }
    }

    // Queue numbers: unique and gap-free over every request of the event.
    let mut numbers: BTreeMap<u64, RequestId> = BTreeMap::new();
    for (id, request) in &live {
        if let Some(number) = request.number
            && let Some(other) = numbers.insert(number, *id)
        {
            findings.number_problems += 1;
            findings.violation(format!("queue number {number} given to {other} and {id}"));
        }
    }
    let highest = numbers.keys().next_back().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=highest).filter(|n| !numbers.contains_key(n)).collect();
    if !missing.is_empty() {
        findings.number_problems += missing.len();
        findings.violation(format!(
            "queue numbers never given: {:?}",
            &missing[..missing.len().min(10)]
        ));
    }
    for id in asks.keys() {
        if live.get(id).and_then(|l| l.number).is_none() {
            findings.number_problems += 1;
            findings.violation(format!("accepted request {id} has no queue number"));
        }
    }

    // Fairness: same ask, earlier number, refused for want of seats, while a later
    // one got seats.
    let mut by_ask: HashMap<&str, Vec<(i32, &LedgerRequest)>> = HashMap::new();
    for row in &ledger {
        if let (Some(ask), Some(number)) = (asks.get(&row.request_id), row.queue_number) {
            by_ask.entry(ask.as_str()).or_default().push((number, row));
        }
    }
    let short_of_seats = |row: &LedgerRequest| {
        row.state == "rejected"
            && matches!(
                row.reason.as_deref(),
                Some("sold_out" | "no_adjacent_seats" | "seat_unavailable")
            )
    };
    let got_seats = |row: &LedgerRequest| {
        matches!(
            row.state.as_str(),
            "held" | "paying" | "confirmed" | "expired" | "released"
        )
    };
    // A refund gives sold seats back: a request decided after they were back on sale
    // may get seats an earlier, refused one could not have had. A decision's time is
    // the line's (`line_decided_at`, the clock its hold script was given), not when
    // the ledger got it: after a Postgres outage the drainer's writes land seconds
    // late, and a refusal written after a refund it preceded would read as one that
    // followed it. (The holds' spans above stay in the ledger's clock, start and end
    // alike: an end is written when the ledger hears of it too.)
    // Its seats came back at some moment between its approval and when the refund
    // found them free in Redis (a restore may have freed them first).
    let refunds: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT created_at, coalesce(seats_released_at, now()) FROM payments.refunds
         WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let refund_between = |from: DateTime<Utc>, to: DateTime<Utc>| {
        refunds
            .iter()
            .any(|(approved, back)| *approved <= to && from <= *back)
    };
    for (ask, mut rows) in by_ask {
        rows.sort_by_key(|(number, _)| *number);
        let mut first_refused: Option<(i32, RequestId, DateTime<Utc>)> = None;
        for (number, row) in rows {
            if let Some((earlier, refused, refused_at)) = first_refused
                && got_seats(row)
                && !refund_between(refused_at, row.line_decided_at)
            {
                findings.inversions += 1;
                findings.violation(format!(
                    "fairness: #{earlier} ({refused}) was refused {ask} but #{number} ({}) got seats",
                    row.request_id
                ));
            }
            if first_refused.is_none() && short_of_seats(row) {
                first_refused = Some((number, row.request_id, row.line_decided_at));
            }
        }
    }
    let _ = ledger_by_id;
    Ok(findings)
}

/// The event's keys in Redis and their memory, for the bound on what a finished
/// sale leaves behind.
pub async fn footprint(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> anyhow::Result<(usize, u64)> {
    let tag = Keys::event_tag(event_id);
    let pattern = format!(
        "{}:{}*",
        keys.prefix(),
        tag.replace('{', "\\{").replace('}', "\\}")
    );
    let names: BTreeSet<String> = scan(redis, &pattern).await?.into_iter().collect();
    let mut bytes = 0;
    for chunk in names.iter().collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for name in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(*name);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(redis).await?;
        bytes += sizes.into_iter().flatten().sum::<u64>();
    }
    Ok((names.len(), bytes))
}
