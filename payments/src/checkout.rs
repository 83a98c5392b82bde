//! `POST /v1/requests/{id}/checkout`: from a hold to a payment.
//!
//! 1. The card is checked (nothing moves for a bad one).
//! 2. `pay.lua` moves the held request to paying and extends its hold by the paying
//!    grace, atomically with the sweep; only the request's own fan can.
//! 3. One Postgres transaction moves the ledger's request to paying (its claims
//!    extended too, so a rebuild keeps them) and creates the pending order. The
//!    ledger may not have the hold yet (the drainer writes in batches): it is asked
//!    again for up to [`LEDGER_WAIT`].
//! 4. The provider charges the card; its answer settles the order ([`crate::settle`]).
//!    A pending answer waits for the webhook; a lost one for the reconciler.
//!
//! Should anything fail before the charge, the request is put back to held.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::wire::payments::{Checkout, OrderState};
use proto::wire::queue::RequestState;
use proto::{ErrorCode, EventId, OrderId, RequestId, UserId};
use redis::Value;
use tracing::Instrument;

use crate::orders::{self, OrderRow};
use crate::provider::Charge;
use crate::{Error, Payments, card, settle};
use ::ledger::checkout::{self as ledger, BeginPaying};

/// How long a checkout waits for the ledger to record a hold that Redis has.
const LEDGER_WAIT: Duration = Duration::from_secs(3);
const LEDGER_POLL: Duration = Duration::from_millis(50);

/// Checks out `request_id` for `fan` with the card in `body`.
pub async fn checkout(
    payments: &Payments,
    fan: UserId,
    request_id: RequestId,
    body: &Checkout,
) -> Result<OrderRow, Error> {
    let card = card::validate(body, Utc::now().date_naive())
        .map_err(|e| Error::refused(e.code, e.message))?;
    if let Some(billing) = &body.billing {
        check_billing(billing)?;
    }
    let mut redis = payments.redis.clone();
    let Some(event_id) = event_of(payments, request_id).await? else {
        return Err(recorded_refusal(payments, fan, request_id).await?);
    };
    let grace_ms = (payments.settings.paying_grace_seconds * 1000) as i64;
    let reply: Vec<Value> = proto::scripts::pay(
        &payments.keys,
        event_id,
        request_id,
        fan,
        Utc::now().timestamp_millis(),
        grace_ms,
    )
    .invoke_async(&mut redis)
    .await?;
    let (deadline, seats) = match reply.as_slice() {
        [Value::Int(1), deadline, seats] => (
            redis::from_redis_value::<i64>(deadline.clone())
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_millis),
            redis::from_redis_value::<String>(seats.clone()).unwrap_or_default(),
        ),
        [_, why, ..] => {
            let why = redis::from_redis_value::<String>(why.clone()).unwrap_or_default();
            return Err(refusal(request_id, &why));
        }
        _ => return Err(Error::Unexpected(format!("pay.lua answered {reply:?}"))),
    };
    let seats: Vec<String> = seats.split_whitespace().map(str::to_owned).collect();
    let Some(deadline) = deadline else {
        return Err(Error::Unexpected(
            "pay.lua answered without a deadline".into(),
        ));
    };

    let order = match open_order(
        payments,
        fan,
        event_id,
        request_id,
        deadline,
        &seats,
        card.last4(),
        body.billing.as_ref(),
    )
    .await
    {
        Ok(order) => order,
        Err(error) => {
            // Nothing was charged: the request is held again as it was.
            let _: Result<Vec<Value>, _> =
                proto::scripts::unpay(&payments.keys, event_id, request_id)
                    .invoke_async(&mut redis)
                    .await;
            return Err(error);
        }
    };
    // The payment is a span of the join's trace: the hold's context, kept by the
    // ledger and now by the order (`platform::telemetry`).
    let span = tracing::info_span!("pay", order_id = %order.order_id, %request_id);
    platform::telemetry::continue_from(&span, order.traceparent.as_deref());
    charge(payments, order, &card).instrument(span).await
}

/// Charges the card for the pending `order` and settles what the provider answers.
async fn charge(
    payments: &Payments,
    order: OrderRow,
    card: &card::Card,
) -> Result<OrderRow, Error> {
    tracing::info!(order_id = %order.order_id, request_id = %order.request_id, amount_cents = order.amount_cents, card = card.last4(), "charging");
    match payments
        .provider
        .charge(order.order_id, order.amount_cents, card)
        .await
    {
        Ok(Charge::Succeeded { charge_id }) => {
            settle::succeeded(payments, order.order_id, Some(&charge_id)).await
        }
        Ok(Charge::Declined { charge_id, reason }) => {
            settle::failed(payments, order.order_id, Some(&charge_id), &reason).await
        }
        Ok(Charge::Pending { charge_id }) => {
            let mut tx = payments.pool.begin().await?;
            let locked = orders::lock(&mut tx, order.order_id).await?;
            // The charge's webhook may have settled the order already: the charge is
            // recorded, the state is left as the webhook made it.
            let pending = orders::set_state(
                &mut tx,
                order.order_id,
                locked.state(),
                Some(&charge_id),
                None,
            )
            .await?;
            tx.commit().await?;
            metrics::counter!("onsale_orders_total", "outcome" => OrderState::Pending.as_str())
                .increment(1);
            Ok(pending)
        }
        Err(error) => {
            // Whether the card was charged is unknown: the order stays pending and the
            // reconciler asks the provider.
            tracing::warn!(order_id = %order.order_id, %error, "charge failed; the reconciler will look it up");
            Ok(order)
        }
    }
}

/// The ledger's paying state and the pending order, in one transaction.
#[allow(clippy::too_many_arguments, reason = "the order's parts")]
async fn open_order(
    payments: &Payments,
    fan: UserId,
    event_id: EventId,
    request_id: RequestId,
    deadline: DateTime<Utc>,
    seats: &[String],
    last4: &str,
    billing: Option<&proto::wire::payments::Billing>,
) -> Result<OrderRow, Error> {
    let pricing = orders::price(&payments.pool, event_id, seats)
        .await?
        .ok_or_else(|| Error::Unexpected(format!("seats of request {request_id} have no price")))?;
    if pricing.cancelled {
        return Err(cancelled_refusal());
    }
    let started = tokio::time::Instant::now();
    loop {
        let mut tx = payments.pool.begin().await?;
        let traceparent =
            match ledger::begin_paying(&mut tx, event_id, request_id, deadline).await? {
                BeginPaying::Paying { traceparent, .. } => traceparent,
                BeginPaying::NotYetRecorded if started.elapsed() < LEDGER_WAIT => {
                    drop(tx);
                    tokio::time::sleep(LEDGER_POLL).await;
                    continue;
                }
                BeginPaying::NotYetRecorded => {
                    return Err(Error::refused(
                        ErrorCode::ServiceUnavailable,
                        "the hold is not recorded yet; try again in a few seconds",
                    ));
                }
                BeginPaying::Other(state) => return Err(refusal(request_id, state.as_str())),
            };
        let order = orders::create(
            &mut tx,
            OrderId::from(uuid::Uuid::now_v7()),
            request_id,
            event_id,
            fan,
            seats,
            &pricing,
            billing,
            &payments.settings.currency,
            last4,
            payments.provider.name(),
            traceparent.as_deref(),
        )
        .await?;
        let Some(order) = order else {
            // Rolled back (the request stays held): either an order is in flight,
            // or the event was cancelled since the price was read.
            drop(tx);
            if orders::cancelled(&payments.pool, event_id).await? {
                return Err(cancelled_refusal());
            }
            return Err(refusal(request_id, "paying"));
        };
        tx.commit().await?;
        return Ok(order);
    }
}

fn cancelled_refusal() -> Error {
    Error::refused(
        ErrorCode::EventCancelled,
        "the event is cancelled: nothing more is sold",
    )
}

/// The event a request belongs to (see [`platform::reads::event_of_request`]).
/// Billing details: each field within its length, no control characters but the
/// address's line breaks.
fn check_billing(billing: &proto::wire::payments::Billing) -> Result<(), Error> {
    use proto::wire::payments::Billing;
    for (field, value, max, lines) in [
        ("name", &billing.name, Billing::MAX_NAME, false),
        ("address", &billing.address, Billing::MAX_ADDRESS, true),
        ("vat_id", &billing.vat_id, Billing::MAX_VAT_ID, false),
    ] {
        let Some(value) = value else { continue };
        let bad = value.trim().is_empty()
            || value.chars().count() > max
            || value
                .chars()
                .any(|c| c.is_control() && !(lines && c == '\n'));
        if bad {
            return Err(Error::refused(
                ErrorCode::InvalidRequest,
                format!("billing.{field} must be 1 to {max} characters, no control characters"),
            ));
        }
    }
    Ok(())
}

async fn event_of(payments: &Payments, request_id: RequestId) -> Result<Option<EventId>, Error> {
    let mut redis = payments.redis.clone();
    Ok(
        platform::reads::event_of_request(&mut redis, &payments.keys, &payments.pool, request_id)
            .await?,
    )
}

/// Why a request Redis no longer has cannot be checked out, from the ledger.
async fn recorded_refusal(
    payments: &Payments,
    fan: UserId,
    request_id: RequestId,
) -> Result<Error, Error> {
    let row: Option<(UserId, String)> =
        sqlx::query_as("SELECT fan_id, state FROM booking.requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&payments.pool)
            .await?;
    Ok(match row {
        Some((owner, state)) if owner == fan => refusal(request_id, &state),
        _ => Error::RequestNotFound(request_id),
    })
}

/// The refusal for a request found in `state` (or a script's reason).
fn refusal(request_id: RequestId, state: &str) -> Error {
    let held = RequestState::parse(state);
    match (state, held) {
        ("not_found", _) => Error::RequestNotFound(request_id),
        ("restoring", _) => Error::Restoring,
        ("expired", _)
        | (_, Some(RequestState::Released | RequestState::Cancelled | RequestState::Expired)) => {
            Error::refused(
                ErrorCode::HoldEnded,
                format!(
                    "the hold of request {request_id} has ended ({state}); its seats are no longer yours"
                ),
            )
        }
        (_, Some(RequestState::Paying)) => Error::refused(
            ErrorCode::PaymentInFlight,
            format!("a payment for request {request_id} is in flight; its order says how it ends"),
        ),
        (_, Some(RequestState::Confirmed)) => Error::refused(
            ErrorCode::AlreadyPaid,
            format!("request {request_id} is already paid for"),
        ),
        _ => Error::refused(
            ErrorCode::RequestNotHeld,
            format!("request {request_id} holds no seats ({state}); check out once it is held"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: Error) -> Option<ErrorCode> {
        match error {
            Error::Refused { code, .. } => Some(code),
            Error::RequestNotFound(_) => Some(ErrorCode::RequestNotFound),
            Error::Restoring => Some(ErrorCode::ServiceUnavailable),
            _ => None,
        }
    }

    #[test]
    fn every_state_has_its_refusal() {
        let id = RequestId::from(uuid::Uuid::nil());
        let cases = [
            ("not_found", ErrorCode::RequestNotFound),
            ("restoring", ErrorCode::ServiceUnavailable),
            ("expired", ErrorCode::HoldEnded),
            ("released", ErrorCode::HoldEnded),
            ("cancelled", ErrorCode::HoldEnded),
            ("paying", ErrorCode::PaymentInFlight),
            ("confirmed", ErrorCode::AlreadyPaid),
            ("queued", ErrorCode::RequestNotHeld),
            ("prequeue", ErrorCode::RequestNotHeld),
            ("rejected", ErrorCode::RequestNotHeld),
            ("", ErrorCode::RequestNotHeld),
        ];
        for (state, expected) in cases {
            assert_eq!(code(refusal(id, state)), Some(expected), "{state}");
        }
    }
}
