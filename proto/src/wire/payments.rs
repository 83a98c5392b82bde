//! Checkout, orders and the payment provider's webhook.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{EventId, OrderId, RequestId};

/// A card to pay with. Validated (digits, length, Luhn, expiry, cvc) and never
/// stored or logged beyond its last four digits.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    #[schema(example = "4242424242424242")]
    pub card_number: String,
    /// `MM/YY`.
    #[schema(example = "12/34")]
    pub expiry: String,
    #[schema(example = "123")]
    pub cvc: String,
    /// Who the invoice is made out to; absent: the fan's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
}

/// Billing details printed on the invoice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Billing {
    /// A person's or a company's name, up to 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Ada Lovelace", max_length = 200)]
    pub name: Option<String>,
    /// Up to 500 characters; lines split at newlines or commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "12 Analytical Row, London", max_length = 500)]
    pub address: Option<String>,
    /// Up to 32 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "GB123456789", max_length = 32)]
    pub vat_id: Option<String>,
}

impl Billing {
    pub const MAX_NAME: usize = 200;
    pub const MAX_ADDRESS: usize = 500;
    pub const MAX_VAT_ID: usize = 32;
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout").finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum OrderState {
    /// The payment's outcome is not known yet (it arrives by webhook).
    Pending,
    /// Paid: the seats are sold to the fan.
    Paid,
    /// Paid, and some of its tickets were refunded since.
    PartiallyRefunded,
    /// The card was declined; the hold stays while it lasts.
    Declined,
    /// Paid back: every ticket refunded, or a payment that landed after the hold
    /// ended.
    Refunded,
    /// Abandoned before any money moved.
    Cancelled,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Paid => "paid",
            OrderState::PartiallyRefunded => "partially_refunded",
            OrderState::Declined => "declined",
            OrderState::Refunded => "refunded",
            OrderState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// An order: one payment attempt for a request's seats.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Order {
    pub order_id: OrderId,
    pub request_id: RequestId,
    pub event_id: EventId,
    pub state: OrderState,
    #[schema(value_type = Vec<String>, example = json!(["Floor-A-1", "Floor-A-2"]))]
    pub seats: Vec<String>,
    pub amount_cents: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// The card's last four digits.
    pub card_last4: String,
    /// Why a payment was declined, refunded or cancelled (`card_declined`,
    /// `hold_ended`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// A paid order's tickets, one per seat (absent before it is paid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets: Vec<crate::wire::tickets::Ticket>,
    /// What was paid back so far.
    #[serde(default)]
    pub refunded_cents: i64,
    /// The order's refunds, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
}

/// Where a refund's money stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum RefundState {
    /// Approved: the tickets are void and the seats back on sale; the money is on
    /// its way.
    Pending,
    /// The provider paid it back.
    Succeeded,
    /// The provider refused; an operator may try again.
    Failed,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Pending => "pending",
            RefundState::Succeeded => "succeeded",
            RefundState::Failed => "failed",
        }
    }
}

/// A fan's refund request: some of the order's tickets, or (absent) every valid one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<uuid::Uuid>>)]
    pub ticket_ids: Option<Vec<crate::TicketId>>,
}

/// An operator's refund: any time, with a reason kept in the audit trail.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsRefundRequest {
    /// Why, 1 to 500 characters.
    #[schema(
        example = "the fan was charged twice at the box office",
        max_length = 500
    )]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<uuid::Uuid>>)]
    pub ticket_ids: Option<Vec<crate::TicketId>>,
}

/// A refund of some of an order's tickets.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct Refund {
    #[schema(value_type = uuid::Uuid)]
    pub refund_id: crate::RefundId,
    pub order_id: OrderId,
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub ticket_ids: Vec<crate::TicketId>,
    pub seats: Vec<String>,
    /// What is paid back: the tickets' prices less the policy's fee.
    pub amount_cents: i64,
    /// What the policy kept.
    pub fee_cents: i64,
    pub currency: String,
    pub state: RefundState,
    /// `requested` (the fan's), or the operator's reason.
    pub reason: String,
    /// The credit note issued for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_note_number: Option<String>,
    /// Why the provider refused, when `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An order's invoice.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct Invoice {
    #[schema(example = "INV-2026-1")]
    pub invoice_number: String,
    pub issued_at: DateTime<Utc>,
    pub total_cents: i64,
    pub tax_cents: i64,
    pub currency: String,
    /// Hex SHA-256 of the stored PDF, once it is rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf_sha256: Option<String>,
}

/// An operator cancels an event.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelEvent {
    /// Why, 1 to 500 characters: every fan's email says it.
    #[schema(example = "the headliner is ill", max_length = 500)]
    pub reason: String,
}

/// A cancellation and how far its refunds have come.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct Cancellation {
    pub event_id: EventId,
    pub reason: String,
    pub started_at: DateTime<Utc>,
    /// Set once every order is refunded (their money may still be on its way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Orders paid for the event, and how many of them are refunded.
    pub orders_total: i64,
    pub orders_refunded: i64,
    /// Refunds whose money is on its way, and refused.
    pub refunds_pending: i64,
    pub refunds_failed: i64,
}

/// The fan's orders, newest first.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Orders {
    pub orders: Vec<Order>,
}

/// What the payment provider tells `POST /v1/payments/webhook`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Webhook {
    /// The delivery's id: the same id again changes nothing.
    pub id: String,
    /// `payment.succeeded`, `payment.failed` (with `order_id`), `refund.succeeded` or
    /// `refund.failed` (with `refund_id`).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub refund_id: Option<crate::RefundId>,
    /// A refund webhook's attempt (absent: the first). An operator's retry of a
    /// failed refund is a new attempt; a word on an earlier one settles nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub attempt: Option<i32>,
}

/// The webhook's answer.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhookAck {
    /// `processed`; `duplicate` when this delivery id was seen before; `stale` for
    /// a refund webhook about an attempt an operator's retry has since replaced.
    pub status: String,
    /// The order's state after a payment's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_state: Option<OrderState>,
    /// The refund's state after a refund's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_state: Option<RefundState>,
}
