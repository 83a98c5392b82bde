//! Bad checkouts and bad webhooks: each gets a clear 4xx with a stable code, and
//! the state read back afterwards is what it was.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;
use crate::support::sale::*;

async fn state(app: &TestApp, token: &str, request: &str) -> Value {
    app.get_json(&format!("/v1/requests/{request}"), Some(token))
        .await
}

async fn pay_with(app: &TestApp, token: &str, request: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/requests/{request}/checkout")))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("checkout")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_checkouts_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app_with(pool, |config| config.payments.paying_grace_seconds = 1).await;
    let (admin, event, stop) = open_sale(&app, 600).await;
    let (token, request, before) = held(&app, &event, &json!({"quantity": 2})).await;

    let card = |number: &str, expiry: &str, cvc: &str| json!({"card_number": number, "expiry": expiry, "cvc": cvc});
    let cases = [
        (
            card("4242424242424241", "12/34", "123"),
            "invalid_card_number",
        ),
        (card("4242", "12/34", "123"), "invalid_card_number"),
        (
            card("4242-4242-4242-424x", "12/34", "123"),
            "invalid_card_number",
        ),
        (card(PAID, "13/34", "123"), "invalid_expiry"),
        (card(PAID, "2034-12", "123"), "invalid_expiry"),
        (card(PAID, "01/20", "123"), "card_expired"),
        (card(PAID, "12/34", "12"), "invalid_cvc"),
        (card(PAID, "12/34", "abcd"), "invalid_cvc"),
        // A Visa's security code is 3 digits (American Express prints 4).
        (card(PAID, "12/34", "1234"), "invalid_cvc"),
        (
            json!({"card_number": PAID, "expiry": "12/34"}),
            "invalid_request",
        ),
        (
            json!({"card_number": PAID, "expiry": "12/34", "cvc": "123", "name": "x"}),
            "invalid_request",
        ),
    ];
    for (body, code) in &cases {
        let response = pay_with(&app, &token, &request, body).await;
        let answer = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, code).await;
        // The card never comes back in an answer.
        assert!(!answer.to_string().contains("424242424242"), "{answer}");
    }
    // Someone else's request, and one that does not exist.
    assert_error(
        checkout(&app, &minted_fan_token(), &request, PAID, None).await,
        StatusCode::NOT_FOUND,
        "request_not_found",
    )
    .await;
    assert_error(
        checkout(&app, &token, &uuid::Uuid::now_v7().to_string(), PAID, None).await,
        StatusCode::NOT_FOUND,
        "request_not_found",
    )
    .await;
    assert_error(
        checkout(&app, &token, "not-a-uuid", PAID, None).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    let anonymous = app
        .client
        .post(app.url(&format!("/v1/requests/{request}/checkout")))
        .json(&card(PAID, "12/34", "123"))
        .send()
        .await
        .expect("checkout");
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Nothing moved.
    assert_eq!(state(&app, &token, &request).await, before);
    assert_eq!(app.count("payments.orders").await, 0);
    assert_eq!(app.count("payments.sandbox_charges").await, 0);

    // A request still in the pre-queue of another sale holds nothing.
    let venue = app.create_venue(&admin, &venue_body()).await;
    let later = app.create_event(&admin, &venue).await;
    let fan = minted_fan_token();
    let joined: Value = app
        .post(
            &format!("/v1/events/{later}/requests"),
            Some(&fan),
            &json!({"quantity": 1}),
        )
        .await
        .json()
        .await
        .expect("joined");
    let waiting = joined["request_id"].as_str().expect("id");
    assert_error(
        checkout(&app, &fan, waiting, PAID, None).await,
        StatusCode::CONFLICT,
        "request_not_held",
    )
    .await;
    assert_eq!(state(&app, &fan, waiting).await["state"], "prequeue");

    // A paid request is not paid again.
    let paid: Value = pay(&app, &token, &request, PAID, None).await;
    assert_eq!(paid["state"], "paid");
    assert_error(
        checkout(&app, &token, &request, PAID, None).await,
        StatusCode::CONFLICT,
        "already_paid",
    )
    .await;
    assert_eq!(app.count("payments.sandbox_charges").await, 1);

    // A released hold is over.
    let (other, released, _) = held(&app, &event, &json!({"quantity": 1})).await;
    let leave = app
        .client
        .delete(app.url(&format!("/v1/requests/{released}")))
        .bearer_auth(&other)
        .send()
        .await
        .expect("leave");
    assert_eq!(leave.status(), StatusCode::OK);
    assert_error(
        checkout(&app, &other, &released, PAID, None).await,
        StatusCode::CONFLICT,
        "hold_ended",
    )
    .await;
    assert_eq!(state(&app, &other, &released).await["state"], "released");
    assert_eq!(app.count("payments.orders").await, 1);
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_expired_hold_is_not_checked_out(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 1).await;
    let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;
    wait_for_state(&app, &token, &request, &["expired"]).await;
    assert_error(
        checkout(&app, &token, &request, PAID, None).await,
        StatusCode::CONFLICT,
        "hold_ended",
    )
    .await;
    assert_eq!(state(&app, &token, &request).await["state"], "expired");
    assert_eq!(app.count("payments.orders").await, 0);
    stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_webhooks_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (token, request, _) = held(&app, &event, &json!({"quantity": 1})).await;
    let order: Value = pay(&app, &token, &request, PENDING, None).await;
    let order_id = order["order_id"].as_str().expect("order_id");
    let delivery = json!({"id": "wh_1", "type": "payment.succeeded", "order_id": order_id});
    let now = chrono::Utc::now().timestamp();

    // Signed with another secret; signed 301 s ago; signed for another body.
    assert_error(
        webhook(&app, &delivery, "not-the-secret-at-all", now).await,
        StatusCode::BAD_REQUEST,
        "invalid_signature",
    )
    .await;
    assert_error(
        webhook(&app, &delivery, WEBHOOK_SECRET, now - 301).await,
        StatusCode::BAD_REQUEST,
        "signature_expired",
    )
    .await;
    let forged = app
        .client
        .post(app.url("/v1/payments/webhook"))
        .header("content-type", "application/json")
        .header(
            "onsale-signature",
            payments::signature::sign(WEBHOOK_SECRET.as_bytes(), now, b"{}"),
        )
        .body(delivery.to_string())
        .send()
        .await
        .expect("webhook");
    assert_error(forged, StatusCode::BAD_REQUEST, "invalid_signature").await;
    let unsigned = app
        .client
        .post(app.url("/v1/payments/webhook"))
        .header("content-type", "application/json")
        .body(delivery.to_string())
        .send()
        .await
        .expect("webhook");
    assert_error(unsigned, StatusCode::BAD_REQUEST, "invalid_signature").await;
    // Well signed, but about an order that does not exist, or of an unknown type.
    let unknown =
        json!({"id": "wh_2", "type": "payment.succeeded", "order_id": uuid::Uuid::now_v7()});
    assert_error(
        webhook(&app, &unknown, WEBHOOK_SECRET, now).await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    let odd = json!({"id": "wh_3", "type": "payment.refunded", "order_id": order_id});
    assert_error(
        webhook(&app, &odd, WEBHOOK_SECRET, now).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;

    // Nothing moved: the order is pending, the request paying, no delivery recorded.
    let read: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    assert_eq!(read["state"], "pending");
    assert_eq!(state(&app, &token, &request).await["state"], "paying");
    assert_eq!(app.count("payments.webhooks").await, 0);
    stop.cancel();
}
