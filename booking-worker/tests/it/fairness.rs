use std::time::Duration;

use sqlx::PgPool;
use waiting_room::lottery;
use waiting_room::requests::Ask;

use crate::helpers::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn best_available_seats_go_in_queue_number_order(pool: PgPool) {
    // One row of 40 seats; 60 fans each ask for 2. The first 20 in line must get
    // seats 1-2, 3-4, ... in order, and every later fan is told sold out.
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 40, 4).await;
    let asks = (0..60)
        .map(|_| Ask::Best {
            quantity: 2,
            section: Some("Floor".into()),
            price_tier: None,
        })
        .collect();
    assert_eq!(sale.join_many(asks, 16).await.len(), 60);
    sale.open().await;
    let workers: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| start(sale.worker(n, fast_settings())))
        .collect();
    sale.wait_for(Duration::from_secs(30), "every request decided", |o| {
        o.values().sum::<i64>() == 60
    })
    .await;
    for (stop, task) in workers {
        stop.cancel();
        task.await.expect("join").expect("worker");
    }

    let decided: Vec<(i32, String, Vec<String>, Option<String>)> = sqlx::query_as(
        "SELECT queue_number, state, seats, reason FROM booking.requests WHERE event_id = $1 ORDER BY queue_number",
    )
    .bind(sale.event_id)
    .fetch_all(&sale.pool)
    .await
    .expect("decided");
    let numbers: Vec<i32> = decided.iter().map(|d| d.0).collect();
    assert_eq!(numbers, (1..=60).collect::<Vec<_>>());
    for (number, state, seats, reason) in &decided {
        if *number <= 20 {
            let first = 2 * number - 1;
            assert_eq!(state, "held", "fan #{number}");
            assert_eq!(
                seats,
                &vec![
                    format!("Floor-R1-{first}"),
                    format!("Floor-R1-{}", first + 1)
                ],
                "fan #{number}"
            );
        } else {
            assert_eq!(
                (state.as_str(), reason.as_deref()),
                ("rejected", Some("sold_out")),
                "fan #{number}"
            );
        }
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_revealed_seed_reproduces_the_drawn_order(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 2, 20, 4).await;
    let asks = one_seat_each(200);
    let joined = sale.join_many(asks, 16).await;
    assert!(
        joined
            .iter()
            .all(|(_, j)| j.queue_number.is_none() && j.position.is_none()),
        "pre-queue requests have no number"
    );

    // Before the draw: a commitment, no seed.
    let before = waiting_room::sale::ensure_sale(&sale.pool, sale.event_id)
        .await
        .expect("sale");
    assert_eq!(before.commitment, lottery::commitment(&before.seed));

    // A fan arriving during the draw is numbered right behind the cohort.
    assert_eq!(sale.open().await, 200);
    let late = sale
        .join(
            proto::UserId::new(),
            &Ask::Best {
                quantity: 1,
                section: None,
                price_tier: None,
            },
        )
        .await
        .expect("late join");
    assert_eq!(late.queue_number, Some(201));

    let published: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT request_id, queue_number FROM waiting_room.draw_entries WHERE event_id = $1 ORDER BY queue_number")
            .bind(sale.event_id)
            .fetch_all(&sale.pool)
            .await
            .expect("draw");
    let cohort: Vec<proto::RequestId> = joined.iter().map(|(_, j)| j.request_id).collect();
    let recomputed = lottery::draw_order(&before.seed, &cohort);
    assert_eq!(
        published
            .iter()
            .map(|(r, _)| proto::RequestId::from(*r))
            .collect::<Vec<_>>(),
        recomputed
    );

    // Each request carries the number the published order gives it.
    let mut redis = sale.redis.clone();
    for (request, number) in published.iter().take(50) {
        let status = waiting_room::requests::status_of(
            &mut redis,
            &sale.keys,
            sale.event_id,
            (*request).into(),
        )
        .await
        .expect("status");
        assert_eq!(status.queue_number, Some(*number as u64));
        assert_eq!(status.position, Some(*number as u64), "nobody served yet");
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_draw_cut_off_before_the_ledger_heard_of_it_is_finished_by_the_next(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 20, 4).await;
    assert_eq!(sale.join_many(one_seat_each(50), 16).await.len(), 50);
    assert_eq!(sale.open().await, 50);
    let mut redis = sale.redis.clone();
    let streamed: i64 = redis::cmd("XLEN")
        .arg(sale.keys.stream(sale.event_id))
        .query_async(&mut redis)
        .await
        .expect("xlen");

    // As if the drawer had stopped right after Redis opened the sale: the ledger still
    // says drawing and holds no record of the opening.
    sqlx::query(
        "UPDATE waiting_room.sales SET state = 'drawing', drawn_at = NULL, cohort_size = NULL
         WHERE event_id = $1",
    )
    .bind(sale.event_id)
    .execute(&sale.pool)
    .await
    .expect("rewind the ledger");
    sqlx::query("DELETE FROM waiting_room.audit WHERE event_id = $1 AND action = 'open'")
        .bind(sale.event_id)
        .execute(&sale.pool)
        .await
        .expect("forget the opening");
    // Its on-sale time has come, so the scheduler's next tick takes it up again.
    sqlx::query(
        "UPDATE inventory.events SET onsale_at = now() - interval '1 minute' WHERE event_id = $1",
    )
    .bind(sale.event_id)
    .execute(&sale.pool)
    .await
    .expect("on-sale time");
    let opened = waiting_room::draw_due_sales(&sale.pool, &mut redis, &sale.keys)
        .await
        .expect("scheduler tick");
    assert_eq!(opened, 1, "the scheduler's draw finished the opening");

    let (state, cohort): (String, Option<i32>) =
        sqlx::query_as("SELECT state, cohort_size FROM waiting_room.sales WHERE event_id = $1")
            .bind(sale.event_id)
            .fetch_one(&sale.pool)
            .await
            .expect("sale");
    assert_eq!((state.as_str(), cohort), ("open", Some(50)));
    let openings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM waiting_room.audit WHERE event_id = $1 AND action = 'open'",
    )
    .bind(sale.event_id)
    .fetch_one(&sale.pool)
    .await
    .expect("audit");
    assert_eq!(openings, 1);
    let after: i64 = redis::cmd("XLEN")
        .arg(sale.keys.stream(sale.event_id))
        .query_async(&mut redis)
        .await
        .expect("xlen");
    assert_eq!(after, streamed, "nobody streamed twice");
    let due = waiting_room::sale::due_for_draw(&sale.pool)
        .await
        .expect("due");
    assert!(!due.contains(&sale.event_id), "nothing left to draw");
}
