//! A sale to check out from: an opened sale with a booking worker draining it, a
//! fan holding seats, the checkout and the payment webhook as a fan and the
//! provider call them.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::helpers::*;

pub const PAID: &str = "4242424242424242";
pub const DECLINED: &str = "4000000000000002";
pub const PENDING: &str = "4000000000003220";

/// An opened sale on a [`venue_body`] venue whose holds last `hold_seconds`, and a
/// booking worker draining it (stopped with the returned token). Holds shorter than
/// the API allows (60 s) are set in the sale's Redis settings, which the hold
/// script reads.
pub async fn open_sale(app: &TestApp, hold_seconds: u32) -> (String, String, CancellationToken) {
    let (admin, event) = app.opened_event().await;
    let rate = app
        .client
        .put(app.url(&format!("/v1/ops/events/{event}/admission")))
        .bearer_auth(&admin)
        .json(&json!({"per_second": 1000}))
        .send()
        .await
        .expect("rate");
    assert_eq!(rate.status(), StatusCode::OK);
    let event_id: proto::EventId = event.parse().expect("event id");
    let mut redis = app.redis.clone();
    let _: () = redis::cmd("HSET")
        .arg(app.keys.sale(event_id))
        .arg(proto::sale_hash::HOLD_MS)
        .arg(u64::from(hold_seconds) * 1000)
        .query_async(&mut redis)
        .await
        .expect("hold time");
    (admin, event, app.start_worker().0)
}

/// Joins with `body` and waits until the request is decided; returns its id and
/// its state as the fan reads it.
pub async fn join_and_wait(
    app: &TestApp,
    event: &str,
    token: &str,
    body: &Value,
) -> (String, Value) {
    let joined = app
        .client
        .post(app.url(&format!("/v1/events/{event}/requests")))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await
        .expect("join");
    assert_eq!(joined.status(), StatusCode::ACCEPTED);
    let request = joined.json::<Value>().await.expect("json")["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned();
    let status = wait_for_state(app, token, &request, &["held", "rejected"]).await;
    (request, status)
}

/// Reads the request until its state is one of `states` (at most 20 s).
pub async fn wait_for_state(app: &TestApp, token: &str, request: &str, states: &[&str]) -> Value {
    let started = Instant::now();
    loop {
        let status: Value = app
            .get_json(&format!("/v1/requests/{request}"), Some(token))
            .await;
        if states.contains(&status["state"].as_str().unwrap_or_default()) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "request {request} never reached {states:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A held request of a fresh fan: `(token, request id, its state)`.
pub async fn held(app: &TestApp, event: &str, body: &Value) -> (String, String, Value) {
    let token = minted_fan_token();
    let (request, status) = join_and_wait(app, event, &token, body).await;
    assert_eq!(status["state"], "held", "{status}");
    (token, request, status)
}

pub async fn checkout(
    app: &TestApp,
    token: &str,
    request: &str,
    card: &str,
    key: Option<&str>,
) -> reqwest::Response {
    checkout_call(app, token, request, card, key).await
}

/// A checkout's answer, as JSON (an order, or an error body).
pub async fn pay(
    app: &TestApp,
    token: &str,
    request: &str,
    card: &str,
    key: Option<&str>,
) -> Value {
    checkout(app, token, request, card, key)
        .await
        .json()
        .await
        .expect("order")
}

/// A checkout call that owns what it needs, for spawning many at once.
pub fn checkout_call(
    app: &TestApp,
    token: &str,
    request: &str,
    card: &str,
    key: Option<&str>,
) -> impl std::future::Future<Output = reqwest::Response> + Send + 'static {
    let mut call = app
        .client
        .post(app.url(&format!("/v1/requests/{request}/checkout")))
        .bearer_auth(token)
        .json(&json!({"card_number": card, "expiry": "12/34", "cvc": "123"}));
    if let Some(key) = key {
        call = call.header("idempotency-key", key);
    }
    async move { call.send().await.expect("checkout") }
}

/// A webhook delivery, signed at `at` (unix seconds) with `secret`.
pub async fn webhook(app: &TestApp, body: &Value, secret: &str, at: i64) -> reqwest::Response {
    let raw = body.to_string();
    app.client
        .post(app.url("/v1/payments/webhook"))
        .header("content-type", "application/json")
        .header(
            "onsale-signature",
            payments::signature::sign(secret.as_bytes(), at, raw.as_bytes()),
        )
        .body(raw)
        .send()
        .await
        .expect("webhook")
}

/// Payments' work on the test's connections, for driving its reconciler; orders
/// pending longer than `reconcile_after_seconds` are looked up.
pub fn payments_of(app: &TestApp, reconcile_after_seconds: u64) -> payments::Payments {
    let mut settings = config("unused").payments;
    settings.reconcile_after_seconds = reconcile_after_seconds;
    payments::Payments {
        pool: app.pool.clone(),
        redis: app.redis.clone(),
        keys: app.keys.clone(),
        provider: std::sync::Arc::new(payments::Sandbox::new(app.pool.clone(), None)),
        settings: std::sync::Arc::new(settings),
        ring: std::sync::Arc::new(tickets::KeyRing::new()),
    }
}
