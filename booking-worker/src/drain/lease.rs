//! The lease on an event's line, and its fence.
//!
//! One drainer at a time decides an event's requests. It takes the lease in Redis
//! (`lease.lua`, compare and set, with a TTL), raises the event's fence epoch in
//! Postgres, and stamps the lease with that epoch: `<token>#<epoch>`. Every script
//! that writes for the drainer (`hold_batch.lua`, `read_line.lua`) compares the whole
//! lease value, and every ledger transaction checks the epoch, so a drainer that
//! stalled past its lease writes nothing anywhere once another took over: fencing,
//! not timing, keeps two drainers apart.
//!
//! Keys: the event's `lease`.

use platform::store::Redis;
use proto::{EventId, Keys};
use sqlx::PgPool;

use super::DrainError;

/// A drainer's lease on one event.
pub struct Lease {
    event_id: EventId,
    keys: Keys,
    /// This worker's token (unique per process start).
    token: String,
    lease_ms: u64,
    /// The lease's value while held: `<token>#<epoch>`.
    value: String,
    epoch: i64,
}

impl Lease {
    pub fn new(event_id: EventId, keys: Keys, token: &str, lease_ms: u64) -> Self {
        Self {
            event_id,
            keys,
            token: token.to_owned(),
            lease_ms,
            value: String::new(),
            epoch: 0,
        }
    }

    /// The lease value the scripts compare.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The fence epoch the ledger writes carry.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    async fn swap(
        &self,
        redis: &mut Redis,
        expected: &str,
        value: &str,
    ) -> Result<bool, DrainError> {
        let swapped: i64 = proto::scripts::LEASE
            .key(self.keys.lease(self.event_id))
            .arg(expected)
            .arg(value)
            .arg(self.lease_ms)
            .invoke_async(redis)
            .await?;
        Ok(swapped == 1)
    }

    /// Takes the free lease and fences off every earlier holder; false when another
    /// worker holds it.
    pub async fn take(&mut self, redis: &mut Redis, pool: &PgPool) -> Result<bool, DrainError> {
        let unfenced = format!("{}#0", self.token);
        if !self.swap(redis, "", &unfenced).await? {
            return Ok(false);
        }
        // Waits for the previous holder's open ledger transactions; none of its
        // writes can commit after this.
        let epoch = ledger::raise_fence(pool, self.event_id, &self.token).await?;
        let value = format!("{}#{epoch}", self.token);
        if !self.swap(redis, &unfenced, &value).await? {
            // Raising the fence outlasted the lease and someone else took it.
            return Ok(false);
        }
        self.value = value;
        self.epoch = epoch;
        metrics::counter!("onsale_worker_leases_taken_total").increment(1);
        Ok(true)
    }

    /// Renews the lease; false when it lapsed (another worker may have taken it, and
    /// this drainer must stop: its epoch is, or soon will be, fenced off).
    pub async fn renew(&mut self, redis: &mut Redis) -> Result<bool, DrainError> {
        self.swap(redis, &self.value.clone(), &self.value.clone())
            .await
    }
}
