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
    /// The card was declined; the hold stays while it lasts.
    Declined,
    /// The payment landed after the hold ended and was paid back.
    Refunded,
    /// Abandoned before any money moved.
    Cancelled,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Paid => "paid",
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
    /// `payment.succeeded` or `payment.failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: OrderId,
}

/// The webhook's answer.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhookAck {
    /// `processed`, or `duplicate` when this delivery id was seen before.
    pub status: String,
    pub order_state: OrderState,
}
