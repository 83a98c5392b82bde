//! Webhook deliveries: each delivery id is acted on once (`payments.webhooks`).
//!
//! The order is settled first and the delivery recorded after, so a delivery that
//! could not be processed (Postgres down, a restore in progress) is not recorded and
//! the provider's retry processes it. Two copies arriving at once both settle, and
//! settling is a no-op on an order no longer pending (it is locked while settled).

use proto::wire::payments::{OrderState, Webhook, WebhookAck};
use proto::{ErrorCode, OrderId};

use crate::provider::RefundStatus;
use crate::{Error, Payments, orders, refunds, settle};

/// A refund's webhook: the refund is settled (once, if `attempt` is still its
/// current one), then the delivery recorded.
pub async fn deliver_refund(
    payments: &Payments,
    delivery: &Webhook,
    refund_id: proto::RefundId,
    attempt: i32,
    succeeded: bool,
) -> Result<WebhookAck, Error> {
    let outcome = if succeeded {
        RefundStatus::Succeeded
    } else {
        RefundStatus::Failed {
            reason: "refund_declined".into(),
        }
    };
    let seen: Option<Option<uuid::Uuid>> =
        sqlx::query_scalar("SELECT refund_id FROM payments.webhooks WHERE webhook_id = $1")
            .bind(&delivery.id)
            .fetch_optional(&payments.pool)
            .await?;
    if seen.is_some() {
        let refund = refunds::get(&payments.pool, refund_id)
            .await?
            .ok_or_else(|| {
                Error::refused(
                    ErrorCode::RefundNotFound,
                    format!("refund {refund_id} does not exist"),
                )
            })?;
        metrics::counter!("onsale_webhooks_total", "outcome" => "duplicate").increment(1);
        return Ok(WebhookAck {
            status: "duplicate".into(),
            order_state: None,
            refund_state: Some(refund.state),
        });
    }
    if refunds::get(&payments.pool, refund_id).await?.is_none() {
        metrics::counter!("onsale_webhooks_total", "outcome" => "unknown_refund").increment(1);
        return Err(Error::refused(
            ErrorCode::RefundNotFound,
            format!("refund {refund_id} does not exist"),
        ));
    }
    let refund = refunds::settle(payments, refund_id, attempt, &outcome).await?;
    let stale = attempt != refund.provider_attempt;
    sqlx::query(
        "INSERT INTO payments.webhooks (webhook_id, refund_id, kind) VALUES ($1, $2, $3)
         ON CONFLICT (webhook_id) DO NOTHING",
    )
    .bind(&delivery.id)
    .bind(refund_id)
    .bind(&delivery.kind)
    .execute(&payments.pool)
    .await?;
    let status = if stale { "stale" } else { "processed" };
    metrics::counter!("onsale_webhooks_total", "outcome" => status).increment(1);
    tracing::info!(webhook_id = %delivery.id, %refund_id, attempt, current = refund.provider_attempt,
        kind = %delivery.kind, state = refund.state.as_str(), status, "refund webhook");
    Ok(WebhookAck {
        status: status.into(),
        order_state: None,
        refund_state: Some(refund.state),
    })
}

pub async fn deliver(
    payments: &Payments,
    delivery: &Webhook,
    order_id: OrderId,
    succeeded: bool,
) -> Result<WebhookAck, Error> {
    let seen: Option<Option<uuid::Uuid>> =
        sqlx::query_scalar("SELECT order_id FROM payments.webhooks WHERE webhook_id = $1")
            .bind(&delivery.id)
            .fetch_optional(&payments.pool)
            .await?;
    if seen.is_some() {
        let order = orders::get(&payments.pool, order_id)
            .await?
            .ok_or(Error::OrderNotFound(order_id))?;
        metrics::counter!("onsale_webhooks_total", "outcome" => "duplicate").increment(1);
        return Ok(WebhookAck {
            status: "duplicate".into(),
            order_state: Some(order.state()),
            refund_state: None,
        });
    }
    if orders::get(&payments.pool, order_id).await?.is_none() {
        metrics::counter!("onsale_webhooks_total", "outcome" => "unknown_order").increment(1);
        return Err(Error::OrderNotFound(order_id));
    }
    let state = settle_from_webhook(payments, order_id, succeeded).await?;
    sqlx::query(
        "INSERT INTO payments.webhooks (webhook_id, order_id, kind) VALUES ($1, $2, $3)
         ON CONFLICT (webhook_id) DO NOTHING",
    )
    .bind(&delivery.id)
    .bind(order_id)
    .bind(&delivery.kind)
    .execute(&payments.pool)
    .await?;
    metrics::counter!("onsale_webhooks_total", "outcome" => "processed").increment(1);
    tracing::info!(webhook_id = %delivery.id, %order_id, kind = %delivery.kind, state = state.as_str(), "webhook processed");
    Ok(WebhookAck {
        status: "processed".into(),
        order_state: Some(state),
        refund_state: None,
    })
}

/// Settles an order from the webhook's word.
async fn settle_from_webhook(
    payments: &Payments,
    order_id: OrderId,
    succeeded: bool,
) -> Result<OrderState, Error> {
    let order = if succeeded {
        settle::succeeded(payments, order_id, None).await?
    } else {
        settle::failed(payments, order_id, None, "card_declined").await?
    };
    Ok(order.state())
}
