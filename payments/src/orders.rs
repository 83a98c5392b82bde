//! Orders in Postgres (`payments.orders`) and the price of a request's seats (the
//! tickets an order buys are the `tickets` crate's).

use chrono::{DateTime, Utc};
use platform::outbox::Message;
use proto::wire::events::{EventType, OrderPayload};
use proto::wire::payments::{Billing, Order, OrderState};
use proto::wire::tickets::Ticket;
use proto::{EventId, OrderId, RequestId, UserId};
use sqlx::{PgConnection, PgPool};

use crate::Error;

/// An order as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: OrderId,
    pub request_id: RequestId,
    pub event_id: EventId,
    pub fan_id: UserId,
    pub state: OrderState,
    pub seats: Vec<String>,
    pub amount_cents: i64,
    pub currency: String,
    pub card_last4: String,
    pub charge_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The hold's trace context (`platform::telemetry`): whatever settles the order
    /// later, and every message about it, stays in the join's trace.
    pub traceparent: Option<String>,
    /// What each seat costs, tax included, and the tax in it, in the seats' order
    /// (`None` on orders made before prices were kept per seat).
    pub seat_cents: Option<Vec<i64>>,
    pub seat_tax_cents: Option<Vec<i64>>,
    pub tax_rate_bp: i32,
    pub tax_included: bool,
    /// The event's refund policy as it was when the order was paid.
    pub refund_until: Option<DateTime<Utc>>,
    pub refund_fee_percent: Option<i16>,
    pub billing: Option<sqlx::types::Json<Billing>>,
    pub refunded_cents: i64,
}

impl OrderRow {
    pub fn state(&self) -> OrderState {
        self.state
    }

    pub fn to_wire(&self) -> Order {
        Order {
            order_id: self.order_id,
            request_id: self.request_id,
            event_id: self.event_id,
            state: self.state(),
            seats: self.seats.clone(),
            amount_cents: self.amount_cents,
            currency: self.currency.clone(),
            card_last4: self.card_last4.clone(),
            reason: self.reason.clone(),
            created_at: self.created_at,
            tickets: Vec::new(),
            refunded_cents: self.refunded_cents,
            refunds: Vec::new(),
        }
    }

    /// Each seat's price, tax included, and the tax in it; an order made before
    /// prices were kept per seat splits its amount evenly.
    pub fn seat_prices(&self) -> Vec<(i64, i64)> {
        match (&self.seat_cents, &self.seat_tax_cents) {
            (Some(cents), Some(tax)) if cents.len() == self.seats.len() => {
                cents.iter().copied().zip(tax.iter().copied()).collect()
            }
            _ => {
                let n = self.seats.len().max(1) as i64;
                (0..self.seats.len() as i64)
                    .map(|i| {
                        let cents = self.amount_cents / n + i64::from(i < self.amount_cents % n);
                        (cents, 0)
                    })
                    .collect()
            }
        }
    }

    /// The outbox message reporting this order in its current state.
    pub fn message(&self, kind: EventType) -> Message {
        self.message_with(kind, Vec::new())
    }

    /// The outbox message reporting this order, with the tickets it issued.
    pub fn message_with(&self, kind: EventType, tickets: Vec<Ticket>) -> Message {
        Message::new(
            kind,
            self.event_id,
            Some(self.request_id),
            &OrderPayload {
                order_id: self.order_id,
                request_id: self.request_id,
                event_id: self.event_id,
                fan_id: self.fan_id,
                state: self.state,
                seats: self.seats.clone(),
                amount_cents: self.amount_cents,
                currency: self.currency.clone(),
                card_last4: self.card_last4.clone(),
                reason: self.reason.clone(),
                tickets,
                refund: None,
            },
        )
        .traced(self.traceparent.clone())
    }
}

/// The columns an [`OrderRow`] reads, in order.
pub const COLUMNS: &str =
    "order_id, request_id, event_id, fan_id, state, seats, amount_cents, currency,
     card_last4, charge_id, reason, created_at, traceparent, seat_cents, seat_tax_cents,
     tax_rate_bp, tax_included, refund_until, refund_fee_percent, billing, refunded_cents";

/// What `seats` cost at an event: each seat's price with its tax, in the seats'
/// order, and the event's tax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pricing {
    pub seat_cents: Vec<i64>,
    pub seat_tax_cents: Vec<i64>,
    pub tax_rate_bp: i32,
    pub tax_included: bool,
    /// The event is cancelled: nothing is sold.
    pub cancelled: bool,
}

impl Pricing {
    pub fn amount_cents(&self) -> i64 {
        self.seat_cents.iter().sum()
    }
}

/// The price of `seats` at `event`; `None` if a seat is not the venue's or its tier
/// has no price. A tax not included in the prices is added to each seat.
pub async fn price(
    pool: &PgPool,
    event_id: EventId,
    seats: &[String],
) -> Result<Option<Pricing>, sqlx::Error> {
    let rows: Vec<(i64, i32, bool, bool)> = sqlx::query_as(
        "SELECT p.cents, e.tax_rate_bp, e.tax_included,
                EXISTS (SELECT 1 FROM payments.cancellations c WHERE c.event_id = e.event_id)
         FROM unnest($2::text[]) WITH ORDINALITY AS s(seat_id, i)
         JOIN inventory.events e ON e.event_id = $1
         JOIN inventory.seats st ON st.venue_id = e.venue_id AND st.seat_id = s.seat_id
         JOIN inventory.sections sc ON sc.venue_id = e.venue_id AND sc.section_index = st.section_index
         JOIN inventory.event_prices p ON p.event_id = e.event_id AND p.price_tier = sc.price_tier
         ORDER BY s.i",
    )
    .bind(event_id)
    .bind(seats)
    .fetch_all(pool)
    .await?;
    if rows.len() != seats.len() || rows.is_empty() {
        return Ok(None);
    }
    let (_, rate, included, cancelled) = rows[0];
    let (seat_cents, seat_tax_cents) = rows
        .iter()
        .map(|(cents, ..)| {
            let (_, tax, gross) = billing::tax_split(*cents, rate, included);
            (gross, tax)
        })
        .unzip();
    Ok(Some(Pricing {
        seat_cents,
        seat_tax_cents,
        tax_rate_bp: rate,
        tax_included: included,
        cancelled,
    }))
}

/// The key of an event's sale lock, the event's id being the query's parameter
/// `param`: orders being opened hold it shared, a cancellation's finish exclusive.
pub fn sale_lock(param: &str) -> String {
    format!("hashtextextended('payments.sale:' || {param}::text, 0)")
}

/// Whether the event has been cancelled.
pub async fn cancelled<'e>(
    db: impl sqlx::PgExecutor<'e>,
    event_id: EventId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments.cancellations WHERE event_id = $1)")
        .bind(event_id)
        .fetch_one(db)
        .await
}

/// A new pending order, in the caller's transaction. `None` when the request
/// already has an order in flight (the unique index on pending orders), or when the
/// event has been cancelled (see [`cancelled`]).
///
/// The statement also takes the event's sale lock, shared, for the rest of the
/// transaction: a cancellation finishes only under the same lock, exclusive
/// (`cancel::work`), so it waits for every order being opened when it looks, and an
/// order opened after it looks sees the cancellation and is not made.
#[allow(clippy::too_many_arguments, reason = "the order's columns")]
pub async fn create(
    tx: &mut PgConnection,
    order_id: OrderId,
    request_id: RequestId,
    event_id: EventId,
    fan_id: UserId,
    seats: &[String],
    pricing: &Pricing,
    billing: Option<&Billing>,
    currency: &str,
    card_last4: &str,
    provider: &str,
    traceparent: Option<&str>,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO payments.orders
             (order_id, request_id, event_id, fan_id, state, seats, amount_cents, currency, card_last4,
              provider, traceparent, seat_cents, seat_tax_cents, tax_rate_bp, tax_included, billing)
         SELECT $1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15
         FROM (SELECT pg_advisory_xact_lock_shared({})) AS sale_lock
         WHERE NOT EXISTS (SELECT 1 FROM payments.cancellations WHERE event_id = $3)
         ON CONFLICT (request_id) WHERE state = 'pending' DO NOTHING
         RETURNING {COLUMNS}",
        sale_lock("$3")
    ))
    .bind(order_id)
    .bind(request_id)
    .bind(event_id)
    .bind(fan_id)
    .bind(seats)
    .bind(pricing.amount_cents())
    .bind(currency)
    .bind(card_last4)
    .bind(provider)
    .bind(traceparent)
    .bind(&pricing.seat_cents)
    .bind(&pricing.seat_tax_cents)
    .bind(pricing.tax_rate_bp)
    .bind(pricing.tax_included)
    .bind(billing.map(sqlx::types::Json))
    .fetch_optional(tx)
    .await
}

/// An order, locked for settling in the caller's transaction.
pub async fn lock(tx: &mut PgConnection, order_id: OrderId) -> Result<OrderRow, Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments.orders WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id)
    .fetch_optional(tx)
    .await?
    .ok_or(Error::OrderNotFound(order_id))
}

pub async fn get(pool: &PgPool, order_id: OrderId) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments.orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// A fan's orders, newest first (at most `limit`).
pub async fn of_fan(pool: &PgPool, fan: UserId, limit: i64) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments.orders WHERE fan_id = $1
         ORDER BY created_at DESC, order_id DESC LIMIT $2"
    ))
    .bind(fan)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Moves a locked order to `state`, returning it as now stored.
pub async fn set_state(
    tx: &mut PgConnection,
    order_id: OrderId,
    state: OrderState,
    charge_id: Option<&str>,
    reason: Option<&str>,
) -> Result<OrderRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE payments.orders SET state = $2, charge_id = COALESCE($3, charge_id),
             reason = COALESCE($4, reason), updated_at = now()
         WHERE order_id = $1 RETURNING {COLUMNS}"
    ))
    .bind(order_id)
    .bind(state.as_str())
    .bind(charge_id)
    .bind(reason)
    .fetch_one(tx)
    .await
}

/// Marks a locked pending order paid, snapshotting its event's refund policy as it
/// is now: a later change of the policy does not touch paid orders.
pub async fn mark_paid(
    tx: &mut PgConnection,
    order_id: OrderId,
    charge_id: Option<&str>,
) -> Result<OrderRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE payments.orders o SET state = 'paid', charge_id = COALESCE($2, o.charge_id),
             refund_until = e.refund_until, refund_fee_percent = e.refund_fee_percent,
             updated_at = now()
         FROM inventory.events e
         WHERE o.order_id = $1 AND e.event_id = o.event_id
         RETURNING {}",
        COLUMNS
            .split(',')
            .map(|c| format!("o.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(order_id)
    .bind(charge_id)
    .fetch_one(tx)
    .await
}

/// Orders still pending after `older_than_seconds`, for the reconciler.
pub async fn stale_pending(
    pool: &PgPool,
    older_than_seconds: f64,
    limit: i64,
) -> Result<Vec<OrderId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT order_id FROM payments.orders
         WHERE state = 'pending' AND updated_at < now() - make_interval(secs => $1)
         ORDER BY created_at LIMIT $2",
    )
    .bind(older_than_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await
}
