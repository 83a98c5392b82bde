//! Refunds: a fan's own within the event's policy, an operator's at any time.
//!
//! Approval is one transaction on the locked order: the tickets are voided (and
//! their codes revoked), their seats' sold claims leave the ledger (each once), the
//! order's `refunded_cents` grows (a constraint keeps it within what was captured),
//! the refund row, its credit note and `order.refunded` are written. Redis gets the
//! seats back after the commit (`unsell.lua`, which frees only a seat still sold to
//! the request, so twice frees once); a refund whose seats did not make it there is
//! finished by the refund loop. The money follows: the loop asks the provider with
//! the refund's id as idempotency key, and the provider's webhook (or a lookup, when
//! it is late) moves the refund `pending → succeeded | failed`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::outbox;
use proto::wire::events::{EventType, RefundPayload};
use proto::wire::live::Published;
use proto::wire::payments::{OrderState, Refund, RefundState};
use proto::wire::queue::SaleState;
use proto::{ErrorCode, OrderId, RefundId, TicketId, UserId};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::invoices::{self, RefundAmount};
use crate::orders::{self, OrderRow};
use crate::provider::RefundStatus;
use crate::{Error, Payments};

/// Longest operator's reason.
pub const MAX_REASON: usize = 500;
/// Most tickets one refund names.
pub const MAX_TICKETS: usize = 100;
/// How long the loop waits for the provider's webhook before it looks the refund up.
const LOOKUP_AFTER: Duration = Duration::from_secs(15);

/// Who asks.
#[derive(Clone, Debug)]
pub enum Requester {
    /// The order's fan, within the policy.
    Fan(UserId),
    /// An operator: any time, any valid ticket (checked in too), no fee, audited.
    Operator {
        user: UserId,
        reason: String,
        /// Part of the event's cancellation.
        cancellation: bool,
    },
}

/// A refund as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RefundRow {
    pub refund_id: RefundId,
    pub order_id: OrderId,
    pub event_id: proto::EventId,
    pub fan_id: UserId,
    pub ticket_ids: Vec<TicketId>,
    pub seats: Vec<String>,
    pub amount_cents: i64,
    pub fee_cents: i64,
    pub state: RefundState,
    pub reason: String,
    pub charge_id: Option<String>,
    /// The provider call the money part is on (an operator's retry starts the next).
    pub provider_attempt: i32,
    pub seats_released: bool,
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub credit_note_number: Option<String>,
    pub currency: String,
    pub request_id: proto::RequestId,
}

const COLUMNS: &str = "r.refund_id, r.order_id, r.event_id, r.fan_id, r.ticket_ids, r.seats,
     r.amount_cents, r.fee_cents, r.state, r.reason, r.charge_id, r.provider_attempt, r.seats_released, r.failure,
     r.created_at, d.number AS credit_note_number, o.currency, o.request_id";
const FROM: &str = "payments.refunds r JOIN payments.orders o USING (order_id)
     LEFT JOIN billing.documents d ON d.refund_id = r.refund_id";

impl RefundRow {
    pub fn to_wire(&self) -> Refund {
        Refund {
            refund_id: self.refund_id,
            order_id: self.order_id,
            ticket_ids: self.ticket_ids.clone(),
            seats: self.seats.clone(),
            amount_cents: self.amount_cents,
            fee_cents: self.fee_cents,
            currency: self.currency.clone(),
            state: self.state,
            reason: self.reason.clone(),
            credit_note_number: self.credit_note_number.clone(),
            failure: self.failure.clone(),
            created_at: self.created_at,
        }
    }
}

pub async fn get(pool: &sqlx::PgPool, refund: RefundId) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE r.refund_id = $1"
    ))
    .bind(refund)
    .fetch_optional(pool)
    .await
}

/// The refunds of `orders`, oldest first.
pub async fn of_orders(
    pool: &sqlx::PgPool,
    orders: &[OrderId],
) -> Result<Vec<RefundRow>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE r.order_id = ANY($1) ORDER BY r.created_at, r.refund_id"
    ))
    .bind(orders)
    .fetch_all(pool)
    .await
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::refused(code, message)
}

/// Checks an operator's reason.
pub fn check_reason(reason: &str) -> Result<&str, Error> {
    let reason = reason.trim();
    if reason.is_empty()
        || reason.chars().count() > MAX_REASON
        || reason.chars().any(char::is_control)
    {
        return Err(refused(
            ErrorCode::InvalidRequest,
            format!("reason must be 1 to {MAX_REASON} characters, no control characters"),
        ));
    }
    Ok(reason)
}

/// Approves a refund of `tickets` of an order (`None`: every valid one): the seat
/// part now, the money by the refund loop. Returns the refund as approved.
pub async fn approve(
    payments: &Payments,
    order_id: OrderId,
    tickets: Option<&[TicketId]>,
    by: &Requester,
) -> Result<RefundRow, Error> {
    if let Some(asked) = tickets {
        if asked.is_empty() || asked.len() > MAX_TICKETS {
            return Err(refused(
                ErrorCode::InvalidRequest,
                format!("ticket_ids must name 1 to {MAX_TICKETS} tickets, or be left out"),
            ));
        }
        let mut unique = asked.to_vec();
        unique.sort();
        unique.dedup();
        if unique.len() != asked.len() {
            return Err(refused(
                ErrorCode::InvalidRequest,
                "ticket_ids names a ticket twice",
            ));
        }
    }
    let mut tx = payments.pool.begin().await?;
    let order = orders::lock(&mut tx, order_id).await?;
    let (fee_percent, reason, operator, cancellation) = match by {
        Requester::Fan(fan) => {
            if order.fan_id != *fan {
                return Err(Error::OrderNotFound(order_id));
            }
            (
                check_policy(&mut tx, &order).await?,
                "requested".to_owned(),
                false,
                false,
            )
        }
        Requester::Operator {
            reason,
            cancellation,
            ..
        } => (0, reason.clone(), true, *cancellation),
    };
    match order.state() {
        OrderState::Paid | OrderState::PartiallyRefunded => {}
        OrderState::Refunded => {
            return Err(refused(
                ErrorCode::TicketNotRefundable,
                format!("order {order_id} is refunded already"),
            ));
        }
        other => {
            return Err(refused(
                ErrorCode::TicketNotRefundable,
                format!(
                    "order {order_id} is {}: only a paid order is refunded",
                    other.as_str()
                ),
            ));
        }
    }
    let ticket_reason = if cancellation {
        "event_cancelled"
    } else {
        "refunded"
    };
    let voided = tickets::ledger::void(&mut tx, order_id, tickets, operator)
        .await
        .map_err(|e| match e {
            tickets::ledger::VoidError::NotRefundable(id) => refused(
                ErrorCode::TicketNotRefundable,
                format!(
                    "ticket {id} cannot be refunded: it is not this order's, or it is void already"
                ),
            ),
            tickets::ledger::VoidError::CheckedIn(id) => refused(
                ErrorCode::TicketCheckedIn,
                format!("ticket {id} has come in through the door: it cannot be refunded"),
            ),
            tickets::ledger::VoidError::Database(e) => Error::Database(e),
        })?;
    if voided.is_empty() {
        return Err(refused(
            ErrorCode::TicketNotRefundable,
            format!("order {order_id} has no valid ticket left to refund"),
        ));
    }
    let seats: Vec<String> = voided.iter().map(|t| t.seat_id.clone()).collect();
    let ticket_ids: Vec<TicketId> = voided.iter().map(|t| t.ticket_id).collect();
    let released =
        ::ledger::checkout::unsell(&mut tx, order.event_id, order.request_id, &seats).await?;
    if released.len() != seats.len() {
        return Err(Error::Unexpected(format!(
            "order {order_id}: the ledger had {} of the {} refunded seats sold",
            released.len(),
            seats.len()
        )));
    }
    let amount: RefundAmount = invoices::refund_amount(&order, &seats, fee_percent);
    let refund_id = RefundId::from(uuid::Uuid::now_v7());
    let requested_by = match by {
        Requester::Fan(fan) => *fan,
        Requester::Operator { user, .. } => *user,
    };
    let order = sqlx::query_as::<_, OrderRow>(&format!(
        "UPDATE payments.orders SET refunded_cents = refunded_cents + $2, updated_at = now(),
             state = CASE WHEN EXISTS (SELECT 1 FROM tickets.tickets
                                       WHERE order_id = $1 AND state = 'valid')
                          THEN 'partially_refunded' ELSE 'refunded' END
         WHERE order_id = $1 RETURNING {}",
        orders::COLUMNS
    ))
    .bind(order_id)
    .bind(amount.amount_cents)
    .fetch_one(&mut *tx)
    .await
    .map_err(
        |e| match e.as_database_error().and_then(|d| d.constraint()) {
            Some("refunds_within_capture") => refused(
                ErrorCode::TicketNotRefundable,
                format!("a refund of order {order_id} would pay back more than it captured"),
            ),
            _ => Error::Database(e),
        },
    )?;
    sqlx::query(
        "INSERT INTO payments.refunds (refund_id, order_id, event_id, fan_id, ticket_ids, seats,
             amount_cents, fee_cents, tax_cents, state, reason, requested_by, by_operator, charge_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)",
    )
    .bind(refund_id)
    .bind(order_id)
    .bind(order.event_id)
    .bind(order.fan_id)
    .bind(&ticket_ids)
    .bind(&seats)
    .bind(amount.amount_cents)
    .bind(amount.fee_cents)
    .bind(amount.tax_cents)
    .bind(&reason)
    .bind(requested_by)
    .bind(operator)
    .bind(&order.charge_id)
    .execute(&mut *tx)
    .await?;
    let note = invoices::issue_credit_note(
        &mut tx,
        &payments.settings.seller,
        &order,
        refund_id,
        &amount,
        &reason,
    )
    .await?;
    let mut message = order.message(EventType::OrderRefunded);
    let payload = RefundPayload {
        refund_id,
        ticket_ids: ticket_ids.clone(),
        seats: seats.clone(),
        amount_cents: amount.amount_cents,
        fee_cents: amount.fee_cents,
        reason: reason.clone(),
        event_cancelled: cancellation,
        credit_note_number: note.as_ref().map(|n| n.number.clone()),
    };
    message.payload["refund"] = serde_json::to_value(&payload)
        .map_err(|e| Error::Unexpected(format!("refund payload: {e}")))?;
    outbox::write(&mut tx, &[message]).await?;
    // Last: the revocation list is numbered under the event's lock.
    tickets::ledger::revoke_voided(&mut tx, &voided, ticket_reason).await?;
    tx.commit().await?;
    if operator {
        tracing::info!(target: "audit", %order_id, %refund_id, by = %requested_by, reason, tickets = ticket_ids.len(),
            "an operator refunded tickets");
    }
    metrics::counter!("onsale_refunds_total", "by" => if operator { "operator" } else { "fan" })
        .increment(1);
    tracing::info!(%order_id, %refund_id, amount_cents = amount.amount_cents, seats = seats.len(), "refund approved");
    let refund = get(&payments.pool, refund_id)
        .await?
        .ok_or_else(|| Error::Unexpected(format!("refund {refund_id} vanished")))?;
    // The seats go back on sale now; should Redis not answer, the loop does it.
    if let Err(error) = release_seats(payments, &refund).await {
        tracing::warn!(%refund_id, %error, "refunded seats not yet back on sale; the refund loop will retry");
    }
    Ok(get(&payments.pool, refund_id).await?.unwrap_or(refund))
}

/// The fee a fan's refund keeps, if the order's snapshotted policy allows one now.
/// Read in the refund's transaction: a second connection taken while the order is
/// locked could wait for good on a pool that every locked refund holds.
async fn check_policy(tx: &mut sqlx::PgConnection, order: &OrderRow) -> Result<i64, Error> {
    if orders::cancelled(tx, order.event_id).await? {
        return Err(refused(
            ErrorCode::EventCancelled,
            "the event is cancelled: every order is being refunded in full",
        ));
    }
    let (Some(until), Some(fee)) = (order.refund_until, order.refund_fee_percent) else {
        return Err(refused(
            ErrorCode::RefundsNotOffered,
            "this event's tickets cannot be refunded on request",
        ));
    };
    if Utc::now() > until {
        return Err(refused(
            ErrorCode::RefundWindowClosed,
            format!("refunds could be asked for until {}", until.to_rfc3339()),
        ));
    }
    Ok(i64::from(fee))
}

/// Gives a refund's seats back to Redis (once: a seat no longer sold to the request
/// is left alone) and records that it did. A sold-out sale opens again with them
/// (`unsell.lua`): the pages are told, and the event goes back on the farm, where a
/// worker takes it up (bringing back keys its retirement had set to expire). Once the
/// show has begun nothing reopens: an operator's refund at the door frees the seats
/// but sells them to nobody.
pub async fn release_seats(payments: &Payments, refund: &RefundRow) -> Result<(), Error> {
    if refund.seats_released {
        return Ok(());
    }
    let mut redis = payments.redis.clone();
    let keys = &payments.keys;
    let event = refund.event_id;
    let before_show: bool =
        sqlx::query_scalar("SELECT starts_at > now() FROM inventory.events WHERE event_id = $1")
            .bind(event)
            .fetch_one(&payments.pool)
            .await?;
    let reply: Vec<redis::Value> = proto::scripts::unsell(
        keys,
        event,
        refund.request_id,
        refund.fan_id,
        before_show,
        &refund.seats,
    )
    .invoke_async(&mut redis)
    .await?;
    match reply.as_slice() {
        [redis::Value::Int(1), _, state, reopened] => {
            // The sale is only drained while on the farm's list: it is added again
            // on every release into an open sale (a crash between the script and
            // this line would otherwise leave a reopened sale off it).
            if matches!(state, redis::Value::BulkString(s) if s == SaleState::Open.as_str().as_bytes())
            {
                let _: i64 = redis.sadd(keys.active_events(), event.to_string()).await?;
            }
            if *reopened == redis::Value::Int(1) {
                let message = Published::Sale {
                    state: Some(SaleState::Open),
                };
                let _: i64 = message.publish(keys, event).query_async(&mut redis).await?;
                metrics::counter!("onsale_sales_reopened_total").increment(1);
                tracing::info!(event_id = %event, refund_id = %refund.refund_id,
                    "sold out no more: refunded seats opened the sale again");
            }
        }
        [_, redis::Value::BulkString(reason)] if reason == b"no_seat_map" => {
            // A retired event whose keys have expired: the ledger, where the seats
            // are free, is all there is, and a sale brought back is rebuilt from it.
            // While the event is on the farm its keys are being restored: wait.
            let active: bool = redis
                .sismember(keys.active_events(), event.to_string())
                .await?;
            if active {
                return Err(Error::Restoring);
            }
            tracing::info!(event_id = %event, refund_id = %refund.refund_id,
                "the event's keys are gone (retired): its seats are free in the ledger");
        }
        _ => return Err(Error::Restoring),
    }
    sqlx::query(
        "UPDATE payments.refunds SET seats_released = true,
             seats_released_at = coalesce(seats_released_at, now())
         WHERE refund_id = $1",
    )
    .bind(refund.refund_id)
    .execute(&payments.pool)
    .await?;
    Ok(())
}

/// The provider's word on an attempt of a refund (webhook or lookup): `pending →
/// succeeded | failed`, once, and only while that attempt is the refund's current
/// one (a late word on an attempt before an operator's retry settles nothing).
/// Returns the refund as it now stands.
pub async fn settle(
    payments: &Payments,
    refund_id: RefundId,
    attempt: i32,
    outcome: &RefundStatus,
) -> Result<RefundRow, Error> {
    let (state, failure) = match outcome {
        RefundStatus::Succeeded => (RefundState::Succeeded, None),
        RefundStatus::Failed { reason } => (RefundState::Failed, Some(reason.as_str())),
        RefundStatus::Pending => (RefundState::Pending, None),
    };
    if state != RefundState::Pending {
        let moved = sqlx::query(
            "UPDATE payments.refunds SET state = $2, failure = $3, updated_at = now()
             WHERE refund_id = $1 AND state = 'pending' AND provider_attempt = $4",
        )
        .bind(refund_id)
        .bind(state.as_str())
        .bind(failure)
        .bind(attempt)
        .execute(&payments.pool)
        .await?
        .rows_affected();
        if moved == 1 {
            metrics::counter!("onsale_refunds_settled_total", "state" => state.as_str())
                .increment(1);
            tracing::info!(%refund_id, attempt, state = state.as_str(), "refund settled");
        }
    }
    get(&payments.pool, refund_id).await?.ok_or_else(|| {
        refused(
            ErrorCode::RefundNotFound,
            format!("refund {refund_id} does not exist"),
        )
    })
}

/// An operator tries a failed refund again: a new provider attempt, under its own
/// idempotency key.
pub async fn retry(payments: &Payments, refund_id: RefundId) -> Result<RefundRow, Error> {
    let moved = sqlx::query(
        "UPDATE payments.refunds SET state = 'pending', failure = NULL, next_attempt_at = now(),
             attempts = 0, provider_attempt = provider_attempt + 1, updated_at = now()
         WHERE refund_id = $1 AND state = 'failed'",
    )
    .bind(refund_id)
    .execute(&payments.pool)
    .await?
    .rows_affected();
    let refund = get(&payments.pool, refund_id).await?.ok_or_else(|| {
        refused(
            ErrorCode::RefundNotFound,
            format!("refund {refund_id} does not exist"),
        )
    })?;
    if moved == 0 && refund.state != RefundState::Pending {
        return Err(refused(
            ErrorCode::InvalidTransition,
            format!(
                "refund {refund_id} is {}: only a failed refund is tried again",
                refund.state.as_str()
            ),
        ));
    }
    Ok(refund)
}

/// One step of the money part for a due refund: its seats back to Redis if they
/// are not yet, then the provider asked (first time) or looked up (later).
async fn work_on(payments: &Payments, refund: &RefundRow, attempts: i32) -> Result<(), Error> {
    release_seats(payments, refund).await?;
    if refund.state != RefundState::Pending {
        return Ok(());
    }
    if refund.amount_cents == 0 {
        settle(
            payments,
            refund.refund_id,
            refund.provider_attempt,
            &RefundStatus::Succeeded,
        )
        .await?;
        return Ok(());
    }
    let looked_up;
    let charge_id = match &refund.charge_id {
        Some(id) => id,
        None => {
            // The order was paid before its charge was recorded: the provider knows.
            let Some((id, _)) = payments.provider.lookup(refund.order_id).await? else {
                return Err(Error::Unexpected(format!(
                    "refund {} has no charge to pay back, and the provider knows none for its order",
                    refund.refund_id
                )));
            };
            sqlx::query(
                "UPDATE payments.refunds SET charge_id = $2 WHERE refund_id = $1 AND charge_id IS NULL",
            )
            .bind(refund.refund_id)
            .bind(&id)
            .execute(&payments.pool)
            .await?;
            looked_up = id;
            &looked_up
        }
    };
    let (id, attempt) = (refund.refund_id, refund.provider_attempt);
    let ask = || {
        payments
            .provider
            .refund_part(id, attempt, charge_id, refund.amount_cents)
    };
    let status = if attempts <= 1 {
        ask().await?
    } else {
        match payments.provider.lookup_refund(id, attempt).await? {
            Some(status) => status,
            // Never reached the provider: ask again (under the same key).
            None => ask().await?,
        }
    };
    settle(payments, id, attempt, &status).await?;
    Ok(())
}

/// One pass of the refund loop over due refunds; returns how many it worked on.
/// Each is claimed by pushing its next attempt out, so two loops never work on one
/// refund at once, and one that stops mid-way is taken again later.
pub async fn work(payments: &Payments) -> Result<usize, Error> {
    let claimed: Vec<(RefundId, i32)> = sqlx::query_as(
        "UPDATE payments.refunds SET attempts = attempts + 1,
             next_attempt_at = now() + make_interval(secs => $1 * least(attempts + 1, 8))
         WHERE refund_id IN (SELECT refund_id FROM payments.refunds
                             WHERE (state = 'pending' OR NOT seats_released)
                               AND next_attempt_at <= now()
                             ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED)
         RETURNING refund_id, attempts",
    )
    .bind(LOOKUP_AFTER.as_secs_f64())
    .fetch_all(&payments.pool)
    .await?;
    for (refund_id, attempts) in &claimed {
        let Some(refund) = get(&payments.pool, *refund_id).await? else {
            continue;
        };
        if let Err(error) = work_on(payments, &refund, *attempts).await {
            tracing::warn!(%refund_id, attempts, %error, "refund step failed; trying again later");
        }
    }
    Ok(claimed.len())
}

pub async fn run(payments: Payments, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = work(&payments).await {
                    tracing::warn!(%error, "refund pass failed");
                }
                if let Err(error) = crate::cancel::work(&payments).await {
                    tracing::warn!(%error, "cancellation pass failed");
                }
                if let Err(error) = billing::render_pending(&payments.pool, 20).await {
                    tracing::warn!(%error, "rendering invoices failed");
                }
            }
            () = stop.cancelled() => break,
        }
    }
}
