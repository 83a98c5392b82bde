//! Fans of a chaos run: each joins the line through the gateway, watches its
//! request, sometimes leaves the line or releases its hold, retries what failed in
//! transit with the same `Idempotency-Key`, and joins again once its request ended.
//! Every call and its answer goes into the history.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{EventId, RequestId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One operation of the history: what a fan asked and what it got.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub fan: usize,
    /// `join`, `status`, `leave`.
    pub kind: &'static str,
    pub request: Option<RequestId>,
    /// The ask, for joins (the body sent).
    pub ask: Option<Value>,
    /// Milliseconds since the run started, when the call went out and came back.
    pub invoked_ms: u64,
    pub completed_ms: u64,
    /// The HTTP status, or 0 when no answer came (a transport error).
    pub status: u16,
    /// The answer's body (or the transport error).
    pub body: Value,
}

/// The run's history, shared by every fan.
#[derive(Clone)]
pub struct History {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn record(&self, op: Op) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|ops| ops.clone()).unwrap_or_default()
    }
}

/// What every fan needs.
#[derive(Clone)]
pub struct Line {
    pub client: reqwest::Client,
    pub base: String,
    pub event_id: EventId,
    pub history: History,
    /// When fans stop joining (they still follow what they have).
    pub joining: CancellationToken,
    /// When fans give up following (the checker then finds what is stranded).
    pub give_up: CancellationToken,
    pub sections: Vec<String>,
    /// Seats many fans name, for contention on named seats.
    pub hot_seats: Vec<String>,
    /// Where fans pay and ask for refunds (`None`: they never pay).
    pub till: Option<super::money::Till>,
}

impl Line {
    async fn call(
        &self,
        fan: usize,
        kind: &'static str,
        request: Option<RequestId>,
        builder: reqwest::RequestBuilder,
        ask: Option<Value>,
    ) -> (u16, Value) {
        let invoked_ms = self.history.now_ms();
        let (status, body) = match builder.timeout(Duration::from_secs(5)).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                (status, body)
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

    fn ask(&self, rng: &mut StdRng) -> Value {
        match rng.random_range(0..10) {
            0..=2 => {
                let seat = &self.hot_seats[rng.random_range(0..self.hot_seats.len())];
                json!({"seats": [seat]})
            }
            3..=6 => {
                let section = &self.sections[rng.random_range(0..self.sections.len())];
                json!({"quantity": rng.random_range(1..=2), "section": section})
            }
            _ => json!({"quantity": rng.random_range(1..=2)}),
        }
    }
}

/// Whether an answer means the call should be asked again (no answer, or the
/// server failed or was too busy); asked again under the same Idempotency-Key.
fn retryable(status: u16) -> bool {
    status == 0 || status == 429 || status >= 500
}

fn terminal(state: &str) -> bool {
    matches!(
        state,
        "confirmed" | "expired" | "released" | "cancelled" | "rejected"
    )
}

/// One fan until the run ends. `token` is its bearer token.
pub async fn fan(line: Line, index: usize, token: String, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Fans arrive over the first moments of the run.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
    let url = |path: &str| format!("{}{path}", line.base);
    while !line.joining.is_cancelled() {
        let ask = line.ask(&mut rng);
        let key = uuid::Uuid::new_v4().to_string();
        let mut accepted = None;
        for attempt in 0..30 {
            if line.give_up.is_cancelled() {
                return;
            }
            let builder = line
                .client
                .post(url(&format!("/v1/events/{}/requests", line.event_id)))
                .bearer_auth(&token)
                .header("idempotency-key", &key)
                .json(&ask);
            let (status, body) = line
                .call(index, "join", None, builder, Some(ask.clone()))
                .await;
            if status == 202 {
                accepted = body["request_id"].as_str().and_then(|r| r.parse().ok());
                break;
            }
            if !retryable(status) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1).min(10))).await;
        }
        let Some(request) = accepted else {
            // Refused (sold out, closed, already in line): try again a little later.
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
            continue;
        };
        follow(&line, index, &token, request, &mut rng).await;
        if line.give_up.is_cancelled() {
            return;
        }
        // Back for more after a while: the line stays busy for the whole run.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
    }
}

/// Watches a request until it ends; may leave the line or release the hold.
async fn follow(line: &Line, index: usize, token: &str, request: RequestId, rng: &mut StdRng) {
    let url = format!("{}/v1/requests/{request}", line.base);
    // Whether this fan leaves the line, and after how many looks; whether it
    // releases its hold (some let it expire).
    let leave_after = rng.random_bool(0.12).then(|| rng.random_range(1..20));
    let mut looks = 0;
    let mut decided_release: Option<bool> = None;
    // Whether this fan pays for its hold (at most twice: a declined card is
    // followed by another), and asks for a refund once paid.
    let mut pays = line.till.is_some() && rng.random_bool(0.6);
    let mut payments_left = 2;
    loop {
        if line.give_up.is_cancelled() {
            return;
        }
        let builder = line.client.get(&url).bearer_auth(token);
        let (status, body) = line
            .call(index, "status", Some(request), builder, None)
            .await;
        let state = body["state"].as_str().unwrap_or_default();
        if status == 200 && terminal(state) {
            return;
        }
        looks += 1;
        if let (200, "held", true, Some(till)) = (status, state, pays, &line.till) {
            payments_left -= 1;
            pays = payments_left > 0;
            if let Some(order) = till.pay(index, token, request, rng).await
                && order["state"] == "paid"
                && rng.random_bool(0.5)
            {
                till.refund(index, token, &order, rng).await;
            }
            continue;
        }
        let leave = match (status, state) {
            (200, "queued" | "prequeue") => leave_after == Some(looks),
            (200, "held") if !pays => {
                *decided_release.get_or_insert_with(|| rng.random_bool(0.35))
                    && rng.random_bool(0.3)
            }
            _ => false,
        };
        if leave {
            let builder = line.client.delete(&url).bearer_auth(token);
            let _ = line
                .call(index, "leave", Some(request), builder, None)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..300))).await;
    }
}
