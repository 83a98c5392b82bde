//! Orders in Postgres (`payments.orders`) and the price of a request's seats (the
//! tickets an order buys are the `tickets` crate's).

use chrono::{DateTime, Utc};
use platform::outbox::Message;
use proto::wire::events::{EventType, OrderPayload};
use proto::wire::payments::{Order, OrderState};
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
            },
        )
        .traced(self.traceparent.clone())
    }
}

const COLUMNS: &str =
    "order_id, request_id, event_id, fan_id, state, seats, amount_cents, currency,
                       card_last4, charge_id, reason, created_at, traceparent";

/// The price of `seats` at `event`, in cents; `None` if a seat is not the venue's
/// or its tier has no price.
pub async fn price(
    pool: &PgPool,
    event_id: EventId,
    seats: &[String],
) -> Result<Option<i64>, sqlx::Error> {
    let (total, priced): (Option<i64>, i64) = sqlx::query_as(
        "SELECT sum(p.cents)::bigint, count(*)
         FROM inventory.events e
         JOIN inventory.seats st ON st.venue_id = e.venue_id AND st.seat_id = ANY($2)
         JOIN inventory.sections sc ON sc.venue_id = e.venue_id AND sc.section_index = st.section_index
         JOIN inventory.event_prices p ON p.event_id = e.event_id AND p.price_tier = sc.price_tier
         WHERE e.event_id = $1",
    )
    .bind(event_id)
    .bind(seats)
    .fetch_one(pool)
    .await?;
    Ok((priced as usize == seats.len()).then_some(total.unwrap_or(0)))
}

/// A new pending order, in the caller's transaction. `None` when the request
/// already has an order in flight (the unique index on pending orders).
#[allow(clippy::too_many_arguments, reason = "the order's columns")]
pub async fn create(
    tx: &mut PgConnection,
    order_id: OrderId,
    request_id: RequestId,
    event_id: EventId,
    fan_id: UserId,
    seats: &[String],
    amount_cents: i64,
    currency: &str,
    card_last4: &str,
    provider: &str,
    traceparent: Option<&str>,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO payments.orders
             (order_id, request_id, event_id, fan_id, state, seats, amount_cents, currency, card_last4, provider, traceparent)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10)
         ON CONFLICT (request_id) WHERE state = 'pending' DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(order_id)
    .bind(request_id)
    .bind(event_id)
    .bind(fan_id)
    .bind(seats)
    .bind(amount_cents)
    .bind(currency)
    .bind(card_last4)
    .bind(provider)
    .bind(traceparent)
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
