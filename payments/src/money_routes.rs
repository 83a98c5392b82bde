//! Money back and paper: refunds (a fan's, an operator's), invoices and credit notes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use platform::auth::{Caller, Operator};
use platform::http::{Json, Path};
use proto::wire::payments::{Invoice, Refund, RefundRequest};
use proto::{ErrorBody, ErrorCode, OrderId, RefundId, Role};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::refunds::{self, Requester};
use crate::{Error, Payments, PaymentsState, orders};

pub fn router() -> OpenApiRouter<PaymentsState> {
    OpenApiRouter::new()
        .routes(routes!(request_refund))
        .routes(routes!(get_refund))
        .routes(routes!(credit_note_pdf))
        .routes(routes!(get_invoice))
        .routes(routes!(invoice_pdf))
        .routes(routes!(retry_refund))
}

/// The order, if it is the caller's (or the caller operates).
async fn visible_order(
    payments: &Payments,
    caller: Caller,
    order_id: OrderId,
) -> Result<orders::OrderRow, Error> {
    orders::get(&payments.pool, order_id)
        .await?
        .filter(|o| o.fan_id == caller.user_id || caller.role.includes(Role::Operator))
        .ok_or(Error::OrderNotFound(order_id))
}

fn refund_not_found(refund_id: RefundId) -> Error {
    Error::refused(
        ErrorCode::RefundNotFound,
        format!("refund {refund_id} does not exist, or is not yours"),
    )
}

/// Ask for a refund (the order's fan): some of its tickets (`ticket_ids`), or every
/// valid one.
///
/// Within the event's refund policy as it was when the order was paid, less its
/// fee. Approved at once: the tickets turn `void` and their seats go back on sale;
/// the money follows (`state` moves from `pending` to `succeeded` or `failed`). A
/// retry with the same `Idempotency-Key` gets the first answer and refunds once.
#[utoipa::path(
    post, path = "/v1/orders/{order_id}/refunds", tag = "payments",
    params(
        ("order_id" = OrderId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key and body get the first answer"),
    ),
    request_body = RefundRequest,
    responses(
        (status = 202, body = Refund),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`order_not_found`: no such order, or not the caller's"),
        (status = 409, body = ErrorBody, description = "`refunds_not_offered`, `refund_window_closed`, `ticket_checked_in`, `ticket_not_refundable`, `event_cancelled`, `idempotency_key_reused`"),
        (status = 422, body = ErrorBody, description = "`invalid_request`"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn request_refund(
    State(payments): State<Payments>,
    caller: Caller,
    Path(order_id): Path<OrderId>,
    Json(body): Json<RefundRequest>,
) -> Result<(StatusCode, Json<Refund>), ErrorBody> {
    let by = Requester::Fan(caller.user_id);
    let refund = approve_to_end(payments, order_id, body.ticket_ids, by).await?;
    Ok((StatusCode::ACCEPTED, Json(refund.to_wire())))
}

/// Runs an approval on its own task: a client going away mid-way must not leave
/// the seat part half-done (it is one transaction, but the seats' return to Redis
/// follows it).
pub async fn approve_to_end(
    payments: Payments,
    order_id: OrderId,
    tickets: Option<Vec<proto::TicketId>>,
    by: Requester,
) -> Result<refunds::RefundRow, Error> {
    let task = async move { refunds::approve(&payments, order_id, tickets.as_deref(), &by).await };
    tokio::spawn(tracing::Instrument::in_current_span(
        platform::correlation::carried(task),
    ))
    .await
    .map_err(|e| Error::Unexpected(format!("refund task: {e}")))?
}

/// Try a failed refund again (operators).
#[utoipa::path(
    post, path = "/v1/ops/refunds/{refund_id}/retry", tag = "operations",
    params(("refund_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = Refund, description = "`pending` again"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`refund_not_found`"),
        (status = 409, body = ErrorBody, description = "`invalid_transition`: the refund has not failed"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn retry_refund(
    State(payments): State<Payments>,
    Operator(_caller): Operator,
    Path(refund_id): Path<RefundId>,
) -> Result<Json<Refund>, ErrorBody> {
    let refund = refunds::retry(&payments, refund_id).await?;
    Ok(Json(refund.to_wire()))
}

/// One refund (its fan, or an operator).
#[utoipa::path(
    get, path = "/v1/refunds/{refund_id}", tag = "payments",
    params(("refund_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = Refund),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`refund_not_found`: no such refund, or not the caller's"),
    ),
    security(("bearer" = []))
)]
async fn get_refund(
    State(payments): State<Payments>,
    caller: Caller,
    Path(refund_id): Path<RefundId>,
) -> Result<Json<Refund>, ErrorBody> {
    let refund = refunds::get(&payments.pool, refund_id)
        .await
        .map_err(Error::from)?
        .filter(|r| r.fan_id == caller.user_id || caller.role.includes(Role::Operator))
        .ok_or_else(|| refund_not_found(refund_id))?;
    Ok(Json(refund.to_wire()))
}

fn pdf_response(number: &str, pdf: Vec<u8>) -> Response {
    (
        [
            (CONTENT_TYPE, "application/pdf".to_owned()),
            (CACHE_CONTROL, "private, max-age=3600".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("inline; filename=\"{number}.pdf\""),
            ),
        ],
        pdf,
    )
        .into_response()
}

async fn stored_pdf(payments: &Payments, number: &str) -> Result<Vec<u8>, Error> {
    billing::pdf_of(&payments.pool, number)
        .await?
        .ok_or_else(|| Error::Unexpected(format!("document {number} vanished")))
}

/// A refund's credit note as PDF (its fan, or an operator): the stored bytes.
#[utoipa::path(
    get, path = "/v1/refunds/{refund_id}/credit-note.pdf", tag = "payments",
    params(("refund_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, content_type = "application/pdf", body = Vec<u8>),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`refund_not_found`, `invoice_not_found`: an order paid before invoices were issued has none"),
    ),
    security(("bearer" = []))
)]
async fn credit_note_pdf(
    State(payments): State<Payments>,
    caller: Caller,
    Path(refund_id): Path<RefundId>,
) -> Result<Response, ErrorBody> {
    let refund = refunds::get(&payments.pool, refund_id)
        .await
        .map_err(Error::from)?
        .filter(|r| r.fan_id == caller.user_id || caller.role.includes(Role::Operator))
        .ok_or_else(|| refund_not_found(refund_id))?;
    let number = refund.credit_note_number.ok_or_else(|| {
        Error::refused(
            ErrorCode::InvoiceNotFound,
            format!("refund {refund_id} has no credit note: its order was paid before invoices were issued"),
        )
    })?;
    Ok(pdf_response(&number, stored_pdf(&payments, &number).await?))
}

async fn invoice_of(
    payments: &Payments,
    caller: Caller,
    order_id: OrderId,
) -> Result<billing::Document, Error> {
    visible_order(payments, caller, order_id).await?;
    billing::of_order(&payments.pool, order_id)
        .await?
        .ok_or_else(|| {
            Error::refused(
                ErrorCode::InvoiceNotFound,
                format!("order {order_id} has no invoice: it is not paid"),
            )
        })
}

/// An order's invoice (its fan, or an operator), issued when its payment settled.
#[utoipa::path(
    get, path = "/v1/orders/{order_id}/invoice", tag = "payments",
    params(("order_id" = OrderId, Path)),
    responses(
        (status = 200, body = Invoice),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`order_not_found`, `invoice_not_found`: the order is not paid"),
    ),
    security(("bearer" = []))
)]
async fn get_invoice(
    State(payments): State<Payments>,
    caller: Caller,
    Path(order_id): Path<OrderId>,
) -> Result<Json<Invoice>, ErrorBody> {
    let document = invoice_of(&payments, caller, order_id).await?;
    Ok(Json(Invoice {
        invoice_number: document.number,
        issued_at: document.issued_at,
        total_cents: document.total_cents,
        tax_cents: document.tax_cents,
        currency: document.currency,
        pdf_sha256: document.pdf_sha256,
    }))
}

/// An order's invoice as PDF (its fan, or an operator): the stored bytes, whose
/// SHA-256 the invoice names.
#[utoipa::path(
    get, path = "/v1/orders/{order_id}/invoice.pdf", tag = "payments",
    params(("order_id" = OrderId, Path)),
    responses(
        (status = 200, content_type = "application/pdf", body = Vec<u8>),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`order_not_found`, `invoice_not_found`"),
    ),
    security(("bearer" = []))
)]
async fn invoice_pdf(
    State(payments): State<Payments>,
    caller: Caller,
    Path(order_id): Path<OrderId>,
) -> Result<Response, ErrorBody> {
    let document = invoice_of(&payments, caller, order_id).await?;
    Ok(pdf_response(
        &document.number,
        stored_pdf(&payments, &document.number).await?,
    ))
}
