use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use booking_worker::{DrainSettings, Worker};
use chrono::Utc;
use inventory::seatmap::{self, LoadMode};
use inventory::{events, venues};
use platform::store::{Redis, Store};
use proto::wire::inventory::{CreateEvent, CreateVenue};
use proto::wire::queue::Joined;
use proto::{EventId, Keys, UserId};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waiting_room::joins;
use waiting_room::requests::Ask;

pub use testkit::redis_url;

pub async fn connect(url: &str) -> (Store, Redis) {
    let store = Store::open(url).expect("redis url");
    let redis = store.shared().await.expect("redis");
    (store, redis)
}

pub struct Sale {
    pub pool: PgPool,
    pub store: Store,
    pub redis: Redis,
    pub keys: Keys,
    pub event_id: EventId,
}

/// A venue of `sections` × `rows` × `seats`, an event on it, its seat map loaded,
/// and its sale created (scheduled). Holds last `hold_seconds`.
pub async fn sale(
    pool: PgPool,
    redis_url: &str,
    sections: &[&str],
    rows: u32,
    seats: u32,
    max_per_fan: u32,
) -> Sale {
    platform::runtime::init_test_tracing();
    let venue = venues::validate(CreateVenue::grid("Hall", sections, "standard", rows, seats))
        .expect("venue");
    let venue_id = venues::create(&pool, &venue).await.expect("venue");
    let event_id = events::create(
        &pool,
        &CreateEvent {
            venue_id,
            name: "Show".into(),
            starts_at: Utc::now() + chrono::Duration::days(30),
            onsale_at: Utc::now() + chrono::Duration::days(1),
            max_per_fan,
            hold_seconds: 600,
            prices: BTreeMap::from([("standard".into(), 5000)]),
            admission_per_second: 100_000,
            refund_policy: None,
            tax: None,
        },
    )
    .await
    .expect("event");
    let (store, mut redis) = connect(redis_url).await;
    let keys = Keys::new(format!("test:{}", uuid::Uuid::new_v4().simple()));
    seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force)
        .await
        .expect("seat map");
    Sale {
        pool,
        store,
        redis,
        keys,
        event_id,
    }
}

impl Sale {
    /// Shortens holds (the API's floor is 60 s) so tests can watch them expire.
    pub async fn set_hold_ms(&mut self, ms: u64) {
        let _: () = redis::cmd("HSET")
            .arg(self.keys.sale(self.event_id))
            .arg(proto::sale_hash::HOLD_MS)
            .arg(ms)
            .query_async(&mut self.redis)
            .await
            .expect("hold_ms");
    }

    /// Sets the sale's admission rate in Redis, where the drainers read it.
    pub async fn set_admission(&mut self, per_second: u32) {
        let _: () = redis::cmd("HSET")
            .arg(self.keys.sale(self.event_id))
            .arg(proto::sale_hash::ADMISSION_PER_SECOND)
            .arg(per_second)
            .query_async(&mut self.redis)
            .await
            .expect("admission rate");
    }

    pub async fn join(&self, fan: UserId, ask: &Ask) -> Result<Joined, waiting_room::Error> {
        let mut redis = self.redis.clone();
        joins::join(
            &self.pool,
            &mut redis,
            &self.keys,
            self.event_id,
            fan,
            ask,
            None,
        )
        .await
    }

    /// Joins `asks` from distinct fans, `concurrency` at a time; returns the accepted.
    pub async fn join_many(&self, asks: Vec<Ask>, concurrency: usize) -> Vec<(UserId, Joined)> {
        let mut accepted = Vec::new();
        let mut asks = asks.into_iter();
        loop {
            let tasks: Vec<_> = asks
                .by_ref()
                .take(concurrency)
                .map(|ask| {
                    let (pool, mut redis, keys, event_id) = (
                        self.pool.clone(),
                        self.redis.clone(),
                        self.keys.clone(),
                        self.event_id,
                    );
                    tokio::spawn(async move {
                        let fan = UserId::new();
                        // As a client would: a join whose reply was lost (a response
                        // timeout on a slow machine) is asked again under the same
                        // Idempotency-Key, so it counts once whether or not the first
                        // call took effect.
                        let key = fan.to_string();
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            let joined = joins::join(
                                &pool,
                                &mut redis,
                                &keys,
                                event_id,
                                fan,
                                &ask,
                                Some(&key),
                            )
                            .await;
                            match joined {
                                Err(waiting_room::Error::Redis(why)) if tries < 5 => {
                                    eprintln!("join of fan {fan} failed ({why}); asking again");
                                }
                                other => break other.map(|j| (fan, j)),
                            }
                        }
                    })
                })
                .collect();
            if tasks.is_empty() {
                break;
            }
            for task in tasks {
                match task.await.expect("join task") {
                    Ok(joined) => accepted.push(joined),
                    Err(waiting_room::Error::Refused { .. }) => {}
                    Err(other) => panic!("a join failed: {other:?}"),
                }
            }
        }
        accepted
    }

    /// Draws the pre-queue and opens the sale, running the draw again (it resumes) when
    /// a reply is lost to a response timeout.
    pub async fn open(&mut self) -> usize {
        let mut tries = 0;
        loop {
            tries += 1;
            let drawn = waiting_room::sale::draw(
                &self.pool,
                &mut self.redis,
                &self.keys,
                self.event_id,
                None,
            )
            .await;
            match drawn {
                Err(waiting_room::Error::Redis(why)) if tries < 5 => {
                    eprintln!("the draw failed ({why}); running it again");
                }
                other => break other.expect("draw"),
            }
        }
    }

    pub fn worker(&self, name: &str, settings: DrainSettings) -> Worker {
        Worker {
            pool: self.pool.clone(),
            store: self.store.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            name: name.to_owned(),
            settings,
            discover_every: Duration::from_millis(50),
            health: Default::default(),
        }
    }

    /// Requests the ledger has an outcome for, by state.
    pub async fn outcomes(&self) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM booking.requests WHERE event_id = $1 GROUP BY state",
        )
        .bind(self.event_id)
        .fetch_all(&self.pool)
        .await
        .expect("outcomes");
        rows.into_iter().collect()
    }

    /// Waits until `done` holds of the ledger's outcomes, failing after `limit`.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<String, i64>) -> bool,
    ) {
        let started = Instant::now();
        loop {
            let outcomes = self.outcomes().await;
            if done(&outcomes) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not reached within {limit:?}; outcomes {outcomes:?}"
            );
            // Polling the ledger for a condition with a deadline; nothing is assumed
            // to have happened after a fixed delay.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Seats per state according to Redis, and the invariants between them and the
    /// ledger: every held or sold seat belongs to exactly the request the ledger says.
    pub async fn assert_redis_agrees_with_ledger(&self) {
        let mut redis = self.redis.clone();
        let diff = seatmap::diff_against_ledger(&self.pool, &mut redis, &self.keys, self.event_id)
            .await
            .expect("diff");
        assert!(
            diff.is_empty(),
            "redis and postgres disagree on {} seats: {:?}",
            diff.len(),
            &diff[..diff.len().min(5)]
        );
        let counts = seatmap::counts(&mut redis, &self.keys, self.event_id)
            .await
            .expect("counts")
            .expect("loaded");
        let claims: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM booking.seat_claims WHERE event_id = $1 GROUP BY state",
        )
        .bind(self.event_id)
        .fetch_all(&self.pool)
        .await
        .expect("claims");
        let claims: BTreeMap<String, i64> = claims.into_iter().collect();
        assert_eq!(
            i64::from(counts.held),
            claims.get("held").copied().unwrap_or(0),
            "held count"
        );
        assert_eq!(
            i64::from(counts.sold),
            claims.get("sold").copied().unwrap_or(0),
            "sold count"
        );
    }

    /// Every held request's seats are claimed by it in the ledger, and no request's
    /// seats overlap another's.
    pub async fn assert_no_seat_held_twice(&self, seat_count: i64) {
        let held: Vec<(uuid::Uuid, Vec<String>)> = sqlx::query_as(
            "SELECT request_id, seats FROM booking.requests WHERE event_id = $1 AND state IN ('held', 'paying', 'confirmed')",
        )
        .bind(self.event_id)
        .fetch_all(&self.pool)
        .await
        .expect("held");
        let mut owner = BTreeMap::new();
        for (request, seats) in &held {
            for seat in seats {
                if let Some(other) = owner.insert(seat.clone(), *request) {
                    panic!("seat {seat} held by {other} and {request}");
                }
            }
        }
        assert!(
            owner.len() as i64 <= seat_count,
            "{} seats held of {seat_count}",
            owner.len()
        );
        let claimed: Vec<(String, uuid::Uuid)> = sqlx::query_as(
            "SELECT seat_id, request_id FROM booking.seat_claims WHERE event_id = $1",
        )
        .bind(self.event_id)
        .fetch_all(&self.pool)
        .await
        .expect("claims");
        let claimed: BTreeMap<String, uuid::Uuid> = claimed.into_iter().collect();
        assert_eq!(
            claimed, owner,
            "the ledger's claims differ from the held requests' seats"
        );
    }
}

/// `n` best-available asks for one seat anywhere.
pub fn one_seat_each(n: usize) -> Vec<Ask> {
    (0..n)
        .map(|_| Ask::Best {
            quantity: 1,
            section: None,
            price_tier: None,
        })
        .collect()
}

/// Runs `worker` until the returned token is cancelled.
pub fn start(worker: Worker) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    (stop, task)
}

pub fn fast_settings() -> DrainSettings {
    DrainSettings {
        lease_ms: 1_000,
        block_ms: 50,
        sold_out_horizon_ms: 0,
        sweep_interval_ms: 100,
        ..DrainSettings::default()
    }
}
