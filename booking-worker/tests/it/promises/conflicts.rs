//! Ledger conflicts and section asks: a conflict does not cascade to the next fans,
//! and a section ask waits for its section instead of losing it.

#[allow(unused_imports, reason = "the promises share one set of imports")]
use super::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_ledger_conflict_does_not_cascade_to_the_next_fans(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    sale.open().await;
    // The ledger gives Floor-R1-1 to a request Redis never heard of (Redis lost it).
    let expires = Utc::now() + chrono::Duration::minutes(10);
    let owner = ledger::seed::hold(&sale.pool, sale.event_id, &["Floor-R1-1"], expires)
        .await
        .expect("the owner's hold");

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
