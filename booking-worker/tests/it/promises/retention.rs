//! Finished sales leave nothing behind in Redis.

#[allow(unused_imports, reason = "the promises share one set of imports")]
use super::*;

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
