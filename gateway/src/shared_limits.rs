//! The rate limits shared by every gateway of the tier: one GCRA bucket per client
//! address and per account in Redis (`proto/lua/gcra.lua`), so N gateways behind a
//! load balancer let an address through at its rate once, not N times.
//!
//! A [`SharedLimits`] gathers the checks that arrive while its call is out and sends
//! them together in the next one, as the joiner does with joins: there is no timer,
//! a check that finds no call out goes at once, and under load one script call (three
//! Redis commands: `TIME`, `HMGET`, `HSET`) decides a whole batch. Each request asks
//! once, for its address and its account together.
//!
//! Redis unreachable: the checks pass (the gateway's own buckets, checked first,
//! still hold each client to its rate on this node), and
//! `onsale_rate_limit_shared_unavailable_total` counts them.

use std::time::Duration;

use platform::store::Redis;
use proto::Keys;
use tokio::sync::{mpsc, oneshot};

/// Most checks one script call decides.
const MAX_BATCH: usize = 256;
/// Requests waiting for a call before callers wait to hand theirs over.
const QUEUE: usize = 4 * MAX_BATCH;
/// HSCAN fields per housekeeping step, and steps per housekeeping run.
const FORGET_STEP: usize = 500;
const FORGET_STEPS: usize = 200;

/// One bucket to check: its name in the tier's hash, and its rate.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: String,
    /// Microseconds between two requests at the sustained rate.
    pub interval_us: u64,
    /// How far ahead of now a bucket may run: (burst − 1) intervals.
    pub tolerance_us: u64,
}

impl Bucket {
    pub fn new(name: String, per_second: u32, burst: u32) -> Self {
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        Self {
            name,
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
        }
    }
}

struct Pending {
    buckets: Vec<Bucket>,
    /// The wait per bucket (zero: admitted); empty when Redis did not answer.
    reply: oneshot::Sender<Vec<Duration>>,
}

/// Handle on the batching task. Cheap to clone.
#[derive(Clone)]
pub struct SharedLimits {
    sender: mpsc::Sender<Pending>,
    redis: Redis,
    key: String,
}

impl SharedLimits {
    pub fn start(redis: Redis, keys: &Keys) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let key = keys.rate_buckets();
        tokio::spawn(run(receiver, redis.clone(), key.clone()));
        Self { sender, redis, key }
    }

    /// Checks (and counts) `buckets` against the whole tier: for each, how long it
    /// must wait (zero: admitted). Empty when Redis could not be asked.
    pub async fn check(&self, buckets: Vec<Bucket>) -> Vec<Duration> {
        let (reply, answer) = oneshot::channel();
        if self.sender.send(Pending { buckets, reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Forgets buckets that are full again; returns how many went.
    pub async fn housekeep(&self) -> redis::RedisResult<u64> {
        let mut redis = self.redis.clone();
        let (mut cursor, mut forgotten) = ("0".to_owned(), 0u64);
        for _ in 0..FORGET_STEPS {
            let (next, gone): (String, u64) = proto::scripts::GCRA_FORGET
                .key(&self.key)
                .arg(&cursor)
                .arg(FORGET_STEP)
                .invoke_async(&mut redis)
                .await?;
            forgotten += gone;
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(forgotten)
    }
}

async fn run(mut receiver: mpsc::Receiver<Pending>, mut redis: Redis, key: String) {
    while let Some(first) = receiver.recv().await {
        let mut size = first.buckets.len();
        let mut batch = vec![first];
        while size < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => {
                    size += pending.buckets.len();
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        let mut invocation = proto::scripts::GCRA.prepare_invoke();
        invocation.key(&key);
        for bucket in batch.iter().flat_map(|pending| &pending.buckets) {
            invocation
                .arg(&bucket.name)
                .arg(bucket.interval_us)
                .arg(bucket.tolerance_us);
        }
        metrics::histogram!("onsale_rate_limit_shared_batch").record(size as f64);
        match invocation.invoke_async::<Vec<u64>>(&mut redis).await {
            Ok(waits) if waits.len() == size => {
                let mut waits = waits.into_iter().map(Duration::from_micros);
                for pending in batch {
                    let answer = waits.by_ref().take(pending.buckets.len()).collect();
                    let _ = pending.reply.send(answer);
                }
            }
            outcome => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, checks = size, "shared rate limits unavailable; the node's own apply");
                }
                metrics::counter!("onsale_rate_limit_shared_unavailable_total")
                    .increment(size as u64);
                for pending in batch {
                    let _ = pending.reply.send(Vec::new());
                }
            }
        }
    }
}
