//! The draw: a sale closed before it ends its pre-queue, and a draw run again around
//! a cancel hands out no number twice.

#[allow(unused_imports, reason = "the promises share one set of imports")]
use super::*;

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
