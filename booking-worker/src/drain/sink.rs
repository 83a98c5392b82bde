//! The second half of a batch, run while the drainer's next batch is in the script:
//! the fenced ledger write, the acknowledgements, the dead letters and the update for
//! the realtime service.
//!
//! A hold the ledger refuses is neither acknowledged nor published here: the drainer
//! resolves it (see [`super::Drainer::resolve`]) and decides it again.
//!
//! Keys: the event's `requests` stream (acks), `dead` stream, `live` channel.

use std::collections::HashSet;
use std::time::Instant;

use platform::store::Redis;
use proto::keys::WORKER_GROUP;
use proto::wire::live::{Decided, Published};
use proto::{EventId, Keys};
use sqlx::PgPool;

use super::DrainError;
use super::line::{self, Burial, Entry, queue_burials};
use ledger::{Conflict, Decision};

pub struct Sink {
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
    pub event_id: EventId,
    pub epoch: i64,
}

/// A batch whose ledger write ran: the holds the ledger refused, with their entries
/// and decisions, for the drainer to resolve.
#[derive(Default)]
pub struct Refused {
    pub conflicts: Vec<Conflict>,
    pub entries: Vec<Entry>,
    pub decisions: Vec<Decision>,
}

impl Sink {
    /// Records `decisions` (whose entries are `entries`), then acknowledges and
    /// publishes what the ledger took, and buries `lost`.
    pub async fn finish(
        mut self,
        decisions: Vec<Decision>,
        entries: Vec<Entry>,
        lost: Vec<Burial>,
    ) -> Result<Refused, DrainError> {
        let started = Instant::now();
        let conflicts = ledger::record(&self.pool, self.event_id, self.epoch, &decisions).await?;
        line::reject_buried(&self.pool, self.event_id, self.epoch, &lost).await?;
        let ledger_time = started.elapsed();
        metrics::histogram!("onsale_worker_batch_seconds", "phase" => "ledger")
            .record(ledger_time.as_secs_f64());
        tracing::debug!(event_id = %self.event_id, rows = decisions.len(), ?ledger_time, "batch recorded");

        let refused: HashSet<proto::RequestId> = conflicts.iter().map(|c| c.request_id).collect();
        let (refused_decisions, decisions): (Vec<Decision>, Vec<Decision>) = decisions
            .into_iter()
            .partition(|d| refused.contains(&d.request_id));
        let (refused_entries, done): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| refused.contains(&e.request_id));
        let stream = self.keys.stream(self.event_id);
        let mut pipe = redis::pipe();
        if !done.is_empty() {
            let ids: Vec<&str> = done.iter().map(|e| e.stream_id.as_str()).collect();
            pipe.xack(&stream, WORKER_GROUP, &ids).ignore();
        }
        queue_burials(&mut pipe, &self.keys, self.event_id, &lost);
        pipe.query_async::<()>(&mut self.redis).await?;
        publish(&mut self.redis, &self.keys, self.event_id, &decisions).await?;
        Ok(Refused {
            conflicts,
            entries: refused_entries,
            decisions: refused_decisions,
        })
    }
}

/// Publishes what changed for the realtime service, one message per batch: the line
/// moved, these requests were decided, these seats are now held.
pub async fn publish(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    decisions: &[Decision],
) -> Result<(), DrainError> {
    if decisions.is_empty() {
        return Ok(());
    }
    // The readers re-read each decided request and take the seats from the scripts'
    // own change messages: ids and the line's new head are all a batch says.
    let message = Published::Batch {
        served: decisions
            .iter()
            .map(|d| d.queue_number.max(0) as u64)
            .max()
            .unwrap_or(0),
        decided: decisions
            .iter()
            .map(|d| Decided {
                request_id: d.request_id,
            })
            .collect(),
    };
    let _: i64 = message.publish(keys, event_id).query_async(redis).await?;
    Ok(())
}
