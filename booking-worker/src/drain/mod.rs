//! Draining one event's line: the drainer, one step of it, and its parts.
//!
//! - [`lease`]: one drainer per event, fenced by an epoch in Redis and Postgres;
//! - [`line`]: fenced reads in queue order, taking over others' pending entries,
//!   the dead letters;
//! - [`batch`]: one `hold_batch.lua` call per batch;
//! - [`sink`]: the ledger write, acknowledgements and updates of a decided batch,
//!   overlapped with the next batch's script;
//! - [`ended`]: hold expiry, and ended holds carried into the ledger;
//! - [`conflicts`]: holds the ledger refused, resolved at the ledger's word;
//! - [`retire`]: trimming the streams, and retiring an event whose sale is over;
//! - [`run`]: the loop that takes an event over and drives the rest.
//!
//! One worker at a time drains an event (the lease), because holds must be decided
//! in queue-number order and Redis runs each batch script alone anyway; the farm
//! spreads events over workers and takes over an event whose worker died or stalled.
//! A redelivered entry has the effect of one because the script reports decided
//! requests as they stand and the ledger's writes are idempotent upserts that never
//! move a request backwards.
//!
//! Every exit (stop, lease lost, an error) waits for the ledger writes in flight
//! for a bounded time and aborts the rest; the fence makes a write that still lands
//! late harmless.

mod batch;
mod conflicts;
mod ended;
mod lease;
mod line;
mod retire;
mod run;
mod sink;

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use platform::store::Redis;
use proto::keys::WORKER_GROUP;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId};
use redis::AsyncCommands;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub(crate) use ended::apply_changes;
pub use lease::Lease;
use ledger::LedgerError;
use ledger::restore::RestoreError;
pub(crate) use line::reclaim;
use line::{Burial, Entry, Read};
use sink::{Refused, Sink};

/// Batches whose ledger writes may run at once.
pub const LEDGER_WRITES_IN_FLIGHT: usize = 1;

/// How a worker drains.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct DrainSettings {
    /// Entries read and decided per script call.
    pub batch_size: usize,
    /// How long a lease lasts without renewal; a dead worker's events move after it.
    pub lease_ms: u64,
    /// How long a read waits for new entries.
    pub block_ms: u64,
    /// Deliveries after which an entry that keeps failing goes to the dead letters.
    pub max_deliveries: usize,
    /// While held seats expire within this, fans wait for them instead of being told
    /// "sold out".
    pub sold_out_horizon_ms: u64,
    /// How often expired holds are looked for (and the streams trimmed).
    pub sweep_interval_ms: u64,
    /// How long an event's keys stay in Redis once its sale has ended and the farm
    /// retired it (Postgres keeps the record).
    pub retention_seconds: u64,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            lease_ms: 3_000,
            block_ms: 250,
            max_deliveries: 5,
            sold_out_horizon_ms: 60_000,
            sweep_interval_ms: 500,
            retention_seconds: 86_400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// Another drainer took the event over while this one was writing.
    #[error("{0}")]
    Fenced(String),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl From<RestoreError> for DrainError {
    fn from(error: RestoreError) -> Self {
        match error {
            RestoreError::Database(error) => DrainError::Database(error),
            RestoreError::Redis(error) => DrainError::Redis(error),
        }
    }
}

impl From<LedgerError> for DrainError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Database(error) => DrainError::Database(error),
            fenced @ LedgerError::Fenced { .. } => DrainError::Fenced(fenced.to_string()),
        }
    }
}

/// Whether Redis refused the script itself (an error raised while it ran), as
/// opposed to the connection failing.
fn error_is_script(error: &DrainError) -> bool {
    matches!(error, DrainError::Redis(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
        || e.code().is_some_and(|c| c == "ERR"))
}

/// What one step did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub decided: usize,
    /// Entries left in the line because they wait for held seats to come back.
    pub waiting: bool,
    /// The lease holds another value: the drainer must stop.
    pub lease_lost: bool,
}

/// Drains one event for as long as this worker holds its lease.
pub struct Drainer {
    pub event_id: EventId,
    pub pool: PgPool,
    pub redis: Redis,
    /// A connection of this drainer's own for blocking reads.
    pub blocking: Redis,
    pub keys: Keys,
    pub settings: DrainSettings,
    /// This worker's consumer name in the group.
    pub consumer: String,
    lease: Lease,
    /// Entries still to decide one at a time after a batch failed, so one poisoned
    /// entry cannot hold the others back.
    isolate: usize,
    /// The last entry this drainer decided; its own pending entries after it are
    /// read before new ones ("0" at start: everything pending is read again).
    cursor: String,
    /// Entries whose hold the ledger refused, put back in line by `requeue.lua`:
    /// decided again at the head of the next batch (their stream entries are still
    /// pending, so a crash loses nothing).
    retry: Vec<Entry>,
    /// Ledger writes of earlier batches, running while later batches' scripts do (at
    /// most [`LEDGER_WRITES_IN_FLIGHT`]; they touch disjoint requests and seats).
    inflight: VecDeque<JoinHandle<Result<Refused, DrainError>>>,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        // A drainer that ends, however it ends, leaves no ledger write running.
        for task in &self.inflight {
            task.abort();
        }
    }
}

impl Drainer {
    /// A drainer of `event_id` for the worker whose lease token is `token`.
    #[allow(clippy::too_many_arguments, reason = "the drainer's parts, each named")]
    pub fn new(
        event_id: EventId,
        pool: PgPool,
        redis: Redis,
        blocking: Redis,
        keys: Keys,
        settings: DrainSettings,
        consumer: String,
        token: &str,
    ) -> Self {
        Self {
            lease: Lease::new(event_id, keys.clone(), token, settings.lease_ms),
            event_id,
            pool,
            redis,
            blocking,
            keys,
            settings,
            consumer,
            isolate: 0,
            cursor: "0".to_owned(),
            retry: Vec::new(),
            inflight: VecDeque::new(),
        }
    }

    async fn ensure_groups(&mut self) -> Result<(), DrainError> {
        for stream in [
            self.keys.stream(self.event_id),
            self.keys.changes(self.event_id),
        ] {
            let created: redis::RedisResult<()> = self
                .redis
                .xgroup_create_mkstream(&stream, WORKER_GROUP, "0")
                .await;
            if let Err(error) = created
                && error.code() != Some("BUSYGROUP")
            {
                return Err(error.into());
            }
        }
        Ok(())
    }

    /// Takes over every entry other consumers left pending on the line and on the
    /// changes stream, while this drainer holds the lease (`None` when it lost it:
    /// nothing was taken). After any was taken, the next read starts from the
    /// beginning of this consumer's pending list (the ledger writes in flight are
    /// settled first, so nothing decided is read twice).
    pub async fn reclaim(&mut self) -> Result<Option<usize>, DrainError> {
        let mut claimed = 0;
        let lease = self.lease.value().to_owned();
        for stream in [
            self.keys.stream(self.event_id),
            self.keys.changes(self.event_id),
        ] {
            let Some(moved) = line::reclaim(
                &mut self.redis,
                &self.keys,
                self.event_id,
                &stream,
                &lease,
                &self.consumer,
            )
            .await?
            else {
                return Ok(None);
            };
            claimed += moved;
        }
        if claimed > 0 {
            self.settle().await?;
            self.cursor = "0".to_owned();
            metrics::counter!("onsale_worker_entries_reclaimed_total").increment(claimed as u64);
            tracing::warn!(event_id = %self.event_id, claimed, "took over pending entries");
        }
        Ok(Some(claimed))
    }

    /// Sends entries that cannot be processed to the dead letters and ends their
    /// requests (rejected, `dead_letter`) in the ledger and in Redis.
    async fn bury(&mut self, burials: &[Burial]) -> Result<(), DrainError> {
        line::reject_buried(&self.pool, self.event_id, self.lease.epoch(), burials).await?;
        let mut pipe = redis::pipe();
        line::queue_burials(&mut pipe, &self.keys, self.event_id, burials);
        pipe.query_async::<()>(&mut self.redis).await?;
        Ok(())
    }

    /// Waits for every ledger write in flight, and resolves the holds the ledger
    /// refused; a failure stops this drainer (the batch's entries stay pending and
    /// are decided again, to the same effect).
    pub async fn settle(&mut self) -> Result<(), DrainError> {
        while let Some(task) = self.inflight.pop_front() {
            let refused = task
                .await
                .map_err(|e| DrainError::Unexpected(format!("ledger task: {e}")))??;
            self.resolve(refused).await?;
        }
        Ok(())
    }

    /// Reads, decides, records and acknowledges up to `count` entries; with `fresh`
    /// false, only entries already read before (a paused sale finishes what it
    /// admitted, and admits nothing new).
    pub async fn step(&mut self, count: usize, fresh: bool) -> Result<Step, DrainError> {
        let lease = self.lease.value().to_owned();
        // Holds that ended in Redis reach the ledger before their seats can be held
        // again, or the new claim would collide with the old one there.
        if ended::changes_waiting(&mut self.redis, &self.keys, self.event_id).await? {
            self.settle().await?;
            let applied = self.apply_changes().await?;
            if applied.is_none() {
                return Ok(Step {
                    lease_lost: true,
                    ..Step::default()
                });
            }
        }
        let count = if self.isolate > 0 { 1 } else { count };
        let started = Instant::now();
        let stream = self.keys.stream(self.event_id);
        let wanted = count.saturating_sub(self.retry.len()).max(1);
        let read = line::read(
            &mut self.redis,
            &self.keys,
            self.event_id,
            &stream,
            &lease,
            &self.consumer,
            wanted,
            &self.cursor,
            fresh,
        )
        .await?;
        let (raw, last_id) = match read {
            Read::LeaseLost => {
                return Ok(Step {
                    lease_lost: true,
                    ..Step::default()
                });
            }
            Read::Entries { entries, last_id } => (entries, last_id),
        };
        let read_time = started.elapsed();
        let mut entries: Vec<Entry> = std::mem::take(&mut self.retry);
        let mut broken = Vec::new();
        for raw_entry in &raw {
            match line::parse_entry(raw_entry) {
                Some(parsed) if entries.iter().any(|e| e.stream_id == parsed.stream_id) => {}
                Some(parsed) => entries.push(parsed),
                None => broken.push(Burial {
                    stream_id: raw_entry.id.clone(),
                    request: None,
                    reason: "malformed entry".to_owned(),
                }),
            }
        }
        if !broken.is_empty() {
            self.bury(&broken).await?;
        }
        if entries.is_empty() {
            self.settle().await?;
            if fresh && broken.is_empty() {
                line::wait_for_new(
                    &mut self.blocking,
                    &stream,
                    &last_id,
                    self.settings.block_ms,
                )
                .await?;
            }
            return Ok(Step::default());
        }
        let batch_len = entries.len();
        // Every batch and what it decided, by queue number: the trace a fairness
        // question from the chaos checker is read against.
        tracing::debug!(target: "drain_trace", consumer = %self.consumer, cursor = %self.cursor,
            entries = ?entries.iter().map(|e| format!("{}@{}", e.number, e.stream_id)).collect::<Vec<_>>(), "batch");
        let script_started = Instant::now();
        let outcome = batch::hold_batch(
            &mut self.redis,
            &self.keys,
            self.event_id,
            &lease,
            self.settings.sold_out_horizon_ms,
            &entries,
        )
        .await;
        let (decisions, missing) = match outcome {
            Ok(batch::Outcome::Decided { decisions, missing }) => (decisions, missing),
            Ok(batch::Outcome::LeaseLost) => {
                return Ok(Step {
                    lease_lost: true,
                    ..Step::default()
                });
            }
            Err(error @ DrainError::Redis(_)) if error_is_script(&error) => {
                metrics::counter!("onsale_worker_batch_failures_total").increment(1);
                tracing::warn!(event_id = %self.event_id, %error, entries = entries.len(), "batch failed");
                if entries.len() > 1 {
                    self.isolate = self.settings.batch_size;
                } else {
                    self.bury_failing(&entries, &error.to_string()).await?;
                }
                return Ok(Step::default());
            }
            Err(error) => return Err(error),
        };
        self.isolate = self.isolate.saturating_sub(entries.len());
        let script_time = script_started.elapsed();
        let lost: Vec<Burial> = missing
            .into_iter()
            .map(|entry| Burial {
                stream_id: entry.stream_id.clone(),
                request: Some(entry),
                reason: "request_not_found".to_owned(),
            })
            .collect();
        let decided: HashSet<RequestId> = decisions.iter().map(|d| d.request_id).collect();
        tracing::debug!(target: "drain_trace", consumer = %self.consumer,
            decided = ?entries.iter().filter(|e| decided.contains(&e.request_id)).map(|e| e.number).collect::<Vec<_>>(), "decided");
        let buried: HashSet<&str> = lost.iter().map(|b| b.stream_id.as_str()).collect();
        // Decisions are a prefix of the batch, so the next read starts after the last
        // entry decided.
        if let Some(last) = entries
            .iter()
            .filter(|e| decided.contains(&e.request_id) || buried.contains(e.stream_id.as_str()))
            .map(|e| e.stream_id.clone())
            .max_by(|a, b| stream_order(a).cmp(&stream_order(b)))
            && stream_order(&last) > stream_order(&self.cursor)
        {
            self.cursor = last;
        }
        let undecided: Vec<Entry> = entries
            .iter()
            .filter(|e| !decided.contains(&e.request_id) && !buried.contains(e.stream_id.as_str()))
            .cloned()
            .collect();
        // Entries put back by a resolve that the script did not reach wait at the head.
        self.retry = undecided
            .into_iter()
            .filter(|e| stream_order(&e.stream_id) <= stream_order(&self.cursor))
            .collect();
        let decided_entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| decided.contains(&e.request_id))
            .collect();
        if self.inflight.len() >= LEDGER_WRITES_IN_FLIGHT
            && let Some(oldest) = self.inflight.pop_front()
        {
            let refused = oldest
                .await
                .map_err(|e| DrainError::Unexpected(format!("ledger task: {e}")))??;
            self.resolve(refused).await?;
        }
        let held = decisions
            .iter()
            .filter(|d| d.state == RequestState::Held)
            .count();
        metrics::counter!("onsale_holds_total").increment(held as u64);
        metrics::counter!("onsale_requests_decided_total").increment(decisions.len() as u64);
        metrics::histogram!("onsale_worker_batch_seconds", "phase" => "script")
            .record(script_time.as_secs_f64());
        tracing::debug!(event_id = %self.event_id, entries = decided_entries.len(), decided = decisions.len(),
            ?read_time, ?script_time, total = ?started.elapsed(), "batch decided");
        let count = decisions.len() + lost.len();
        let waiting = count < batch_len;
        if count > 0 {
            let sink = Sink {
                pool: self.pool.clone(),
                redis: self.redis.clone(),
                keys: self.keys.clone(),
                event_id: self.event_id,
                epoch: self.lease.epoch(),
            };
            self.inflight
                .push_back(tokio::spawn(sink.finish(decisions, decided_entries, lost)));
        }
        Ok(Step {
            decided: count,
            waiting,
            lease_lost: false,
        })
    }

    /// After a failed batch, entries delivered too often go to the dead letters so
    /// one poisoned entry cannot stop the line.
    async fn bury_failing(&mut self, entries: &[Entry], why: &str) -> Result<(), DrainError> {
        let stream = self.keys.stream(self.event_id);
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let pending: redis::streams::StreamPendingCountReply = self
            .redis
            .xpending_consumer_count(
                &stream,
                WORKER_GROUP,
                &first.stream_id,
                &last.stream_id,
                entries.len(),
                &self.consumer,
            )
            .await?;
        let worn: Vec<Burial> = pending
            .ids
            .iter()
            .filter(|p| p.times_delivered >= self.settings.max_deliveries)
            .filter_map(|p| entries.iter().find(|e| e.stream_id == p.id))
            .map(|e| Burial {
                stream_id: e.stream_id.clone(),
                request: Some(e.clone()),
                reason: format!("failed {} times: {why}", self.settings.max_deliveries),
            })
            .collect();
        if !worn.is_empty() {
            self.bury(&worn).await?;
        }
        Ok(())
    }
}

/// A stream id's order: (milliseconds, sequence); "0" sorts first.
fn stream_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::stream_order;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(stream_order("0") < stream_order("1-0"));
        assert!(stream_order("5-2") < stream_order("5-10"));
        assert!(stream_order("9-99") < stream_order("10-0"));
    }
}
