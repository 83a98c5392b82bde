//! The drainer's loop: taking the event over, admission, sweeps, retirement, and
//! how every exit leaves no ledger write running.

use std::time::{Duration, Instant};

use proto::sale_hash;
use proto::wire::live::Published;
use proto::wire::queue::SaleState;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::{DrainError, Drainer, ended, retire};

impl Drainer {
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
        let (changed, _) = proto::scripts::sale_state_moved(
            proto::scripts::set_sale_state(
                &self.keys,
                self.event_id,
                SaleState::SoldOut,
                &[SaleState::Open, SaleState::Paused],
            )
            .invoke_async(&mut self.redis)
            .await?,
        );
        if changed {
            let message = Published::Sale {
                state: Some(SaleState::SoldOut),
            };
            let _: i64 = message
                .publish(&self.keys, self.event_id)
                .query_async(&mut self.redis)
                .await?;
            tracing::info!(event_id = %self.event_id, "sold out");
        }
        Ok(changed)
    }

    /// The sale's state in Redis; `None` when it has none (or one this build does not
    /// know).
    async fn sale_state(&mut self) -> Result<Option<SaleState>, DrainError> {
        let state: Option<String> = self
            .redis
            .hget(self.keys.sale(self.event_id), sale_hash::STATE)
            .await?;
        Ok(state.as_deref().and_then(SaleState::parse))
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
        let revived = retire::revive(&mut self.redis, &self.keys, self.event_id).await?;
        if revived > 0 {
            tracing::info!(event_id = %self.event_id, keys = revived,
                "retired event back on the farm (its sale opened again): its keys are kept");
        }
        self.ensure_groups().await?;
        if self.reclaim().await?.is_none() {
            return Ok(false);
        }
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
                if self.reclaim().await?.is_none() {
                    tracing::warn!(event_id = %self.event_id, "lease lost; another worker drains this event");
                    return Ok(());
                }
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
                if retire::finished(&mut self.redis, &self.keys, self.event_id, state).await? {
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
            let draining = matches!(
                state,
                Some(SaleState::Open | SaleState::Closed | SaleState::SoldOut)
            );
            if state == Some(SaleState::Paused) {
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
                .hget::<_, _, Option<f64>>(
                    self.keys.sale(self.event_id),
                    sale_hash::ADMISSION_PER_SECOND,
                )
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
            if step.decided > 0 && state == Some(SaleState::Open) {
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
