//! Money back and paper through the gateway: refunds within the event's policy
//! (snapshotted when paid), each seat released once, tickets voided and refused at
//! the door, credit notes, the refund's money by the provider's signed webhook,
//! operators' refunds, a cancelled event refunded once whatever runs twice, and
//! invoices numbered without gaps under 1,000 concurrent settlements, read back from
//! their PDFs by a real PDF reader (`pdftotext`).

use std::collections::BTreeSet;
use std::io::Write as _;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;
use crate::support::sale::*;

/// An opened event with `policy` and a 19 % tax included in its prices, a worker
/// draining it: `(admin token, event id)`.
async fn event_with(app: &TestApp, policy: Option<Value>) -> (String, String) {
    event_in(app, &venue_body(), policy).await
}

/// [`event_with`] in a venue of `venue`'s shape.
async fn event_in(app: &TestApp, venue: &Value, policy: Option<Value>) -> (String, String) {
    let admin = app.admin_token().await;
    let tiers: Vec<&str> = venue["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .filter_map(|section| section["price_tier"].as_str())
        .collect();
    let venue = app.create_venue(&admin, venue).await;
    let mut body = event_body(&venue);
    // Prices for the venue's tiers only.
    body["prices"]
        .as_object_mut()
        .expect("prices")
        .retain(|tier, _| tiers.contains(&tier.as_str()));
    body["tax"] = json!({"rate_percent": 19, "included": true});
    if let Some(policy) = policy {
        body["refund_policy"] = policy;
    }
    let created = app.post("/v1/events", Some(&admin), &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let event = created.json::<Value>().await.expect("json")["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    let opened = app
        .post(
            &format!("/v1/ops/events/{event}/open"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::OK);
    let rate = app
        .client
        .put(app.url(&format!("/v1/ops/events/{event}/admission")))
        .bearer_auth(&admin)
        .json(&json!({"per_second": 1000}))
        .send()
        .await
        .expect("rate");
    assert_eq!(rate.status(), StatusCode::OK);
    (admin, event)
}

fn open_policy() -> Value {
    json!({"until": "2030-05-31T00:00:00Z", "fee_percent": 10})
}

/// A fan who paid for `quantity` standard seats with `card`: `(token, order)`.
async fn bought(app: &TestApp, event: &str, quantity: u32, card: &str) -> (String, Value) {
    let (token, request, _) = held(
        app,
        event,
        &json!({"quantity": quantity, "section": "Floor"}),
    )
    .await;
    let order = pay(app, &token, &request, card, None).await;
    assert_eq!(order["state"], "paid", "{order}");
    let id = order["order_id"].as_str().expect("order id");
    let order: Value = app
        .get_json(&format!("/v1/orders/{id}"), Some(&token))
        .await;
    (token, order)
}

async fn refund(
    app: &TestApp,
    token: &str,
    order: &Value,
    body: Value,
    key: &str,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!(
            "/v1/orders/{}/refunds",
            order["order_id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("refund")
}

fn ticket_ids(order: &Value) -> Vec<String> {
    order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["ticket_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn event_counts(app: &TestApp, event: &str) -> (u64, u64, u64) {
    counts(
        &app.get_json::<Value>(&format!("/v1/events/{event}"), None)
            .await,
    )
}

/// The text of a PDF as `pdftotext` reads it.
pub fn pdf_text(pdf: &[u8]) -> String {
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let mut file = tempfile_path();
    file.1.write_all(pdf).expect("write pdf");
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", file.0.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext runs (apt-get install poppler-utils; deploy/test installs it)");
    assert!(
        out.status.success(),
        "pdftotext: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file.0);
    String::from_utf8(out.stdout).expect("utf-8 text")
}

fn tempfile_path() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("onsale-{}.pdf", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&path).expect("temp file");
    (path, file)
}

async fn pdf(app: &TestApp, token: &str, path: &str) -> Vec<u8> {
    let response = app.get(path, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    assert_eq!(response.headers()["content-type"], "application/pdf");
    response.bytes().await.expect("pdf").to_vec()
}

/// Delivers the provider's refund webhook as the sandbox would (about `attempt`,
/// when given), under a fresh delivery id.
async fn refund_webhook(app: &TestApp, refund_id: &str, kind: &str, attempt: Option<i32>) -> Value {
    let mut body = json!({"id": format!("wh_{}", uuid::Uuid::new_v4().simple()), "type": kind, "refund_id": refund_id});
    if let Some(attempt) = attempt {
        body["attempt"] = json!(attempt);
    }
    let response = webhook(app, &body, WEBHOOK_SECRET, chrono::Utc::now().timestamp()).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("ack")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_refund_voids_its_tickets_frees_each_seat_once_and_issues_a_credit_note(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = event_with(&app, Some(open_policy())).await;
    let (stop, _) = app.start_worker();
    let (token, order) = bought(&app, &event, 2, PAID).await;
    stop.cancel();
    // 2 × 45.00 with 19 % included: 7.18 of tax in each.
    assert_eq!(order["amount_cents"], 9000);
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let invoice: Value = app
        .get_json(&format!("/v1/orders/{order_id}/invoice"), Some(&token))
        .await;
    assert_eq!(invoice["total_cents"], 9000);
    assert_eq!(invoice["tax_cents"], 1436);
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(
        invoice["invoice_number"],
        format!("INV-{year}-1"),
        "{invoice}"
    );
    let before = event_counts(&app, &event).await;

    let tickets = ticket_ids(&order);
    let key = uuid::Uuid::new_v4().to_string();
    let first = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [tickets[0]]}),
        &key,
    )
    .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("refund");
    // 45.00 less the 10 % fee.
    assert_eq!(first["amount_cents"], 4050, "{first}");
    assert_eq!(first["fee_cents"], 450);
    assert_eq!(first["state"], "pending");
    assert_eq!(first["credit_note_number"], format!("CRN-{year}-1"));
    // The same key again is the same refund, not a second one.
    let again = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [tickets[0]]}),
        &key,
    )
    .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(
        again.json::<Value>().await.unwrap()["refund_id"],
        first["refund_id"]
    );
    // The ticket is void, the seat is back on sale, the order partly refunded.
    let order: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    assert_eq!(order["state"], "partially_refunded");
    assert_eq!(order["refunded_cents"], 4050);
    let voided = order["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ticket_id"] == tickets[0])
        .unwrap();
    assert_eq!(voided["state"], "void");
    let after = event_counts(&app, &event).await;
    assert_eq!(
        (after.0, after.2),
        (before.0 + 1, before.2 - 1),
        "{before:?} → {after:?}"
    );
    // Giving the seats back again frees nothing: each seat is released once.
    let seat = first["seats"][0].as_str().unwrap().to_owned();
    let refund_row = payments::refunds::get(
        &app.pool,
        first["refund_id"].as_str().unwrap().parse().unwrap(),
    )
    .await
    .expect("read")
    .expect("refund");
    let mut redis = app.redis.clone();
    let replay: (i64, i64, String, i64) = proto::scripts::unsell(
        &app.keys,
        event.parse().unwrap(),
        refund_row.request_id,
        refund_row.fan_id,
        true,
        std::slice::from_ref(&seat),
    )
    .invoke_async(&mut redis)
    .await
    .expect("unsell");
    assert_eq!(
        replay,
        (1, 0, "open".to_owned(), 0),
        "nothing freed, nothing reopened"
    );
    assert_eq!(event_counts(&app, &event).await, after);
    let claims: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.seat_claims WHERE seat_id = $1 AND event_id = $2::uuid",
    )
    .bind(&seat)
    .bind(&event)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(claims, 0);
    // The same ticket again, or one that is not the order's, is refused.
    let twice = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [tickets[0]]}),
        "k2",
    )
    .await;
    assert_error(twice, StatusCode::CONFLICT, "ticket_not_refundable").await;
    let foreign = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [uuid::Uuid::new_v4()]}),
        "k3",
    )
    .await;
    assert_error(foreign, StatusCode::CONFLICT, "ticket_not_refundable").await;
    let empty = refund(&app, &token, &order, json!({"ticket_ids": []}), "k4").await;
    assert_error(empty, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let other = refund(&app, &minted_fan_token(), &order, json!({}), "k5").await;
    assert_error(other, StatusCode::NOT_FOUND, "order_not_found").await;

    // The money: the loop asks the provider, whose signed webhook settles it.
    let payments = payments_of(&app, 10);
    assert_eq!(
        payments::refunds::work(&payments)
            .await
            .expect("refund pass"),
        1
    );
    let sent: (i64, String) = sqlx::query_as(
        "SELECT amount_cents, state FROM payments.sandbox_refunds WHERE refund_id = $1::uuid",
    )
    .bind(first["refund_id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .expect("the provider has the refund");
    assert_eq!(sent, (4050, "succeeded".to_owned()));
    let ack = refund_webhook(
        &app,
        first["refund_id"].as_str().unwrap(),
        "refund.succeeded",
        None,
    )
    .await;
    assert_eq!(ack["refund_state"], "succeeded");
    let read: Value = app
        .get_json(
            &format!("/v1/refunds/{}", first["refund_id"].as_str().unwrap()),
            Some(&token),
        )
        .await;
    assert_eq!(read["state"], "succeeded");

    // The credit note reads as one.
    let note = pdf(
        &app,
        &token,
        &format!(
            "/v1/refunds/{}/credit-note.pdf",
            first["refund_id"].as_str().unwrap()
        ),
    )
    .await;
    let text = pdf_text(&note);
    for needle in [
        format!("CRN-{year}-1"),
        format!("INV-{year}-1"),
        "Credit note".into(),
        seat.clone(),
        "40.50".into(),
        "-4.50".into(),
    ] {
        assert!(
            text.contains(&needle),
            "{needle:?} not in the credit note:\n{text}"
        );
    }

    // The rest of the order: refunded in full, and nothing more.
    let rest = refund(&app, &token, &order, json!({}), "k6").await;
    assert_eq!(rest.status(), StatusCode::ACCEPTED);
    let order: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    assert_eq!(order["state"], "refunded");
    assert_eq!(order["refunded_cents"], 8100);
    let none_left = refund(&app, &token, &order, json!({}), "k7").await;
    assert_error(none_left, StatusCode::CONFLICT, "ticket_not_refundable").await;
}

/// What the sandbox provider holds for a refund: `(attempt, state)`, in order.
async fn provider_attempts(app: &TestApp, refund_id: &str) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT attempt, state FROM payments.sandbox_refunds WHERE refund_id = $1::uuid
         ORDER BY attempt",
    )
    .bind(refund_id)
    .fetch_all(&app.pool)
    .await
    .expect("sandbox refunds")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_operators_retry_of_a_failed_refund_reaches_the_provider_again_and_a_stale_webhook_settles_nothing(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let (admin, event) = event_with(&app, Some(open_policy())).await;
    let (stop, _) = app.start_worker();
    let (token, order) = bought(&app, &event, 1, payments::provider::CARD_REFUND_FAILS).await;
    stop.cancel();
    let asked = refund(&app, &token, &order, json!({}), "fails-once").await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let refund_id = asked.json::<Value>().await.expect("refund")["refund_id"]
        .as_str()
        .expect("refund id")
        .to_owned();
    let refund_path = format!("/v1/refunds/{refund_id}");

    // The first attempt: the provider refuses it, by webhook.
    let payments = payments_of(&app, 10);
    assert_eq!(payments::refunds::work(&payments).await.expect("pass"), 1);
    assert_eq!(
        provider_attempts(&app, &refund_id).await,
        vec![(1, "failed".to_owned())]
    );
    let ack = refund_webhook(&app, &refund_id, "refund.failed", None).await;
    assert_eq!(
        (ack["status"].as_str(), ack["refund_state"].as_str()),
        (Some("processed"), Some("failed"))
    );
    let failed = app.get_json::<Value>(&refund_path, Some(&token)).await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["failure"], "refund_declined");

    // A fan cannot retry; an operator can, and the refund is pending again.
    let path = format!("/v1/ops/refunds/{refund_id}/retry");
    let fan = app.post(&path, Some(&token), &json!({})).await;
    assert_eq!(fan.status(), StatusCode::FORBIDDEN);
    let retried = app.post(&path, Some(&admin), &json!({})).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(retried.json::<Value>().await.unwrap()["state"], "pending");

    // The first attempt's word arriving again (a new delivery id, as a provider's
    // resend would have) is stale: it fails nothing.
    let ack = refund_webhook(&app, &refund_id, "refund.failed", Some(1)).await;
    assert_eq!(
        (ack["status"].as_str(), ack["refund_state"].as_str()),
        (Some("stale"), Some("pending"))
    );
    assert_eq!(
        app.get_json::<Value>(&refund_path, Some(&token)).await["state"],
        "pending"
    );

    // The retry is a new attempt under its own key: the provider is asked again
    // (the sandbox pays this card's second attempt) and its webhook settles it.
    assert_eq!(payments::refunds::work(&payments).await.expect("pass"), 1);
    assert_eq!(
        provider_attempts(&app, &refund_id).await,
        vec![(1, "failed".to_owned()), (2, "succeeded".to_owned())]
    );
    let ack = refund_webhook(&app, &refund_id, "refund.succeeded", Some(2)).await;
    assert_eq!(
        (ack["status"].as_str(), ack["refund_state"].as_str()),
        (Some("processed"), Some("succeeded"))
    );
    let succeeded = app.get_json::<Value>(&refund_path, Some(&token)).await;
    assert_eq!(succeeded["state"], "succeeded");
    assert_eq!(succeeded["failure"], Value::Null);

    // A succeeded refund is not tried again, and a webhook's attempt is 1 or more.
    let again = app.post(&path, Some(&admin), &json!({})).await;
    assert_error(again, StatusCode::CONFLICT, "invalid_transition").await;
    let zero =
        json!({"id": "wh-zero", "type": "refund.failed", "refund_id": refund_id, "attempt": 0});
    let response = webhook(&app, &zero, WEBHOOK_SECRET, chrono::Utc::now().timestamp()).await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_eq!(
        app.get_json::<Value>(&refund_path, Some(&token)).await["state"],
        "succeeded"
    );
}

/// Polls `read` until it gives `want` (at most 20 s).
async fn until<T, F, Fut>(what: &str, want: T, mut read: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let started = std::time::Instant::now();
    loop {
        let got = read().await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{what}: still {got:?}, not {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn refunded_seats_open_a_sold_out_and_retired_sale_again_until_its_show_begins(pool: PgPool) {
    let app = spawn_app(pool).await;
    let two_seats = json!({"name": "Back Room", "sections": [
        {"name": "Floor", "price_tier": "standard", "rows": [{"label": "A", "seats": 2}]}]});
    let (admin, event) = event_in(&app, &two_seats, Some(open_policy())).await;
    let event_id: proto::EventId = event.parse().unwrap();
    let (stop, _) = app.start_worker();
    let mut redis = app.redis.clone();
    let sale_state = |mut redis: platform::store::Redis| {
        let key = app.keys.sale(event_id);
        async move {
            redis::cmd("HGET")
                .arg(key)
                .arg("state")
                .query_async::<Option<String>>(&mut redis)
                .await
                .expect("sale state")
        }
    };
    let on_farm = |mut redis: platform::store::Redis| {
        let key = app.keys.active_events();
        let member = event.clone();
        async move {
            redis::cmd("SISMEMBER")
                .arg(key)
                .arg(member)
                .query_async::<bool>(&mut redis)
                .await
                .expect("active events")
        }
    };

    // The waiting room records the farm's moves in the ledger (`waiting_room.sales`).
    let mirrored = |mut redis: platform::store::Redis| {
        let (pool, keys, event) = (app.pool.clone(), app.keys.clone(), event.clone());
        async move {
            waiting_room::sale::mirror_farm_states(&pool, &mut redis, &keys)
                .await
                .expect("mirror");
            sqlx::query_scalar::<_, String>(
                "SELECT state FROM waiting_room.sales WHERE event_id = $1::uuid",
            )
            .bind(&event)
            .fetch_one(&pool)
            .await
            .expect("sale row")
        }
    };

    // A fan who comes after the last seat is sold is turned away, and the workers
    // find the sale sold out.
    let watch = redis.clone();
    let turned_away = || async {
        let (_, status) =
            join_and_wait(&app, &event, &minted_fan_token(), &json!({"quantity": 1})).await;
        assert_eq!(
            (status["state"].as_str(), status["reason"].as_str()),
            (Some("rejected"), Some("sold_out")),
            "{status}"
        );
        until("sale state", Some("sold_out".to_owned()), || {
            sale_state(watch.clone())
        })
        .await;
    };

    // Both seats sold: the sale is sold out, and once its line is empty the worker
    // retires it (off the farm, its keys set to expire).
    let (token, order) = bought(&app, &event, 2, PAID).await;
    turned_away().await;
    assert_eq!(mirrored(redis.clone()).await, "sold_out");
    until("on the farm", false, || on_farm(redis.clone())).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(app.keys.sale(event_id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 0, "a retired event's keys expire: TTL {ttl}");
    let late = minted_fan_token();
    let refused = app
        .client
        .post(app.url(&format!("/v1/events/{event}/requests")))
        .bearer_auth(&late)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"quantity": 1, "section": "Floor"}))
        .send()
        .await
        .expect("join");
    assert_error(refused, StatusCode::CONFLICT, "sold_out").await;

    // A refund of one ticket gives its seat back: the sale is open again at once,
    // back on the farm, and the pages are told.
    let tickets = ticket_ids(&order);
    let given = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [tickets[0]]}),
        "one-back",
    )
    .await;
    assert_eq!(given.status(), StatusCode::ACCEPTED);
    assert_eq!(sale_state(redis.clone()).await.as_deref(), Some("open"));
    assert!(on_farm(redis.clone()).await);
    assert_eq!(event_counts(&app, &event).await, (1, 0, 1));
    assert_eq!(mirrored(redis.clone()).await, "open");

    // The next fan joins and buys the seat; the worker that took the event again
    // kept its keys.
    let (next, order_next) = bought(&app, &event, 1, PAID).await;
    assert_eq!(order_next["state"], "paid");
    assert_eq!(order_next["tickets"].as_array().map(Vec::len), Some(1));
    assert_ne!(next, token);
    let ttl: i64 = redis::cmd("TTL")
        .arg(app.keys.sale(event_id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "the event's keys are kept again");
    turned_away().await;
    assert_eq!(event_counts(&app, &event).await, (0, 0, 2));
    assert_eq!(mirrored(redis.clone()).await, "sold_out");

    // Once the show has begun, an operator's refund frees its seat on the map (as in
    // the ledger) but opens nothing: nobody buys a seat for a show under way.
    sqlx::query(
        "UPDATE inventory.events SET onsale_at = now() - interval '2 hours',
             starts_at = now() - interval '1 minute' WHERE event_id = $1::uuid",
    )
    .bind(&event)
    .execute(&app.pool)
    .await
    .expect("the show begins");
    let at_the_door = app
        .post(
            &format!(
                "/v1/ops/orders/{}/refunds",
                order_next["order_id"].as_str().unwrap()
            ),
            Some(&admin),
            &json!({"reason": "the seat was broken"}),
        )
        .await;
    assert_eq!(at_the_door.status(), StatusCode::ACCEPTED);
    assert_eq!(event_counts(&app, &event).await, (1, 0, 1));
    assert_eq!(sale_state(redis.clone()).await.as_deref(), Some("sold_out"));
    assert_eq!(mirrored(redis.clone()).await, "sold_out");
    stop.cancel();
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM waiting_room.audit WHERE event_id = $1::uuid
         AND action IN ('sold_out', 'reopened') ORDER BY audit_id",
    )
    .bind(&event)
    .fetch_all(&app.pool)
    .await
    .expect("audit");
    assert_eq!(actions, ["sold_out", "reopened", "sold_out"]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn refunds_follow_the_policy_the_order_was_paid_under(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, no_refunds) = event_with(&app, None).await;
    let (_admin, event) = event_with(&app, Some(open_policy())).await;
    let (stop, _) = app.start_worker();
    let (token, order) = bought(&app, &no_refunds, 1, PAID).await;
    let refused = refund(&app, &token, &order, json!({}), "a").await;
    assert_error(refused, StatusCode::CONFLICT, "refunds_not_offered").await;

    let (early, early_order) = bought(&app, &event, 1, PAID).await;
    // The policy changes after the first order was paid: it keeps its own.
    sqlx::query("UPDATE inventory.events SET refund_until = now() - interval '1 day' WHERE event_id = $1::uuid")
        .bind(&event)
        .execute(&app.pool)
        .await
        .unwrap();
    let (late, late_order) = bought(&app, &event, 1, PAID).await;
    stop.cancel();
    let closed = refund(&app, &late, &late_order, json!({}), "b").await;
    assert_error(closed, StatusCode::CONFLICT, "refund_window_closed").await;
    let kept = refund(&app, &early, &early_order, json!({}), "c").await;
    assert_eq!(kept.status(), StatusCode::ACCEPTED);
    // A refused request changed nothing.
    let late_read: Value = app
        .get_json(
            &format!("/v1/orders/{}", late_order["order_id"].as_str().unwrap()),
            Some(&late),
        )
        .await;
    assert_eq!(late_read["state"], "paid");
    assert_eq!(late_read["refunded_cents"], 0);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_checked_in_ticket_is_not_refunded_and_a_refunded_one_admits_nobody(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = event_with(&app, Some(open_policy())).await;
    let (stop, _) = app.start_worker();
    let (token, order) = bought(&app, &event, 2, PAID).await;
    stop.cancel();
    let codes: Vec<String> = order["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["code"].as_str().unwrap().to_owned())
        .collect();
    let scan = |code: &str| {
        json!({"scans": [{
            "scan_id": uuid::Uuid::new_v4(), "code": code, "direction": "entry",
            "scanned_at": chrono::Utc::now(), "device_id": "gate-1", "offline": false,
        }]})
    };
    let admitted: Value = app
        .post(
            &format!("/v1/events/{event}/scans"),
            Some(&admin),
            &scan(&codes[0]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admitted["results"][0]["result"], "admitted", "{admitted}");
    let tickets = ticket_ids(&order);
    let inside = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [tickets[0]]}),
        "a",
    )
    .await;
    assert_error(inside, StatusCode::CONFLICT, "ticket_checked_in").await;
    let other = refund(
        &app,
        &token,
        &order,
        json!({"ticket_ids": [tickets[1]]}),
        "b",
    )
    .await;
    assert_eq!(other.status(), StatusCode::ACCEPTED);
    let refused: Value = app
        .post(
            &format!("/v1/events/{event}/scans"),
            Some(&admin),
            &scan(&codes[1]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refused["results"][0]["result"], "void", "{refused}");
    // An operator may refund the ticket that came in (a show stopped half-way).
    let ops = app
        .post(
            &format!(
                "/v1/ops/orders/{}/refunds",
                order["order_id"].as_str().unwrap()
            ),
            Some(&admin),
            &json!({"reason": "the show stopped after the first act"}),
        )
        .await;
    assert_eq!(ops.status(), StatusCode::ACCEPTED);
    let ops: Value = ops.json().await.unwrap();
    assert_eq!(
        ops["amount_cents"], 4500,
        "no fee for an operator's refund: {ops}"
    );
    assert_eq!(ops["reason"], "the show stopped after the first act");
    let audited: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM waiting_room.audit WHERE event_id = $1::uuid AND action = 'refund'",
    )
    .bind(&event)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["reason"], "the show stopped after the first act");
    assert_eq!(audited[0]["refund_id"], ops["refund_id"]);
    let no_reason = app
        .post(
            &format!(
                "/v1/ops/orders/{}/refunds",
                order["order_id"].as_str().unwrap()
            ),
            Some(&admin),
            &json!({"reason": " "}),
        )
        .await;
    assert_error(
        no_reason,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let fan = app
        .post(
            &format!(
                "/v1/ops/orders/{}/refunds",
                order["order_id"].as_str().unwrap()
            ),
            Some(&token),
            &json!({"reason": "mine"}),
        )
        .await;
    assert_eq!(fan.status(), StatusCode::FORBIDDEN);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_invoice_pdf_names_its_number_buyer_lines_and_total(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = event_with(&app, None).await;
    let (stop, _) = app.start_worker();
    let (token, request, _) = held(&app, &event, &json!({"quantity": 2, "section": "Floor"})).await;
    stop.cancel();
    let paid = app
        .client
        .post(app.url(&format!("/v1/requests/{request}/checkout")))
        .bearer_auth(&token)
        .json(&json!({"card_number": PAID, "expiry": "12/34", "cvc": "123",
                      "billing": {"name": "Ada Lovelace", "address": "12 Analytical Row, London", "vat_id": "GB123456789"}}))
        .send()
        .await
        .expect("checkout");
    let order: Value = paid.json().await.expect("order");
    assert_eq!(order["state"], "paid", "{order}");
    let order_id = order["order_id"].as_str().unwrap();
    let invoice: Value = app
        .get_json(&format!("/v1/orders/{order_id}/invoice"), Some(&token))
        .await;
    let number = invoice["invoice_number"].as_str().unwrap().to_owned();
    let bytes = pdf(&app, &token, &format!("/v1/orders/{order_id}/invoice.pdf")).await;
    let text = pdf_text(&bytes);
    let seats: Vec<String> = order["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    for needle in [
        number.clone(),
        "Ada Lovelace".into(),
        "GB123456789".into(),
        "Test Show".into(),
        "90.00".into(),
        "14.36".into(),
        format!("Ticket, seat {}", seats[0]),
        format!("Ticket, seat {}", seats[1]),
    ] {
        assert!(
            text.contains(&needle),
            "{needle:?} not in the invoice:\n{text}"
        );
    }
    // The stored bytes are served again, and named by their SHA-256.
    let again = pdf(&app, &token, &format!("/v1/orders/{order_id}/invoice.pdf")).await;
    assert_eq!(again, bytes);
    let invoice: Value = app
        .get_json(&format!("/v1/orders/{order_id}/invoice"), Some(&token))
        .await;
    use sha2::Digest as _;
    assert_eq!(
        invoice["pdf_sha256"],
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    // Kept as issued: Postgres refuses an edit.
    let edit = sqlx::query("UPDATE billing.documents SET total_cents = 1 WHERE number = $1")
        .bind(&number)
        .execute(&app.pool)
        .await;
    assert!(edit.is_err(), "an issued invoice was edited");
    // Bad billing details are refused before anything moves.
    let unpaid = app
        .get(
            &format!("/v1/orders/{}/invoice", uuid::Uuid::new_v4()),
            Some(&token),
        )
        .await;
    assert_error(unpaid, StatusCode::NOT_FOUND, "order_not_found").await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_thousand_concurrent_settlements_number_their_invoices_without_gaps(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.seeded_event().await;
    let event_id: proto::EventId = event.parse().unwrap();
    let seller: billing::Seller = serde_json::from_value(billing::Seller::defaults()).unwrap();
    // 1,000 orders settled at once, one in ten of them rolled back after taking its
    // number (a settlement that failed late): the committed ones number 1..=900.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let (pool, seller) = (app.pool.clone(), seller.clone());
        tasks.spawn(async move {
            let mut tx = pool.begin().await.expect("tx");
            let order: payments::orders::OrderRow = sqlx::query_as(&format!(
                "INSERT INTO payments.orders (order_id, request_id, event_id, fan_id, state, seats,
                     amount_cents, currency, card_last4, provider, seat_cents, seat_tax_cents)
                 VALUES ($1, $2, $3, $4, 'paid', ARRAY['Floor-A-1'], 4500, 'EUR', '4242', 'sandbox',
                         ARRAY[4500::bigint], ARRAY[0::bigint])
                 RETURNING {}",
                payments::orders::COLUMNS
            ))
            .bind(uuid::Uuid::now_v7())
            .bind(uuid::Uuid::now_v7())
            .bind(event_id)
            .bind(uuid::Uuid::now_v7())
            .fetch_one(&mut *tx)
            .await
            .expect("order");
            let invoice = payments::invoices::issue_invoice(&mut tx, &seller, &order)
                .await
                .expect("invoice");
            if i % 10 == 0 {
                tx.rollback().await.expect("rollback");
                None
            } else {
                tx.commit().await.expect("commit");
                Some(invoice.number)
            }
        });
    }
    let mut issued = Vec::new();
    while let Some(done) = tasks.join_next().await {
        issued.extend(done.expect("task"));
    }
    assert_eq!(issued.len(), 900);
    let year = chrono::Utc::now().format("%Y").to_string();
    let numbers: BTreeSet<i64> = issued
        .iter()
        .map(|n| {
            n.strip_prefix(&format!("INV-{year}-"))
                .expect("spelled INV-year-n")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        numbers,
        (1..=900).collect::<BTreeSet<i64>>(),
        "numbers with gaps or twice"
    );
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT n FROM billing.documents WHERE series = 'INV' ORDER BY n")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, (1..=900).collect::<Vec<i64>>());
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_cancelled_event_refunds_every_order_once_even_when_its_loop_runs_twice(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = event_with(&app, Some(open_policy())).await;
    let (stop, _) = app.start_worker();
    let mut fans = Vec::new();
    for quantity in [1, 2, 3] {
        fans.push(bought(&app, &event, quantity, PAID).await);
    }
    stop.cancel();
    // An operator refunded one ticket of the last order before the cancellation.
    let (_, last) = &fans[2];
    let partial = app
        .post(
            &format!(
                "/v1/ops/orders/{}/refunds",
                last["order_id"].as_str().unwrap()
            ),
            Some(&admin),
            &json!({"reason": "seat broken", "ticket_ids": [ticket_ids(last)[0]]}),
        )
        .await;
    assert_eq!(partial.status(), StatusCode::ACCEPTED);

    let cancelled = app
        .client
        .post(app.url(&format!("/v1/ops/events/{event}/cancel")))
        .bearer_auth(&admin)
        .header("idempotency-key", "cancel-1")
        .json(&json!({"reason": "the headliner is ill"}))
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    let progress: Value = cancelled.json().await.unwrap();
    assert_eq!(progress["reason"], "the headliner is ill");
    assert!(progress["finished_at"].is_null());
    let read: Value = app.get_json(&format!("/v1/events/{event}"), None).await;
    assert_eq!(read["cancelled"], true);
    let sale: Value = app
        .get_json(&format!("/v1/ops/events/{event}/stats"), Some(&admin))
        .await;
    assert_eq!(sale["state"], "closed", "{sale}");
    // Fans cannot ask for their own now: the cancellation refunds them in full.
    let (token, first) = &fans[0];
    let own = refund(&app, token, first, json!({}), "own").await;
    assert_error(own, StatusCode::CONFLICT, "event_cancelled").await;

    // Two loops at once (two payments processes), then again: every order once.
    let payments = payments_of(&app, 10);
    let (a, b) = tokio::join!(
        payments::cancel::work(&payments),
        payments::cancel::work(&payments)
    );
    a.expect("first loop");
    b.expect("second loop");
    payments::cancel::work(&payments).await.expect("again");
    payments::cancel::work(&payments)
        .await
        .expect("finishing pass");
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT o.state, o.amount_cents, o.refunded_cents,
                (SELECT count(*) FROM payments.refunds r WHERE r.order_id = o.order_id)
         FROM payments.orders o WHERE o.event_id = $1::uuid ORDER BY o.amount_cents",
    )
    .bind(&event)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("refunded".into(), 4500, 4500, 1),
            ("refunded".into(), 9000, 9000, 1),
            ("refunded".into(), 13500, 13500, 2),
        ]
    );
    let valid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tickets.tickets WHERE event_id = $1::uuid AND state = 'valid'",
    )
    .bind(&event)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(valid, 0);
    let (available, held, sold) = event_counts(&app, &event).await;
    assert_eq!((held, sold), (0, 0), "available {available}");
    let done: Value = app
        .get_json(&format!("/v1/ops/events/{event}/cancel"), Some(&admin))
        .await;
    assert!(done["finished_at"].is_string(), "{done}");
    assert_eq!(done["orders_total"], 3);
    assert_eq!(done["orders_refunded"], 3);
    // Every fan is told: one order.refunded per refund, flagged as the cancellation's.
    let told: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox.messages WHERE event_id = $1::uuid AND kind = 'order.refunded'
           AND (payload->'refund'->>'event_cancelled')::boolean",
    )
    .bind(&event)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(told, 3);
    // Cancelling again changes nothing.
    let twice = app
        .post(
            &format!("/v1/ops/events/{event}/cancel"),
            Some(&admin),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(twice.status(), StatusCode::ACCEPTED);
    assert_eq!(
        twice.json::<Value>().await.unwrap()["reason"],
        "the headliner is ill"
    );
    // The sale's audit log has the cancellation once, with its reason.
    let audited: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM waiting_room.audit WHERE event_id = $1::uuid AND action = 'cancel'",
    )
    .bind(&event)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, vec![json!({"reason": "the headliner is ill"})]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_cancellation_waits_for_an_order_being_opened_and_none_opens_after_it(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = event_with(&app, Some(open_policy())).await;
    let event_id: proto::EventId = event.parse().unwrap();
    let (stop, _) = app.start_worker();
    let (_, request, status) =
        held(&app, &event, &json!({"quantity": 1, "section": "Floor"})).await;
    let (_, other, other_status) =
        held(&app, &event, &json!({"quantity": 1, "section": "Floor"})).await;
    stop.cancel();
    let seats = |status: &Value| -> Vec<String> {
        status["seats"]
            .as_array()
            .expect("seats")
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let payments = payments_of(&app, 10);
    let open = |request: &str, seats: Vec<String>| {
        let (payments, request) = (payments.clone(), request.parse().unwrap());
        async move {
            let pricing = payments::orders::price(&payments.pool, event_id, &seats)
                .await
                .expect("price")
                .expect("priced");
            let mut tx = payments.pool.begin().await.expect("tx");
            let order = payments::orders::create(
                &mut tx,
                proto::OrderId::from(uuid::Uuid::now_v7()),
                request,
                event_id,
                proto::UserId::new(),
                &seats,
                &pricing,
                None,
                "EUR",
                "4242",
                "sandbox",
                None,
            )
            .await
            .expect("insert");
            (tx, order)
        }
    };

    // A checkout has its order half-open (the transaction not yet committed) when the
    // operator cancels; the cancellation's pass waits for it at the sale lock.
    let (tx, order) = open(&request, seats(&status)).await;
    assert!(order.is_some());
    let admin = proto::UserId::new();
    payments::cancel::start(&payments, event_id, admin, "the hall flooded")
        .await
        .expect("cancel");
    let pass = tokio::spawn({
        let payments = payments.clone();
        async move { payments::cancel::work(&payments).await }
    });
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND wait_event = 'advisory' AND query LIKE '%payments.sale:%'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the cancellation's pass never waited for the sale lock"
        );
        assert!(!pass.is_finished(), "the pass finished without waiting");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tx.commit().await.expect("commit");
    pass.await.expect("pass").expect("cancel pass");
    // It saw the order: the cancellation is not finished while it is in flight.
    let progress = payments::cancel::progress(&payments, event_id)
        .await
        .expect("progress")
        .expect("cancellation");
    assert!(progress.finished_at.is_none(), "{progress:?}");

    // An order opened after the cancellation is not made, whatever price it read.
    let (tx, order) = open(&other, seats(&other_status)).await;
    assert!(order.is_none(), "an order was opened for a cancelled event");
    drop(tx);
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments.orders WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&app.pool)
            .await
            .expect("orders");
    assert_eq!(orders, 1);
}
