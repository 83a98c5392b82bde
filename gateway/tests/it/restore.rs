//! Losing an event's Redis keys outright, mid-sale, and restoring them from Postgres
//! through `POST /v1/ops/events/{id}/restore`, with a booking worker draining.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

async fn state_of(app: &TestApp, token: &str, request: &str) -> (StatusCode, Value) {
    let response = app
        .get(&format!("/v1/requests/{request}"), Some(token))
        .await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every key of the event, deleted at once: what an eviction, a flush or a lost
/// shard does.
async fn lose_event_keys(app: &TestApp, event: &str) -> usize {
    let mut redis = app.redis.clone();
    let pattern = format!("{}:{{ev:{event}}}:*", app.keys.prefix())
        .replace('{', "\\{")
        .replace('}', "\\}");
    let mut cursor: u64 = 0;
    let mut lost = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut redis)
            .await
            .expect("scan");
        if !keys.is_empty() {
            lost += keys.len();
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .expect("del");
        }
        if next == 0 {
            return lost;
        }
        cursor = next;
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_event_whose_redis_keys_are_lost_mid_sale_is_restored_from_postgres(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    // 30 seats, 45 fans of one seat each: some held, the rest in line, when the keys go.
    let mut fans = Vec::new();
    for _ in 0..45 {
        let token = minted_fan_token();
        let response = app
            .client
            .post(app.url(&format!("/v1/events/{event}/requests")))
            .bearer_auth(&token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .expect("join");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.expect("json");
        fans.push((token, body["request_id"].as_str().expect("id").to_owned()));
    }
    let opened = app
        .post(
            &format!("/v1/ops/events/{event}/open"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::OK);
    let rate = app
        .client
        .put(app.url(&format!("/v1/ops/events/{event}/admission")))
        .bearer_auth(&admin)
        .json(&json!({"per_second": 10}))
        .send()
        .await
        .expect("rate");
    assert_eq!(rate.status(), StatusCode::OK);

    let (stop, farm) = app.start_worker();

    // Mid-sale: some holds in the ledger, the line not yet through.
    let held = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM booking.requests WHERE event_id = $1::uuid AND state = 'held'",
        )
        .bind(&event)
        .fetch_one(&app.pool)
        .await
        .expect("held")
    };
    let started = Instant::now();
    while held().await < 5 {
        assert!(started.elapsed() < Duration::from_secs(30), "no holds");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = lose_event_keys(&app, &event).await;
    assert!(lost > 10, "only {lost} keys");
    // While Redis has lost them, fans read their requests from Postgres.
    for (token, request) in &fans {
        let (status, body) = state_of(&app, token, request).await;
        assert_eq!(status, StatusCode::OK, "{request}: {body}");
        assert!(
            ["queued", "held", "rejected"].contains(&body["state"].as_str().unwrap_or_default()),
            "{request}: {body}"
        );
    }

    // Nobody joins a line Redis lost: numbers would start again from one.
    let late = app
        .client
        .post(app.url(&format!("/v1/events/{event}/requests")))
        .bearer_auth(minted_fan_token())
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .expect("join");
    assert_error(late, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;

    // An open sale is not restored behind the farm's back...
    let refused = app
        .post(
            &format!("/v1/ops/events/{event}/restore"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_error(refused, StatusCode::CONFLICT, "invalid_transition").await;
    // ...unless the restore pauses it.
    let restored = app
        .post(
            &format!("/v1/ops/events/{event}/restore"),
            Some(&admin),
            &json!({"pause": true}),
        )
        .await;
    assert_eq!(restored.status(), StatusCode::OK);
    let report: Value = restored.json().await.expect("report");
    assert_eq!(report["state"], "paused");
    let decided = report["decided_requests"].as_u64().expect("decided");
    let queued = report["queued"].as_u64().expect("queued");
    assert_eq!(
        decided + queued,
        45,
        "every accepted request is back: {report}"
    );
    assert_eq!(report["holds"], report["held"], "{report}");

    // Every fan finds its request again, and a fan holding seats is still bound to
    // them (the per-fan rules survive the loss).
    for (token, request) in &fans {
        let (status, body) = state_of(&app, token, request).await;
        assert_eq!(status, StatusCode::OK, "{request}: {body}");
    }
    let resumed = app
        .post(
            &format!("/v1/ops/events/{event}/resume"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let _ = app
        .client
        .put(app.url(&format!("/v1/ops/events/{event}/admission")))
        .bearer_auth(&admin)
        .json(&json!({"per_second": 1000}))
        .send()
        .await
        .expect("rate");

    // The line drains to the end: 30 holds, 15 sold out, every request decided once.
    let started = Instant::now();
    let outcomes = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM booking.requests WHERE event_id = $1::uuid GROUP BY state",
        )
        .bind(&event)
        .fetch_all(&app.pool)
        .await
        .expect("outcomes");
        let rows: BTreeMap<String, i64> = rows.into_iter().collect();
        if rows.values().sum::<i64>() == 45 {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "outcomes {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    farm.await.expect("join").expect("worker");
    assert_eq!(outcomes.get("held"), Some(&30), "{outcomes:?}");
    assert_eq!(outcomes.get("rejected"), Some(&15), "{outcomes:?}");
    let mut seats = BTreeSet::new();
    for (token, request) in &fans {
        let (_, body) = state_of(&app, token, request).await;
        if body["state"] == "held" {
            for seat in body["seats"].as_array().expect("seats") {
                assert!(seats.insert(seat.to_string()), "seat {seat} held twice");
            }
        }
    }
    assert_eq!(seats.len(), 30);
    let mut redis = app.redis.clone();
    let event_id: proto::EventId = event.parse().expect("event id");
    let diff = inventory::seatmap::diff_against_ledger(&app.pool, &mut redis, &app.keys, event_id)
        .await
        .expect("diff");
    assert!(diff.is_empty(), "redis and postgres disagree: {diff:?}");
    let holds: i64 = redis::cmd("ZCARD")
        .arg(app.keys.holds(event_id))
        .query_async(&mut redis)
        .await
        .expect("holds");
    assert_eq!(holds, 30, "every restored or new hold will expire");
}
