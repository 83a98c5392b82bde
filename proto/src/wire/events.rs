//! Domain events on Kafka, version 1: what the outbox relay publishes and what the
//! notifier (and any integrator) consumes.
//!
//! Every record's value is an [`Envelope`] in JSON; its key is the event id (the
//! sale's), so one sale's records stay in order on one partition. The envelope's `id`
//! is the outbox row's id: consumers are idempotent on it, because delivery is at
//! least once. A consumer ignores types it does not know; new types and new payload
//! fields may appear without a new version, a changed meaning gets a new topic.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wire::payments::OrderState;
use crate::{EventId, OrderId, RequestId, UserId};

/// The envelope's schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// One domain event as it travels on a topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event, stable across redeliveries (the outbox row's id).
    pub id: uuid::Uuid,
    /// What happened, e.g. `request.held` or `order.paid` ([`EventType`]).
    #[serde(rename = "type")]
    pub kind: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The sale it belongs to (also the record's key); [`NO_SALE`] for records
    /// that belong to none (`account.*`).
    pub event_id: EventId,
    /// The booking request it is about, for tracing a fan's path end to end.
    pub request_id: Option<RequestId>,
    /// The facts of the event, shaped by `kind` ([`RequestPayload`], [`OrderPayload`]).
    pub payload: serde_json::Value,
    /// The gateway's `x-request-id` of the HTTP call that caused the event (the join
    /// for `request.held`, the checkout for `order.paid`); absent when no call did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// The `event_id` of a record that belongs to no sale (the `accounts` topic): the
/// nil UUID. The envelope keeps the field (version 1 readers parse it) rather than
/// making it optional.
pub const NO_SALE: EventId = EventId(uuid::Uuid::nil());

/// The event types onsale publishes, with their topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Seats were held for a request (topic `bookings`, [`RequestPayload`]).
    RequestHeld,
    /// A request was refused: sold out, over the cap, sale closed (`bookings`).
    RequestRejected,
    /// A hold ran out, or a pending payment was abandoned (`bookings`).
    RequestExpired,
    /// The fan released the hold (`bookings`).
    RequestReleased,
    /// The seats were sold to the request (`bookings`).
    RequestConfirmed,
    /// An order was paid (topic `orders`, [`OrderPayload`]).
    OrderPaid,
    /// A payment was declined; the hold stays (`orders`).
    OrderDeclined,
    /// A payment landed after its hold ended and was refunded (`orders`).
    OrderRefunded,
    /// An account's email address is to be confirmed: sign-up while confirmation
    /// is required, or the fan asked again (topic `accounts`,
    /// [`VerificationPayload`]).
    AccountVerificationRequested,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::RequestHeld,
        EventType::RequestRejected,
        EventType::RequestExpired,
        EventType::RequestReleased,
        EventType::RequestConfirmed,
        EventType::OrderPaid,
        EventType::OrderDeclined,
        EventType::OrderRefunded,
        EventType::AccountVerificationRequested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RequestHeld => "request.held",
            EventType::RequestRejected => "request.rejected",
            EventType::RequestExpired => "request.expired",
            EventType::RequestReleased => "request.released",
            EventType::RequestConfirmed => "request.confirmed",
            EventType::OrderPaid => "order.paid",
            EventType::OrderDeclined => "order.declined",
            EventType::OrderRefunded => "order.refunded",
            EventType::AccountVerificationRequested => "account.verification_requested",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The topic (without a test suffix) it is published on.
    pub fn topic(self) -> &'static str {
        match self {
            EventType::OrderPaid | EventType::OrderDeclined | EventType::OrderRefunded => {
                crate::topics::ORDERS
            }
            EventType::AccountVerificationRequested => crate::topics::ACCOUNTS,
            _ => crate::topics::BOOKINGS,
        }
    }
}

/// The payload of `request.*` events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestPayload {
    pub request_id: RequestId,
    pub event_id: EventId,
    pub fan_id: UserId,
    /// The request's state after the change (`held`, `rejected`, ...).
    pub state: String,
    #[serde(default)]
    pub seats: Vec<String>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// The payload of `account.verification_requested`: where to send the link and
/// what it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerificationPayload {
    pub user_id: UserId,
    /// The address to confirm, as the account had it when the token was made.
    pub email: String,
    /// The confirmation token itself (the gateway keeps only its SHA-256): the
    /// email links to `{public_url}/verify#token=<token>`, a fragment, so the token
    /// reaches no server log on the way.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The payload of `order.*` events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPayload {
    pub order_id: OrderId,
    pub request_id: RequestId,
    pub event_id: EventId,
    pub fan_id: UserId,
    /// The order's state after the change (`paid`, `declined`, `refunded`).
    pub state: OrderState,
    pub seats: Vec<String>,
    pub amount_cents: i64,
    pub currency: String,
    /// The card's last four digits, the only part of it onsale keeps.
    pub card_last4: String,
    /// Why a payment was declined or refunded (`card_declined`, `hold_ended`, ...).
    pub reason: Option<String>,
    /// `order.paid`: the tickets it issued, with their codes (the email draws them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets: Vec<crate::wire::tickets::Ticket>,
    /// On `order.refunded` after a paid order: the refund that was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundPayload>,
}

/// A refund approved for some of a paid order's tickets (`order.refunded`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundPayload {
    pub refund_id: crate::RefundId,
    pub ticket_ids: Vec<crate::TicketId>,
    pub seats: Vec<String>,
    /// What is paid back.
    pub amount_cents: i64,
    pub fee_cents: i64,
    /// `requested` (the fan's), or the operator's reason.
    pub reason: String,
    /// Set when the refund is part of the event's cancellation.
    #[serde(default)]
    pub event_cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_note_number: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_and_has_a_known_topic() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert!(crate::topics::ALL.contains(&kind.topic()));
        }
        assert_eq!(EventType::parse("order.shipped"), None);
    }
}
