//! The payments service's loops besides the relay: the reconciler, which settles
//! orders whose outcome was lost, and the sandbox's webhook sender.

use std::time::Duration;

use chrono::Utc;
use proto::OrderId;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::provider::ChargeStatus;
use crate::{Payments, Settings, settle, signature};

const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Settles one stale pending order from the provider's record; returns what it did.
pub async fn reconcile_order(
    payments: &Payments,
    order_id: OrderId,
) -> Result<&'static str, crate::Error> {
    Ok(match payments.provider.lookup(order_id).await? {
        Some((charge, ChargeStatus::Succeeded | ChargeStatus::Refunded)) => {
            settle::succeeded(payments, order_id, Some(&charge)).await?;
            "settled_success"
        }
        Some((charge, ChargeStatus::Declined { reason })) => {
            settle::failed(payments, order_id, Some(&charge), &reason).await?;
            "settled_decline"
        }
        // The provider tells by webhook.
        Some((_, ChargeStatus::Pending)) => "still_pending",
        // The checkout stopped before charging.
        None => {
            settle::cancelled(payments, order_id).await?;
            "cancelled"
        }
    })
}

/// One pass of the reconciler over stale pending orders; returns how many it settled.
pub async fn reconcile(payments: &Payments) -> Result<usize, crate::Error> {
    let mut settled = 0;
    let stale = payments.settings.reconcile_after_seconds as f64;
    for order_id in crate::orders::stale_pending(&payments.pool, stale, 100).await? {
        match reconcile_order(payments, order_id).await {
            Ok("still_pending") => {}
            Ok(outcome) => {
                settled += 1;
                tracing::info!(%order_id, outcome, "reconciled a pending order");
            }
            Err(error) => tracing::warn!(%order_id, %error, "reconciling an order failed"),
        }
    }
    Ok(settled)
}

pub async fn run_reconciler(payments: Payments, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = reconcile(&payments).await {
                    tracing::warn!(%error, "reconciler pass failed");
                }
            }
            () = stop.cancelled() => break,
        }
    }
}

/// The sandbox's webhook sender: settles pending sandbox charges that are due and
/// tells onsale by a signed webhook, until onsale answers 2xx. Returns how many
/// webhooks were delivered.
pub async fn send_due_webhooks(
    pool: &PgPool,
    client: &reqwest::Client,
    settings: &Settings,
) -> Result<usize, sqlx::Error> {
    let due: Vec<(String, uuid::Uuid, String)> = sqlx::query_as(
        "UPDATE payments.sandbox_charges SET state = CASE WHEN state = 'pending' THEN settles_to ELSE state END
         WHERE charge_id IN (SELECT charge_id FROM payments.sandbox_charges
                             WHERE notified_at IS NULL AND notify_at <= now() LIMIT 50)
         RETURNING charge_id, order_id, settles_to",
    )
    .fetch_all(pool)
    .await?;
    let mut delivered = 0;
    for (charge_id, order_id, settles_to) in due {
        let body = serde_json::json!({
            "id": format!("wh_{charge_id}"),
            "type": if settles_to == "succeeded" { "payment.succeeded" } else { "payment.failed" },
            "order_id": order_id,
        })
        .to_string();
        let header = signature::sign(
            settings.webhook_secret.expose_secret().as_bytes(),
            Utc::now().timestamp(),
            body.as_bytes(),
        );
        let sent = client
            .post(&settings.sandbox_webhook_url)
            .header("content-type", "application/json")
            .header(signature::HEADER, header)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                sqlx::query(
                    "UPDATE payments.sandbox_charges SET notified_at = now() WHERE charge_id = $1",
                )
                .bind(&charge_id)
                .execute(pool)
                .await?;
                delivered += 1;
            }
            Ok(response) => {
                tracing::warn!(%order_id, status = %response.status(), "sandbox webhook refused; sending again later")
            }
            Err(error) => {
                tracing::warn!(%order_id, %error, "sandbox webhook not delivered; sending again later")
            }
        }
    }
    Ok(delivered)
}

pub async fn run_sandbox_webhooks(pool: PgPool, settings: Settings, stop: CancellationToken) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = send_due_webhooks(&pool, &client, &settings).await {
                    tracing::warn!(%error, "sandbox webhook pass failed");
                }
            }
            () = stop.cancelled() => break,
        }
    }
}
