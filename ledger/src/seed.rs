//! Seats put into the ledger the way the booking worker and a checkout put them, for
//! tests and tools that need seats held or sold without running a sale: a fenced
//! decision ([`crate::record`]), then paying and selling as payments does
//! ([`crate::checkout`]). Each call raises the event's fence under the holder
//! `seed`, which fences out a drainer of the event: seed before a worker starts.

use chrono::{DateTime, Utc};
use proto::wire::queue::RequestState;
use proto::{EventId, RequestId, UserId};
use sqlx::PgPool;

use crate::checkout::{self, BeginPaying, SellError};
use crate::{Decision, LedgerError};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Sell(#[from] SellError),
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the ledger refused the seats {0:?}: another request claims them")]
    Taken(Vec<String>),
    #[error("the held request did not move to paying: {0}")]
    NotPaying(String),
}

/// A new request of a new fan holding `seats` until `expires_at`.
pub async fn hold(
    pool: &PgPool,
    event_id: EventId,
    seats: &[&str],
    expires_at: DateTime<Utc>,
) -> Result<RequestId, SeedError> {
    let request_id = RequestId::new();
    let epoch = crate::raise_fence(pool, event_id, "seed").await?;
    let decision = Decision {
        request_id,
        fan: UserId::new(),
        queue_number: 0,
        state: RequestState::Held,
        seats: seats.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: Some(expires_at),
        reason: None,
        decided_at: chrono::Utc::now(),
        correlation_id: None,
        traceparent: None,
    };
    let conflicts = crate::record(pool, event_id, epoch, &[decision]).await?;
    if !conflicts.is_empty() {
        return Err(SeedError::Taken(
            seats.iter().map(|s| (*s).to_owned()).collect(),
        ));
    }
    Ok(request_id)
}

/// A new request of a new fan that bought `seats`.
pub async fn sell(
    pool: &PgPool,
    event_id: EventId,
    seats: &[&str],
) -> Result<RequestId, SeedError> {
    let until = Utc::now() + chrono::Duration::minutes(10);
    let request_id = hold(pool, event_id, seats, until).await?;
    let mut tx = pool.begin().await?;
    match checkout::begin_paying(&mut tx, event_id, request_id, until).await? {
        BeginPaying::Paying { .. } => {}
        other => return Err(SeedError::NotPaying(format!("{other:?}"))),
    }
    checkout::sell(&mut tx, event_id, request_id).await?;
    tx.commit().await?;
    Ok(request_id)
}
