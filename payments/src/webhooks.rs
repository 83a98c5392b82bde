//! Webhook deliveries: each delivery id is acted on once (`payments.webhooks`).
//!
//! The order is settled first and the delivery recorded after, so a delivery that
//! could not be processed (Postgres down, a restore in progress) is not recorded and
//! the provider's retry processes it. Two copies arriving at once both settle, and
//! settling is a no-op on an order no longer pending (it is locked while settled).

use proto::OrderId;
use proto::wire::payments::{OrderState, Webhook, WebhookAck};

use crate::{Error, Payments, orders, settle};

pub async fn deliver(
    payments: &Payments,
    delivery: &Webhook,
    succeeded: bool,
) -> Result<WebhookAck, Error> {
    let seen: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT order_id FROM payments.webhooks WHERE webhook_id = $1")
            .bind(&delivery.id)
            .fetch_optional(&payments.pool)
            .await?;
    if seen.is_some() {
        let order = orders::get(&payments.pool, delivery.order_id)
            .await?
            .ok_or(Error::OrderNotFound(delivery.order_id))?;
        metrics::counter!("onsale_webhooks_total", "outcome" => "duplicate").increment(1);
        return Ok(WebhookAck {
            status: "duplicate".into(),
            order_state: order.state(),
        });
    }
    if orders::get(&payments.pool, delivery.order_id)
        .await?
        .is_none()
    {
        metrics::counter!("onsale_webhooks_total", "outcome" => "unknown_order").increment(1);
        return Err(Error::OrderNotFound(delivery.order_id));
    }
    let state = settle_from_webhook(payments, delivery.order_id, succeeded).await?;
    sqlx::query(
        "INSERT INTO payments.webhooks (webhook_id, order_id, kind) VALUES ($1, $2, $3)
         ON CONFLICT (webhook_id) DO NOTHING",
    )
    .bind(&delivery.id)
    .bind(delivery.order_id)
    .bind(&delivery.kind)
    .execute(&payments.pool)
    .await?;
    metrics::counter!("onsale_webhooks_total", "outcome" => "processed").increment(1);
    tracing::info!(webhook_id = %delivery.id, order_id = %delivery.order_id, kind = %delivery.kind, state = state.as_str(), "webhook processed");
    Ok(WebhookAck {
        status: "processed".into(),
        order_state: state,
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
