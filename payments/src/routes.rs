//! Payments' HTTP routes: checkout, orders, and the provider's webhook.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use platform::auth::Caller;
use platform::http::{Json, Path};
use proto::wire::payments::{Checkout, Order, Orders, Webhook, WebhookAck};
use proto::{ErrorBody, ErrorCode, OrderId, RequestId, Role};
use secrecy::ExposeSecret;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::signature::{self, SignatureError};
use crate::{Error, Payments, PaymentsState, checkout, orders};

pub fn router() -> OpenApiRouter<PaymentsState> {
    OpenApiRouter::new()
        .routes(routes!(post_checkout))
        .routes(routes!(get_order))
        .routes(routes!(list_orders))
        .routes(routes!(webhook))
        .merge(crate::money_routes::router())
}

/// Longest webhook delivery id.
pub const MAX_WEBHOOK_ID: usize = 255;
/// Pay for a held request's seats.
///
/// The request must be the caller's and held. While the payment is in flight the
/// request is `paying` and its hold is extended. `paid`: the seats are sold and the
/// request is `confirmed`. `declined`: the hold stays, try another card while it
/// lasts. `pending`: the outcome arrives by webhook; read the order again. A retry
/// with the same `Idempotency-Key` and body gets the same answer and charges once.
#[utoipa::path(
    post, path = "/v1/requests/{request_id}/checkout", tag = "payments",
    params(
        ("request_id" = RequestId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key and body get the first answer"),
    ),
    request_body = Checkout,
    responses(
        (status = 200, body = Order, description = "`state` is `paid`, `declined`, `pending` or `refunded`"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`request_not_found`: no such request, or not the caller's"),
        (status = 409, body = ErrorBody, description = "`request_not_held`, `hold_ended`, `payment_in_flight`, `already_paid`, `idempotency_key_reused`"),
        (status = 422, body = ErrorBody, description = "`invalid_card_number`, `invalid_expiry`, `card_expired`, `invalid_cvc`, `invalid_request`"),
        (status = 503, body = ErrorBody, description = "`service_unavailable`: try again shortly"),
    ),
    security(("bearer" = []))
)]
async fn post_checkout(
    State(payments): State<Payments>,
    caller: Caller,
    Path(request_id): Path<RequestId>,
    Json(body): Json<Checkout>,
) -> Result<Json<Order>, ErrorBody> {
    // Once started, a checkout runs to its end on a task of its own: a client that
    // goes away mid-way (a timeout, a closed tab) must not leave the request paying
    // with no order, nor a charge without its settlement.
    // It keeps the call's correlation id and log span.
    let task =
        async move { checkout::checkout(&payments, caller.user_id, request_id, &body).await };
    let order = tokio::spawn(tracing::Instrument::in_current_span(
        platform::correlation::carried(task),
    ))
    .await
    .map_err(|e| Error::Unexpected(format!("checkout task: {e}")))??;
    Ok(Json(order.to_wire()))
}

/// One order (its fan, or an operator).
#[utoipa::path(
    get, path = "/v1/orders/{order_id}", tag = "payments",
    params(("order_id" = OrderId, Path)),
    responses(
        (status = 200, body = Order),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`order_not_found`: no such order, or not the caller's"),
    ),
    security(("bearer" = []))
)]
async fn get_order(
    State(payments): State<Payments>,
    caller: Caller,
    Path(order_id): Path<OrderId>,
) -> Result<Json<Order>, ErrorBody> {
    let order = orders::get(&payments.pool, order_id)
        .await
        .map_err(Error::from)?
        .filter(|o| o.fan_id == caller.user_id || caller.role.includes(Role::Operator))
        .ok_or(Error::OrderNotFound(order_id))?;
    let mut wired = with_tickets(&payments, &[order]).await?;
    Ok(Json(wired.remove(0)))
}

/// The caller's orders, newest first (the latest 100).
#[utoipa::path(
    get, path = "/v1/orders", tag = "payments",
    responses((status = 200, body = Orders), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn list_orders(
    State(payments): State<Payments>,
    caller: Caller,
) -> Result<Json<Orders>, ErrorBody> {
    let rows = orders::of_fan(&payments.pool, caller.user_id, 100)
        .await
        .map_err(Error::from)?;
    Ok(Json(Orders {
        orders: with_tickets(&payments, &rows).await?,
    }))
}

/// `orders` on the wire, each paid one with its tickets (codes signed).
pub(crate) async fn with_tickets(
    payments: &Payments,
    orders: &[orders::OrderRow],
) -> Result<Vec<Order>, Error> {
    use proto::wire::payments::OrderState;
    let paid: Vec<OrderId> = orders
        .iter()
        .filter(|o| {
            matches!(
                o.state(),
                OrderState::Paid | OrderState::PartiallyRefunded | OrderState::Refunded
            )
        })
        .map(|o| o.order_id)
        .collect();
    let mut tickets = tickets::ledger::of_orders(&payments.pool, &payments.ring, &paid).await?;
    let mut refunds = crate::refunds::of_orders(&payments.pool, &paid).await?;
    Ok(orders
        .iter()
        .map(|order| {
            let mut wire = order.to_wire();
            wire.tickets = tickets
                .extract_if(.., |(id, _)| *id == order.order_id)
                .map(|(_, ticket)| ticket)
                .collect();
            wire.refunds = refunds
                .extract_if(.., |r| r.order_id == order.order_id)
                .map(|r| r.to_wire())
                .collect();
            wire
        })
        .collect())
}

/// The payment provider reports a payment's or a refund's outcome.
///
/// Signed with `Onsale-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw
/// body>">` under `ONSALE_PAYMENTS__WEBHOOK_SECRET`. The same `id` again changes
/// nothing.
#[utoipa::path(
    post, path = "/v1/payments/webhook", tag = "payments",
    params(("Onsale-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    request_body = Webhook,
    responses(
        (status = 200, body = WebhookAck),
        (status = 400, body = ErrorBody, description = "`invalid_signature`, `signature_expired`, `malformed_json`"),
        (status = 404, body = ErrorBody, description = "`order_not_found`, `refund_not_found`"),
        (status = 422, body = ErrorBody, description = "`invalid_request`: an unknown `type`, or without its `order_id` or `refund_id`"),
        (status = 503, body = ErrorBody, description = "not processed; deliver it again later"),
    )
)]
async fn webhook(
    State(payments): State<Payments>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAck>, ErrorBody> {
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    signature::verify(
        payments.settings.webhook_secret.expose_secret().as_bytes(),
        header,
        &body,
        Utc::now().timestamp(),
    )
    .map_err(|e: SignatureError| {
        metrics::counter!("onsale_webhooks_total", "outcome" => "bad_signature").increment(1);
        ErrorBody::new(e.code(), e.to_string())
    })?;
    let delivery: Webhook = serde_json::from_slice(&body).map_err(|e| {
        ErrorBody::new(
            if e.is_data() {
                ErrorCode::InvalidRequest
            } else {
                ErrorCode::MalformedJson
            },
            format!("the webhook body is not a webhook: {e}"),
        )
    })?;
    if delivery.id.is_empty()
        || delivery.id.chars().count() > MAX_WEBHOOK_ID
        || delivery.id.chars().any(char::is_control)
    {
        return Err(ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!("id must be 1 to {MAX_WEBHOOK_ID} characters, no control characters"),
        ));
    }
    let missing = |field: &str| {
        ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!("a {} webhook names its {field}", delivery.kind),
        )
    };
    let ack = match delivery.kind.as_str() {
        "payment.succeeded" | "payment.failed" => {
            let order_id = delivery.order_id.ok_or_else(|| missing("order_id"))?;
            let succeeded = delivery.kind == "payment.succeeded";
            crate::webhooks::deliver(&payments, &delivery, order_id, succeeded).await?
        }
        "refund.succeeded" | "refund.failed" => {
            let refund_id = delivery.refund_id.ok_or_else(|| missing("refund_id"))?;
            let succeeded = delivery.kind == "refund.succeeded";
            let attempt = delivery.attempt.unwrap_or(1);
            if attempt < 1 {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "a refund webhook's attempt is 1 or more",
                ));
            }
            crate::webhooks::deliver_refund(&payments, &delivery, refund_id, attempt, succeeded)
                .await?
        }
        other => {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "unknown webhook type {other:?}: payment.succeeded, payment.failed, refund.succeeded or refund.failed"
                ),
            ));
        }
    };
    Ok(Json(ack))
}
