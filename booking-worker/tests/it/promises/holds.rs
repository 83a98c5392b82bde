//! Holds end whatever Redis holds: a release with no seat of its own, a restore in
//! progress, a seat map that lost its seats, stale entries in the sweep's zset.

#[allow(unused_imports, reason = "the promises share one set of imports")]
use super::*;

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
