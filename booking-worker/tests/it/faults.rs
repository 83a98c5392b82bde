//! Faults: a worker process killed with SIGKILL mid-stream, a Redis restart, and an
//! entry that keeps failing.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proto::keys::WORKER_GROUP;
use proto::wire::queue::SaleState;
use proto::{EventId, Keys, SeatId};
use rand::Rng;
use sqlx::PgPool;
use waiting_room::requests::Ask;

use crate::helpers::*;

fn mixed_asks(n: usize, rows: u32, seats: u32) -> Vec<Ask> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            if rng.random_bool(0.3) {
                let (row, seat) = (rng.random_range(1..=rows), rng.random_range(1..=seats));
                Ask::Seats(vec![SeatId::new("Floor", &format!("R{row}"), seat)])
            } else {
                Ask::Best {
                    quantity: rng.random_range(1..=2),
                    section: None,
                    price_tier: None,
                }
            }
        })
        .collect()
}

/// The URL of the database the test's pool points at.
fn database_url(pool: &PgPool) -> String {
    testkit::database_url(pool.connect_options().get_database().unwrap_or("postgres"))
}

/// A child process killed with SIGKILL when dropped, so a failing test leaves none.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A booking-worker process, as deployed.
fn spawn_worker_process(pool: &PgPool, redis_url: &str, keys: &Keys, name: &str) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_booking-worker"))
            .env("DATABASE_URL", database_url(pool))
            .env("REDIS_URL", redis_url)
            .env("ONSALE_LISTEN", "127.0.0.1:0")
            .env("ONSALE_NAME", name)
            .env("ONSALE_REDIS__KEY_PREFIX", keys.prefix())
            .env("ONSALE_DATABASE__MAX_CONNECTIONS", "4")
            .env("ONSALE_DRAIN__LEASE_MS", "1000")
            .env("ONSALE_DRAIN__BLOCK_MS", "50")
            .env("ONSALE_DISCOVER_INTERVAL_MS", "50")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the booking-worker binary"),
    )
}

async fn pending(redis: &mut platform::store::Redis, keys: &Keys, event_id: EventId) -> i64 {
    let summary: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(keys.stream(event_id))
        .arg(WORKER_GROUP)
        .query_async(redis)
        .await
        .expect("xpending");
    summary.count() as i64
}

/// Every request's state in Redis equals its state in the ledger.
async fn assert_each_request_agrees(sale: &Sale) {
    let rows: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT request_id, state FROM booking.requests WHERE event_id = $1")
            .bind(sale.event_id)
            .fetch_all(&sale.pool)
            .await
            .expect("requests");
    let mut pipe = redis::pipe();
    for (request, _) in &rows {
        pipe.hget(sale.keys.request(sale.event_id, (*request).into()), "state");
    }
    let mut redis = sale.redis.clone();
    let states: Vec<String> = pipe.query_async(&mut redis).await.expect("states");
    for ((request, ledger), live) in rows.iter().zip(states) {
        assert_eq!(&live, ledger, "request {request}");
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_killed_worker_s_entries_are_finished_by_another_exactly_once(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 10, 30, 4).await;
    let accepted = sale.join_many(mixed_asks(3_000, 10, 30), 64).await;
    let total = accepted.len() as i64;
    // Slow enough that the kill lands mid-stream.
    sale.set_admission(1_500).await;
    assert_eq!(
        sale.open().await as i64,
        total,
        "the draw numbers every accepted join"
    );

    // Two worker processes, as the farm runs them: the victim takes the event's lease
    // first, the survivor starts beside it and waits its turn.
    let mut victim = spawn_worker_process(&sale.pool, &redis_url(), &sale.keys, "victim");
    sale.wait_for(Duration::from_secs(60), "the victim decided some", |o| {
        o.values().sum::<i64>() >= 300
    })
    .await;
    let survivor = spawn_worker_process(&sale.pool, &redis_url(), &sale.keys, "survivor");
    victim.0.kill().expect("SIGKILL");
    victim.0.wait().expect("reaped");
    let decided_at_kill: i64 = sale.outcomes().await.values().sum();
    assert!(
        decided_at_kill < total,
        "the victim finished before it was killed; nothing to take over"
    );

    sale.wait_for(Duration::from_secs(90), "every request decided", |o| {
        o.values().sum::<i64>() == total
    })
    .await;
    drop(survivor);

    let mut redis = sale.redis.clone();
    assert_eq!(
        pending(&mut redis, &sale.keys, sale.event_id).await,
        0,
        "entries left pending"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM booking.requests WHERE event_id = $1")
        .bind(sale.event_id)
        .fetch_one(&sale.pool)
        .await
        .expect("count");
    assert_eq!(rows, total, "one outcome per request");
    sale.assert_no_seat_held_twice(300).await;
    sale.assert_redis_agrees_with_ledger().await;
    assert_each_request_agrees(&sale).await;
}

/// A private Redis with an append-only file, restartable on the same port and data.
struct OwnRedis {
    dir: std::path::PathBuf,
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn spawn(dir: &std::path::Path, port: u16) -> Child {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server")
    }

    fn start(dir: std::path::PathBuf, port: u16) -> Self {
        Self {
            child: Self::spawn(&dir, port),
            dir,
            port,
        }
    }

    /// SIGKILL, then a new server on the same port and data directory.
    fn kill_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL redis");
        self.child.wait().expect("reaped");
        self.child = Self::spawn(&self.dir, self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis on port {} did not come up", self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_redis_restart_mid_run_then_a_rebuild_oversells_nothing(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("onsale-redis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut own = OwnRedis::start(dir, testkit::free_port());
    own.wait_ready().await;

    let mut sale = sale(pool, &own.url(), &["Floor"], 10, 30, 4).await;
    let accepted = sale.join_many(mixed_asks(2_000, 10, 30), 64).await;
    let total = accepted.len() as i64;
    sale.set_admission(1_000).await;
    assert_eq!(
        sale.open().await as i64,
        total,
        "the draw numbers every accepted join"
    );
    let (stop, task) = start(sale.worker("before", fast_settings()));
    sale.wait_for(Duration::from_secs(60), "some decided", |o| {
        o.values().sum::<i64>() >= 300
    })
    .await;

    own.kill_and_restart();
    own.wait_ready().await;

    // The operator's recovery: pause, let admitted entries finish, rebuild the seat
    // map from the ledger, resume.
    let mut redis = sale.redis.clone();
    let paused: (i64, String) = proto::scripts::set_sale_state(
        &sale.keys,
        sale.event_id,
        SaleState::Paused,
        &[SaleState::Open],
    )
    .invoke_async(&mut redis)
    .await
    .expect("pause");
    assert_eq!(
        paused.0, 1,
        "the sale survived the restart as open: {paused:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pending(&mut redis, &sale.keys, sale.event_id).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "admitted entries did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("worker");
    let report = inventory::seatmap::rebuild(
        &sale.pool,
        &mut redis,
        &sale.keys,
        sale.event_id,
        inventory::seatmap::LoadMode::Force,
    )
    .await
    .expect("rebuild");
    assert!(report.committed);
    sale.assert_redis_agrees_with_ledger().await;

    let _: (i64, String) = proto::scripts::set_sale_state(
        &sale.keys,
        sale.event_id,
        SaleState::Open,
        &[SaleState::Paused],
    )
    .invoke_async(&mut redis)
    .await
    .expect("resume");
    let (stop, task) = start(sale.worker("after", fast_settings()));
    sale.wait_for(Duration::from_secs(90), "every request decided", |o| {
        o.values().sum::<i64>() == total
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");

    sale.assert_no_seat_held_twice(300).await;
    sale.assert_redis_agrees_with_ledger().await;
    assert_each_request_agrees(&sale).await;
    drop(own);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_entry_that_keeps_failing_goes_to_the_dead_letters(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    sale.open().await;
    let asks = one_seat_each(3);
    let mut joined = sale.join_many(asks, 1).await;
    joined.sort_by_key(|(_, j)| j.queue_number);
    // Poison the middle request: its quantity is no number, so the script fails on it.
    let poisoned = joined[1].1.request_id;
    let _: () = redis::cmd("HSET")
        .arg(sale.keys.request(sale.event_id, poisoned))
        .arg("qty")
        .arg("many")
        .query_async(&mut sale.redis)
        .await
        .expect("poison");
    // Joined after the on-sale: numbered first come, first served.
    let numbers: Vec<Option<u64>> = joined.iter().map(|(_, j)| j.queue_number).collect();
    assert_eq!(numbers, vec![Some(1), Some(2), Some(3)]);

    let (stop, task) = start(sale.worker("w", fast_settings()));
    sale.wait_for(
        Duration::from_secs(30),
        "the healthy requests decided",
        |o| o.get("held").copied().unwrap_or(0) == 2,
    )
    .await;
    let mut redis = sale.redis.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dead: Vec<redis::streams::StreamId> = loop {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(sale.keys.dead_letters(sale.event_id))
            .arg("-")
            .arg("+")
            .query_async(&mut redis)
            .await
            .expect("xrange");
        if !reply.ids.is_empty() {
            break reply.ids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing reached the dead letters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    task.await.expect("join").expect("worker");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].get::<String>("r"), Some(poisoned.to_string()));
    let reason: String = dead[0].get("reason").expect("reason");
    assert!(reason.starts_with("failed 5 times"), "{reason}");
    assert_eq!(pending(&mut redis, &sale.keys, sale.event_id).await, 0);
    // The batch that failed on the poisoned entry had already held the first request:
    // its counters were written all the same.
    let counts = inventory::seatmap::counts(&mut redis, &sale.keys, sale.event_id)
        .await
        .expect("counts")
        .expect("loaded");
    assert_eq!((counts.available, counts.held, counts.sold), (8, 2, 0));
    let free: Vec<Option<i64>> = redis::cmd("HMGET")
        .arg(sale.keys.row_free(sale.event_id))
        .arg(&["Floor-R1", "sec:Floor"])
        .query_async(&mut redis)
        .await
        .expect("row counters");
    assert_eq!(free, vec![Some(8), Some(8)]);
}
