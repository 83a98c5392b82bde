//! The anonymous seat-map GET under a flood: served from one shared snapshot per
//! event, through inventory's router on port 0, against the real Postgres and Redis.

use std::sync::Arc;
use std::time::Duration;

use inventory::snapshot::{Settings, Stats};
use inventory::{InventoryState, SeatMapCache};
use platform::auth::{TokenSettings, TokenVerifier};
use proto::EventId;
use proto::wire::seats::SeatState;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;

use super::{event, keys, redis};

/// A refresh interval no test outlives: every read after the first is within it.
const LONG: Duration = Duration::from_secs(3_600);

/// Inventory's router with `settings`, served on port 0; its base URL and its cache.
async fn serve(pool: &PgPool, settings: Settings) -> (String, Arc<SeatMapCache>, proto::Keys) {
    platform::runtime::init_test_tracing();
    let (redis, keys) = (redis().await, keys());
    let seat_maps = Arc::new(SeatMapCache::new(
        pool.clone(),
        redis.clone(),
        keys.clone(),
        settings,
    ));
    let state = InventoryState {
        pool: pool.clone(),
        redis,
        keys: keys.clone(),
        verifier: Arc::new(TokenVerifier::new(&TokenSettings {
            jwt_secret: SecretString::from("test-secret-test-secret-test-secret-0123"),
            jwt_previous_secret: None,
            issuer: "onsale".into(),
            audience: "onsale".into(),
        })),
        seat_maps: seat_maps.clone(),
        on_event_created: None,
    };
    let (router, _) = inventory::router().with_state(state).split_for_parts();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, seat_maps, keys)
}

fn settings(refresh: Duration) -> Settings {
    Settings {
        refresh,
        ..Settings::default()
    }
}

/// `count` GETs of the event's seat map at once; every answer's status and body.
async fn gets_at_once(base: &str, event_id: EventId, count: usize) -> Vec<(StatusCode, String)> {
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/events/{event_id}/seats");
    let mut gets = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (client, url) = (client.clone(), url.clone());
        gets.spawn(async move {
            let response = client.get(url).send().await.expect("sent");
            (response.status(), response.text().await.expect("body"))
        });
    }
    gets.join_all().await
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn fifty_cold_seat_map_gets_run_one_rebuild_and_one_redis_read(pool: PgPool) {
    // A cold event: Redis has no seat map for it, and this process no snapshot.
    let event_id = event(&pool).await;
    let (base, seat_maps, _) = serve(&pool, settings(LONG)).await;

    let answers = gets_at_once(&base, event_id, 50).await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
    assert!(
        answers.iter().all(|(_, body)| *body == answers[0].1),
        "everyone gets the same snapshot"
    );
    let seats: Vec<Value> = serde_json::from_str(&answers[0].1).expect("json");
    assert_eq!(seats.len(), 60);
    assert!(seats.iter().all(|seat| seat["state"] == "available"));
    assert_eq!(
        seat_maps.stats(),
        Stats {
            catalog_loads: 1,
            state_reads: 1,
            rebuilds: 1
        },
        "one catalog load, one rebuild and one read of the states for fifty GETs"
    );

    // Within the interval, more GETs (at once and one by one) read nothing again.
    gets_at_once(&base, event_id, 50).await;
    for _ in 0..10 {
        gets_at_once(&base, event_id, 1).await;
    }
    assert_eq!(seat_maps.stats().state_reads, 1);
    assert_eq!(seat_maps.stats().catalog_loads, 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_seat_map_is_sent_with_an_etag_and_a_repeat_gets_304(pool: PgPool) {
    let event_id = event(&pool).await;
    let (base, _, _) = serve(&pool, settings(LONG)).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/events/{event_id}/seats");
    let first = client.get(&url).send().await.expect("sent");
    assert_eq!(first.status(), StatusCode::OK);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&first, "content-type").as_deref(),
        Some("application/json")
    );
    // max-age is the refresh interval's, in seconds.
    assert_eq!(
        header(&first, "cache-control").as_deref(),
        Some("public, max-age=3600")
    );
    let etag = header(&first, "etag").expect("an etag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let repeat = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(repeat.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&repeat, "etag"), Some(etag.clone()));
    assert!(repeat.text().await.expect("body").is_empty());

    let other = client
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_seat_map_is_never_older_than_its_refresh_interval(pool: PgPool) {
    // An interval of zero: every GET must see Redis as it is now.
    let event_id = event(&pool).await;
    let (base, seat_maps, keys) = serve(&pool, settings(Duration::ZERO)).await;
    let first = gets_at_once(&base, event_id, 1).await;
    let body_before = first[0].1.clone();

    let mut redis = redis().await;
    let _: () = redis::cmd("HSET")
        .arg(keys.seat_states(event_id))
        .arg("Stalls-B-3")
        .arg(
            SeatState::Sold {
                request: proto::RequestId::new(),
            }
            .encode(),
        )
        .query_async(&mut redis)
        .await
        .expect("sell in redis");
    let after = gets_at_once(&base, event_id, 1).await;
    assert_ne!(after[0].1, body_before);
    let seats: Vec<Value> = serde_json::from_str(&after[0].1).expect("json");
    let sold: Vec<&Value> = seats.iter().filter(|s| s["state"] == "sold").collect();
    assert_eq!(sold.len(), 1);
    assert_eq!(sold[0]["seat_id"], "Stalls-B-3");
    assert_eq!(seat_maps.stats().state_reads, 2);
    assert_eq!(
        seat_maps.stats().catalog_loads,
        1,
        "the catalog is read once"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_snapshot_equals_the_seat_map_read_directly(pool: PgPool) {
    let event_id = event(&pool).await;
    let (base, _, keys) = serve(&pool, settings(LONG)).await;
    let served = gets_at_once(&base, event_id, 1).await;
    let mut redis = redis().await;
    let direct = inventory::seatmap::seat_map(&pool, &mut redis, &keys, event_id)
        .await
        .expect("seat map");
    assert_eq!(
        served[0].1,
        serde_json::to_string(&direct).expect("json"),
        "byte for byte"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_cache_holds_a_bounded_number_of_events(pool: PgPool) {
    let events = [event(&pool).await, event(&pool).await, event(&pool).await];
    let (base, seat_maps, _) = serve(
        &pool,
        Settings {
            max_events: 2,
            ..settings(LONG)
        },
    )
    .await;
    for event_id in events {
        assert_eq!(gets_at_once(&base, event_id, 1).await[0].0, StatusCode::OK);
        assert!(seat_maps.len() <= 2, "{} events cached", seat_maps.len());
    }
    assert_eq!(seat_maps.len(), 2);
    // The first event was dropped to make room: asking again loads it again.
    gets_at_once(&base, events[0], 1).await;
    assert_eq!(seat_maps.stats().catalog_loads, 4);

    // Events idle past `idle` are dropped too.
    let (base, seat_maps, _) = serve(
        &pool,
        Settings {
            idle: Duration::ZERO,
            ..settings(LONG)
        },
    )
    .await;
    for event_id in events {
        gets_at_once(&base, event_id, 1).await;
        assert_eq!(seat_maps.len(), 1, "only the event being read is kept");
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_unknown_event_is_404_and_takes_no_place_in_the_cache(pool: PgPool) {
    let (base, seat_maps, _) = serve(&pool, settings(LONG)).await;
    let answers = gets_at_once(&base, EventId::new(), 5).await;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["code"], "event_not_found");
    }
    assert!(seat_maps.is_empty());
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_failed_read_is_shared_by_the_requests_waiting_on_it(pool: PgPool) {
    let event_id = event(&pool).await;
    let (base, seat_maps, keys) = serve(&pool, settings(LONG)).await;
    // Loaded, then broken: one seat's state in Redis is not a state.
    let mut redis = redis().await;
    inventory::seatmap::rebuild(
        &pool,
        &mut redis,
        &keys,
        event_id,
        inventory::seatmap::LoadMode::Force,
    )
    .await
    .expect("load");
    let _: () = redis::cmd("HSET")
        .arg(keys.seat_states(event_id))
        .arg("Stalls-A-1")
        .arg("garbage")
        .query_async(&mut redis)
        .await
        .expect("break a seat");

    let answers = gets_at_once(&base, event_id, 20).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
            .count(),
        1,
        "the one read fails: {statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
            .count(),
        19,
        "the others get its failure without a read of their own: {statuses:?}"
    );
    assert_eq!(seat_maps.stats().state_reads, 1);
}
