//! An operator's lever (pause, resume, close) or admission change as one recorded
//! intent, applied and audited exactly once.
//!
//! The pull is written to the ledger first (`waiting_room.lever_pulls`, pending),
//! then applied to Redis, then, in one transaction, the sale's row, its audit entry
//! and the pull marked applied. A failure between two steps leaves the pull pending;
//! the next pull of the event finishes it first (and a retry of the same lever is
//! answered by it), and the scheduler finishes those nobody retried. Finishing moves
//! Redis only from where the lever may move it, and the audit entry is written by
//! the transaction that marks the pull applied, so it is written once however often
//! a step fails. Pulls of one event run one at a time: a transaction-scoped advisory
//! lock, held on a connection of its own for the pull.
//!
//! Keys: the event's `sale` hash (and, closing a scheduled sale, its pre-queue).

use platform::store::Redis;
use proto::wire::queue::SaleState;
use proto::{EventId, Keys, UserId};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::Error;
use crate::sale::{self, Lever};

/// A recorded pull.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Pull {
    pub pull_id: i64,
    pub event_id: EventId,
    pub action: String,
    pub actor: UserId,
    pub per_second: Option<i32>,
    pub from_state: Option<String>,
}

/// A pull finished late, and the sale's state it left.
pub struct Finished {
    pub action: String,
    pub per_second: Option<i32>,
    pub state: Option<SaleState>,
}

/// The event's lever lock, held until the returned transaction ends (`None`: another
/// pull holds it and `wait` is false).
pub async fn lock(
    pool: &PgPool,
    event_id: EventId,
    wait: bool,
) -> Result<Option<Transaction<'static, Postgres>>, Error> {
    let mut tx = pool.begin().await?;
    let key = format!("lever:{event_id}");
    if wait {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
    } else {
        let mine: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
        if !mine {
            return Ok(None);
        }
    }
    Ok(Some(tx))
}

/// Records a pull, pending, with the sale's state in Redis now.
pub async fn record(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    action: &str,
    actor: UserId,
    per_second: Option<i32>,
) -> Result<Pull, Error> {
    let from_state: Option<String> = redis::cmd("HGET")
        .arg(keys.sale(event_id))
        .arg("state")
        .query_async(redis)
        .await?;
    Ok(sqlx::query_as(
        "INSERT INTO waiting_room.lever_pulls (event_id, action, actor, per_second, from_state)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING pull_id, event_id, action, actor, per_second, from_state",
    )
    .bind(event_id)
    .bind(action)
    .bind(actor)
    .bind(per_second)
    .bind(from_state)
    .fetch_one(pool)
    .await?)
}

/// Applies a state lever to Redis (from the states it may move from): whether the
/// sale moved, and the state it was in.
pub async fn apply_lever(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    lever: Lever,
) -> Result<(bool, Option<SaleState>), Error> {
    let (to, from) = lever.transition();
    Ok(proto::scripts::sale_state_moved(
        proto::scripts::set_sale_state(keys, event_id, to, from)
            .invoke_async(redis)
            .await?,
    ))
}

/// Applies an admission rate to Redis.
pub async fn apply_admission(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    per_second: i64,
) -> Result<(), Error> {
    let _: () = redis::cmd("HSET")
        .arg(keys.sale(event_id))
        .arg(proto::sale_hash::ADMISSION_PER_SECOND)
        .arg(per_second)
        .query_async(redis)
        .await?;
    Ok(())
}

/// Finishes a pull Redis has taken: the sale's row (its state, or its admission
/// rate), the audit entry and the pull applied, in one transaction. False when the
/// pull was finished already (nothing written).
pub async fn finish(
    pool: &PgPool,
    pull: &Pull,
    to: Option<SaleState>,
    detail: serde_json::Value,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let won: Option<i64> = sqlx::query_scalar(
        "UPDATE waiting_room.lever_pulls SET state = 'applied', ended_at = now()
         WHERE pull_id = $1 AND state = 'pending' RETURNING pull_id",
    )
    .bind(pull.pull_id)
    .fetch_optional(&mut *tx)
    .await?;
    if won.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE waiting_room.sales SET state = coalesce($2, state),
             admission_per_second = coalesce($3, admission_per_second), updated_at = now()
         WHERE event_id = $1",
    )
    .bind(pull.event_id)
    .bind(to.map(SaleState::as_str))
    .bind(pull.per_second)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO waiting_room.audit (event_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(pull.event_id)
    .bind(pull.actor)
    .bind(&pull.action)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends a pull Redis refused (the sale was not where the lever moves from).
pub async fn refuse(pool: &PgPool, pull_id: i64) -> Result<(), Error> {
    sqlx::query(
        "UPDATE waiting_room.lever_pulls SET state = 'refused', ended_at = now()
         WHERE pull_id = $1 AND state = 'pending'",
    )
    .bind(pull_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Finishes every pending pull of the event, oldest first (the caller holds the
/// event's lever lock); returns the last one applied.
pub async fn finish_pending(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Option<Finished>, Error> {
    let pending: Vec<Pull> = sqlx::query_as(
        "SELECT pull_id, event_id, action, actor, per_second, from_state
         FROM waiting_room.lever_pulls WHERE event_id = $1 AND state = 'pending' ORDER BY pull_id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let mut last = None;
    for pull in pending {
        if let Some(per_second) = pull.per_second {
            apply_admission(redis, keys, event_id, per_second.into()).await?;
            let detail = json!({"per_second": per_second, "to": per_second, "finished_late": true});
            if finish(pool, &pull, None, detail).await? {
                last = Some(Finished {
                    action: pull.action.clone(),
                    per_second: Some(per_second),
                    state: None,
                });
            }
            continue;
        }
        let Some(lever) = Lever::parse(&pull.action) else {
            refuse(pool, pull.pull_id).await?;
            continue;
        };
        let (to, _) = lever.transition();
        let current: Option<String> = redis::cmd("HGET")
            .arg(keys.sale(event_id))
            .arg("state")
            .query_async(redis)
            .await?;
        let moved_now = if current.as_deref() == Some(to.as_str()) {
            // Redis took it before the failure.
            true
        } else {
            apply_lever(redis, keys, event_id, lever).await?.0
        };
        if !moved_now {
            refuse(pool, pull.pull_id).await?;
            tracing::warn!(%event_id, pull_id = pull.pull_id, lever = %pull.action,
                "a pending lever pull no longer applies (the sale moved on); refused");
            continue;
        }
        let mut detail = json!({"from": pull.from_state, "to": to, "finished_late": true});
        if lever == Lever::Close
            && pull.from_state.as_deref() == Some(SaleState::Scheduled.as_str())
        {
            let ended = sale::end_prequeue(pool, redis, keys, event_id, "sale_closed").await?;
            detail["prequeue_ended"] = ended.into();
        }
        if finish(pool, &pull, Some(to), detail).await? {
            tracing::warn!(%event_id, pull_id = pull.pull_id, lever = %pull.action,
                "a lever pull that failed half-way is finished");
            last = Some(Finished {
                action: pull.action.clone(),
                per_second: None,
                state: Some(to),
            });
        }
    }
    Ok(last)
}

/// The scheduler's pass: finishes the pending pulls of every event whose lever lock
/// is free and whose pulls have waited `older_than_seconds` (a pull in flight is
/// left to its caller). Returns how many events it looked at.
pub async fn finish_stale(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    older_than_seconds: i64,
) -> Result<usize, Error> {
    let events: Vec<EventId> = sqlx::query_scalar(
        "SELECT DISTINCT event_id FROM waiting_room.lever_pulls
         WHERE state = 'pending' AND requested_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than_seconds as f64)
    .fetch_all(pool)
    .await?;
    let mut looked = 0;
    for event_id in events {
        let Some(guard) = lock(pool, event_id, false).await? else {
            continue;
        };
        finish_pending(pool, redis, keys, event_id).await?;
        guard.commit().await?;
        looked += 1;
    }
    Ok(looked)
}
