//! The hot path's promises where a single well-timed fault used to break them: a
//! drainer that stalls past its lease, a late ledger write, a ledger conflict, a
//! worker that cannot drain one event, dead letters, a sale closed before its draw,
//! a section ask behind returning holds, and a draw run twice around a cancel.
//! Each test is named after the scenario it proves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use booking_worker::Drainer;
use chrono::Utc;
use ledger::{self, Decision, LedgerError};
use proto::keys::WORKER_GROUP;
use proto::wire::queue::{RequestState, SaleState};
use proto::{RequestId, SeatId, UserId};
use sqlx::PgPool;
use waiting_room::requests::{self, Ask};
use waiting_room::sale::{self, Lever};

use crate::helpers::*;

fn best(quantity: u32, section: Option<&str>) -> Ask {
    Ask::Best {
        quantity,
        section: section.map(str::to_owned),
        price_tier: None,
    }
}

/// Polls `check` until it returns `Some`, failing after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(sale: &Sale, request: RequestId) -> proto::wire::queue::RequestStatus {
    let mut redis = sale.redis.clone();
    requests::status_of(&mut redis, &sale.keys, sale.event_id, request)
        .await
        .expect("status")
}

async fn ledger_row(sale: &Sale, request: RequestId) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT state, reason FROM booking.requests WHERE request_id = $1")
        .bind(request)
        .fetch_optional(&sale.pool)
        .await
        .expect("ledger row")
}

fn held(request: RequestId, seat: &str) -> Decision {
    Decision {
        request_id: request,
        fan: UserId::new(),
        queue_number: 1,
        state: RequestState::Held,
        seats: vec![seat.to_owned()],
        expires_at: Some(Utc::now() + chrono::Duration::minutes(10)),
        reason: None,
        correlation_id: None,
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_stalled_drainer_strands_nothing_and_its_successor_decides_everything(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 10, 20, 4).await;
    let joined = sale.join_many(one_seat_each(100), 16).await;
    assert_eq!(sale.open().await, 100);
    // Slow enough that the line is still long when the stalled drainer wakes.
    sale.set_admission(40).await;

    // Drainer A decides a first batch, then stalls: its lease lapses meanwhile.
    let blocking = sale.store.blocking().await.expect("blocking connection");
    let mut stalled = Drainer::new(
        sale.event_id,
        sale.pool.clone(),
        sale.redis.clone(),
        blocking,
        sale.keys.clone(),
        fast_settings(),
        "stalled".into(),
        "stalled-token",
    );
    assert!(stalled.begin().await.expect("begin"));
    assert_eq!(stalled.step(10, true).await.expect("step").decided, 10);
    stalled.settle().await.expect("first batch recorded");
    let _: () = redis::cmd("DEL")
        .arg(sale.keys.lease(sale.event_id))
        .query_async(&mut sale.redis)
        .await
        .expect("lapse");

    // B takes over and drains; A wakes up and tries to go on.
    let (stop, task) = start(sale.worker("successor", fast_settings()));
    eventually(Duration::from_secs(30), "the successor's lease", || {
        let mut redis = sale.redis.clone();
        let key = sale.keys.lease(sale.event_id);
        async move {
            let owner: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis)
                .await
                .ok()?;
            owner.filter(|o| !o.starts_with("stalled")).map(|_| ())
        }
    })
    .await;
    let woke = stalled.step(50, true).await.expect("step after the stall");
    assert!(
        woke.lease_lost,
        "a drainer past its lease went on: {woke:?}"
    );
    assert_eq!(woke.decided, 0);
    drop(stalled);

    sale.wait_for(Duration::from_secs(60), "every request held", |o| {
        o.get("held").copied().unwrap_or(0) == 100
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");

    let mut redis = sale.redis.clone();
    let stranded: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(sale.keys.stream(sale.event_id))
        .arg(WORKER_GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg("stalled")
        .query_async(&mut redis)
        .await
        .expect("xpending");
    assert!(
        stranded.is_empty(),
        "{} entries stranded under the stalled drainer",
        stranded.len()
    );
    // Decided in queue order: one seat each, best available, so the k-th fan in
    // line has the k-th seat of the map.
    let mut by_number = Vec::new();
    for (_, request) in &joined {
        let seen = status(&sale, request.request_id).await;
        assert_eq!(seen.state, RequestState::Held);
        let seat = seen.seats.expect("seats").remove(0);
        by_number.push((seen.queue_number.expect("number"), seat));
    }
    by_number.sort();
    let seat_order = |seat: &SeatId| {
        let (row, number) = seat
            .as_str()
            .trim_start_matches("Floor-R")
            .split_once('-')
            .expect("seat id");
        (
            row.parse::<u32>().expect("row"),
            number.parse::<u32>().expect("number"),
        )
    };
    for pair in by_number.windows(2) {
        assert!(
            seat_order(&pair[0].1) < seat_order(&pair[1].1),
            "fan #{} got {} but fan #{} got {}: decided out of order",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    sale.assert_no_seat_held_twice(200).await;
    sale.assert_redis_agrees_with_ledger().await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fenced_off_drainer_writes_nothing_to_the_ledger(pool: PgPool) {
    let sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    let old = ledger::raise_fence(&sale.pool, sale.event_id, "old")
        .await
        .expect("fence");
    let (first, late) = (RequestId::new(), RequestId::new());
    ledger::record(&sale.pool, sale.event_id, old, &[held(first, "Floor-R1-1")])
        .await
        .expect("written under its own epoch");
    let new = ledger::raise_fence(&sale.pool, sale.event_id, "new")
        .await
        .expect("fence");
    assert!(new > old);

    let refused = ledger::record(&sale.pool, sale.event_id, old, &[held(late, "Floor-R1-2")]).await;
    assert!(
        matches!(refused, Err(LedgerError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(ledger_row(&sale, late).await, None);
    let refused = ledger::end_holds(
        &sale.pool,
        sale.event_id,
        old,
        &[first],
        RequestState::Expired,
    )
    .await;
    assert!(
        matches!(refused, Err(LedgerError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        ledger_row(&sale, first).await.map(|r| r.0),
        Some("held".into())
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_late_write_never_moves_an_ended_request_back(pool: PgPool) {
    let sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    let epoch = ledger::raise_fence(&sale.pool, sale.event_id, "w")
        .await
        .expect("fence");
    let request = RequestId::new();
    let decision = held(request, "Floor-R1-1");
    ledger::record(
        &sale.pool,
        sale.event_id,
        epoch,
        std::slice::from_ref(&decision),
    )
    .await
    .expect("held");
    ledger::end_holds(
        &sale.pool,
        sale.event_id,
        epoch,
        &[request],
        RequestState::Expired,
    )
    .await
    .expect("expired");
    // The same batch written again late (a redelivery, a slow task).
    let conflicts = ledger::record(&sale.pool, sale.event_id, epoch, &[decision])
        .await
        .expect("late write");
    assert!(conflicts.is_empty());
    assert_eq!(
        ledger_row(&sale, request).await.map(|r| r.0),
        Some("expired".into())
    );
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking.seat_claims WHERE event_id = $1")
            .bind(sale.event_id)
            .fetch_one(&sale.pool)
            .await
            .expect("claims");
    assert_eq!(
        claims, 0,
        "a late write put a claim back after the hold ended"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_ledger_conflict_does_not_cascade_to_the_next_fans(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    sale.open().await;
    // The ledger gives Floor-R1-1 to a request Redis never heard of (Redis lost it).
    let owner = RequestId::new();
    let owner_fan = UserId::new();
    let expires = Utc::now() + chrono::Duration::minutes(10);
    sqlx::query(
        "INSERT INTO booking.requests (request_id, event_id, fan_id, queue_number, state, seats, hold_expires_at)
         VALUES ($1, $2, $3, 0, 'held', ARRAY['Floor-R1-1'], $4)",
    )
    .bind(owner)
    .bind(sale.event_id)
    .bind(owner_fan)
    .bind(expires)
    .execute(&sale.pool)
    .await
    .expect("owner row");
    sqlx::query(
        "INSERT INTO booking.seat_claims (event_id, seat_id, request_id, state, expires_at)
         VALUES ($1, 'Floor-R1-1', $2, 'held', $3)",
    )
    .bind(sale.event_id)
    .bind(owner)
    .bind(expires)
    .execute(&sale.pool)
    .await
    .expect("owner claim");

    let seat = Ask::Seats(vec![SeatId::new("Floor", "R1", 1)]);
    let asks = vec![seat.clone(), seat.clone(), seat, best(1, None)];
    let mut joined = sale.join_many(asks, 1).await;
    joined.sort_by_key(|(_, j)| j.queue_number);
    let (stop, task) = start(sale.worker("w", fast_settings()));
    sale.wait_for(Duration::from_secs(30), "every request decided", |o| {
        o.get("rejected").copied().unwrap_or(0) == 3 && o.get("held").copied().unwrap_or(0) == 2
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");

    for (_, request) in &joined[..3] {
        let row = ledger_row(&sale, request.request_id).await;
        assert_eq!(
            row,
            Some(("rejected".into(), Some("seat_unavailable".into()))),
            "request {} (number {:?})",
            request.request_id,
            request.queue_number
        );
    }
    let last = status(&sale, joined[3].1.request_id).await;
    assert_eq!(last.state, RequestState::Held);
    assert_ne!(last.seats, Some(vec![SeatId::new("Floor", "R1", 1)]));
    // Redis took the ledger's owner, hold and expiry included.
    let owner_state = status(&sale, owner).await;
    assert_eq!(owner_state.state, RequestState::Held);
    sale.assert_redis_agrees_with_ledger().await;
    sale.assert_no_seat_held_twice(4).await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_worker_that_cannot_drain_an_event_keeps_going_round(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    sale.open().await;
    // Blocking reads get their own connection; this worker cannot open one.
    let worker = booking_worker::Worker {
        store: platform::store::Store::open("redis://127.0.0.1:1").expect("url"),
        ..sale.worker("w", fast_settings())
    };
    let health = worker.health.clone();
    let (stop, task) = start(worker);
    eventually(Duration::from_secs(30), "five discovery rounds", || {
        let rounds = health.rounds();
        async move { (rounds >= 5).then_some(()) }
    })
    .await;
    assert!(
        !task.is_finished(),
        "the worker loop ended on one event's failure"
    );
    assert!(
        health
            .since_last_tick()
            .is_some_and(|since| since < Duration::from_secs(5))
    );
    stop.cancel();
    task.await.expect("join").expect("worker");
}

#[tokio::test]
async fn readiness_fails_with_503_and_says_why() {
    let ops = platform::runtime::OpsServer::bind("127.0.0.1:0".parse().expect("addr"), "test")
        .await
        .expect("bind")
        .with_readiness(|| Box::pin(async { Err("redis: connection refused".to_owned()) }));
    let port = ops.port();
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(ops.run(stop.clone().cancelled_owned()));
    let client = reqwest::Client::new();
    let live = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status(), 200);
    let ready = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["message"], "redis: connection refused");
    stop.cancel();
    served.await.expect("join").expect("served");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_dead_lettered_request_ends_rejected_and_its_fan_may_ask_again(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    sale.open().await;
    let fan = UserId::new();
    let poisoned = sale
        .join(fan, &best(1, None))
        .await
        .expect("join")
        .request_id;
    let _: () = redis::cmd("HSET")
        .arg(sale.keys.request(sale.event_id, poisoned))
        .arg("qty")
        .arg("many")
        .query_async(&mut sale.redis)
        .await
        .expect("poison");
    let (stop, task) = start(sale.worker("w", fast_settings()));
    sale.wait_for(Duration::from_secs(30), "the poisoned request ended", |o| {
        o.get("rejected").copied().unwrap_or(0) == 1
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");
    assert_eq!(
        ledger_row(&sale, poisoned).await,
        Some(("rejected".into(), Some("dead_letter".into())))
    );
    let seen = status(&sale, poisoned).await;
    assert_eq!(
        (seen.state, seen.reason.as_deref()),
        (RequestState::Rejected, Some("dead_letter"))
    );
    // The fan is no longer bound to it.
    sale.join(fan, &best(1, None))
        .await
        .expect("the fan joins again");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn closing_a_scheduled_sale_ends_its_prequeue(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    let joined = sale.join_many(one_seat_each(5), 5).await;
    assert!(
        joined.iter().all(|(_, j)| j.queue_number.is_none()),
        "pre-queued"
    );
    let state = sale::pull(
        &sale.pool,
        &mut sale.redis,
        &sale.keys,
        sale.event_id,
        Lever::Close,
        UserId::new(),
    )
    .await
    .expect("close");
    assert_eq!(state, SaleState::Closed);
    for (fan, request) in &joined {
        let seen = status(&sale, request.request_id).await;
        assert_eq!(
            (seen.state, seen.reason.as_deref()),
            (RequestState::Rejected, Some("sale_closed"))
        );
        let bound: Option<String> = redis::cmd("HGET")
            .arg(sale.keys.fans(sale.event_id))
            .arg(fan.to_string())
            .query_async(&mut sale.redis)
            .await
            .expect("fans");
        assert_eq!(bound, None, "fan {fan} still bound");
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_section_ask_waits_for_its_section_instead_of_losing_it_to_a_later_fan(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["A", "B"], 1, 2, 4).await;
    sale.set_hold_ms(1_500).await;
    sale.open().await;
    let settings = booking_worker::DrainSettings {
        sold_out_horizon_ms: 60_000,
        ..fast_settings()
    };
    let (stop, task) = start(sale.worker("w", settings));
    // Section A is taken by two short holds.
    let first = sale
        .join_many(vec![best(1, Some("A")), best(1, Some("A"))], 1)
        .await;
    sale.wait_for(Duration::from_secs(30), "A held", |o| {
        o.get("held").copied().unwrap_or(0) == 2
    })
    .await;
    // The earlier fan asks for A while it is full; the holds expire in about a second.
    let (_, earlier) = sale.join_many(vec![best(1, Some("A"))], 1).await.remove(0);
    sale.wait_for(Duration::from_secs(30), "A's holds expired", |o| {
        o.get("expired").copied().unwrap_or(0) == 2
    })
    .await;
    // A later fan asks the same once A's seats are back.
    let (_, later) = sale.join_many(vec![best(1, Some("A"))], 1).await.remove(0);
    sale.wait_for(Duration::from_secs(30), "both decided", |o| {
        o.get("held").copied().unwrap_or(0) + o.get("rejected").copied().unwrap_or(0) == 2
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");
    assert_eq!(first.len(), 2);
    let (earlier, later) = (
        status(&sale, earlier.request_id).await,
        status(&sale, later.request_id).await,
    );
    assert!(
        !(earlier.state == RequestState::Rejected && later.state == RequestState::Held),
        "fairness inversion: #{:?} was {:?} ({:?}) while #{:?} with the same ask got {:?}",
        earlier.queue_number,
        earlier.state,
        earlier.reason,
        later.queue_number,
        later.seats
    );
    assert_eq!(earlier.state, RequestState::Held, "{earlier:?}");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_draw_run_again_around_a_cancel_hands_out_no_number_twice(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 5, 20, 4).await;
    let joined = sale.join_many(one_seat_each(60), 16).await;
    assert_eq!(joined.len(), 60);

    // A drawer that froze the pre-queue and numbered a first chunk, then crashed.
    let row = sale::ensure_sale(&sale.pool, sale.event_id)
        .await
        .expect("sale");
    sale::load_into_redis(&mut sale.redis, &sale.keys, &row)
        .await
        .expect("load");
    let reply: Vec<String> = proto::scripts::BEGIN_DRAW
        .key(sale.keys.sale(sale.event_id))
        .key(sale.keys.prequeue(sale.event_id))
        .invoke_async(&mut sale.redis)
        .await
        .expect("begin_draw");
    let cohort: Vec<RequestId> = reply[1..].iter().map(|m| m.parse().expect("id")).collect();
    let order = waiting_room::lottery::draw_order(&row.seed, &cohort);
    let mut invocation = proto::scripts::DRAW.key(sale.keys.sale(sale.event_id));
    invocation.key(sale.keys.stream(sale.event_id));
    for id in &order[..20] {
        invocation.key(sale.keys.request(sale.event_id, *id));
    }
    invocation.arg(1);
    for id in &order[..20] {
        invocation.arg(id.to_string());
    }
    let _: i64 = invocation
        .invoke_async(&mut sale.redis)
        .await
        .expect("first chunk");

    // A fan not yet numbered leaves; then two drawers resume at once.
    let leaving = order[40];
    requests::leave(
        &sale.pool,
        &mut sale.redis,
        &sale.keys,
        sale.event_id,
        leaving,
    )
    .await
    .expect("leave");
    let (mut a, mut b) = (sale.redis.clone(), sale.redis.clone());
    let (one, two) = tokio::join!(
        sale::draw(&sale.pool, &mut a, &sale.keys, sale.event_id, None),
        sale::draw(&sale.pool, &mut b, &sale.keys, sale.event_id, None),
    );
    assert!(one.is_ok() || two.is_ok(), "{one:?} {two:?}");

    let mut numbers: BTreeMap<u64, RequestId> = BTreeMap::new();
    for (_, request) in &joined {
        let seen = status(&sale, request.request_id).await;
        let number = seen.queue_number.expect("every drawn request has a number");
        if let Some(other) = numbers.insert(number, request.request_id) {
            panic!(
                "queue number {number} given to {other} and {}",
                request.request_id
            );
        }
    }
    assert_eq!(
        numbers.keys().copied().collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    let streamed: Vec<redis::streams::StreamId> = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(sale.keys.stream(sale.event_id))
            .arg("-")
            .arg("+")
            .query_async(&mut sale.redis)
            .await
            .expect("xrange");
        reply.ids
    };
    let streamed_numbers: BTreeSet<String> = streamed
        .iter()
        .filter_map(|e| e.get::<String>("n"))
        .collect();
    assert_eq!(
        streamed.len(),
        59,
        "every request but the one that left is in line once"
    );
    assert_eq!(streamed_numbers.len(), 59);
    let audits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM waiting_room.audit WHERE event_id = $1 AND action = 'open'",
    )
    .bind(sale.event_id)
    .fetch_one(&sale.pool)
    .await
    .expect("audit");
    assert_eq!(audits, 1, "the opening is recorded once");
}

/// Keys under `keys`' prefix and their memory (SCAN leaves out expired keys).
async fn footprint(redis: &mut platform::store::Redis, keys: &proto::Keys) -> (usize, u64) {
    let pattern = format!("{}:*", keys.prefix());
    let names = redis.scan_everywhere(&pattern).await.expect("scan");
    let mut bytes = 0;
    for name in &names {
        let size: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(name)
            .query_async(redis)
            .await
            .expect("memory usage");
        bytes += size.unwrap_or(0);
    }
    (names.len(), bytes)
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn redis_grows_no_further_after_twenty_finished_sales(pool: PgPool) {
    let first = sale(pool.clone(), &redis_url(), &["Floor"], 1, 10, 4).await;
    let shared = first.keys.clone();
    let settings = booking_worker::DrainSettings {
        retention_seconds: 1,
        ..fast_settings()
    };
    let (stop, task) = start(first.worker("w", settings));
    let mut redis = first.redis.clone();
    // The first event's seat map (never sold) is what was there before any sale.
    let before = footprint(&mut redis, &shared).await;
    let mut after_first = None;
    let mut peak = (0, 0);
    for round in 0..20 {
        let mut sale = sale(pool.clone(), &redis_url(), &["Floor"], 1, 10, 4).await;
        sale.keys = shared.clone();
        inventory::seatmap::rebuild(
            &sale.pool,
            &mut sale.redis,
            &sale.keys,
            sale.event_id,
            inventory::seatmap::LoadMode::Force,
        )
        .await
        .expect("seat map");
        sale.set_hold_ms(300).await;
        sale.join_many(one_seat_each(15), 15).await;
        sale.open().await;
        sale.wait_for(Duration::from_secs(30), "every request decided", |o| {
            o.values().sum::<i64>() == 15
        })
        .await;
        peak = peak.max(footprint(&mut redis, &shared).await);
        sale::pull(
            &sale.pool,
            &mut sale.redis,
            &sale.keys,
            sale.event_id,
            Lever::Close,
            UserId::new(),
        )
        .await
        .expect("close");
        // The holds expire, the farm retires the event, its keys expire.
        let event = sale.event_id.to_string();
        let left = eventually(Duration::from_secs(30), "the sale's keys gone", || {
            let (mut redis, shared, event) = (redis.clone(), shared.clone(), event.clone());
            async move {
                let active: bool = redis::cmd("SISMEMBER")
                    .arg(shared.active_events())
                    .arg(&event)
                    .query_async(&mut redis)
                    .await
                    .ok()?;
                let left = footprint(&mut redis, &shared).await;
                (!active && left.0 <= before.0).then_some(left)
            }
        })
        .await;
        if round == 0 {
            after_first = Some(left);
        }
        let (keys_left, bytes_left) = left;
        let (first_keys, first_bytes) = after_first.expect("first");
        assert!(
            keys_left <= first_keys,
            "round {round}: {keys_left} keys, the first left {first_keys}"
        );
        assert!(
            bytes_left <= first_bytes,
            "round {round}: {bytes_left} bytes, the first left {first_bytes}"
        );
    }
    eprintln!(
        "before any sale {before:?} (keys, bytes); a sale of 15 requests peaked at {peak:?}; \
         after each of 20 sales ended, {after_first:?} were left"
    );
    stop.cancel();
    task.await.expect("join").expect("worker");
}

/// A held request, decided by a worker that then stops.
async fn one_hold(sale: &mut Sale) -> (UserId, RequestId) {
    sale.open().await;
    let fan = UserId::new();
    let request = sale
        .join(fan, &best(1, None))
        .await
        .expect("join")
        .request_id;
    let (stop, task) = start(sale.worker("w", fast_settings()));
    sale.wait_for(Duration::from_secs(30), "held", |o| {
        o.get("held") == Some(&1)
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");
    (fan, request)
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_release_that_finds_no_seat_of_its_own_still_ends_the_hold(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    let (_, request) = one_hold(&mut sale).await;
    let seat = status(&sale, request).await.seats.expect("seats").remove(0);
    // The map no longer shows the hold (a repair, a restore): the release frees
    // nothing, and must still end the hold (Lua's -0 once made it fail halfway).
    let _: () = redis::cmd("HSET")
        .arg(sale.keys.seat_states(sale.event_id))
        .arg(seat.as_str())
        .arg("a")
        .query_async(&mut sale.redis)
        .await
        .expect("diverge");
    let left = requests::leave(
        &sale.pool,
        &mut sale.redis,
        &sale.keys,
        sale.event_id,
        request,
    )
    .await
    .expect("release");
    assert_eq!(left.state, RequestState::Released);
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(sale.keys.holds(sale.event_id))
        .arg(request.to_string())
        .query_async(&mut sale.redis)
        .await
        .expect("zscore");
    assert_eq!(due, None, "the ended hold is still waiting to expire");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_cannot_release_or_join_while_a_restore_rebuilds_the_event(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    let (_, request) = one_hold(&mut sale).await;
    let mut redis = sale.redis.clone();
    let seized =
        booking_worker::restore::seize(&sale.pool, &mut redis, &sale.keys, sale.event_id, 30_000)
            .await
            .expect("seize");
    let refused = requests::leave(&sale.pool, &mut redis, &sale.keys, sale.event_id, request).await;
    assert!(
        matches!(refused, Err(waiting_room::Error::LineLost(_))),
        "{refused:?}"
    );
    assert_eq!(status(&sale, request).await.state, RequestState::Held);
    // Nor join: the line's numbers and order are not back yet.
    let joined = sale.join(UserId::new(), &best(1, None)).await;
    assert!(
        matches!(joined, Err(waiting_room::Error::LineLost(_))),
        "{joined:?}"
    );
    booking_worker::restore::hand_back(&mut redis, &sale.keys, seized)
        .await
        .expect("hand back");
    eventually(Duration::from_secs(5), "the lease handed back", || {
        let (mut redis, key) = (redis.clone(), sale.keys.lease(sale.event_id));
        async move {
            let lease: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis)
                .await
                .ok()?;
            lease.is_none().then_some(())
        }
    })
    .await;
    let left = requests::leave(&sale.pool, &mut redis, &sale.keys, sale.event_id, request)
        .await
        .expect("release after the restore");
    assert_eq!(left.state, RequestState::Released);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_drainer_stalled_inside_a_ledger_write_does_not_block_its_successor(pool: PgPool) {
    let sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    let old = ledger::raise_fence(&sale.pool, sale.event_id, "old")
        .await
        .expect("fence");
    // The old drainer is inside a ledger write when it stops (SIGSTOP): its
    // transaction holds the fence row and sends nothing more.
    let mut stalled = sale.pool.begin().await.expect("begin");
    ledger::check_fence(&mut stalled, sale.event_id, old)
        .await
        .expect("fenced write begins");
    // Its successor takes over all the same, once Postgres ended the stalled
    // transaction (a minute is only the test's bound against hanging).
    let raised = tokio::time::timeout(
        Duration::from_secs(60),
        ledger::raise_fence(&sale.pool, sale.event_id, "new"),
    )
    .await
    .expect("the successor waited for the stalled drainer for good")
    .expect("fence");
    assert!(raised > old);
    // When the old drainer wakes up, nothing of its write can commit.
    assert!(
        stalled.commit().await.is_err(),
        "a stalled write committed after the takeover"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_seat_map_that_lost_its_seats_but_not_its_layout_refuses_no_seat_as_unknown(
    pool: PgPool,
) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    // Keys evicted one by one: the seats went, the layout stayed.
    let _: () = redis::cmd("DEL")
        .arg(sale.keys.seat_states(sale.event_id))
        .query_async(&mut sale.redis)
        .await
        .expect("evict");
    let named = Ask::Seats(vec![SeatId::new("Floor", "R1", 1)]);
    let joined = sale.join(UserId::new(), &named).await;
    assert!(
        matches!(joined, Err(waiting_room::Error::SeatMapNotLoaded(_))),
        "a real seat was answered as {joined:?}"
    );
    // Loading it again is possible (the map counts as absent) and the join goes in.
    let mut redis = sale.redis.clone();
    inventory::seatmap::ensure_loaded(&sale.pool, &mut redis, &sale.keys, sale.event_id)
        .await
        .expect("reload");
    sale.join(UserId::new(), &named)
        .await
        .expect("join after the reload");
}

/// Members of the `holds` zset whose requests no longer hold seats (a restore over
/// keys that were still there leaves them) are always due: they must not fill the
/// sweep's page and keep real holds from expiring.
#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn stale_hold_entries_do_not_block_the_sweep(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    sale.set_hold_ms(1_000).await;
    let mut pipe = redis::pipe();
    for _ in 0..600 {
        let stale = RequestId::new();
        pipe.zadd(sale.keys.holds(sale.event_id), stale.to_string(), 1)
            .ignore();
        pipe.hset(sale.keys.request(sale.event_id, stale), "state", "expired")
            .ignore();
    }
    let _: () = pipe
        .query_async(&mut sale.redis)
        .await
        .expect("stale holds");
    assert_eq!(sale.join_many(one_seat_each(5), 4).await.len(), 5);
    sale.open().await;
    let (stop, task) = start(sale.worker("w", fast_settings()));
    sale.wait_for(Duration::from_secs(30), "the five holds expired", |o| {
        o.get("expired").copied().unwrap_or(0) == 5
    })
    .await;
    let left: i64 = redis::cmd("ZCARD")
        .arg(sale.keys.holds(sale.event_id))
        .query_async(&mut sale.redis)
        .await
        .expect("zcard");
    assert_eq!(left, 0, "stale entries are dropped by the sweep");
    stop.cancel();
    task.await.expect("join").expect("worker");
}
