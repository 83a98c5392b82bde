//! The hot path's promises where a single well-timed fault used to break them: a
//! drainer that stalls past its lease, a late ledger write, a ledger conflict, a
//! worker that cannot drain one event, dead letters, a sale closed before its draw,
//! a section ask behind returning holds, and a draw run twice around a cancel.
//! Each test is named after the scenario it proves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use booking_worker::Drainer;
use chrono::Utc;
use ledger::{self, Decision, LedgerError};
use proto::keys::WORKER_GROUP;
use proto::wire::queue::{RequestState, SaleState};
use proto::{RequestId, SeatId, UserId};
use sqlx::PgPool;
use waiting_room::requests::{self, Ask};
use waiting_room::sale::{self, Lever};

use crate::helpers::*;

mod conflicts;
mod draw;
mod fencing;
mod holds;
mod liveness;
mod retention;

pub(super) fn best(quantity: u32, section: Option<&str>) -> Ask {
    Ask::Best {
        quantity,
        section: section.map(str::to_owned),
        price_tier: None,
    }
}

/// Polls `check` until it returns `Some`, failing after `limit`.
pub(super) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn status(sale: &Sale, request: RequestId) -> proto::wire::queue::RequestStatus {
    let mut redis = sale.redis.clone();
    requests::status_of(&mut redis, &sale.keys, sale.event_id, request)
        .await
        .expect("status")
}

pub(super) async fn ledger_row(
    sale: &Sale,
    request: RequestId,
) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT state, reason FROM booking.requests WHERE request_id = $1")
        .bind(request)
        .fetch_optional(&sale.pool)
        .await
        .expect("ledger row")
}

pub(super) fn held(request: RequestId, seat: &str) -> Decision {
    Decision {
        request_id: request,
        fan: UserId::new(),
        queue_number: 1,
        state: RequestState::Held,
        seats: vec![seat.to_owned()],
        expires_at: Some(Utc::now() + chrono::Duration::minutes(10)),
        reason: None,
        decided_at: Utc::now(),
        correlation_id: None,
        traceparent: None,
    }
}
