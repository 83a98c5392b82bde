//! Draining one event's line: the loop that ties the pieces together.
//!
//! - [`lease`]: one drainer per event, fenced by an epoch in Redis and Postgres;
//! - [`line`]: fenced reads in queue order, taking over others' pending entries,
//!   the dead letters;
//! - [`batch`]: one `hold_batch.lua` call per batch;
//! - [`sink`]: the ledger write, acknowledgements and updates of a decided batch,
//!   overlapped with the next batch's script;
//! - [`ended`]: hold expiry, and ended holds carried into the ledger.
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
mod ended;
mod lease;
mod line;
mod retire;
mod sink;

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use proto::keys::WORKER_GROUP;
use proto::wire::queue::RequestState;
use proto::{EventId, Keys, RequestId};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ledger::{self, Conflict, Decision, LedgerError};
pub(crate) use ended::apply_changes;
pub use lease::Lease;
pub(crate) use line::claim_orphans;
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
    pub redis: ConnectionManager,
    /// A connection of this drainer's own for blocking reads.
    pub blocking: MultiplexedConnection,
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
        redis: ConnectionManager,
        blocking: MultiplexedConnection,
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
    /// changes stream. After any was taken, the next read starts from the beginning
    /// of this consumer's pending list (the ledger writes in flight are settled
    /// first, so nothing decided is read twice).
    pub async fn reclaim(&mut self) -> Result<usize, DrainError> {
        let mut claimed = 0;
        for stream in [
            self.keys.stream(self.event_id),
            self.keys.changes(self.event_id),
        ] {
            claimed += line::claim_orphans(&mut self.redis, &stream, &self.consumer).await?;
            line::forget_idle_consumers(&mut self.redis, &stream, &self.consumer).await?;
        }
        if claimed > 0 {
            self.settle().await?;
            self.cursor = "0".to_owned();
            metrics::counter!("onsale_worker_entries_reclaimed_total").increment(claimed as u64);
            tracing::warn!(event_id = %self.event_id, claimed, "took over pending entries");
        }
        Ok(claimed)
    }

    /// Sends entries that cannot be processed to the dead letters and ends their
    /// requests (rejected, `dead_letter`) in the ledger and in Redis.
    async fn bury(&mut self, burials: &[Burial]) -> Result<(), DrainError> {
        let named: Vec<(RequestId, proto::UserId, i64)> = burials
            .iter()
            .filter_map(|b| b.request.as_ref())
            .map(|e| (e.request_id, e.fan, e.number))
            .collect();
        ledger::reject_undecided(
            &self.pool,
            self.event_id,
            self.lease.epoch(),
            &named,
            "dead_letter",
        )
        .await?;
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

    /// Holds the ledger refused (Redis thought a seat free that the ledger gives to
    /// another request). First the ended holds waiting on the changes stream reach
    /// the ledger and the refused holds are written again: a release the ledger had
    /// not heard of yet is the usual cause. What is still refused is a true
    /// divergence: Redis takes the ledger's owner for those seats (restoring its
    /// hold if Redis lost it), so the next fan is not refused the same seat, and the
    /// refused request goes back in line, decided again at the head of the next
    /// batch against what is truly free.
    async fn resolve(&mut self, refused: Refused) -> Result<(), DrainError> {
        if refused.conflicts.is_empty() {
            return Ok(());
        }
        let epoch = self.lease.epoch();
        self.apply_changes().await?;
        let still = ledger::record(&self.pool, self.event_id, epoch, &refused.decisions).await?;
        let refused_ids: HashSet<RequestId> = still.iter().map(|c| c.request_id).collect();
        let (again, taken): (Vec<&Entry>, Vec<&Entry>) = refused
            .entries
            .iter()
            .partition(|e| refused_ids.contains(&e.request_id));
        let taken_ids: Vec<&str> = taken.iter().map(|e| e.stream_id.as_str()).collect();
        line::ack(
            &mut self.redis,
            &self.keys.stream(self.event_id),
            &taken_ids,
        )
        .await?;
        let accepted: Vec<Decision> = refused
            .decisions
            .iter()
            .filter(|d| !refused_ids.contains(&d.request_id))
            .cloned()
            .collect();
        sink::publish(&mut self.redis, &self.keys, self.event_id, &accepted).await?;
        for conflict in &still {
            self.requeue(conflict).await?;
        }
        self.retry.extend(again.into_iter().cloned());
        Ok(())
    }

    /// Carries the ended holds on the changes stream into the ledger; `None` when
    /// the lease was lost.
    async fn apply_changes(&mut self) -> Result<Option<usize>, DrainError> {
        let lease = self.lease.value().to_owned();
        ended::apply_changes(
            &mut self.redis,
            &self.pool,
            &self.keys,
            self.event_id,
            &lease,
            self.lease.epoch(),
            &self.consumer,
        )
        .await
    }

    /// Runs `requeue.lua` for one refused hold, with its seats' ledger owners.
    async fn requeue(&mut self, conflict: &Conflict) -> Result<(), DrainError> {
        let owner_ids: Vec<RequestId> = {
            let mut ids: Vec<RequestId> = conflict.taken.iter().map(|c| c.request_id).collect();
            ids.sort_by_key(|id| id.as_uuid());
            ids.dedup();
            ids
        };
        let owners = ledger::requests(&self.pool, &owner_ids).await?;
        let mut invocation = proto::scripts::REQUEUE.key(self.keys.seat_states(self.event_id));
        invocation
            .key(self.keys.seat_counts(self.event_id))
            .key(self.keys.holds(self.event_id))
            .key(self.keys.fan_seats(self.event_id))
            .key(self.keys.row_free(self.event_id))
            .key(self.keys.fans(self.event_id))
            .key(self.keys.request(self.event_id, conflict.request_id))
            .key(self.keys.section_holds(self.event_id))
            .arg(conflict.request_id.to_string());
        let mut args: Vec<String> = Vec::new();
        let mut count = 0;
        for owner in &owners {
            // The ledger's claims of this owner: its row's seats, sold or held.
            let claims: Vec<&ledger::Claim> = conflict
                .taken
                .iter()
                .filter(|c| c.request_id == owner.request_id)
                .collect();
            let Some(first) = claims.first() else {
                continue;
            };
            invocation.key(self.keys.request(self.event_id, owner.request_id));
            count += 1;
            args.push(owner.request_id.to_string());
            args.push(owner.fan_id.to_string());
            args.push(first.state.clone());
            args.push(
                first
                    .expires_at
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0)
                    .to_string(),
            );
            args.push(owner.seats.join(" "));
        }
        invocation.arg(count);
        for arg in &args {
            invocation.arg(arg);
        }
        let given: i64 = invocation.invoke_async(&mut self.redis).await?;
        metrics::counter!("onsale_ledger_conflicts_total").increment(1);
        tracing::error!(event_id = %self.event_id, request = %conflict.request_id, seats_given = given,
            "the ledger refused a hold redis granted: redis took the ledger's owners and the request is decided again");
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

    /// Marks the sale sold out in Redis once no seat is free or held, and tells the
    /// realtime service; the waiting room, which owns the sale, mirrors it into
    /// Postgres.
    async fn check_sold_out(&mut self) -> Result<bool, DrainError> {
        let (available, held): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.keys.seat_counts(self.event_id))
            .arg(&["available", "held"])
            .query_async(&mut self.redis)
            .await?;
        if available != Some(0) || held != Some(0) {
            return Ok(false);
        }
        let (changed, _): (i64, String) = proto::scripts::SET_SALE_STATE
            .key(self.keys.sale(self.event_id))
            .arg("sold_out")
            .arg("open")
            .arg("paused")
            .invoke_async(&mut self.redis)
            .await?;
        if changed == 1 {
            let message = serde_json::json!({"type": "sale", "state": "sold_out"});
            let _: i64 = self
                .redis
                .publish(self.keys.live(self.event_id), message.to_string())
                .await?;
            tracing::info!(event_id = %self.event_id, "sold out");
        }
        Ok(changed == 1)
    }

    async fn sale_state(&mut self) -> Result<Option<String>, DrainError> {
        Ok(self
            .redis
            .hget(self.keys.sale(self.event_id), "state")
            .await?)
    }

    /// Drains the event until `stop`, or until another worker holds its lease.
    /// However it ends, the ledger writes in flight are awaited for at most one
    /// lease time and then aborted.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), DrainError> {
        let outcome = self.drain(&stop).await;
        let deadline = Duration::from_millis(self.settings.lease_ms);
        let settled = match tokio::time::timeout(deadline, self.settle()).await {
            Ok(settled) => settled,
            Err(_) => Err(DrainError::Unexpected(
                "ledger writes still running at exit; aborted".into(),
            )),
        };
        // Whatever settle left (it stops at the first failure) is aborted by Drop.
        outcome.and(settled)
    }

    /// Takes the event over: the lease and its fence, the consumer groups, every
    /// entry others left pending, and the ended holds waiting for the ledger. False
    /// when another worker holds the lease.
    pub async fn begin(&mut self) -> Result<bool, DrainError> {
        if !self.lease.take(&mut self.redis, &self.pool).await? {
            return Ok(false);
        }
        tracing::info!(event_id = %self.event_id, consumer = %self.consumer, epoch = self.lease.epoch(), "draining event");
        self.ensure_groups().await?;
        self.reclaim().await?;
        // Holds that ended while no drainer could write the ledger go first.
        Ok(self.apply_changes().await?.is_some())
    }

    async fn drain(&mut self, stop: &CancellationToken) -> Result<(), DrainError> {
        if !self.begin().await? {
            return Ok(());
        }
        let mut tokens = 0.0_f64;
        let mut last_refill = Instant::now();
        let mut last_sweep = Instant::now();
        let mut last_renew = Instant::now();
        let mut last_reclaim = Instant::now();
        let renew_every = Duration::from_millis(self.settings.lease_ms / 3);
        let reclaim_every = Duration::from_millis(self.settings.lease_ms);
        while !stop.is_cancelled() {
            if last_renew.elapsed() >= renew_every {
                if !self.lease.renew(&mut self.redis).await? {
                    tracing::warn!(event_id = %self.event_id, "lease lost; another worker drains this event");
                    return Ok(());
                }
                last_renew = Instant::now();
            }
            if last_reclaim.elapsed() >= reclaim_every {
                // A drainer that stalled and lost its lease may have left entries
                // pending under its name (read before it lost the lease).
                self.reclaim().await?;
                last_reclaim = Instant::now();
            }
            if last_sweep.elapsed() >= Duration::from_millis(self.settings.sweep_interval_ms) {
                // A hold must reach the ledger before its expiry or release does.
                self.settle().await?;
                let lease = self.lease.value().to_owned();
                ended::sweep(&mut self.redis, &self.keys, self.event_id, &lease).await?;
                if self.apply_changes().await?.is_none() {
                    return Ok(());
                }
                for stream in [
                    self.keys.stream(self.event_id),
                    self.keys.changes(self.event_id),
                ] {
                    retire::trim(&mut self.redis, &stream).await?;
                }
                let state = self.sale_state().await?;
                if retire::finished(&mut self.redis, &self.keys, self.event_id, state.as_deref())
                    .await?
                {
                    let keys = retire::retire(
                        &mut self.redis,
                        &self.keys,
                        self.event_id,
                        self.settings.retention_seconds,
                    )
                    .await?;
                    metrics::counter!("onsale_events_retired_total").increment(1);
                    tracing::info!(event_id = %self.event_id, keys, retention_seconds = self.settings.retention_seconds,
                        "sale over: event retired from the farm, its redis keys expire");
                    return Ok(());
                }
                last_sweep = Instant::now();
            }
            let state = self.sale_state().await?;
            let draining = matches!(state.as_deref(), Some("open" | "closed" | "sold_out"));
            if state.as_deref() == Some("paused") {
                // Admitted entries still get decided; nothing new is admitted.
                let step = self.step(self.settings.batch_size, false).await?;
                if step.lease_lost {
                    return Ok(());
                }
                if step.decided > 0 {
                    continue;
                }
            }
            if !draining {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            // Admission: at most `admission_per_second` requests a second, a second's
            // worth at once.
            let rate: f64 = self
                .redis
                .hget::<_, _, Option<f64>>(self.keys.sale(self.event_id), "admission_per_second")
                .await?
                .unwrap_or(100.0);
            tokens = (tokens + rate * last_refill.elapsed().as_secs_f64()).min(rate.max(1.0));
            last_refill = Instant::now();
            let count = (tokens.floor() as usize).min(self.settings.batch_size);
            if count == 0 {
                let wait = Duration::from_secs_f64((1.0 - tokens) / rate.max(0.001))
                    .min(Duration::from_millis(200));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            let step = self.step(count, true).await?;
            if step.lease_lost {
                tracing::warn!(event_id = %self.event_id, "lease lost; another worker drains this event");
                return Ok(());
            }
            tokens -= step.decided as f64;
            if step.decided > 0 && state.as_deref() == Some("open") {
                self.check_sold_out().await?;
            }
            if step.waiting {
                self.settle().await?;
                // The head of the line waits for held seats to expire or be released.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = stop.cancelled() => {}
                }
            }
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
