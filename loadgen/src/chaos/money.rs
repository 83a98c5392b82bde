//! The money path under the same faults: fans pay for their holds with every
//! sandbox card (paid, declined, pending and told later by webhook, paid but never
//! refundable), retry checkouts under the same key, ask for refunds of some or all
//! of their tickets; a scanner tries every refunded ticket at the door; at the end an
//! operator cancels the event, under a second round of faults in which a payments
//! instance is also killed mid-pass again and again ([`crashing_passes`]). Payments'
//! loops (sandbox webhooks, the reconciler, the refund loop) run in this process.
//! [`check`] then proves over the history,
//! Postgres and Redis: no order paid twice, none refunded more than it captured, no
//! seat released twice, no refunded ticket admitted, invoice and credit-note numbers
//! consecutive without gaps, every order of the cancelled event refunded once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::store::Redis;
use proto::{EventId, Keys, RequestId, TicketId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::fans::{History, Op};

/// The sandbox's cards, as fans pick them: mostly paid at once.
const CARDS: [&str; 6] = [
    payments::provider::CARD_PAID,
    payments::provider::CARD_PAID,
    payments::provider::CARD_PAID,
    payments::provider::CARD_DECLINED,
    payments::provider::CARD_PENDING,
    payments::provider::CARD_REFUND_FAILS,
];

/// The history's `fan` of the refunded-ticket scanner.
const SCANNER: usize = 2_000_000;

/// Refunded tickets' codes, for the scanner to try at the door.
#[derive(Clone, Default)]
pub struct Refunded(Arc<Mutex<Vec<(TicketId, String)>>>);

impl Refunded {
    fn push(&self, ticket: TicketId, code: String) {
        if let Ok(mut list) = self.0.lock() {
            list.push((ticket, code));
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Option<(TicketId, String)> {
        let list = self.0.lock().ok()?;
        (!list.is_empty()).then(|| list[rng.random_range(0..list.len())].clone())
    }
}

/// What a paying fan needs.
#[derive(Clone)]
pub struct Till {
    pub client: reqwest::Client,
    pub base: String,
    pub history: History,
    pub refunded: Refunded,
}

fn retryable(status: u16) -> bool {
    status == 0 || status == 429 || status >= 500
}

impl Till {
    async fn call(
        &self,
        fan: usize,
        kind: &'static str,
        request: Option<RequestId>,
        builder: reqwest::RequestBuilder,
        ask: Option<Value>,
    ) -> (u16, Value) {
        let invoked_ms = self.history.now_ms();
        let (status, body) = match builder.timeout(Duration::from_secs(10)).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
            Err(error) => (0, json!({"transport": error.to_string()})),
        };
        self.history.record(Op {
            fan,
            kind,
            request,
            ask,
            invoked_ms,
            completed_ms: self.history.now_ms(),
            status,
            body: body.clone(),
        });
        (status, body)
    }

    /// Pays for a held request with a random card, asked again under the same key
    /// until it has an answer; returns the order when one came back.
    pub async fn pay(
        &self,
        fan: usize,
        token: &str,
        request: RequestId,
        rng: &mut StdRng,
    ) -> Option<Value> {
        let card = CARDS[rng.random_range(0..CARDS.len())];
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"card_number": card, "expiry": "12/34", "cvc": "123"});
        for attempt in 0..20u64 {
            let builder = self
                .client
                .post(format!("{}/v1/requests/{request}/checkout", self.base))
                .bearer_auth(token)
                .header("idempotency-key", &key)
                .json(&body);
            let (status, answer) = self
                .call(
                    fan,
                    "checkout",
                    Some(request),
                    builder,
                    Some(json!({"card": card})),
                )
                .await;
            if status == 200 {
                return Some(answer);
            }
            if !retryable(status) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
        }
        None
    }

    /// Asks for a refund of a paid order (all its tickets, or the first), sometimes
    /// twice under one key; the refunded tickets go to the door's scanner.
    pub async fn refund(&self, fan: usize, token: &str, order: &Value, rng: &mut StdRng) {
        let Some(order_id) = order["order_id"].as_str() else {
            return;
        };
        let read = self
            .client
            .get(format!("{}/v1/orders/{order_id}", self.base))
            .bearer_auth(token);
        let (status, order) = self.call(fan, "order", None, read, None).await;
        if status != 200 {
            return;
        }
        let tickets: Vec<(TicketId, String)> = order["tickets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] == "valid")
            .filter_map(|t| {
                Some((
                    t["ticket_id"].as_str()?.parse().ok()?,
                    t["code"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let Some(first) = tickets.first() else {
            return;
        };
        let body = if rng.random_bool(0.5) {
            json!({})
        } else {
            json!({"ticket_ids": [first.0]})
        };
        let key = uuid::Uuid::new_v4().to_string();
        let times = if rng.random_bool(0.2) { 2 } else { 1 };
        for _ in 0..times {
            for attempt in 0..20u64 {
                let builder = self
                    .client
                    .post(format!("{}/v1/orders/{order_id}/refunds", self.base))
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .json(&body);
                let (status, answer) = self
                    .call(fan, "refund", None, builder, Some(body.clone()))
                    .await;
                if status == 202 {
                    for ticket in answer["ticket_ids"].as_array().into_iter().flatten() {
                        if let Some(found) = tickets
                            .iter()
                            .find(|(id, _)| ticket.as_str() == Some(&id.to_string()))
                        {
                            self.refunded.push(found.0, found.1.clone());
                        }
                    }
                }
                if !retryable(status) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
            }
        }
    }
}

/// Tries refunded tickets at the door (as an operator) until `stop`; every answer
/// goes into the history as `refunded_scan`.
pub async fn scanner(
    till: Till,
    event_id: EventId,
    token: String,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let Some((ticket, code)) = till.refunded.pick(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let scan = json!({
            "scan_id": uuid::Uuid::new_v4(), "code": code, "direction": "entry",
            "scanned_at": chrono::Utc::now(), "device_id": "Refund gate", "offline": false,
        });
        for _ in 0..100 {
            let builder = till
                .client
                .post(format!("{}/v1/events/{event_id}/scans", till.base))
                .bearer_auth(&token)
                .json(&json!({ "scans": [scan] }));
            let (status, _) = till
                .call(
                    SCANNER,
                    "refunded_scan",
                    None,
                    builder,
                    Some(json!({"ticket_id": ticket})),
                )
                .await;
            if !retryable(status) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
    }
}

/// Payments as the run's loops see it: the sandbox (webhooks back to `base`, a
/// second after the ask), the reconciler after 2 s, a paying grace of 2 s.
pub fn payments_of(
    pool: &PgPool,
    redis: &Redis,
    keys: &Keys,
    base: &str,
    secret: &str,
) -> anyhow::Result<payments::Payments> {
    let mut settings = payments::Settings::defaults();
    settings["webhook_secret"] = json!(secret);
    settings["sandbox_webhook_seconds"] = json!(1);
    settings["sandbox_webhook_url"] = json!(format!("{base}/v1/payments/webhook"));
    settings["reconcile_after_seconds"] = json!(2);
    settings["paying_grace_seconds"] = json!(2);
    let settings: payments::Settings = serde_json::from_value(settings)?;
    Ok(payments::Payments {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        provider: Arc::new(payments::Sandbox::new(
            pool.clone(),
            settings.sandbox_webhook_after(),
        )),
        settings: Arc::new(settings),
        ring: Arc::new(tickets::KeyRing::new()),
    })
}

/// Payments' loops in this process: the sandbox's webhooks, the reconciler, the
/// refund loop (and cancellations, and invoice PDFs).
pub fn spawn_loops(
    work: payments::Payments,
    stop: &CancellationToken,
) -> tokio_util::task::TaskTracker {
    let tracker = tokio_util::task::TaskTracker::new();
    payments::spawn_loops(&tracker, stop, work, None);
    tracker
}

/// A second payments instance that keeps dying: passes of the refund and
/// cancellation loops, each killed (its future dropped at whatever await it had
/// reached, as a process kill would leave it: open transactions roll back) after
/// 5 to 300 ms, and started again, until `stop`. Returns how many it killed.
pub async fn crashing_passes(
    work: payments::Payments,
    seed: u64,
    stop: CancellationToken,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut killed = 0;
    while !stop.is_cancelled() {
        let work = work.clone();
        let pass = tokio::spawn(async move {
            loop {
                let _ = payments::refunds::work(&work).await;
                let _ = payments::cancel::work(&work).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..300))).await;
        pass.abort();
        let _ = pass.await;
        killed += 1;
    }
    killed
}

/// Cancels the event through the gateway and waits (up to `bound`) until its
/// cancellation has finished and no refund's money is still on its way.
pub async fn cancel_and_settle(
    client: &reqwest::Client,
    base: &str,
    event_id: EventId,
    admin: &str,
    pool: &PgPool,
    bound: Duration,
) -> anyhow::Result<Option<f64>> {
    let started = std::time::Instant::now();
    loop {
        let answer = client
            .post(format!("{base}/v1/ops/events/{event_id}/cancel"))
            .bearer_auth(admin)
            .header("idempotency-key", format!("chaos-cancel-{event_id}"))
            .json(&json!({"reason": "the chaos run is over"}))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == 202 => break,
            Ok(r) if r.status().is_client_error() => {
                anyhow::bail!("cancelling the event answered {}", r.status())
            }
            _ if started.elapsed() > bound => anyhow::bail!("the event could not be cancelled"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    loop {
        // Postgres may be down for a moment (the faults go on meanwhile).
        let read: Result<(bool, i64), _> = sqlx::query_as(
            "SELECT coalesce((SELECT finished_at IS NOT NULL FROM payments.cancellations WHERE event_id = $1), false),
                    (SELECT count(*) FROM payments.refunds WHERE event_id = $1 AND state = 'pending')",
        )
        .bind(event_id)
        .fetch_one(pool)
        .await;
        if let Ok((true, 0)) = read {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > bound {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the money check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct MoneyFindings {
    pub checkouts: BTreeMap<String, usize>,
    pub orders: BTreeMap<String, usize>,
    pub refunds: BTreeMap<String, usize>,
    pub refunded_scans: BTreeMap<String, usize>,
    pub invoices: i64,
    pub credit_notes: i64,
    /// Refunds by how their money ended (`failed`: the card whose refunds fail).
    pub refund_states: BTreeMap<String, i64>,
    #[serde(skip)]
    pub violations: Vec<String>,
}

impl MoneyFindings {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }
}

fn count(map: &mut BTreeMap<String, usize>, key: String) {
    *map.entry(key).or_default() += 1;
}

/// Consecutive `1..=max` without gaps or repeats.
fn gapless(numbers: &[i64]) -> Result<(), String> {
    for (i, n) in numbers.iter().enumerate() {
        if *n != i as i64 + 1 {
            return Err(format!("number {} found where {} was due", n, i + 1));
        }
    }
    Ok(())
}

/// An order: id, request, state, captured, refunded, its refunds' sum, invoices.
type OrderRow = (uuid::Uuid, RequestId, String, i64, i64, i64, i64);
/// A refund: id, tickets, seats, state, seats released, request, credit notes owed.
type RefundRow = (
    uuid::Uuid,
    Vec<TicketId>,
    Vec<String>,
    String,
    bool,
    RequestId,
    i64,
);

pub async fn check(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    ops: &[Op],
) -> anyhow::Result<MoneyFindings> {
    let mut findings = MoneyFindings::default();
    for op in ops {
        match op.kind {
            "checkout" => count(
                &mut findings.checkouts,
                format!("{} {}", op.status, op.body["state"].as_str().unwrap_or("")),
            ),
            "refund" => count(
                &mut findings.refunds,
                format!(
                    "{} {}",
                    op.status,
                    op.body["code"]
                        .as_str()
                        .or(op.body["state"].as_str())
                        .unwrap_or("")
                ),
            ),
            "refunded_scan" => {
                let result = op.body["results"][0]["result"].as_str().unwrap_or("");
                count(
                    &mut findings.refunded_scans,
                    format!("{} {result}", op.status),
                );
                if result == "admitted" {
                    findings.violation(format!(
                        "a refunded ticket was admitted at the door: {}",
                        op.ask
                            .as_ref()
                            .map(|a| a["ticket_id"].to_string())
                            .unwrap_or_default()
                    ));
                }
            }
            _ => {}
        }
    }

    // Orders: none paid twice, none refunded past what it captured.
    let orders: Vec<OrderRow> = sqlx::query_as(
        "SELECT o.order_id, o.request_id, o.state, o.amount_cents, o.refunded_cents,
                coalesce((SELECT sum(amount_cents) FROM payments.refunds r WHERE r.order_id = o.order_id), 0)::bigint,
                (SELECT count(*) FROM billing.documents d WHERE d.order_id = o.order_id AND d.series = 'INV')
         FROM payments.orders o WHERE o.event_id = $1",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let mut paid_per_request: HashMap<RequestId, usize> = HashMap::new();
    for (order, request, state, amount, refunded, refunds_sum, invoices) in &orders {
        count(&mut findings.orders, state.clone());
        let was_paid = matches!(state.as_str(), "paid" | "partially_refunded") || *refunds_sum > 0;
        if was_paid {
            *paid_per_request.entry(*request).or_default() += 1;
            if *invoices != 1 {
                findings.violation(format!(
                    "order {order} was paid and has {invoices} invoices"
                ));
            }
        }
        if refunded > amount || refunds_sum != refunded {
            findings.violation(format!(
                "order {order}: captured {amount}, refunded {refunded}, its refunds add up to {refunds_sum}"
            ));
        }
        // Cancelled: every order that was paid is refunded in full.
        if was_paid && (state != "refunded" || refunded > amount) {
            findings.violation(format!("order {order} of the cancelled event is {state}"));
        }
    }
    for (request, paid) in &paid_per_request {
        if *paid > 1 {
            findings.violation(format!("request {request} was paid by {paid} orders"));
        }
    }
    // The provider's side: no charge paid back more than it took (a failed attempt
    // paid nothing back).
    let over: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.charge_id, c.amount_cents, sum(r.amount_cents)::bigint
         FROM payments.sandbox_charges c JOIN payments.sandbox_refunds r USING (charge_id)
         JOIN payments.orders o ON o.order_id = c.order_id
         WHERE o.event_id = $1 AND r.state = 'succeeded' GROUP BY c.charge_id, c.amount_cents
         HAVING sum(r.amount_cents) > c.amount_cents",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    for (charge, amount, back) in over {
        findings.violation(format!("charge {charge} of {amount} was paid back {back}"));
    }

    // Refunds: each ticket in one refund, each seat released once, in Redis too.
    // (An order paid before invoices were issued, as the presold buyer's, has no
    // invoice for a credit note to refer to.)
    let refunds: Vec<RefundRow> = sqlx::query_as(
        "SELECT r.refund_id, r.ticket_ids, r.seats, r.state, r.seats_released, o.request_id,
                    (SELECT count(*) FROM billing.documents d WHERE d.refund_id = r.refund_id)
                    - (SELECT count(*) FROM billing.documents d
                       WHERE d.order_id = r.order_id AND d.series = 'INV') + 1
             FROM payments.refunds r JOIN payments.orders o USING (order_id) WHERE r.event_id = $1",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let mut refunded_tickets: BTreeSet<TicketId> = BTreeSet::new();
    for (refund, tickets, _seats, state, released, _request, notes) in &refunds {
        if state == "pending" {
            findings.violation(format!("refund {refund} still pending at the end"));
        }
        if !released {
            findings.violation(format!("refund {refund}'s seats never went back on sale"));
        }
        if *notes != 1 {
            findings.violation(format!(
                "refund {refund} has {} credit notes for its order's invoice",
                notes
            ));
        }
        for ticket in tickets {
            if !refunded_tickets.insert(*ticket) {
                findings.violation(format!("ticket {ticket} refunded twice"));
            }
        }
    }
    // Released once: a refunded seat is not still sold to its old request in Redis,
    // and a seat sold in Redis is a valid ticket's.
    let seats: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.seat_states(event_id))
        .query_async(redis)
        .await?;
    let valid: Vec<(String, RequestId)> = sqlx::query_as(
        "SELECT seat_id, request_id FROM tickets.tickets WHERE event_id = $1 AND state = 'valid'",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let valid: HashMap<String, RequestId> = valid.into_iter().collect();
    for (seat, value) in &seats {
        if let Some(request) = value.strip_prefix("s:") {
            match valid.get(seat) {
                Some(owner) if owner.to_string() == request => {}
                other => findings.violation(format!(
                    "seat {seat} is sold to {request} in redis, its valid ticket is {other:?}"
                )),
            }
        }
    }
    let counts: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.seat_counts(event_id))
        .query_async(redis)
        .await?;
    let counts: HashMap<String, i64> = counts
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let sold_in_map = seats.values().filter(|v| v.starts_with("s:")).count() as i64;
    let free_in_map = seats.values().filter(|v| *v == "a").count() as i64;
    if counts.get("sold") != Some(&sold_in_map) || counts.get("available") != Some(&free_in_map) {
        findings.violation(format!(
            "the counts say sold {:?}, available {:?}; the map has {sold_in_map} and {free_in_map}",
            counts.get("sold"),
            counts.get("available")
        ));
    }
    // No refunded ticket came in after its refund.
    let admitted: Vec<(TicketId,)> = sqlx::query_as(
        "SELECT e.ticket_id FROM tickets.entries e
         JOIN payments.refunds r ON e.ticket_id = ANY(r.ticket_ids)
         WHERE e.event_id = $1 AND e.admitted_at >= r.created_at",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    for (ticket,) in admitted {
        findings.violation(format!("ticket {ticket} was admitted after its refund"));
    }

    // Invoices and credit notes: consecutive, no gaps, in every year's series (the
    // whole database's, not only this run's: the counter is shared).
    for series in ["INV", "CRN"] {
        let years: Vec<i32> =
            sqlx::query_scalar("SELECT DISTINCT year FROM billing.documents WHERE series = $1")
                .bind(series)
                .fetch_all(pool)
                .await?;
        for year in years {
            let numbers: Vec<i64> = sqlx::query_scalar(
                "SELECT n FROM billing.documents WHERE series = $1 AND year = $2 ORDER BY n",
            )
            .bind(series)
            .bind(year)
            .fetch_all(pool)
            .await?;
            if let Err(gap) = gapless(&numbers) {
                findings.violation(format!("{series}-{year}: {gap}"));
            }
        }
    }
    let (invoices, notes): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE d.series = 'INV'), count(*) FILTER (WHERE d.series = 'CRN')
         FROM billing.documents d JOIN payments.orders o USING (order_id) WHERE o.event_id = $1",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await?;
    findings.invoices = invoices;
    findings.credit_notes = notes;
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM payments.refunds WHERE event_id = $1 GROUP BY state",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    findings.refund_states = states.into_iter().collect();
    Ok(findings)
}
