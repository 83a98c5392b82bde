//! A drainer that stalls or is fenced off writes nothing late: its successor decides
//! everything, and no late write moves a request back.

#[allow(unused_imports, reason = "the promises share one set of imports")]
use super::*;

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
async fn a_drainer_past_its_lease_cannot_take_the_entries_its_successor_has_read(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 2, 20, 4).await;
    let joined = sale.join_many(one_seat_each(20), 8).await;
    assert_eq!(sale.open().await, 20);
    let mut redis = sale.redis.clone();
    let drainer = |name: &str| {
        let sale = &sale;
        let name = name.to_owned();
        async move {
            Drainer::new(
                sale.event_id,
                sale.pool.clone(),
                sale.redis.clone(),
                sale.store.blocking().await.expect("blocking connection"),
                sale.keys.clone(),
                fast_settings(),
                name.clone(),
                &format!("{name}-token"),
            )
        }
    };

    // The old drainer held the lease and lost it (stopped, or seized by a restore)
    // without knowing yet; its successor took the event and read the head of the
    // line, not yet decided.
    let mut old = drainer("old").await;
    assert!(old.begin().await.expect("begin"));
    let _: () = redis::cmd("DEL")
        .arg(sale.keys.lease(sale.event_id))
        .query_async(&mut redis)
        .await
        .expect("lapse");
    let mut successor = drainer("successor").await;
    assert!(successor.begin().await.expect("begin"));
    let stream = sale.keys.stream(sale.event_id);
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(WORKER_GROUP)
        .arg("successor")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .expect("the successor reads");

    // The old drainer wakes into its periodic reclaim: it takes nothing.
    assert_eq!(old.reclaim().await.expect("reclaim"), None);
    let pending = |name: &'static str| {
        let (mut redis, stream) = (sale.redis.clone(), stream.clone());
        async move {
            redis::cmd("XPENDING")
                .arg(stream)
                .arg(WORKER_GROUP)
                .arg("-")
                .arg("+")
                .arg(100)
                .arg(name)
                .query_async::<Vec<redis::Value>>(&mut redis)
                .await
                .expect("xpending")
                .len()
        }
    };
    assert_eq!((pending("successor").await, pending("old").await), (5, 0));

    // So the successor decides the head of the line first: numbers 1 to 5.
    let step = successor.step(5, true).await.expect("step");
    assert_eq!(step.decided, 5);
    successor.settle().await.expect("recorded");
    let mut held = Vec::new();
    for (_, request) in &joined {
        let seen = status(&sale, request.request_id).await;
        if seen.state == RequestState::Held {
            held.push(seen.queue_number.expect("number"));
        }
    }
    held.sort_unstable();
    assert_eq!(held, [1, 2, 3, 4, 5], "decided out of line order");
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
