//! Settling an order once its payment's outcome is known, from whichever path
//! learns it first: the checkout's own answer, the provider's webhook, or the
//! reconciler. Each settlement locks the order row, so two paths never settle one
//! order twice, and each is a no-op on an order no longer pending.
//!
//! A success sells the seats in Redis first (`confirm.lua`, atomic with the sweep:
//! the seats are sold there or the hold ended there, never both), then in Postgres
//! in one transaction: the ledger's request and claims, the tickets (whose unique
//! seat index is the last word on overselling), the order and the outbox. A success that
//! finds the hold ended is refunded. Should the process stop between Redis and
//! Postgres, the order is still pending: the reconciler settles it again, and
//! `confirm.lua` answers a confirmed request as confirmed.

use chrono::{DateTime, Utc};
use platform::outbox;
use proto::OrderId;
use proto::wire::events::EventType;
use proto::wire::payments::OrderState;
use proto::wire::queue::RequestState;
use redis::Value;

use crate::orders::{self, OrderRow};
use crate::{Error, Payments};
use ::ledger::checkout as ledger;

/// What `confirm.lua` or `unpay.lua` answered.
enum Reply {
    Done(Vec<Value>),
    Refused(String),
}

fn reply(values: Vec<Value>) -> Reply {
    match values.first() {
        Some(Value::Int(1)) => Reply::Done(values),
        _ => Reply::Refused(
            values
                .get(1)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .unwrap_or_default(),
        ),
    }
}

/// The payment succeeded: sell the seats, or refund when the hold has ended.
pub async fn succeeded(
    payments: &Payments,
    order_id: OrderId,
    charge_id: Option<&str>,
) -> Result<OrderRow, Error> {
    let mut tx = payments.pool.begin().await?;
    let order = orders::lock(&mut tx, order_id).await?;
    let charge_id = match charge_id.map(str::to_owned).or(order.charge_id.clone()) {
        Some(id) => Some(id),
        // A webhook names the order, not the charge, and it can come before the
        // checkout recorded the charge (or the checkout died first): the provider
        // says which charge it was. Without it a refund could never pay it back.
        None if order.state() == OrderState::Pending => {
            payments.provider.lookup(order_id).await?.map(|(id, _)| id)
        }
        None => None,
    };
    match order.state() {
        OrderState::Pending => {}
        // Money arrived for an order that ended unpaid (voided too late, a provider
        // that settled after a decline): it goes back.
        OrderState::Cancelled | OrderState::Declined => {
            tracing::warn!(order_id = %order.order_id, state = order.state().as_str(), "a payment succeeded for an order that ended unpaid; refunding");
            return refund(payments, tx, order, charge_id, "order_ended", true).await;
        }
        _ => return Ok(order),
    }
    let mut redis = payments.redis.clone();
    let confirmed: Vec<Value> = proto::scripts::confirm(
        &payments.keys,
        order.event_id,
        order.request_id,
        Utc::now().timestamp_millis(),
    )
    .invoke_async(&mut redis)
    .await?;
    match reply(confirmed) {
        Reply::Done(_) => {}
        // Redis does not have the request as paying for a reason that is not the end
        // of its hold: its keys are lost or being restored (the restore may have put
        // the hold back as held). Not refunded: settled again once it is restored.
        Reply::Refused(why)
            if why == "restoring"
                || why.is_empty()
                || RequestState::parse(&why) == Some(RequestState::Held) =>
        {
            return Err(Error::Restoring);
        }
        Reply::Refused(why) => {
            tracing::info!(order_id = %order.order_id, request_id = %order.request_id, state = why, "payment landed after the hold ended; refunding");
            return refund(payments, tx, order, charge_id, "hold_ended", false).await;
        }
    }
    // The event's ticket key, made on its first sale, outside the transaction.
    let signer = payments.ring.signer(&payments.pool, order.event_id).await?;
    match sell(
        &mut tx,
        &signer,
        &payments.settings.seller,
        &order,
        charge_id.as_deref(),
    )
    .await
    {
        Ok(paid) => {
            tx.commit().await?;
            metrics::counter!("onsale_orders_total", "outcome" => OrderState::Paid.as_str())
                .increment(1);
            metrics::counter!("onsale_tickets_sold_total").increment(paid.seats.len() as u64);
            tracing::info!(order_id = %paid.order_id, request_id = %paid.request_id, seats = paid.seats.len(), "order paid");
            Ok(paid)
        }
        Err(Error::Database(error)) if !is_conflict(&error) => Err(Error::Database(error)),
        Err(error) => {
            // Redis sold seats that the ledger will not: Postgres has the last word.
            // The money goes back; the event's Redis state needs an operator's
            // restore to match the ledger again.
            drop(tx);
            tracing::error!(order_id = %order.order_id, request_id = %order.request_id, %error,
                "the ledger refused a sale that redis confirmed; refunding (restore the event to realign redis)");
            let tx = payments.pool.begin().await?;
            refund(payments, tx, order, charge_id, "seat_conflict", false).await
        }
    }
}

/// The ledger's side of a sale, in the order's transaction: the booking ledger's
/// claims, the tickets, the order, its message and, last (its counter row is held
/// until the commit), its invoice.
async fn sell(
    tx: &mut sqlx::PgConnection,
    signer: &tickets::keys::Signer,
    seller: &billing::Seller,
    order: &OrderRow,
    charge_id: Option<&str>,
) -> Result<OrderRow, Error> {
    let (_, mut sold) = ledger::sell(tx, order.event_id, order.request_id).await?;
    let mut ordered = order.seats.clone();
    sold.sort();
    ordered.sort();
    if sold != ordered {
        return Err(Error::Unexpected(format!(
            "the ledger sells {sold:?} to request {}, the order is for {ordered:?}",
            order.request_id
        )));
    }
    let issued = tickets::ledger::issue(
        tx,
        signer,
        &tickets::ledger::Sale {
            order_id: order.order_id,
            request_id: order.request_id,
            event_id: order.event_id,
            fan_id: order.fan_id,
            seats: &order.seats,
        },
    )
    .await?;
    let paid = orders::mark_paid(tx, order.order_id, charge_id).await?;
    outbox::write(tx, &[paid.message_with(EventType::OrderPaid, issued)]).await?;
    crate::invoices::issue_invoice(tx, seller, &paid).await?;
    Ok(paid)
}

fn is_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation() || e.is_foreign_key_violation())
}

/// A refund the provider already made (its bookkeeping was lost): the order is
/// marked refunded.
pub async fn refunded(
    payments: &Payments,
    order_id: OrderId,
    charge_id: &str,
    reason: &str,
) -> Result<OrderRow, Error> {
    let mut tx = payments.pool.begin().await?;
    let order = orders::lock(&mut tx, order_id).await?;
    if order.state() != OrderState::Pending {
        return Ok(order);
    }
    refund(
        payments,
        tx,
        order,
        Some(charge_id.to_owned()),
        reason,
        false,
    )
    .await
}

/// Pays a successful charge back and marks the order refunded, in `tx`; `ended`
/// allows an order that already ended unpaid.
async fn refund(
    payments: &Payments,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    order: OrderRow,
    charge_id: Option<String>,
    reason: &str,
    ended: bool,
) -> Result<OrderRow, Error> {
    let charge_id = match charge_id {
        Some(id) => Some(id),
        None => payments
            .provider
            .lookup(order.order_id)
            .await?
            .map(|(id, _)| id),
    };
    if let Some(charge_id) = &charge_id {
        payments.provider.refund(charge_id).await?;
    }
    let order = orders::lock(&mut tx, order.order_id).await?;
    let open = order.state() == OrderState::Pending
        || (ended && matches!(order.state(), OrderState::Cancelled | OrderState::Declined));
    if !open || charge_id.is_none() {
        // Nothing to pay back: the order stays as it is.
        return Ok(order);
    }
    let refunded = orders::set_state(
        &mut tx,
        order.order_id,
        OrderState::Refunded,
        charge_id.as_deref(),
        Some(reason),
    )
    .await?;
    outbox::write(&mut tx, &[refunded.message(EventType::OrderRefunded)]).await?;
    tx.commit().await?;
    metrics::counter!("onsale_orders_total", "outcome" => OrderState::Refunded.as_str())
        .increment(1);
    tracing::info!(order_id = %refunded.order_id, reason, "order refunded");
    Ok(refunded)
}

/// The payment failed: the order is declined, and the request is held again until
/// its normal end (if the hold has not ended meanwhile).
pub async fn failed(
    payments: &Payments,
    order_id: OrderId,
    charge_id: Option<&str>,
    reason: &str,
) -> Result<OrderRow, Error> {
    end_unpaid(payments, order_id, charge_id, OrderState::Declined, reason).await
}

/// The payment was called off (voided at the provider): no charge was made (the
/// checkout stopped before it), or a pending one was abandoned. The order is
/// cancelled and the request held again, as after a decline, if its hold lasts.
pub async fn cancelled(
    payments: &Payments,
    order_id: OrderId,
    reason: &str,
) -> Result<OrderRow, Error> {
    end_unpaid(payments, order_id, None, OrderState::Cancelled, reason).await
}

async fn end_unpaid(
    payments: &Payments,
    order_id: OrderId,
    charge_id: Option<&str>,
    state: OrderState,
    reason: &str,
) -> Result<OrderRow, Error> {
    let mut tx = payments.pool.begin().await?;
    let order = orders::lock(&mut tx, order_id).await?;
    if order.state() != OrderState::Pending {
        return Ok(order);
    }
    let mut redis = payments.redis.clone();
    let unpaid: Vec<Value> =
        proto::scripts::unpay(&payments.keys, order.event_id, order.request_id)
            .invoke_async(&mut redis)
            .await?;
    let unpaid = reply(unpaid);
    if matches!(&unpaid, Reply::Refused(why) if why == "restoring") {
        return Err(Error::Restoring);
    }
    if let Reply::Done(values) = unpaid {
        let held_until = values
            .get(1)
            .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .ok_or_else(|| Error::Unexpected("unpay.lua answered without a time".into()))?;
        ledger::back_to_held(&mut tx, order.event_id, order.request_id, held_until).await?;
    }
    let ended = orders::set_state(&mut tx, order.order_id, state, charge_id, Some(reason)).await?;
    if state == OrderState::Declined {
        outbox::write(&mut tx, &[ended.message(EventType::OrderDeclined)]).await?;
    }
    tx.commit().await?;
    metrics::counter!("onsale_orders_total", "outcome" => state.as_str()).increment(1);
    tracing::info!(order_id = %ended.order_id, state = state.as_str(), reason, "order ended unpaid");
    Ok(ended)
}
