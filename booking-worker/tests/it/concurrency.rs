use std::time::Duration;

use proto::SeatId;
use rand::Rng;
use sqlx::PgPool;
use waiting_room::requests::Ask;

use crate::helpers::*;

/// A mix of asks: specific seats (often contested) and best-available.
fn asks(n: usize, sections: &[&str], rows: u32, seats: u32) -> Vec<Ask> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            if rng.random_bool(0.5) {
                let section = sections[rng.random_range(0..sections.len())];
                let row = rng.random_range(1..=rows);
                let first = rng.random_range(1..=seats - 1);
                Ask::Seats(vec![
                    SeatId::new(section, &format!("R{row}"), first),
                    SeatId::new(section, &format!("R{row}"), first + 1),
                ])
            } else {
                Ask::Best {
                    quantity: rng.random_range(1..=4),
                    section: None,
                    price_tier: None,
                }
            }
        })
        .collect()
}

async fn stop_all(
    workers: Vec<(
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
) {
    for (stop, task) in workers {
        stop.cancel();
        task.await.expect("join").expect("worker");
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn thousands_of_requests_never_hold_a_seat_twice(pool: PgPool) {
    // 2 sections × 3 rows × 10 seats = 60 seats for 3,000 requests.
    let mut sale = sale(pool, &redis_url(), &["Floor", "Balcony"], 3, 10, 4).await;
    let accepted = sale
        .join_many(asks(3_000, &["Floor", "Balcony"], 3, 10), 64)
        .await;
    assert_eq!(
        accepted.len(),
        3_000,
        "every join in the pre-queue is accepted"
    );
    // Holds last 3 s, so the end of the test sees them expire for real.
    sale.set_hold_ms(3_000).await;
    sale.open().await;

    let names = ["w1", "w2", "w3"];
    let workers: Vec<_> = names
        .iter()
        .map(|name| start(sale.worker(name, fast_settings())))
        .collect();
    let total = accepted.len() as i64;
    sale.wait_for(Duration::from_secs(60), "every request decided", |o| {
        o.values().sum::<i64>() == total
    })
    .await;
    // Quiescent: no sweeper runs while the invariants are read.
    stop_all(workers).await;

    let outcomes = sale.outcomes().await;
    assert!(
        outcomes.get("held").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .keys()
            .all(|s| ["held", "rejected", "expired"].contains(&s.as_str())),
        "{outcomes:?}"
    );
    let unexplained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.requests WHERE event_id = $1 AND state = 'rejected' AND reason IS NULL",
    )
    .bind(sale.event_id)
    .fetch_one(&sale.pool)
    .await
    .expect("count");
    assert_eq!(unexplained, 0, "a rejection without a reason");
    sale.assert_no_seat_held_twice(60).await;
    sale.assert_redis_agrees_with_ledger().await;

    // Every other hold is released by its fan; the rest expire.
    let held: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT request_id FROM booking.requests WHERE event_id = $1 AND state = 'held' ORDER BY queue_number")
            .bind(sale.event_id)
            .fetch_all(&sale.pool)
            .await
            .expect("held");
    let mut redis = sale.redis.clone();
    for (request,) in held.iter().step_by(2) {
        let status = waiting_room::requests::leave(
            &sale.pool,
            &mut redis,
            &sale.keys,
            sale.event_id,
            (*request).into(),
        )
        .await
        .expect("leave");
        assert!(
            ["released", "expired"].contains(&status.state.as_str()),
            "{status:?}"
        );
    }
    let workers: Vec<_> = names
        .iter()
        .map(|name| start(sale.worker(name, fast_settings())))
        .collect();
    sale.wait_for(Duration::from_secs(30), "every hold ended", |o| {
        o.get("held").copied().unwrap_or(0) == 0
    })
    .await;
    stop_all(workers).await;

    let outcomes = sale.outcomes().await;
    assert_eq!(outcomes.values().sum::<i64>(), total);
    assert!(
        outcomes.get("released").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("expired").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    sale.assert_redis_agrees_with_ledger().await;
    let counts = inventory::seatmap::counts(&mut redis, &sale.keys, sale.event_id)
        .await
        .expect("counts")
        .expect("loaded");
    assert_eq!((counts.available, counts.held, counts.sold), (60, 0, 0));
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn expired_seats_go_to_the_fans_waiting_for_them(pool: PgPool) {
    // 10 seats, 30 fans: each hold expires, and the line behind waits for its seat
    // instead of being told "sold out".
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    sale.set_hold_ms(300).await;
    let asks = one_seat_each(30);
    assert_eq!(sale.join_many(asks, 8).await.len(), 30);
    sale.open().await;
    let settings = booking_worker::DrainSettings {
        sold_out_horizon_ms: 60_000,
        ..fast_settings()
    };
    let worker = start(sale.worker("w", settings));
    sale.wait_for(Duration::from_secs(60), "every fan held a seat once", |o| {
        o.get("expired").copied().unwrap_or(0) == 30
    })
    .await;
    stop_all(vec![worker]).await;
    sale.assert_redis_agrees_with_ledger().await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn each_decision_is_written_to_the_ledger_once(pool: PgPool) {
    // Small batches, so many ledger writes are in flight while later batches are read:
    // a batch whose write has not yet been acknowledged must not be read and decided
    // again. A row written twice has `updated_at` later than `decided_at`.
    let mut sale = sale(pool, &redis_url(), &["Floor"], 2, 10, 4).await;
    let accepted = sale.join_many(asks(1_000, &["Floor"], 2, 10), 32).await;
    sale.open().await;
    let settings = booking_worker::DrainSettings {
        batch_size: 25,
        lease_ms: 10_000,
        ..fast_settings()
    };
    let worker = start(sale.worker("w", settings));
    let total = accepted.len() as i64;
    sale.wait_for(Duration::from_secs(60), "every request decided", |o| {
        o.values().sum::<i64>() == total
    })
    .await;
    stop_all(vec![worker]).await;
    let rewritten: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.requests WHERE event_id = $1 AND updated_at <> decided_at",
    )
    .bind(sale.event_id)
    .fetch_one(&sale.pool)
    .await
    .expect("count");
    assert_eq!(
        rewritten, 0,
        "decisions written to the ledger more than once"
    );
    sale.assert_no_seat_held_twice(20).await;
    sale.assert_redis_agrees_with_ledger().await;
}
