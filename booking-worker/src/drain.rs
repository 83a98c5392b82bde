//! Draining one event's line: the lease, reading the stream in order, one
//! `hold_batch.lua` call per batch, the ledger write, acknowledgements, updates for
//! the realtime service, hold expiry and fans' releases.
//!
//! One worker at a time drains an event (the lease), because holds must be decided
//! in queue-number order and Redis runs each batch script alone anyway; the farm
//! spreads events over workers and takes over an event whose worker died. A taker
//! first claims every entry the previous holder left pending (`XAUTOCLAIM`), then
//! reads its own pending entries, then new ones: nothing is skipped, and a redelivered
//! entry has the effect of one because the script reports decided requests as they
//! stand.
//!
//! Keys: the event's `stream`, `dead_letters`, `changes`, `lease`, `sale`, `holds`,
//! and the seat keys the scripts touch (see `proto::keys`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use proto::keys::WORKER_GROUP;
use proto::{EventId, Keys, RequestId, UserId};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::ledger::{self, Decision};

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
    /// How often expired holds are looked for.
    pub sweep_interval_ms: u64,
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// Whether Redis refused the script itself (an error raised while it ran), as
/// opposed to the connection failing.
fn error_is_script(error: &DrainError) -> bool {
    matches!(error, DrainError::Redis(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
        || e.code().is_some_and(|c| c == "ERR"))
}

/// One stream entry: a request and its number.
#[derive(Clone, Debug)]
struct Entry {
    stream_id: String,
    request_id: RequestId,
    number: i64,
    fan: UserId,
}

fn parse_entry(entry: &StreamId) -> Option<Entry> {
    let field = |name: &str| entry.get::<String>(name);
    Some(Entry {
        stream_id: entry.id.clone(),
        request_id: field("r")?.parse().ok()?,
        number: field("n")?.parse().ok()?,
        fan: field("f")?.parse().ok()?,
    })
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
    /// This worker's lease token (unique per process start).
    pub token: String,
    /// Entries still to decide one at a time after a batch failed, so one poisoned
    /// entry cannot hold the others back.
    pub isolate: usize,
    /// The last entry this drainer decided; its own pending entries after it are
    /// read before new ones ("0" at start: everything pending is read again).
    pub cursor: String,
    /// Ledger writes of earlier batches, running while later batches' scripts do
    /// (at most [`LEDGER_WRITES_IN_FLIGHT`]; they touch disjoint requests and seats).
    pub inflight: std::collections::VecDeque<tokio::task::JoinHandle<Result<(), DrainError>>>,
}

/// What one step did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub decided: usize,
    /// Entries left in the line because they wait for held seats to come back.
    pub waiting: bool,
}

impl Drainer {
    fn now_ms() -> i64 {
        Utc::now().timestamp_millis()
    }

    /// Takes or renews the lease; true while this worker drains the event.
    pub async fn lease(&mut self) -> Result<bool, DrainError> {
        let held: i64 = proto::scripts::LEASE
            .key(self.keys.lease(self.event_id))
            .arg(&self.token)
            .arg(self.settings.lease_ms)
            .invoke_async(&mut self.redis)
            .await?;
        Ok(held == 1)
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

    /// Moves every entry other consumers left pending, on the line and on the changes
    /// stream, to this worker. Only the lease holder reads them, so their owners are
    /// gone.
    async fn claim_orphans(&mut self) -> Result<usize, DrainError> {
        let mut claimed = 0;
        for stream in [
            self.keys.stream(self.event_id),
            self.keys.changes(self.event_id),
        ] {
            let mut cursor = "0-0".to_owned();
            loop {
                let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(WORKER_GROUP)
                    .arg(&self.consumer)
                    .arg(0)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut self.redis)
                    .await?;
                claimed += reply.claimed.len();
                // Entries deleted while pending come back as ids without fields.
                if !reply.deleted_ids.is_empty() {
                    let _: i64 = self
                        .redis
                        .xack(&stream, WORKER_GROUP, &reply.deleted_ids)
                        .await?;
                }
                if reply.next_stream_id == "0-0" {
                    break;
                }
                cursor = reply.next_stream_id;
            }
        }
        if claimed > 0 {
            metrics::counter!("onsale_worker_entries_reclaimed_total").increment(claimed as u64);
            tracing::warn!(event_id = %self.event_id, claimed, "took over pending entries");
        }
        Ok(claimed)
    }

    /// The next entries in order: this worker's pending ones first, then (when
    /// `fresh`) new ones.
    async fn read(&mut self, count: usize, fresh: bool) -> Result<Vec<StreamId>, DrainError> {
        let stream = self.keys.stream(self.event_id);
        let options = StreamReadOptions::default()
            .group(WORKER_GROUP, &self.consumer)
            .count(count);
        // Pending entries after the cursor only: those up to it are decided and their
        // ledger write is in flight; reading them again would decide and write them twice.
        let pending: StreamReadReply = self
            .redis
            .xread_options(&[&stream], &[self.cursor.as_str()], &options)
            .await?;
        let entries: Vec<StreamId> = pending.keys.into_iter().flat_map(|k| k.ids).collect();
        if !entries.is_empty() || !fresh {
            return Ok(entries);
        }
        let options = options.block(self.settings.block_ms as usize);
        let fresh: Option<StreamReadReply> = self
            .blocking
            .xread_options(&[&stream], &[">"], &options)
            .await?;
        Ok(fresh
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Decides a batch with one script call. `None` when the lease was lost.
    async fn hold_batch(&mut self, entries: &[Entry]) -> Result<Option<Vec<Decision>>, DrainError> {
        let event = self.event_id;
        let mut invocation = proto::scripts::HOLD_BATCH.prepare_invoke();
        for key in proto::scripts::hold_batch_keys(&self.keys, event) {
            invocation.key(key);
        }
        for entry in entries {
            invocation.key(self.keys.request(event, entry.request_id));
        }
        invocation
            .arg(Self::now_ms())
            .arg(&self.token)
            .arg(self.settings.sold_out_horizon_ms);
        for entry in entries {
            invocation.arg(entry.request_id.to_string());
        }
        let reply: Vec<Value> = invocation.invoke_async(&mut self.redis).await?;
        let text = |v: &Value| -> String {
            redis::from_redis_value::<String>(v.clone()).unwrap_or_default()
        };
        match reply.first().map(text).as_deref() {
            Some("ok") => {}
            Some("lease_lost") => return Ok(None),
            other => {
                return Err(DrainError::Unexpected(format!(
                    "hold_batch replied {other:?}"
                )));
            }
        }
        let by_id: HashMap<RequestId, &Entry> = entries.iter().map(|e| (e.request_id, e)).collect();
        let mut decisions = Vec::new();
        for chunk in reply[1..].chunks(5) {
            let [id, state, seats, expires, reason] = chunk else {
                return Err(DrainError::Unexpected(
                    "hold_batch reply is not in fives".into(),
                ));
            };
            let request_id: RequestId = text(id)
                .parse()
                .map_err(|_| DrainError::Unexpected(format!("request id {:?}", text(id))))?;
            let Some(entry) = by_id.get(&request_id) else {
                return Err(DrainError::Unexpected(format!(
                    "hold_batch decided {request_id}, not in the batch"
                )));
            };
            let expires_ms: i64 = redis::from_redis_value(expires.clone()).unwrap_or(0);
            let state = text(state);
            decisions.push(Decision {
                request_id,
                fan: entry.fan,
                queue_number: entry.number,
                expires_at: (state == "held")
                    .then(|| DateTime::from_timestamp_millis(expires_ms))
                    .flatten(),
                seats: text(seats)
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                reason: Some(text(reason)).filter(|r| !r.is_empty()),
                state,
            });
        }
        Ok(Some(decisions))
    }

    /// Sends entries that cannot be processed (no request behind them, or failing
    /// too often) to the dead letters, with the reason, and takes them off the line.
    async fn bury(&mut self, entries: &[Burial]) -> Result<(), DrainError> {
        let mut pipe = redis::pipe();
        queue_burials(&mut pipe, &self.keys, self.event_id, entries);
        pipe.query_async::<()>(&mut self.redis).await?;
        Ok(())
    }

    fn sink(&self) -> Sink {
        Sink {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            event_id: self.event_id,
        }
    }

    /// Waits for every ledger write in flight; a failure stops this drainer (the
    /// batch's entries stay pending and are decided again, to the same effect).
    pub async fn settle(&mut self) -> Result<(), DrainError> {
        while let Some(task) = self.inflight.pop_front() {
            task.await
                .map_err(|e| DrainError::Unexpected(format!("ledger task: {e}")))??;
        }
        Ok(())
    }

    /// Reads, decides, records and acknowledges up to `count` entries; with `fresh`
    /// false, only entries already read before (a paused sale finishes what it
    /// admitted, and admits nothing new).
    pub async fn step(&mut self, count: usize, fresh: bool) -> Result<Step, DrainError> {
        // Holds that ended in Redis reach the ledger before their seats can be held
        // again, or the new claim would collide with the old one there.
        if self.changes_waiting().await? {
            self.settle().await?;
            self.apply_changes().await?;
        }
        let count = if self.isolate > 0 { 1 } else { count };
        let started = Instant::now();
        let raw = self.read(count, fresh).await?;
        let read_time = started.elapsed();
        if raw.is_empty() {
            self.settle().await?;
            return Ok(Step::default());
        }
        let mut entries = Vec::with_capacity(raw.len());
        let mut broken = Vec::new();
        for entry in &raw {
            match parse_entry(entry) {
                Some(parsed) => entries.push(parsed),
                None => broken.push((
                    entry.id.clone(),
                    String::new(),
                    "malformed entry".to_owned(),
                )),
            }
        }
        if !broken.is_empty() {
            self.bury(&broken).await?;
        }
        let script_started = Instant::now();
        let decisions = match self.hold_batch(&entries).await {
            Ok(Some(decisions)) => decisions,
            Ok(None) => return Ok(Step::default()),
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
        let (missing, decisions): (Vec<Decision>, Vec<Decision>) =
            decisions.into_iter().partition(|d| d.state == "missing");
        let script_time = script_started.elapsed();
        // Decisions are a prefix of the batch (the script stops at the first request
        // that must wait), so the next read starts after the last one decided.
        let lost: Vec<Burial> = entries
            .iter()
            .filter(|e| missing.iter().any(|m| m.request_id == e.request_id))
            .map(|e| {
                (
                    e.stream_id.clone(),
                    e.request_id.to_string(),
                    "request_not_found".to_owned(),
                )
            })
            .collect();
        let decided: HashMap<RequestId, ()> =
            decisions.iter().map(|d| (d.request_id, ())).collect();
        let done: Vec<String> = entries
            .iter()
            .filter(|e| decided.contains_key(&e.request_id))
            .map(|e| e.stream_id.clone())
            .collect();
        if let Some(last) = entries
            .iter()
            .filter(|e| {
                decided.contains_key(&e.request_id)
                    || missing.iter().any(|m| m.request_id == e.request_id)
            })
            .map(|e| e.stream_id.clone())
            .next_back()
        {
            self.cursor = last;
        }
        if self.inflight.len() >= LEDGER_WRITES_IN_FLIGHT
            && let Some(oldest) = self.inflight.pop_front()
        {
            oldest
                .await
                .map_err(|e| DrainError::Unexpected(format!("ledger task: {e}")))??;
        }
        let held = decisions.iter().filter(|d| d.state == "held").count();
        metrics::counter!("onsale_holds_total").increment(held as u64);
        metrics::counter!("onsale_requests_decided_total").increment(decisions.len() as u64);
        metrics::histogram!("onsale_worker_batch_seconds", "phase" => "script")
            .record(script_time.as_secs_f64());
        tracing::debug!(event_id = %self.event_id, entries = entries.len(), decided = decisions.len(), ?read_time, ?script_time,
            total = ?started.elapsed(), "batch decided");
        let count = decisions.len() + lost.len();
        let waiting = count < entries.len();
        if count > 0 {
            let sink = self.sink();
            self.inflight.push_back(tokio::spawn(async move {
                sink.finish(decisions, done, lost).await
            }));
        }
        Ok(Step {
            decided: count,
            waiting,
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
            .map(|e| {
                (
                    e.stream_id.clone(),
                    e.request_id.to_string(),
                    format!("failed {} times: {why}", self.settings.max_deliveries),
                )
            })
            .collect();
        if !worn.is_empty() {
            self.bury(&worn).await?;
        }
        Ok(())
    }

    /// Releases holds that have expired in Redis; returns how many. `release.lua`
    /// puts each on the event's changes stream with the release, and
    /// [`Self::apply_changes`] carries it into the ledger: a crash or a Postgres outage
    /// between the two loses nothing.
    pub async fn sweep(&mut self) -> Result<usize, DrainError> {
        let due: Vec<String> = self
            .redis
            .zrangebyscore_limit(
                self.keys.holds(self.event_id),
                "-inf",
                Self::now_ms(),
                0,
                500,
            )
            .await?;
        let due: Vec<RequestId> = due.iter().filter_map(|id| id.parse().ok()).collect();
        if due.is_empty() {
            return Ok(0);
        }
        // One round trip for every due hold; the script is loaded first because a
        // pipeline does not reload it after NOSCRIPT.
        let now = Self::now_ms();
        let mut pipe = redis::pipe();
        pipe.load_script(&proto::scripts::RELEASE).ignore();
        let invocations: Vec<_> = due
            .iter()
            .map(|request| {
                proto::scripts::release(&self.keys, self.event_id, *request, "expired", now, true)
            })
            .collect();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let replies: Vec<Vec<Value>> = pipe.query_async(&mut self.redis).await?;
        let expired: Vec<RequestId> = due
            .into_iter()
            .zip(replies)
            .filter(|(_, reply)| matches!(reply.first(), Some(Value::Int(1))))
            .map(|(request, _)| request)
            .collect();
        if !expired.is_empty() {
            metrics::counter!("onsale_holds_expired_total").increment(expired.len() as u64);
            let message = serde_json::json!({"type": "expired", "request_ids": expired});
            let _: i64 = self
                .redis
                .publish(self.keys.live(self.event_id), message.to_string())
                .await?;
        }
        Ok(expired.len())
    }

    /// Whether holds that ended in Redis wait to be carried into the ledger (one
    /// round trip: the changes group's lag and pending count).
    async fn changes_waiting(&mut self) -> Result<bool, DrainError> {
        let groups: redis::streams::StreamInfoGroupsReply = match self
            .redis
            .xinfo_groups(self.keys.changes(self.event_id))
            .await
        {
            Ok(groups) => groups,
            // No stream yet: nothing has ended.
            Err(error)
                if error.kind()
                    == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
        Ok(groups
            .groups
            .iter()
            .find(|g| g.name == WORKER_GROUP)
            .is_some_and(|g| g.pending > 0 || g.lag != Some(0)))
    }

    /// Carries holds that ended in Redis (expired, released by their fan, undone after
    /// a ledger conflict) into the ledger, then acknowledges them: an entry whose
    /// write failed is read again from this consumer's pending list.
    pub async fn apply_changes(&mut self) -> Result<usize, DrainError> {
        let stream = self.keys.changes(self.event_id);
        let options = StreamReadOptions::default()
            .group(WORKER_GROUP, &self.consumer)
            .count(500);
        let mut applied = 0;
        for start in ["0", ">"] {
            let reply: StreamReadReply = self
                .redis
                .xread_options(&[&stream], &[start], &options)
                .await?;
            let entries: Vec<StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
            if entries.is_empty() {
                continue;
            }
            let mut ended: HashMap<String, Vec<RequestId>> = HashMap::new();
            for entry in &entries {
                let Some(request) = entry.get::<String>("r").and_then(|r| r.parse().ok()) else {
                    tracing::warn!(event_id = %self.event_id, id = %entry.id, "change without a request id");
                    continue;
                };
                let state = entry
                    .get::<String>("s")
                    .unwrap_or_else(|| "released".into());
                if !["expired", "released", "rejected"].contains(&state.as_str()) {
                    tracing::warn!(event_id = %self.event_id, id = %entry.id, state, "change with an unknown state");
                    continue;
                }
                ended.entry(state).or_default().push(request);
            }
            for (state, requests) in &ended {
                ledger::end_holds(&self.pool, self.event_id, requests, state).await?;
            }
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let _: i64 = self.redis.xack(&stream, WORKER_GROUP, &ids).await?;
            applied += entries.len();
        }
        Ok(applied)
    }

    /// Marks the sale sold out once no seat is free or held.
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
            sqlx::query("UPDATE waiting_room.sales SET state = 'sold_out', updated_at = now() WHERE event_id = $1")
                .bind(self.event_id)
                .execute(&self.pool)
                .await?;
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
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), DrainError> {
        if !self.lease().await? {
            return Ok(());
        }
        tracing::info!(event_id = %self.event_id, consumer = %self.consumer, "draining event");
        self.ensure_groups().await?;
        self.claim_orphans().await?;
        // Holds that ended while no drainer could write the ledger go first.
        self.apply_changes().await?;
        let mut tokens = 0.0_f64;
        let mut last_refill = Instant::now();
        let mut last_sweep = Instant::now();
        let mut last_renew = Instant::now();
        let renew_every = Duration::from_millis(self.settings.lease_ms / 3);
        while !stop.is_cancelled() {
            if last_renew.elapsed() >= renew_every {
                if !self.lease().await? {
                    tracing::warn!(event_id = %self.event_id, "lease lost; another worker drains this event");
                    return self.settle().await;
                }
                last_renew = Instant::now();
            }
            if last_sweep.elapsed() >= Duration::from_millis(self.settings.sweep_interval_ms) {
                // A hold must reach the ledger before its expiry or release does.
                self.settle().await?;
                self.sweep().await?;
                self.apply_changes().await?;
                last_sweep = Instant::now();
            }
            let state = self.sale_state().await?;
            let draining = matches!(state.as_deref(), Some("open" | "closed" | "sold_out"));
            if state.as_deref() == Some("paused") {
                // Admitted entries still get decided; nothing new is admitted.
                if self.step(self.settings.batch_size, false).await?.decided > 0 {
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
        self.settle().await
    }
}

/// An entry for the dead letters: its stream id, its request id, why.
type Burial = (String, String, String);

/// Adds to `pipe` the dead-letter record and acknowledgement of each entry.
fn queue_burials(pipe: &mut redis::Pipeline, keys: &Keys, event: EventId, entries: &[Burial]) {
    let (stream, dead) = (keys.stream(event), keys.dead_letters(event));
    for (stream_id, request, reason) in entries {
        let fields = [
            ("entry", stream_id.as_str()),
            ("r", request.as_str()),
            ("reason", reason.as_str()),
        ];
        pipe.xadd(&dead, "*", &fields).ignore();
        pipe.xack(&stream, WORKER_GROUP, &[stream_id]).ignore();
        tracing::error!(event_id = %event, stream_id, request, reason, "entry sent to the dead letters");
    }
    if !entries.is_empty() {
        metrics::counter!("onsale_worker_dead_letters_total").increment(entries.len() as u64);
    }
}

/// Ends a hold with `release.lua`; true when it ended.
async fn release(
    redis: &mut ConnectionManager,
    keys: &Keys,
    event: EventId,
    request: RequestId,
    state: &str,
    only_if_expired: bool,
) -> Result<bool, DrainError> {
    let reply: Vec<Value> = proto::scripts::release(
        keys,
        event,
        request,
        state,
        Utc::now().timestamp_millis(),
        only_if_expired,
    )
    .invoke_async(redis)
    .await?;
    Ok(matches!(reply.first(), Some(Value::Int(1))))
}

/// The second half of a batch: the ledger write, undoing what the ledger refused,
/// the acknowledgements, the dead letters and the update for the realtime service.
/// Runs while the drainer's next batch is in the script.
struct Sink {
    pool: PgPool,
    redis: ConnectionManager,
    keys: Keys,
    event_id: EventId,
}

impl Sink {
    async fn finish(
        mut self,
        decisions: Vec<Decision>,
        done: Vec<String>,
        lost: Vec<Burial>,
    ) -> Result<(), DrainError> {
        let started = Instant::now();
        let conflicts = ledger::record(&self.pool, self.event_id, &decisions).await?;
        let ledger_time = started.elapsed();
        metrics::histogram!("onsale_worker_batch_seconds", "phase" => "ledger")
            .record(ledger_time.as_secs_f64());
        tracing::debug!(event_id = %self.event_id, rows = decisions.len(), ?ledger_time, "batch recorded");
        self.release_conflicts(&conflicts).await?;
        let stream = self.keys.stream(self.event_id);
        let mut pipe = redis::pipe();
        if !done.is_empty() {
            pipe.xack(&stream, WORKER_GROUP, &done).ignore();
        }
        queue_burials(&mut pipe, &self.keys, self.event_id, &lost);
        pipe.query_async::<()>(&mut self.redis).await?;
        self.publish(&decisions).await
    }

    /// Publishes what changed for the realtime service, one message per batch: the
    /// line moved, these requests were decided, these seats are now held.
    async fn publish(&mut self, decisions: &[Decision]) -> Result<(), DrainError> {
        let channel = self.keys.live(self.event_id);
        let served = decisions.iter().map(|d| d.queue_number).max().unwrap_or(0);
        let decided: Vec<serde_json::Value> = decisions
            .iter()
            .map(|d| {
                serde_json::json!({
                    "request_id": d.request_id, "state": d.state, "seats": d.seats,
                    "hold_expires_at": d.expires_at, "reason": d.reason,
                })
            })
            .collect();
        let held: Vec<&String> = decisions
            .iter()
            .filter(|d| d.state == "held")
            .flat_map(|d| &d.seats)
            .collect();
        let message = serde_json::json!({"type": "batch", "served": served, "decided": decided, "held_seats": held});
        let _: i64 = self.redis.publish(&channel, message.to_string()).await?;
        Ok(())
    }

    /// Undoes in Redis the holds Postgres refused.
    async fn release_conflicts(&mut self, conflicts: &[RequestId]) -> Result<(), DrainError> {
        for request in conflicts {
            release(
                &mut self.redis,
                &self.keys,
                self.event_id,
                *request,
                "rejected",
                false,
            )
            .await?;
            let _: () = self
                .redis
                .hset(
                    self.keys.request(self.event_id, *request),
                    "reason",
                    "conflict",
                )
                .await?;
            metrics::counter!("onsale_ledger_conflicts_total").increment(1);
            tracing::error!(event_id = %self.event_id, %request,
                "the ledger refused a hold redis granted: redis diverged, run `inventory rebuild`");
        }
        Ok(())
    }
}
