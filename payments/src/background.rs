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
/// How often delivered outbox records and old webhook ids are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Settles one stale pending order from the provider's record; returns what it did.
pub async fn reconcile_order(
    payments: &Payments,
    order_id: OrderId,
) -> Result<&'static str, crate::Error> {
    Ok(match payments.provider.lookup(order_id).await? {
        Some((charge, ChargeStatus::Succeeded)) => {
            settle::succeeded(payments, order_id, Some(&charge)).await?;
            "settled_success"
        }
        // A refund whose bookkeeping was lost: the money is back already.
        Some((charge, ChargeStatus::Refunded)) => {
            settle::refunded(payments, order_id, &charge, "refunded").await?;
            "settled_refund"
        }
        Some((charge, ChargeStatus::Declined { reason })) => {
            settle::failed(payments, order_id, Some(&charge), &reason).await?;
            "settled_decline"
        }
        // The provider tells by webhook, unless the hold it was paying for is over:
        // then the payment is abandoned (voided; should it have succeeded first, the
        // next pass finds it and refunds it).
        Some((_, ChargeStatus::Pending)) => {
            if paying_still(payments, order_id).await? || !payments.provider.void(order_id).await? {
                "still_pending"
            } else {
                settle::cancelled(payments, order_id, "abandoned").await?;
                "abandoned"
            }
        }
        // The checkout stopped before charging. The payment is voided first, so a
        // charge still on its way is declined rather than taken for nothing.
        None => {
            if payments.provider.void(order_id).await? {
                settle::cancelled(payments, order_id, "no_charge").await?;
                "cancelled"
            } else {
                "still_pending"
            }
        }
    })
}

/// Whether the order's request is still paying within its deadline, as the ledger
/// has it.
async fn paying_still(payments: &Payments, order_id: OrderId) -> Result<bool, crate::Error> {
    let paying: Option<bool> = sqlx::query_scalar(
        "SELECT r.state = 'paying' AND r.hold_expires_at > now()
         FROM payments.orders o JOIN booking.requests r USING (request_id)
         WHERE o.order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&payments.pool)
    .await?;
    Ok(paying.unwrap_or(false))
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
    let mut purge = tokio::time::interval(PURGE_EVERY);
    let keep = Duration::from_secs(payments.settings.retention_days * 86_400);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = reconcile(&payments).await {
                    tracing::warn!(%error, "reconciler pass failed");
                }
            }
            _ = purge.tick() => {
                if let Err(error) = crate::retention::purge(&payments.pool, keep).await {
                    tracing::warn!(%error, "purging delivered records failed");
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
    // A payment called off (voided) meanwhile is never announced.
    sqlx::query(
        "UPDATE payments.sandbox_charges SET notified_at = now()
         WHERE notified_at IS NULL AND notify_at IS NOT NULL AND state = 'voided'",
    )
    .execute(pool)
    .await?;
    let due: Vec<(String, uuid::Uuid, String)> = sqlx::query_as(
        "UPDATE payments.sandbox_charges SET state = CASE WHEN state = 'pending' THEN settles_to ELSE state END
         WHERE charge_id IN (SELECT charge_id FROM payments.sandbox_charges
                             WHERE notified_at IS NULL AND notify_at <= now() AND state <> 'voided'
                             ORDER BY notify_at LIMIT 50)
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
        });
        if deliver(client, settings, body).await {
            sqlx::query(
                "UPDATE payments.sandbox_charges SET notified_at = now() WHERE charge_id = $1",
            )
            .bind(&charge_id)
            .execute(pool)
            .await?;
            delivered += 1;
        }
    }
    let refunds: Vec<(uuid::Uuid, i32, String)> = sqlx::query_as(
        "SELECT refund_id, attempt, state FROM payments.sandbox_refunds
         WHERE notified_at IS NULL AND notify_at <= now() ORDER BY notify_at LIMIT 50",
    )
    .fetch_all(pool)
    .await?;
    for (refund_id, attempt, state) in refunds {
        let body = serde_json::json!({
            "id": format!("wh_{}_{attempt}", refund_id.simple()),
            "type": if state == "succeeded" { "refund.succeeded" } else { "refund.failed" },
            "refund_id": refund_id,
            "attempt": attempt,
        });
        if deliver(client, settings, body).await {
            sqlx::query(
                "UPDATE payments.sandbox_refunds SET notified_at = now()
                 WHERE refund_id = $1 AND attempt = $2",
            )
            .bind(refund_id)
            .bind(attempt)
            .execute(pool)
            .await?;
            delivered += 1;
        }
    }
    Ok(delivered)
}

/// Sends one signed webhook; whether onsale took it (2xx).
async fn deliver(client: &reqwest::Client, settings: &Settings, body: serde_json::Value) -> bool {
    let body = body.to_string();
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
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::warn!(status = %response.status(), "sandbox webhook refused; sending again later");
            false
        }
        Err(error) => {
            tracing::warn!(%error, "sandbox webhook not delivered; sending again later");
            false
        }
    }
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
