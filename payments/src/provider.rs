//! Payment providers behind one trait, and the sandbox provider onsale ships with.
//!
//! The sandbox behaves like a card processor's test mode (after Stripe's test
//! cards): `4242424242424242` is paid at once, `4000000000000002` is declined
//! (`card_declined`), `4000000000003220` is pending and its outcome (success) comes
//! later by a signed webhook; any other valid number is declined
//! (`unknown_test_card`), so a real card typed into a demo is never "paid". It keeps
//! its own record of charges (`payments.sandbox_charges`), as a real provider does on
//! its side: a charge whose answer was lost (a crash right after it) can be looked up,
//! and a second charge for the same order returns the first.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use proto::{OrderId, RefundId};
use sqlx::PgPool;

use crate::card::Card;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a charge came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Succeeded {
        charge_id: String,
    },
    Declined {
        charge_id: String,
        reason: String,
    },
    /// The outcome arrives later, by webhook.
    Pending {
        charge_id: String,
    },
}

/// A charge as the provider has it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    Declined { reason: String },
    Pending,
    Refunded,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the payment provider is unreachable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for ProviderError {
    fn from(error: sqlx::Error) -> Self {
        ProviderError::Unavailable(error.to_string())
    }
}

/// Where a refund stands at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundStatus {
    Succeeded,
    Failed {
        reason: String,
    },
    /// Accepted; the outcome comes by webhook.
    Pending,
}

/// A payment provider. Every call is idempotent on the order (a refund: on the
/// merchant's refund id).
pub trait PaymentProvider: Send + Sync {
    /// The provider's name, recorded on each order.
    fn name(&self) -> &'static str;
    /// Charges `amount_cents` to `card` for `order`; a second call for the same order
    /// returns the first charge.
    fn charge<'a>(
        &'a self,
        order: OrderId,
        amount_cents: i64,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<Charge, ProviderError>>;
    /// Pays a successful charge back in full; refunding twice refunds once. A
    /// pending charge whose success was announced (by webhook) is refunded too.
    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Calls the order's payment off unless it already succeeded: a charge not yet
    /// made will be declined, a pending one will not complete. Returns whether the
    /// payment is now void (`false`: it succeeded, or was refunded, first).
    fn void(&self, order: OrderId) -> BoxFuture<'_, Result<bool, ProviderError>>;
    /// The order's charge and where it stands, if there is one.
    fn lookup(
        &self,
        order: OrderId,
    ) -> BoxFuture<'_, Result<Option<(String, ChargeStatus)>, ProviderError>>;
    /// Pays `amount_cents` of a charge back, keyed by `refund` and its `attempt`: a
    /// second call with the same pair refunds once and answers as the first. An
    /// operator's retry of a failed refund is a new attempt, so it reaches the
    /// provider again instead of being answered from the first.
    fn refund_part<'a>(
        &'a self,
        refund: RefundId,
        attempt: i32,
        charge_id: &'a str,
        amount_cents: i64,
    ) -> BoxFuture<'a, Result<RefundStatus, ProviderError>>;
    /// An attempt of a refund as the provider has it, if it was ever asked for.
    fn lookup_refund(
        &self,
        refund: RefundId,
        attempt: i32,
    ) -> BoxFuture<'_, Result<Option<RefundStatus>, ProviderError>>;
}

/// The sandbox's test cards.
pub const CARD_PAID: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";
pub const CARD_PENDING: &str = "4000000000003220";
/// Paid at once; the first attempt of any refund of it fails (`refund.failed`), an
/// operator's retry succeeds.
pub const CARD_REFUND_FAILS: &str = "4000000000005126";

/// The sandbox provider.
#[derive(Clone)]
pub struct Sandbox {
    pool: PgPool,
    /// When a pending charge's webhook is due; `None`: never (tests send their own).
    webhook_after: Option<Duration>,
}

impl Sandbox {
    pub fn new(pool: PgPool, webhook_after: Option<Duration>) -> Self {
        Self {
            pool,
            webhook_after,
        }
    }
}

fn status_of(state: &str, reason: Option<String>) -> ChargeStatus {
    match state {
        "succeeded" => ChargeStatus::Succeeded,
        "pending" => ChargeStatus::Pending,
        "refunded" => ChargeStatus::Refunded,
        "voided" => ChargeStatus::Declined {
            reason: "voided".into(),
        },
        _ => ChargeStatus::Declined {
            reason: reason.unwrap_or_else(|| "card_declined".into()),
        },
    }
}

impl PaymentProvider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn charge<'a>(
        &'a self,
        order: OrderId,
        amount_cents: i64,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<Charge, ProviderError>> {
        Box::pin(async move {
            let (state, settles_to) = match card.number() {
                CARD_PAID | CARD_REFUND_FAILS => ("succeeded", None),
                CARD_PENDING => ("pending", Some("succeeded")),
                _ => ("declined", None),
            };
            let charge_id = format!("ch_{}", uuid::Uuid::now_v7().simple());
            let notify_after = self
                .webhook_after
                .filter(|_| settles_to.is_some())
                .map(|d| d.as_secs_f64());
            sqlx::query(
                "INSERT INTO payments.sandbox_charges (charge_id, order_id, amount_cents, state, settles_to, notify_at)
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(if card.number() == CARD_REFUND_FAILS {
                // The sandbox remembers the card by the charge's id.
                format!("ch_norefund_{}", uuid::Uuid::now_v7().simple())
            } else {
                charge_id
            })
            .bind(order)
            .bind(amount_cents)
            .bind(state)
            .bind(settles_to)
            .bind(notify_after)
            .execute(&self.pool)
            .await?;
            let (charge_id, state): (String, String) = sqlx::query_as(
                "SELECT charge_id, state FROM payments.sandbox_charges WHERE order_id = $1",
            )
            .bind(order)
            .fetch_one(&self.pool)
            .await?;
            Ok(match state.as_str() {
                "succeeded" | "refunded" => Charge::Succeeded { charge_id },
                "pending" => Charge::Pending { charge_id },
                "voided" => Charge::Declined {
                    charge_id,
                    reason: "voided".into(),
                },
                _ => Charge::Declined {
                    charge_id,
                    reason: if card.number() == CARD_DECLINED {
                        "card_declined".into()
                    } else {
                        "unknown_test_card".into()
                    },
                },
            })
        })
    }

    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE payments.sandbox_charges SET state = 'refunded'
                 WHERE charge_id = $1 AND state IN ('succeeded', 'pending', 'refunded')",
            )
            .bind(charge_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn void(&self, order: OrderId) -> BoxFuture<'_, Result<bool, ProviderError>> {
        Box::pin(async move {
            let state: String = sqlx::query_scalar(
                "INSERT INTO payments.sandbox_charges (charge_id, order_id, amount_cents, state)
                 VALUES ($1, $2, 0, 'voided')
                 ON CONFLICT (order_id) DO UPDATE SET state = CASE
                     WHEN payments.sandbox_charges.state IN ('pending', 'declined', 'failed', 'voided') THEN 'voided'
                     ELSE payments.sandbox_charges.state END
                 RETURNING state",
            )
            .bind(format!("ch_{}", uuid::Uuid::now_v7().simple()))
            .bind(order)
            .fetch_one(&self.pool)
            .await?;
            Ok(state == "voided")
        })
    }

    fn lookup(
        &self,
        order: OrderId,
    ) -> BoxFuture<'_, Result<Option<(String, ChargeStatus)>, ProviderError>> {
        Box::pin(async move {
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT charge_id, state FROM payments.sandbox_charges WHERE order_id = $1",
            )
            .bind(order)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(id, state)| {
                let status = status_of(&state, None);
                (id, status)
            }))
        })
    }

    fn refund_part<'a>(
        &'a self,
        refund: RefundId,
        attempt: i32,
        charge_id: &'a str,
        amount_cents: i64,
    ) -> BoxFuture<'a, Result<RefundStatus, ProviderError>> {
        Box::pin(async move {
            // A `CARD_REFUND_FAILS` charge refuses the first attempt, as a closed
            // account would; an operator's retry (the fan's bank has sorted it) pays.
            let state = if charge_id.starts_with("ch_norefund_") && attempt == 1 {
                "failed"
            } else {
                "succeeded"
            };
            let notify_after = self.webhook_after.map(|d| d.as_secs_f64());
            sqlx::query(
                "INSERT INTO payments.sandbox_refunds
                     (refund_id, attempt, charge_id, amount_cents, state, notify_at)
                 VALUES ($1, $6, $2, $3, $4, now() + make_interval(secs => $5))
                 ON CONFLICT (refund_id, attempt) DO NOTHING",
            )
            .bind(refund)
            .bind(charge_id)
            .bind(amount_cents)
            .bind(state)
            .bind(notify_after)
            .bind(attempt)
            .execute(&self.pool)
            .await?;
            // The sandbox answers at once that it took the refund; its outcome comes
            // by webhook (or a lookup).
            Ok(RefundStatus::Pending)
        })
    }

    fn lookup_refund(
        &self,
        refund: RefundId,
        attempt: i32,
    ) -> BoxFuture<'_, Result<Option<RefundStatus>, ProviderError>> {
        Box::pin(async move {
            let state: Option<String> = sqlx::query_scalar(
                "SELECT state FROM payments.sandbox_refunds WHERE refund_id = $1 AND attempt = $2",
            )
            .bind(refund)
            .bind(attempt)
            .fetch_optional(&self.pool)
            .await?;
            Ok(state.map(|state| match state.as_str() {
                "succeeded" => RefundStatus::Succeeded,
                _ => RefundStatus::Failed {
                    reason: "refund_declined".into(),
                },
            }))
        })
    }
}
