//! Cancelling an event: the sale is closed (by the caller, which owns the sale) and
//! a row in `payments.cancellations` says the event is cancelled. The refund loop
//! then refunds every paid order in full, as an operator's refund with the
//! cancellation's reason, until none is left and no payment is in flight; then it
//! marks the cancellation finished. It keeps no progress of its own: each pass reads
//! what is still paid, so a cancellation interrupted half-way (a crash, a restart)
//! resumes where it stopped, and an order is never refunded twice (its tickets are
//! void after the first refund, and the order row is locked while refunded).

use chrono::{DateTime, Utc};
use proto::wire::payments::Cancellation;
use proto::{ErrorCode, EventId, OrderId, UserId};

use crate::orders;
use crate::refunds::{self, Requester};
use crate::{Error, Payments};

/// Orders refunded per pass.
const BATCH: i64 = 50;

/// Records the cancellation (a second call changes nothing and answers the first);
/// also says whether this call is the one that cancelled.
pub async fn start(
    payments: &Payments,
    event: EventId,
    operator: UserId,
    reason: &str,
) -> Result<(Cancellation, bool), Error> {
    let reason = refunds::check_reason(reason)?;
    let inserted = sqlx::query(
        "INSERT INTO payments.cancellations (event_id, reason, cancelled_by)
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM inventory.events WHERE event_id = $1)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event)
    .bind(reason)
    .bind(operator)
    .execute(&payments.pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::info!(target: "audit", event_id = %event, by = %operator, reason, "event cancelled");
        metrics::counter!("onsale_events_cancelled_total").increment(1);
    }
    let progress = progress(payments, event).await?.ok_or_else(|| {
        Error::refused(
            ErrorCode::EventNotFound,
            format!("event {event} does not exist"),
        )
    })?;
    Ok((progress, inserted == 1))
}

/// A cancellation and how far it has come.
pub async fn progress(payments: &Payments, event: EventId) -> Result<Option<Cancellation>, Error> {
    type Row = (
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        i64,
        i64,
        i64,
        i64,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT c.reason, c.started_at, c.finished_at,
                    (SELECT count(*) FROM payments.orders o
                     WHERE o.event_id = c.event_id
                       AND o.state IN ('paid', 'partially_refunded', 'refunded')
                       AND (o.state <> 'refunded' OR EXISTS (
                           SELECT 1 FROM payments.refunds r WHERE r.order_id = o.order_id))),
                    (SELECT count(*) FROM payments.orders o
                     WHERE o.event_id = c.event_id AND o.state = 'refunded'
                       AND EXISTS (SELECT 1 FROM payments.refunds r WHERE r.order_id = o.order_id)),
                    (SELECT count(*) FROM payments.refunds r
                     WHERE r.event_id = c.event_id AND r.state = 'pending'),
                    (SELECT count(*) FROM payments.refunds r
                     WHERE r.event_id = c.event_id AND r.state = 'failed')
             FROM payments.cancellations c WHERE c.event_id = $1",
    )
    .bind(event)
    .fetch_optional(&payments.pool)
    .await?;
    Ok(row.map(
        |(reason, started_at, finished_at, total, refunded, pending, failed)| Cancellation {
            event_id: event,
            reason,
            started_at,
            finished_at,
            orders_total: total,
            orders_refunded: refunded,
            refunds_pending: pending,
            refunds_failed: failed,
        },
    ))
}

/// One pass over unfinished cancellations; returns how many orders it refunded.
pub async fn work(payments: &Payments) -> Result<usize, Error> {
    let open: Vec<(EventId, String, UserId)> = sqlx::query_as(
        "SELECT event_id, reason, cancelled_by FROM payments.cancellations
         WHERE finished_at IS NULL ORDER BY started_at LIMIT 10",
    )
    .fetch_all(&payments.pool)
    .await?;
    let mut refunded = 0;
    for (event, reason, operator) in open {
        let orders: Vec<OrderId> = sqlx::query_scalar(
            "SELECT order_id FROM payments.orders
             WHERE event_id = $1 AND state IN ('paid', 'partially_refunded')
             ORDER BY created_at LIMIT $2",
        )
        .bind(event)
        .bind(BATCH)
        .fetch_all(&payments.pool)
        .await?;
        let by = Requester::Operator {
            user: operator,
            reason: format!("event cancelled: {reason}"),
            cancellation: true,
        };
        for order in &orders {
            match refunds::approve(payments, *order, None, &by).await {
                Ok(_) => refunded += 1,
                // Refunded meanwhile (by an operator's own refund): nothing left.
                Err(Error::Refused {
                    code: ErrorCode::TicketNotRefundable,
                    ..
                }) => {}
                Err(error) => {
                    tracing::warn!(event_id = %event, order_id = %order, %error, "refunding a cancelled event's order failed; retrying")
                }
            }
        }
        if orders.is_empty() {
            // Done once nothing is paid and no payment is still in flight (a pending
            // one that succeeds later is refunded by a later pass). Under the event's
            // sale lock, exclusive: a checkout opening an order holds it shared until
            // its order is committed, so none is missed by the look below, and any
            // opened after sees the cancellation (`orders::create`).
            let mut tx = payments.pool.begin().await?;
            sqlx::query(&format!(
                "SELECT pg_advisory_xact_lock({})",
                orders::sale_lock("$1")
            ))
            .bind(event)
            .execute(&mut *tx)
            .await?;
            let finished = sqlx::query(
                "UPDATE payments.cancellations SET finished_at = now()
                 WHERE event_id = $1 AND finished_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM payments.orders
                                   WHERE event_id = $1
                                     AND state IN ('pending', 'paid', 'partially_refunded'))",
            )
            .bind(event)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if finished == 1 {
                tracing::info!(event_id = %event, "cancellation finished: every order is refunded");
            }
        }
    }
    Ok(refunded)
}
