//! The operators' money levers, which touch two services, so the gateway composes
//! them here: `POST /v1/ops/events/{event_id}/cancel` closes the sale first (the
//! waiting room's lever: no one joins, the line is refused), then payments records
//! the cancellation, and its refund loop refunds every order in full, voids every
//! ticket and emails every fan (`order.refunded`), resuming where it stopped after a
//! crash; `GET` on the same path tells how far it has come.
//! `POST /v1/ops/orders/{order_id}/refunds` refunds an order (payments) and writes
//! the sale's audit log (the waiting room's), as the cancellation does.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use payments::refunds::Requester;
use platform::auth::{Operator, TokenVerifier};
use platform::http::{Json, Path};
use proto::wire::payments::{CancelEvent, Cancellation, OpsRefundRequest, Refund};
use proto::wire::queue::SaleState;
use proto::{ErrorBody, ErrorCode, EventId, OrderId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use waiting_room::sale::{self, Lever};

#[derive(Clone, FromRef)]
pub struct CancelState {
    pub payments: payments::Payments,
    pub verifier: Arc<TokenVerifier>,
}

pub fn router() -> OpenApiRouter<CancelState> {
    OpenApiRouter::new()
        .routes(routes!(cancel, progress))
        .routes(routes!(ops_refund))
}

/// Refund an order's tickets (operators): any time, checked-in tickets too, in
/// full, with a reason kept in the sale's audit log.
#[utoipa::path(
    post, path = "/v1/ops/orders/{order_id}/refunds", tag = "operations",
    params(
        ("order_id" = OrderId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key and body get the first answer"),
    ),
    request_body = OpsRefundRequest,
    responses(
        (status = 202, body = Refund),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`order_not_found`"),
        (status = 409, body = ErrorBody, description = "`ticket_not_refundable`, `idempotency_key_reused`"),
        (status = 422, body = ErrorBody, description = "`invalid_request`: a missing or overlong reason"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = ["operator"]))
)]
async fn ops_refund(
    State(state): State<CancelState>,
    Operator(caller): Operator,
    Path(order_id): Path<OrderId>,
    Json(body): Json<OpsRefundRequest>,
) -> Result<(StatusCode, Json<Refund>), ErrorBody> {
    let reason = payments::refunds::check_reason(&body.reason)?.to_owned();
    let by = Requester::Operator {
        user: caller.user_id,
        reason: reason.clone(),
        cancellation: false,
    };
    let refund = payments::money_routes::approve_to_end(
        state.payments.clone(),
        order_id,
        body.ticket_ids,
        by,
    )
    .await?;
    let detail = serde_json::json!({
        "order_id": order_id,
        "refund_id": refund.refund_id,
        "seats": refund.seats,
        "amount_cents": refund.amount_cents,
        "reason": reason,
    });
    // The refund stands whether or not its audit entry could be written.
    if let Err(error) = sale::audit(
        &state.payments.pool,
        refund.event_id,
        Some(caller.user_id),
        "refund",
        detail,
    )
    .await
    {
        tracing::error!(refund_id = %refund.refund_id, %error, "an operator's refund is not in the audit log");
    }
    Ok((StatusCode::ACCEPTED, Json(refund.to_wire())))
}

/// Cancel an event (operators): the sale closes, every order is refunded in full,
/// every ticket voided, every fan emailed. Answers at once with the progress; the
/// refunds run in the background and resume after a restart. Cancelling again
/// changes nothing.
#[utoipa::path(
    post, path = "/v1/ops/events/{event_id}/cancel", tag = "operations",
    params(
        ("event_id" = EventId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key and body get the first answer"),
    ),
    request_body = CancelEvent,
    responses(
        (status = 202, body = Cancellation),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
        (status = 409, body = ErrorBody, description = "`invalid_transition`: the line is being drawn; try again in a moment"),
        (status = 422, body = ErrorBody, description = "`invalid_request`: a missing or overlong reason"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn cancel(
    State(state): State<CancelState>,
    Operator(caller): Operator,
    Path(event_id): Path<EventId>,
    Json(body): Json<CancelEvent>,
) -> Result<(StatusCode, Json<Cancellation>), ErrorBody> {
    let payments = &state.payments;
    payments::refunds::check_reason(&body.reason)?;
    inventory::events::get(&payments.pool, event_id).await?;
    let mut redis = payments.redis.clone();
    let closed = sale::pull(
        &payments.pool,
        &mut redis,
        &payments.keys,
        event_id,
        Lever::Close,
        caller.user_id,
    )
    .await;
    if let Err(error) = closed {
        // Closed already (by an operator, or a first cancellation) is fine.
        let state: Option<String> = redis::cmd("HGET")
            .arg(payments.keys.sale(event_id))
            .arg(proto::sale_hash::STATE)
            .query_async(&mut redis)
            .await
            .unwrap_or(None);
        if state.as_deref() != Some(SaleState::Closed.as_str()) {
            return Err(error.into());
        }
    }
    let (progress, first) =
        payments::cancel::start(payments, event_id, caller.user_id, &body.reason).await?;
    if first {
        // The sale's audit log says who cancelled the show, and why. The
        // cancellation stands whether or not its entry could be written (as an
        // operator's refund does): a retry would not write it either.
        if let Err(error) = sale::audit(
            &payments.pool,
            event_id,
            Some(caller.user_id),
            "cancel",
            serde_json::json!({"reason": progress.reason}),
        )
        .await
        {
            tracing::error!(%event_id, %error, "a cancellation is not in the audit log");
        }
    }
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

/// How far an event's cancellation has come (operators).
#[utoipa::path(
    get, path = "/v1/ops/events/{event_id}/cancel", tag = "operations",
    params(("event_id" = EventId, Path)),
    responses(
        (status = 200, body = Cancellation),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`: no such event, or it is not cancelled"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn progress(
    State(state): State<CancelState>,
    Operator(_caller): Operator,
    Path(event_id): Path<EventId>,
) -> Result<Json<Cancellation>, ErrorBody> {
    payments::cancel::progress(&state.payments, event_id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::EventNotFound,
                format!("event {event_id} does not exist, or is not cancelled"),
            )
        })
}
