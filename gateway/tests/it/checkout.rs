//! Checkout end to end through the gateway, with a booking worker draining the
//! line: the sandbox's three cards, the signed webhook, refunds after the hold
//! ended, idempotent retries, racing fans, and bad input that changes nothing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;
use crate::support::sale::*;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The seat map's state of `seats`, once the snapshot (at most 1 s old) shows
/// `expected` for all of them.
async fn wait_for_seats(app: &TestApp, event: &str, seats: &[String], expected: &str) {
    let started = Instant::now();
    loop {
        let map: Value = app
            .get_json(&format!("/v1/events/{event}/seats"), None)
            .await;
        let states: Vec<&str> = seats
            .iter()
            .map(|seat| {
                map.as_array()
                    .expect("seat list")
                    .iter()
                    .find(|s| s["seat_id"] == seat.as_str())
                    .and_then(|s| s["state"].as_str())
                    .expect("seat on the map")
            })
            .collect();
        if states.iter().all(|s| *s == expected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "seats {seats:?} read {states:?}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seats_of(status: &Value) -> Vec<String> {
    status["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| s.as_str().expect("seat").to_owned())
        .collect()
}

async fn outbox_kinds(app: &TestApp, request: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM outbox.messages WHERE request_id = $1::uuid ORDER BY seq")
        .bind(request)
        .fetch_all(&app.pool)
        .await
        .expect("outbox")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_held_request_pays_and_its_seats_read_sold(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, status) =
        held(&app, &event, &json!({"quantity": 2, "section": "Floor"})).await;
    let seats = seats_of(&status);

    let response = checkout(&app, &token, &request, PAID, Some("pay-1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["state"], "paid", "{order}");
    assert_eq!(order["amount_cents"], 2 * 4500);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["card_last4"], "4242");
    assert_eq!(order["request_id"], request.as_str());
    assert_eq!(order["event_id"], event.as_str());
    assert_eq!(order["seats"], json!(seats));

    let confirmed: Value = app
        .get_json(&format!("/v1/requests/{request}"), Some(&token))
        .await;
    assert_eq!(confirmed["state"], "confirmed", "{confirmed}");
    wait_for_seats(&app, &event, &seats, "sold").await;

    let order_id = order["order_id"].as_str().expect("order_id");
    let read: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    assert_eq!(read["state"], "paid");
    let mine: Value = app.get_json("/v1/orders", Some(&token)).await;
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["orders"][0]["order_id"], order_id);
    // Another fan cannot read it.
    assert_error(
        app.get(&format!("/v1/orders/{order_id}"), Some(&minted_fan_token()))
            .await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;

    // The ledger has the sale: the request, the claims and the tickets.
    let ledger: (String, i64, i64) = sqlx::query_as(
        "SELECT r.state,
                (SELECT count(*) FROM booking.seat_claims c WHERE c.request_id = r.request_id AND c.state = 'sold'),
                (SELECT count(*) FROM tickets.tickets t WHERE t.request_id = r.request_id)
         FROM booking.requests r WHERE r.request_id = $1::uuid",
    )
    .bind(&request)
    .fetch_one(&app.pool)
    .await
    .expect("ledger");
    assert_eq!(ledger, ("confirmed".to_owned(), 2, 2));
    assert_eq!(
        outbox_kinds(&app, &request).await,
        ["request.held", "request.confirmed", "order.paid"]
    );
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_declined_card_leaves_the_hold_and_a_second_card_pays(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, before) = held(&app, &event, &json!({"quantity": 1})).await;

    let response = checkout(&app, &token, &request, DECLINED, Some("try-1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let declined: Value = response.json().await.expect("order");
    assert_eq!(declined["state"], "declined", "{declined}");
    assert_eq!(declined["reason"], "card_declined");

    let after: Value = app
        .get_json(&format!("/v1/requests/{request}"), Some(&token))
        .await;
    assert_eq!(after["state"], "held", "{after}");
    assert_eq!(
        after["hold_expires_at"], before["hold_expires_at"],
        "the hold keeps its end"
    );
    assert_eq!(after["seats"], before["seats"]);
    let ledger: (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT state, hold_expires_at FROM booking.requests WHERE request_id = $1::uuid",
    )
    .bind(&request)
    .fetch_one(&app.pool)
    .await
    .expect("ledger");
    assert_eq!(ledger.0, "held");
    assert_eq!(
        Some(ledger.1.timestamp_millis()),
        before["hold_expires_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
    );

    let response = checkout(&app, &token, &request, PAID, Some("try-2")).await;
    let paid: Value = response.json().await.expect("order");
    assert_eq!(paid["state"], "paid", "{paid}");
    assert_ne!(paid["order_id"], declined["order_id"]);
    let mine: Value = app.get_json("/v1/orders", Some(&token)).await;
    let states: Vec<&str> = mine["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|o| o["state"].as_str())
        .collect();
    assert_eq!(states, ["paid", "declined"], "newest first");
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_pending_card_is_sold_by_its_signed_webhook(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, before) = held(&app, &event, &json!({"quantity": 1})).await;

    let response = checkout(&app, &token, &request, PENDING, Some("pend-1")).await;
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["state"], "pending", "{order}");
    let paying: Value = app
        .get_json(&format!("/v1/requests/{request}"), Some(&token))
        .await;
    assert_eq!(paying["state"], "paying");
    let end = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["hold_expires_at"].as_str().expect("expiry"))
            .expect("rfc3339")
            .timestamp()
    };
    assert_eq!(
        end(&paying) - end(&before),
        120,
        "the hold runs the paying grace longer"
    );
    // The ledger keeps the normal end too (a decline, or a restore, goes back to it).
    let (ledger_end, held_until): (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT hold_expires_at, held_until FROM booking.requests WHERE request_id = $1::uuid",
    )
    .bind(&request)
    .fetch_one(&app.pool)
    .await
    .expect("ledger");
    assert_eq!(ledger_end.timestamp(), end(&paying));
    assert_eq!(held_until.map(|t| t.timestamp()), Some(end(&before)));
    // A fan cannot release seats whose payment is in flight.
    let leave = app
        .client
        .delete(app.url(&format!("/v1/requests/{request}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_error(leave, StatusCode::CONFLICT, "payment_in_flight").await;
    // Nor pay twice.
    assert_error(
        checkout(&app, &token, &request, PAID, Some("pend-2")).await,
        StatusCode::CONFLICT,
        "payment_in_flight",
    )
    .await;

    let order_id = order["order_id"].as_str().expect("order_id");
    let delivery = json!({"id": "wh_test_1", "type": "payment.succeeded", "order_id": order_id});
    let first = webhook(&app, &delivery, WEBHOOK_SECRET, now()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let ack: Value = first.json().await.expect("ack");
    assert_eq!(ack, json!({"status": "processed", "order_state": "paid"}));
    let again = webhook(&app, &delivery, WEBHOOK_SECRET, now()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again.json::<Value>().await.expect("ack")["status"],
        "duplicate"
    );

    let confirmed: Value = app
        .get_json(&format!("/v1/requests/{request}"), Some(&token))
        .await;
    assert_eq!(confirmed["state"], "confirmed");
    assert_eq!(
        outbox_kinds(&app, &request).await,
        ["request.held", "request.confirmed", "order.paid"],
        "the duplicate webhook reported nothing"
    );
    stop.cancel();
}

/// The sandbox's webhook for a pending card can land before the checkout has
/// written the charge's id on the order (or the checkout dies first). The order is
/// paid all the same, with the charge the provider names, so that its refund, or
/// its event's cancellation, can pay it back.
#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_webhook_that_overtakes_the_checkout_still_records_the_charge(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;
    let response = checkout(&app, &token, &request, PENDING, Some("overtaken")).await;
    let order: Value = response.json().await.expect("order");
    let order_id = order["order_id"].as_str().expect("order_id").to_owned();
    // As if the checkout had not written it yet.
    let charge: String = sqlx::query_scalar(
        "UPDATE payments.orders o SET charge_id = NULL FROM payments.orders before
         WHERE o.order_id = $1::uuid AND before.order_id = o.order_id
         RETURNING before.charge_id",
    )
    .bind(&order_id)
    .fetch_one(&app.pool)
    .await
    .expect("the order's charge");

    let delivery = json!({"id": "wh_overtaken", "type": "payment.succeeded", "order_id": order_id});
    let ack: Value = webhook(&app, &delivery, WEBHOOK_SECRET, now())
        .await
        .json()
        .await
        .expect("ack");
    assert_eq!(ack["order_state"], "paid", "{ack}");
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT charge_id FROM payments.orders WHERE order_id = $1::uuid")
            .bind(&order_id)
            .fetch_one(&app.pool)
            .await
            .expect("the order");
    assert_eq!(recorded.as_deref(), Some(charge.as_str()));
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_late_webhook_after_the_hold_ended_is_refunded(pool: PgPool) {
    let app = spawn_app_with(pool, |config| config.payments.paying_grace_seconds = 1).await;
    let (_, event, stop) = open_sale(&app, 2).await;
    let (token, request, status) = held(&app, &event, &json!({"quantity": 2})).await;
    let seats = seats_of(&status);
    let order: Value = pay(&app, &token, &request, PENDING, None).await;
    assert_eq!(order["state"], "pending");
    // The payment is abandoned when the hold plus its grace runs out.
    let ended = wait_for_state(&app, &token, &request, &["expired"]).await;
    assert_eq!(ended["state"], "expired");

    let order_id = order["order_id"].as_str().expect("order_id");
    let late = webhook(
        &app,
        &json!({"id": "wh_late", "type": "payment.succeeded", "order_id": order_id}),
        WEBHOOK_SECRET,
        now(),
    )
    .await;
    assert_eq!(late.status(), StatusCode::OK);
    let read: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    assert_eq!(read["state"], "refunded", "{read}");
    assert_eq!(read["reason"], "hold_ended");
    let charge: String =
        sqlx::query_scalar("SELECT state FROM payments.sandbox_charges WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_one(&app.pool)
            .await
            .expect("charge");
    assert_eq!(charge, "refunded", "the provider paid the money back");
    let tickets = app.count("tickets.tickets").await;
    assert_eq!(tickets, 0);
    wait_for_seats(&app, &event, &seats, "available").await;
    let kinds = outbox_kinds(&app, &request).await;
    assert_eq!(kinds, ["request.held", "request.expired", "order.refunded"]);
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_same_checkout_retried_with_the_same_key_charges_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;

    // Eight copies at once, then one more after.
    let copies: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(checkout_call(
                &app,
                &token,
                &request,
                PAID,
                Some("same-key"),
            ))
        })
        .collect();
    let mut answers = Vec::new();
    for copy in copies {
        let response = copy.await.expect("task");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push(body);
    }
    let late: Value = pay(&app, &token, &request, PAID, Some("same-key")).await;
    answers.push(late);
    for answer in &answers {
        assert_eq!(answer, &answers[0], "every retry gets the first answer");
    }
    assert_eq!(answers[0]["state"], "paid");
    assert_eq!(
        app.count("payments.sandbox_charges").await,
        1,
        "charged once"
    );
    assert_eq!(app.count("payments.orders").await, 1);

    let other = app
        .client
        .post(app.url(&format!("/v1/requests/{request}/checkout")))
        .bearer_auth(&token)
        .header("idempotency-key", "same-key")
        .json(&json!({"card_number": DECLINED, "expiry": "12/34", "cvc": "123"}))
        .send()
        .await
        .expect("checkout");
    assert_error(other, StatusCode::CONFLICT, "idempotency_key_reused").await;
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn fifty_fans_racing_for_one_seat_end_with_one_paid_order(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    // Fifty fans ask for the same seat at once; each checks out as soon as it
    // reads its request held, and every holder's checkout is sent eight times at
    // once with different keys.
    let mut fans = Vec::new();
    for _ in 0..50 {
        let app_client = app.client.clone();
        let url = app.url(&format!("/v1/events/{event}/requests"));
        let token = minted_fan_token();
        fans.push(tokio::spawn(async move {
            let response = app_client
                .post(url)
                .bearer_auth(&token)
                .json(&json!({"seats": ["Floor-A-1"]}))
                .send()
                .await
                .expect("join");
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let body: Value = response.json().await.expect("json");
            (token, body["request_id"].as_str().expect("id").to_owned())
        }));
    }
    let mut joined = Vec::new();
    for fan in fans {
        joined.push(fan.await.expect("task"));
    }
    let mut attempts = Vec::new();
    for (token, request) in &joined {
        let status = wait_for_state(&app, token, request, &["held", "rejected"]).await;
        if status["state"] == "held" {
            for _ in 0..8 {
                attempts.push(tokio::spawn(checkout_call(
                    &app, token, request, PAID, None,
                )));
            }
        }
    }
    let mut paid = 0;
    for attempt in attempts {
        let response = attempt.await.expect("task");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        match (status, body["state"].as_str(), body["code"].as_str()) {
            (StatusCode::OK, Some("paid"), _) => paid += 1,
            (StatusCode::CONFLICT, _, Some("payment_in_flight" | "already_paid")) => {}
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    assert_eq!(paid, 1, "exactly one checkout paid");
    let orders: Vec<(String, Vec<String>)> =
        sqlx::query_as("SELECT state, seats FROM payments.orders WHERE state = 'paid'")
            .fetch_all(&app.pool)
            .await
            .expect("orders");
    assert_eq!(orders, [("paid".to_owned(), vec!["Floor-A-1".to_owned()])]);
    assert_eq!(app.count("tickets.tickets").await, 1);
    assert_eq!(
        app.count("payments.sandbox_charges").await,
        1,
        "one card charged once"
    );
    wait_for_seats(&app, &event, &["Floor-A-1".to_owned()], "sold").await;
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_checkout_that_stopped_before_charging_is_voided_and_the_hold_restored(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, before) = held(&app, &event, &json!({"quantity": 1})).await;
    // The checkout's first steps, as a process that died before charging left them:
    // the request paying in Redis and the ledger, a pending order, no charge.
    let (event_id, request_id): (proto::EventId, proto::RequestId) = (
        event.parse().expect("event"),
        request.parse().expect("request"),
    );
    // The API reads `held` from Redis; the ledger's row of the hold may be a drainer
    // batch behind it, and the steps below start from the ledger's row.
    let started = Instant::now();
    let fan: proto::UserId = loop {
        let held: Option<proto::UserId> = sqlx::query_scalar(
            "SELECT fan_id FROM booking.requests WHERE request_id = $1 AND state = 'held'",
        )
        .bind(request_id)
        .fetch_optional(&app.pool)
        .await
        .expect("the ledger's request");
        if let Some(fan) = held {
            break fan;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the ledger never recorded the hold of {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut redis = app.redis.clone();
    let paid: Vec<redis::Value> = proto::scripts::pay(
        &app.keys,
        event_id,
        request_id,
        fan,
        chrono::Utc::now().timestamp_millis(),
        120_000,
    )
    .invoke_async(&mut redis)
    .await
    .expect("pay.lua");
    assert_eq!(paid.first(), Some(&redis::Value::Int(1)));
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(600);
    let mut tx = app.pool.begin().await.expect("tx");
    ledger::checkout::begin_paying(&mut tx, event_id, request_id, deadline)
        .await
        .expect("ledger");
    let seats = seats_of(&before);
    let order = payments::orders::create(
        &mut tx,
        proto::OrderId::from(uuid::Uuid::now_v7()),
        request_id,
        event_id,
        fan,
        &seats,
        &payments::orders::Pricing {
            seat_cents: seats.iter().map(|_| 4500 / seats.len() as i64).collect(),
            seat_tax_cents: seats.iter().map(|_| 0).collect(),
            tax_rate_bp: 0,
            tax_included: true,
            cancelled: false,
        },
        None,
        "EUR",
        "4242",
        "sandbox",
        None,
    )
    .await
    .expect("order")
    .expect("created");
    tx.commit().await.expect("commit");

    let settled = payments::background::reconcile(&payments_of(&app, 0))
        .await
        .expect("reconcile");
    assert_eq!(settled, 1);
    let read: Value = app
        .get_json(&format!("/v1/orders/{}", order.order_id), Some(&token))
        .await;
    assert_eq!(read["state"], "cancelled", "{read}");
    assert_eq!(read["reason"], "no_charge");
    let after: Value = app
        .get_json(&format!("/v1/requests/{request}"), Some(&token))
        .await;
    assert_eq!(
        after["state"], "held",
        "the hold is the fan's again: {after}"
    );
    assert_eq!(after["hold_expires_at"], before["hold_expires_at"]);
    // A charge for the voided order, arriving late, is declined: no money moves.
    let card = payments::card::validate(
        &proto::wire::payments::Checkout {
            card_number: PAID.into(),
            expiry: "12/34".into(),
            cvc: "123".into(),
            billing: None,
        },
        chrono::Utc::now().date_naive(),
    )
    .expect("card");
    use payments::PaymentProvider as _;
    let late = payments::Sandbox::new(app.pool.clone(), None)
        .charge(order.order_id, 4500, &card)
        .await
        .expect("charge");
    assert!(
        matches!(late, payments::provider::Charge::Declined { .. }),
        "{late:?}"
    );
    // And the fan pays as usual.
    let order: Value = pay(&app, &token, &request, PAID, None).await;
    assert_eq!(order["state"], "paid");
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_abandoned_pending_payment_is_voided_and_its_order_cancelled(pool: PgPool) {
    let app = spawn_app_with(pool, |config| config.payments.paying_grace_seconds = 1).await;
    let (_, event, stop) = open_sale(&app, 2).await;
    let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;
    let order: Value = pay(&app, &token, &request, PENDING, None).await;
    assert_eq!(order["state"], "pending");
    let order_id = order["order_id"].as_str().expect("order_id");
    // The provider never says; the hold and its grace run out.
    wait_for_state(&app, &token, &request, &["expired"]).await;
    let payments = payments_of(&app, 0);
    let started = Instant::now();
    loop {
        payments::background::reconcile(&payments)
            .await
            .expect("reconcile");
        let read: Value = app
            .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
            .await;
        if read["state"] == "cancelled" {
            assert_eq!(read["reason"], "abandoned");
            break;
        }
        assert_eq!(read["state"], "pending", "{read}");
        // The ledger learns of the expiry from the drainer, shortly after Redis.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never abandoned: {read}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let charge: String =
        sqlx::query_scalar("SELECT state FROM payments.sandbox_charges WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_one(&app.pool)
            .await
            .expect("charge");
    assert_eq!(charge, "voided", "the provider will not complete it");
    stop.cancel();
}

/// Backends of this test's database in `state` whose query mentions `table`.
async fn backends(app: &TestApp, state: &str, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND (state = $1 OR wait_event_type = $1) AND query LIKE '%' || $2 || '%'",
    )
    .bind(state)
    .bind(table)
    .fetch_one(&app.pool)
    .await
    .expect("pg_stat_activity")
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_client_that_drops_mid_checkout_gets_the_order_on_its_retry(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event, stop) = open_sale(&app, 60).await;
    let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;

    // The settlement waits for the invoice counter, which the test holds.
    let mut counter = app.pool.begin().await.expect("tx");
    sqlx::query("LOCK TABLE billing.counters IN EXCLUSIVE MODE")
        .execute(&mut *counter)
        .await
        .expect("lock");
    let first = tokio::spawn(checkout_call(
        &app,
        &token,
        &request,
        PAID,
        Some("pay-once"),
    ));
    until("the checkout waits for the invoice counter", async || {
        backends(&app, "Lock", "billing.counters").await > 0
    })
    .await;

    // The fan's connection goes (a closed tab, a phone in a tunnel), and the
    // gateway has let go of everything the call held.
    first.abort();
    let _ = first.await;
    until("the dropped call holds no transaction", async || {
        backends(&app, "idle in transaction", "idempotency_keys").await == 0
    })
    .await;

    // The charge and its settlement run to their end; the retry gets the order.
    counter.rollback().await.expect("unlock");
    until("the order is paid", async || {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM payments.orders WHERE request_id = $1::uuid",
        )
        .bind(&request)
        .fetch_optional(&app.pool)
        .await
        .expect("order")
        .as_deref()
            == Some("paid")
    })
    .await;
    let retry = checkout(&app, &token, &request, PAID, Some("pay-once")).await;
    assert_eq!(retry.status(), StatusCode::OK, "{:?}", retry.text().await);
    let order: Value = retry.json().await.expect("order");
    assert_eq!(order["state"], "paid", "{order}");
    let charges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments.sandbox_charges c JOIN payments.orders o USING (order_id)
         WHERE o.request_id = $1::uuid",
    )
    .bind(&request)
    .fetch_one(&app.pool)
    .await
    .expect("charges");
    assert_eq!(charges, 1, "one charge");
    stop.cancel();
}
