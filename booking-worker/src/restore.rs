//! Putting back into Redis what the ledger knows of an event's decided requests,
//! after Redis lost the event's keys (or diverged). The writing itself is the
//! ledger's ([`ledger::restore`]); this module keeps the farm away meanwhile.
//!
//! The restore first [`seize`]s the event: it raises the drain fence (waiting for
//! any drainer's ledger write in flight; none can commit after) and takes the lease
//! away from whichever drainer holds it, so no drainer decides anything while Redis
//! is rebuilt. Ended holds still waiting on the changes stream are carried into the
//! ledger first. [`hand_back`] lets the farm take the event over again.
//!
//! Keys: the event's `lease`, `changes`, request hashes, `holds`, `secholds`,
//! `fanseats`, `fans`, and the request index.

use platform::store::Redis;
use proto::{EventId, Keys};
use sqlx::PgPool;

use crate::drain::DrainError;

/// The event, seized from the farm for a restore.
pub struct Seized {
    event_id: EventId,
    /// The lease value the restore holds.
    value: String,
    epoch: i64,
    consumer: String,
}

/// Takes the event away from the farm for `ttl_ms` at most: raises the fence, then
/// sets the lease to the restore's own value whoever held it (a drainer finds its
/// lease gone at its next read or batch and stops), then carries ended holds into
/// the ledger.
pub async fn seize(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    ttl_ms: u64,
) -> Result<Seized, DrainError> {
    let consumer = format!("restore-{}", uuid::Uuid::new_v4().simple());
    let epoch = ledger::raise_fence(pool, event_id, &consumer).await?;
    let value = format!("{consumer}#{epoch}");
    let _: () = redis::cmd("SET")
        .arg(keys.lease(event_id))
        .arg(&value)
        .arg("PX")
        .arg(ttl_ms)
        .query_async(redis)
        .await?;
    let seized = Seized {
        event_id,
        value,
        epoch,
        consumer,
    };
    // Ended holds that a drainer had not yet carried into the ledger go first, so
    // the ledger read below is the latest word. (After a loss of the event's keys
    // there are none: those releases are gone, and their holds expire instead.)
    let changes = keys.changes(event_id);
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&changes)
        .arg(proto::keys::WORKER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(redis)
        .await;
    if let Err(error) = created
        && error.code() != Some("BUSYGROUP")
    {
        return Err(error.into());
    }
    if crate::drain::reclaim(
        redis,
        keys,
        event_id,
        &changes,
        &seized.value,
        &seized.consumer,
    )
    .await?
    .is_none()
    {
        return Err(DrainError::Unexpected(
            "the restore's lease was taken while it seized the event".into(),
        ));
    }
    crate::drain::apply_changes(
        redis,
        pool,
        keys,
        event_id,
        &seized.value,
        seized.epoch,
        &seized.consumer,
    )
    .await?;
    Ok(seized)
}

/// Gives the event back to the farm: the restore's lease ends at once.
pub async fn hand_back(redis: &mut Redis, keys: &Keys, seized: Seized) -> Result<(), DrainError> {
    let _: i64 = proto::scripts::LEASE
        .key(keys.lease(seized.event_id))
        .arg(&seized.value)
        .arg(&seized.value)
        .arg(1)
        .invoke_async(redis)
        .await?;
    Ok(())
}

pub use ledger::restore::Restored;

/// Writes every decided request of the seized event back into Redis as the ledger
/// has it ([`ledger::restore::decided`]).
pub async fn decided(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    seized: &Seized,
    event_id: EventId,
) -> Result<Restored, DrainError> {
    debug_assert_eq!(
        seized.event_id, event_id,
        "the restored event is the seized one"
    );
    Ok(ledger::restore::decided(pool, redis, keys, event_id).await?)
}
