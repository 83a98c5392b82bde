//! Checkout under faults: Postgres crashes and restarts while fans pay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::helpers::*;
use crate::support::sale::*;
use testkit::PrivatePostgres;

/// What one fan's checkout attempts came to.
#[derive(Debug, Default)]
struct Outcome {
    answers: Vec<(u16, Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_mid_checkout_and_no_seat_is_sold_twice_or_held_forever() {
    let postgres = Arc::new(PrivatePostgres::start());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&postgres.url())
        .await
        .expect("connect");
    proto::migrations::MIGRATOR
        .run(&pool)
        .await
        .expect("migrate");
    let app = spawn_app_with(pool, |config| {
        config.payments.paying_grace_seconds = 2;
        config.payments.reconcile_after_seconds = 1;
    })
    .await;
    let (_, event, stop) = open_sale(&app, 5).await;

    // Twenty fans hold one seat each.
    let mut fans = Vec::new();
    for _ in 0..20 {
        let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;
        fans.push((token, request));
    }

    // Each pays (every fifth with a pending card, every seventh is first declined),
    // retrying on 503 until it has an answer or the hold is over; Postgres crashes
    // once three checkouts have been answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, (token, request)) in fans.iter().enumerate() {
        let cards: Vec<&'static str> = match i {
            i if i % 5 == 0 => vec![PENDING],
            i if i % 7 == 0 => vec![DECLINED, PAID],
            _ => vec![PAID],
        };
        let (app_client, base) = (app.client.clone(), app.base.clone());
        let (token, request, answered) = (token.clone(), request.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let started = Instant::now();
            for (n, card) in cards.into_iter().enumerate() {
                let key = format!("{request}-{n}");
                loop {
                    let response = app_client
                        .post(format!("{base}/v1/requests/{request}/checkout"))
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .json(&json!({"card_number": card, "expiry": "12/34", "cvc": "123"}))
                        .send()
                        .await;
                    let Ok(response) = response else { continue };
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    outcome.answers.push((status, body));
                    if status == 200 {
                        answered.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if status == 409 || started.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            outcome
        }));
    }
    let started = Instant::now();
    while answered.load(Ordering::SeqCst) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no checkout answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let crashing = postgres.clone();
    tokio::task::spawn_blocking(move || crashing.crash_and_restart())
        .await
        .expect("restart");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let refused_during_crash = outcomes
        .iter()
        .flat_map(|o| &o.answers)
        .filter(|(status, _)| *status >= 500)
        .count();

    // Pending cards hear from their provider; orders whose answer was lost in the
    // crash are settled by the reconciler.
    let payments = payments_of(&app, 1);
    let pending: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT order_id FROM payments.sandbox_charges WHERE state = 'pending'")
            .fetch_all(&app.pool)
            .await
            .expect("pending");
    for order in &pending {
        let delivery =
            json!({"id": format!("wh_{order}"), "type": "payment.succeeded", "order_id": order});
        let response = webhook(
            &app,
            &delivery,
            WEBHOOK_SECRET,
            chrono::Utc::now().timestamp(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let started = Instant::now();
    loop {
        payments::background::reconcile(&payments)
            .await
            .expect("reconcile");
        // Every hold has ended or been sold once the holds and their grace ran out.
        let open: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM payments.orders WHERE state = 'pending')
                  + (SELECT count(*) FROM booking.requests WHERE state IN ('held', 'paying'))",
        )
        .fetch_one(&app.pool)
        .await
        .expect("open");
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{open} orders or holds never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();

    // No seat sold twice: one ticket per seat (the key's promise), every ticket's
    // order paid, and every paid order ticketed for exactly its seats.
    let tickets: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.seat_id, o.state FROM tickets.tickets t JOIN payments.orders o USING (order_id)",
    )
    .fetch_all(&app.pool)
    .await
    .expect("tickets");
    assert!(
        tickets.iter().all(|(_, state)| state == "paid"),
        "{tickets:?}"
    );
    let paid: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT o.request_id::text, array_length(o.seats, 1)::bigint,
                (SELECT count(*) FROM tickets.tickets t WHERE t.order_id = o.order_id)
         FROM payments.orders o WHERE o.state = 'paid'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("paid");
    for (request, seats, ticketed) in &paid {
        assert_eq!(seats, ticketed, "order of {request}");
    }
    let mut per_request: BTreeMap<&str, usize> = BTreeMap::new();
    for (request, _, _) in &paid {
        *per_request.entry(request).or_default() += 1;
    }
    assert!(
        per_request.values().all(|n| *n == 1),
        "a request paid twice: {per_request:?}"
    );
    // Every confirmed request has its paid order, and the other way round.
    let confirmed: Vec<String> = sqlx::query_scalar(
        "SELECT request_id::text FROM booking.requests WHERE state = 'confirmed' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .expect("confirmed");
    let mut paid_requests: Vec<String> = paid.iter().map(|(r, _, _)| r.clone()).collect();
    paid_requests.sort();
    assert_eq!(confirmed, paid_requests);
    assert!(!confirmed.is_empty(), "some checkouts succeeded");
    // Redis and Postgres agree on every seat, and nothing is held any more.
    let event_id: proto::EventId = event.parse().expect("id");
    let mut redis = app.redis.clone();
    let diff = inventory::seatmap::diff_against_ledger(&app.pool, &mut redis, &app.keys, event_id)
        .await
        .expect("diff");
    assert!(diff.is_empty(), "redis and postgres disagree: {diff:?}");
    let held_claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking.seat_claims WHERE state = 'held'")
            .fetch_one(&app.pool)
            .await
            .expect("claims");
    assert_eq!(held_claims, 0);
    // Every fan whose checkout answered `paid` owns a confirmed request.
    for ((_, request), outcome) in fans.iter().zip(&outcomes) {
        if outcome
            .answers
            .iter()
            .any(|(s, b)| *s == 200 && b["state"] == "paid")
        {
            assert!(
                confirmed.contains(request),
                "{request} was told paid: {outcome:?}"
            );
        }
    }
    eprintln!(
        "postgres crash: {} paid, {} answers refused during the crash",
        confirmed.len(),
        refused_during_crash
    );
}
