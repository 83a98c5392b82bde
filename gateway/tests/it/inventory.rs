//! Venues, events and seat maps through the API, checked against Postgres and Redis.

use std::collections::BTreeMap;

use inventory::seatmap;
use proto::EventId;
use proto::wire::seats::SeatState;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_created_venue_counts_its_seats(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let response = app.post("/v1/venues", Some(&admin), &venue_body()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["seat_count"], 30);
    let venue_id = created["venue_id"].as_str().expect("venue_id");

    assert_eq!(
        app.count(&format!("inventory.seats WHERE venue_id = '{venue_id}'"))
            .await,
        30
    );
    let per_row: Vec<(String, String, i64, i32)> = sqlx::query_as(
        "SELECT sec.name, r.label, count(*), max(s.number) FROM inventory.seats s
         JOIN inventory.sections sec USING (venue_id, section_index)
         JOIN inventory.rows r USING (venue_id, section_index, row_index)
         WHERE s.venue_id = $1::uuid GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(venue_id)
    .fetch_all(&app.pool)
    .await
    .expect("query");
    assert_eq!(
        per_row,
        vec![
            ("Balcony".into(), "A".into(), 8, 8),
            ("Floor".into(), "A".into(), 10, 10),
            ("Floor".into(), "B".into(), 12, 12)
        ]
    );

    let venue: Value = app.get_json(&format!("/v1/venues/{venue_id}"), None).await;
    assert_eq!(venue["seat_count"], 30);
    assert_eq!(venue["sections"], venue_body()["sections"]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_new_event_is_all_available_in_the_api_and_in_redis(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event_id) = app.seeded_event().await;

    let event: Value = app.get_json(&format!("/v1/events/{event_id}"), None).await;
    assert_eq!(counts(&event), (30, 0, 0));
    assert_eq!(event["prices"], json!({"standard": 4500, "premium": 9900}));
    assert_eq!(event["hold_seconds"], 600);

    let seats: Vec<Value> = app
        .get_json(&format!("/v1/events/{event_id}/seats"), None)
        .await;
    assert_eq!(seats.len(), 30);
    assert_eq!(
        seats[0],
        json!({"seat_id": "Floor-A-1", "section": "Floor", "row": "A", "number": 1, "price_tier": "standard", "state": "available"})
    );
    assert_eq!(seats[29]["seat_id"], "Balcony-A-8");
    assert!(seats.iter().all(|s| s["state"] == "available"));

    let mut redis = app.redis.clone();
    let event_id: EventId = event_id.parse().expect("id");
    let live = seatmap::redis_states(&mut redis, &app.keys, event_id)
        .await
        .expect("redis");
    assert_eq!(live.len(), 30);
    assert!(live.values().all(|v| v == "a"));
}

/// Puts claims into the ledger as the booking workers will, and returns them.
async fn claim_some_seats(app: &TestApp, event_id: EventId) -> BTreeMap<String, SeatState> {
    let expires = chrono::Utc::now() + chrono::Duration::minutes(10);
    let mut claims = BTreeMap::new();
    let held = ["Floor-A-1", "Floor-A-2", "Balcony-A-8"];
    let held_by = ledger::seed::hold(&app.pool, event_id, &held, expires)
        .await
        .expect("hold");
    for seat in held {
        claims.insert(
            seat.to_owned(),
            SeatState::Held {
                request: held_by,
                expires_at_ms: expires.timestamp_millis(),
            },
        );
    }
    let sold = ["Floor-B-5", "Floor-B-6"];
    let sold_to = ledger::seed::sell(&app.pool, event_id, &sold)
        .await
        .expect("sale");
    for seat in sold {
        claims.insert(seat.to_owned(), SeatState::Sold { request: sold_to });
    }
    claims
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_seat_map_read_from_redis_equals_postgres_after_a_rebuild(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    let event_id: EventId = event.parse().expect("id");
    let claims = claim_some_seats(&app, event_id).await;

    // Redis diverges: one seat lost, one seat garbled, one seat invented.
    let mut redis = app.redis.clone();
    let key = app.keys.seat_states(event_id);
    let _: () = redis::pipe()
        .hdel(&key, "Floor-A-3")
        .hset(&key, "Floor-A-4", "garbage")
        .hset(&key, "Nowhere-Z-1", "a")
        .query_async(&mut redis)
        .await
        .expect("corrupt");
    assert_eq!(
        seatmap::diff_against_ledger(&app.pool, &mut redis, &app.keys, event_id)
            .await
            .expect("diff")
            .len(),
        3 + claims.len()
    );

    // A fan may not repair it; an admin may.
    let fan = app.fan_token("fan@example.com").await;
    let path = format!("/v1/ops/events/{event}/rebuild");
    assert_error(
        app.post(&path, Some(&fan), &json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let outcome: Value = app
        .post(&path, Some(&admin), &json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(counts(&outcome), (25, 3, 2));

    assert!(
        seatmap::diff_against_ledger(&app.pool, &mut redis, &app.keys, event_id)
            .await
            .expect("diff")
            .is_empty()
    );
    let ledger = seatmap::ledger_states(&app.pool, event_id)
        .await
        .expect("ledger");
    let seats: Vec<Value> = app
        .get_json(&format!("/v1/events/{event}/seats"), None)
        .await;
    assert_eq!(seats.len(), ledger.len());
    for (seat, (seat_id, state)) in seats.iter().zip(&ledger) {
        assert_eq!(seat["seat_id"], seat_id.as_str());
        assert_eq!(seat["state"], state.name().as_str(), "{seat_id}");
        let expected = claims
            .get(seat_id.as_str())
            .copied()
            .unwrap_or(SeatState::Available);
        assert_eq!(*state, expected, "{seat_id}");
    }
    let event: Value = app.get_json(&format!("/v1/events/{event}"), None).await;
    assert_eq!(counts(&event), (25, 3, 2));
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_event_redis_has_forgotten_is_reloaded_from_postgres_on_read(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event) = app.seeded_event().await;
    let event_id: EventId = event.parse().expect("id");
    let claims = claim_some_seats(&app, event_id).await;

    // As after a Redis restart without persistence.
    let mut redis = app.redis.clone();
    let _: () = redis::pipe()
        .del(app.keys.seat_states(event_id))
        .del(app.keys.seat_counts(event_id))
        .query_async(&mut redis)
        .await
        .expect("forget");

    let body: Value = app.get_json(&format!("/v1/events/{event}"), None).await;
    assert_eq!(counts(&body), (25, 3, 2));
    let seats: Vec<Value> = app
        .get_json(&format!("/v1/events/{event}/seats"), None)
        .await;
    let taken: Vec<&str> = seats
        .iter()
        .filter(|s| s["state"] != "available")
        .filter_map(|s| s["seat_id"].as_str())
        .collect();
    assert_eq!(taken.len(), claims.len());
    assert!(taken.iter().all(|seat| claims.contains_key(*seat)));
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn upcoming_events_are_listed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event_id) = app.seeded_event().await;
    let events: Vec<Value> = app.get_json("/v1/events", None).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_id"], event_id.as_str());
    assert_eq!(events[0]["seat_count"], 30);
}

/// A page that is not signed in has no socket: the seat map it polls (served from
/// a snapshot at most a second old) names the sale's state, so it needs no other
/// read to learn that the sale paused.
#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_seat_map_names_the_sales_state(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    let state = || async {
        let response = app.get(&format!("/v1/events/{event}/seats"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response
            .headers()
            .get("onsale-sale-state")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(state().await.as_deref(), Some("open"));
    let response = app
        .post(
            &format!("/v1/ops/events/{event}/pause"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match state().await.as_deref() {
            Some("paused") => break,
            Some("open") => {}
            other => panic!("the seat map named the sale {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the map still says open 5 s after the pause (its snapshot is at most 1 s old)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
