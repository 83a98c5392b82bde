//! Kafka topic names. A topic carries one family of domain events; every record's
//! value is a JSON envelope with a `schema_version`, keyed by the event id so one
//! sale's records stay in order on one partition.

/// Booking lifecycle: request held, hold expired, hold released.
pub const BOOKINGS: &str = "onsale.bookings.v1";
/// Orders: paid, declined, refunded.
pub const ORDERS: &str = "onsale.orders.v1";
/// Sale state changes: opened, paused, resumed, closed, sold out.
pub const SALES: &str = "onsale.sales.v1";

/// Accounts: an email address to confirm. Keyed by the nil event id (an account
/// belongs to no sale); its records carry a confirmation token, so read access to
/// this topic is as sensitive as the tickets on `orders`.
pub const ACCOUNTS: &str = "onsale.accounts.v1";

/// Every topic onsale produces, for tools that create them up front.
pub const ALL: &[&str] = &[BOOKINGS, ORDERS, SALES, ACCOUNTS];

/// A topic name with a suffix, so each test run has topics of its own.
pub fn with_suffix(topic: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        topic.to_owned()
    } else {
        format!("{topic}.{suffix}")
    }
}
