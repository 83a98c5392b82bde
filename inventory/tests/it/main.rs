//! Inventory's seat map against the real Postgres (a database per test) and Redis
//! (a key prefix per test), through the library functions operators' tools call.

mod snapshot;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use inventory::seatmap::{self, LoadMode};
use inventory::{events, venues};
use platform::store::Redis;
use proto::wire::inventory::{CreateEvent, CreateVenue, RowSpec, SectionSpec};
use proto::{EventId, Keys};
use sqlx::PgPool;

async fn redis() -> Redis {
    let url = std::env::var("REDIS_URL")
        .expect("REDIS_URL must name a Redis; run the tests through deploy/test");
    Redis::connect(&url).await.expect("redis")
}

fn keys() -> Keys {
    Keys::new(format!("test:{}", uuid::Uuid::new_v4().simple()))
}

/// A 3-row, 60-seat venue and an event on it.
async fn event(pool: &PgPool) -> EventId {
    let venue = venues::validate(CreateVenue {
        name: "Hall".into(),
        sections: vec![SectionSpec {
            name: "Stalls".into(),
            price_tier: "standard".into(),
            rows: ["A", "B", "C"]
                .iter()
                .map(|l| RowSpec {
                    label: (*l).into(),
                    seats: 20,
                })
                .collect(),
        }],
    })
    .expect("valid venue");
    let venue_id = venues::create(pool, &venue).await.expect("venue");
    events::create(
        pool,
        &CreateEvent {
            venue_id,
            name: "Matinee".into(),
            starts_at: Utc::now() + Duration::days(10),
            onsale_at: Utc::now() + Duration::days(1),
            max_per_fan: 4,
            hold_seconds: 600,
            prices: BTreeMap::from([("standard".into(), 3000)]),
            admission_per_second: 100,
            refund_policy: None,
            tax: None,
        },
    )
    .await
    .expect("event")
}

async fn sell(pool: &PgPool, event_id: EventId, seat: &str) {
    ledger::seed::sell(pool, event_id, &[seat])
        .await
        .expect("sale");
}

async fn staging_keys(redis: &mut Redis, keys: &Keys) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{}:*staging*", keys.prefix()))
        .query_async(redis)
        .await
        .expect("keys")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_rebuild_loads_every_seat_with_its_ledger_state(pool: PgPool) {
    let (mut redis, keys) = (redis().await, keys());
    let event_id = event(&pool).await;
    sell(&pool, event_id, "Stalls-B-7").await;

    let report = seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force)
        .await
        .expect("rebuild");
    assert!(report.committed);
    assert_eq!(
        (
            report.counts.available,
            report.counts.held,
            report.counts.sold
        ),
        (59, 0, 1)
    );
    assert!(
        seatmap::diff_against_ledger(&pool, &mut redis, &keys, event_id)
            .await
            .expect("diff")
            .is_empty()
    );
    assert_eq!(
        seatmap::counts(&mut redis, &keys, event_id)
            .await
            .expect("counts"),
        Some(report.counts)
    );
    assert!(
        staging_keys(&mut redis, &keys).await.is_empty(),
        "staging map left behind"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn if_absent_never_replaces_a_live_map(pool: PgPool) {
    let (mut redis, keys) = (redis().await, keys());
    let event_id = event(&pool).await;
    seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force)
        .await
        .expect("first load");
    // Postgres moves on; a lazy load must not clobber the live map with it (the
    // live map may hold fresher holds than the ledger has caught up with).
    sell(&pool, event_id, "Stalls-A-1").await;
    let report = seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::IfAbsent)
        .await
        .expect("lazy load");
    assert!(!report.committed);
    let live = seatmap::redis_states(&mut redis, &keys, event_id)
        .await
        .expect("states");
    assert_eq!(live.get("Stalls-A-1").map(String::as_str), Some("a"));
    assert!(
        staging_keys(&mut redis, &keys).await.is_empty(),
        "staging map left behind"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn concurrent_rebuilds_leave_one_consistent_map(pool: PgPool) {
    let (redis, keys) = (redis().await, keys());
    let event_id = event(&pool).await;
    for seat in ["Stalls-A-1", "Stalls-C-20"] {
        sell(&pool, event_id, seat).await;
    }
    let rebuilds: Vec<_> = (0..8)
        .map(|_| {
            let (pool, mut redis, keys) = (pool.clone(), redis.clone(), keys.clone());
            tokio::spawn(async move {
                seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force).await
            })
        })
        .collect();
    for rebuild in rebuilds {
        assert!(rebuild.await.expect("task").expect("rebuild").committed);
    }
    let mut redis = redis;
    assert!(
        seatmap::diff_against_ledger(&pool, &mut redis, &keys, event_id)
            .await
            .expect("diff")
            .is_empty()
    );
    let counts = seatmap::counts(&mut redis, &keys, event_id)
        .await
        .expect("counts")
        .expect("loaded");
    assert_eq!((counts.available, counts.sold), (58, 2));
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_audit_names_every_seat_that_differs(pool: PgPool) {
    let (mut redis, keys) = (redis().await, keys());
    let event_id = event(&pool).await;
    seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force)
        .await
        .expect("load");
    sell(&pool, event_id, "Stalls-A-5").await;
    let diff = seatmap::diff_against_ledger(&pool, &mut redis, &keys, event_id)
        .await
        .expect("diff");
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0].seat_id, "Stalls-A-5");
    assert_eq!(diff[0].redis.as_deref(), Some("a"));
}
