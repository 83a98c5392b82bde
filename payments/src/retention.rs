//! What payments keeps, and for how long: outbox records the broker has
//! acknowledged and the ids of webhooks already applied are deleted once older than
//! `payments.retention_days` (a week by default). Nothing undelivered is touched.
//!
//! A webhook id only guards against a replay, and a replayed webhook older than the
//! signature's tolerance (`signature::TOLERANCE_SECONDS`, five minutes) is refused
//! by its signature anyway: a week is ample.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement, so a purge never holds many row locks at once.
const CHUNK: i64 = 5_000;

/// What one [`purge`] deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub outbox: u64,
    pub webhooks: u64,
}

/// Deletes published outbox records and applied webhook ids older than `keep`.
pub async fn purge(pool: &PgPool, keep: Duration) -> Result<Purged, sqlx::Error> {
    let keep_seconds = keep.as_secs_f64();
    let mut purged = Purged::default();
    for (table, stamp, total) in [
        ("outbox.messages", "published_at", &mut purged.outbox),
        ("payments.webhooks", "received_at", &mut purged.webhooks),
    ] {
        loop {
            let deleted = sqlx::query(&format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM {table}
                     WHERE {stamp} < now() - make_interval(secs => $1) LIMIT $2))"
            ))
            .bind(keep_seconds)
            .bind(CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
            *total += deleted;
            if deleted < CHUNK as u64 {
                break;
            }
        }
    }
    if purged != Purged::default() {
        tracing::info!(
            outbox = purged.outbox,
            webhooks = purged.webhooks,
            retention_days = keep.as_secs() / 86_400,
            "delivered outbox records and old webhook ids purged"
        );
    }
    metrics::counter!("onsale_purged_rows_total", "table" => "outbox").increment(purged.outbox);
    metrics::counter!("onsale_purged_rows_total", "table" => "webhooks").increment(purged.webhooks);
    Ok(purged)
}
