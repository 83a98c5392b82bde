//! The line through the API: joining with Idempotency-Key, reading, leaving, the
//! lottery and the operators' levers.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

async fn join(
    app: &TestApp,
    event: &str,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/events/{event}/requests")))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("sent")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_joins_once_reads_its_place_and_leaves(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    let lottery: Value = app
        .get_json(&format!("/v1/events/{event}/lottery"), None)
        .await;
    assert_eq!(lottery["commitment"].as_str().map(str::len), Some(64));
    assert_eq!(
        lottery["seed"],
        Value::Null,
        "the seed stays secret until the draw"
    );

    let opened = app
        .post(
            &format!("/v1/ops/events/{event}/open"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::OK);
    let lottery: Value = app
        .get_json(&format!("/v1/events/{event}/lottery"), None)
        .await;
    assert_eq!(lottery["seed"].as_str().map(str::len), Some(64));

    let fan = app.fan_token("fan@example.com").await;
    let ask = json!({"quantity": 2, "section": "Floor"});
    let first = join(&app, &event, &fan, Some("key-1"), &ask).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("json");
    assert_eq!(
        (first["queue_number"].clone(), first["position"].clone()),
        (json!(1), json!(1))
    );

    // A retry with the same key is the same request; another body with it is refused.
    let retry: Value = join(&app, &event, &fan, Some("key-1"), &ask)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(retry["request_id"], first["request_id"]);
    let reused = join(&app, &event, &fan, Some("key-1"), &json!({"quantity": 1})).await;
    let reused = assert_error(reused, StatusCode::CONFLICT, "idempotency_key_reused").await;
    assert_eq!(
        reused["request_id"], first["request_id"],
        "names the key's request"
    );
    let again = join(&app, &event, &fan, None, &ask).await;
    let again = assert_error(again, StatusCode::CONFLICT, "already_in_line").await;
    assert_eq!(
        again["request_id"], first["request_id"],
        "names the request in line"
    );

    let path = format!("/v1/requests/{}", first["request_id"].as_str().expect("id"));
    let status: Value = app.get_json(&path, Some(&fan)).await;
    assert_eq!(
        (status["state"].clone(), status["position"].clone()),
        (json!("queued"), json!(1))
    );
    let stranger = app.fan_token("stranger@example.com").await;
    assert_error(
        app.get(&path, Some(&stranger)).await,
        StatusCode::NOT_FOUND,
        "request_not_found",
    )
    .await;

    let left = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&fan)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        left.json::<Value>().await.expect("json")["state"],
        "cancelled"
    );
    assert_eq!(
        join(&app, &event, &fan, None, &ask).await.status(),
        StatusCode::ACCEPTED,
        "a fan who left may join again"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_requests_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event) = app.opened_event().await;
    let fan = app.fan_token("fan@example.com").await;
    let cases = [
        (
            json!({"quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"quantity": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "over_limit",
        ),
        (
            json!({"seats": ["Floor-Z-1"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_seat",
        ),
        (
            json!({"seats": ["not a seat"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_seat",
        ),
        (
            json!({"quantity": 1, "section": "Roof"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_section",
        ),
        (
            json!({"quantity": 1, "price_tier": "gold"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_price_tier",
        ),
        (
            json!({"quantity": 1, "seats": ["Floor-A-1"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"quantity": 1, "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(join(&app, &event, &fan, None, &body).await, status, code).await;
    }
    let bad_key = join(
        &app,
        &event,
        &fan,
        Some("has space"),
        &json!({"quantity": 1}),
    )
    .await;
    assert_error(bad_key, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        join(
            &app,
            &unknown.to_string(),
            &fan,
            None,
            &json!({"quantity": 1}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "event_not_found",
    )
    .await;
    assert_error(
        app.post(
            &format!("/v1/events/{event}/requests"),
            None,
            &json!({"quantity": 1}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    // Nothing was put in line: the next fan is number 1.
    let ok: Value = join(&app, &event, &fan, None, &json!({"quantity": 1}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ok["queue_number"], 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn only_operators_pull_levers_and_only_in_order(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    let fan = app.fan_token("fan@example.com").await;
    let lever = |action: &str| format!("/v1/ops/events/{event}/{action}");
    assert_error(
        app.post(&lever("pause"), Some(&fan), &json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        app.post(&lever("pause"), Some(&admin), &json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    assert_error(
        app.post(&lever("explode"), Some(&admin), &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    for (action, state) in [
        ("open", "open"),
        ("pause", "paused"),
        ("resume", "open"),
        ("close", "closed"),
    ] {
        let sale: Value = app
            .post(&lever(action), Some(&admin), &json!({}))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(sale["state"], state, "after {action}");
    }
    assert_error(
        join(&app, &event, &fan, None, &json!({"quantity": 1})).await,
        StatusCode::CONFLICT,
        "sale_closed",
    )
    .await;

    let admission = app
        .client
        .put(app.url(&format!("/v1/ops/events/{event}/admission")))
        .bearer_auth(&admin)
        .json(&json!({"per_second": 250}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        admission.json::<Value>().await.expect("json")["admission_per_second"],
        250
    );
    let audit: Vec<(String,)> = sqlx::query_as(
        "SELECT action FROM waiting_room.audit WHERE event_id = $1::uuid ORDER BY audit_id",
    )
    .bind(&event)
    .fetch_all(&app.pool)
    .await
    .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|(a,)| a.as_str()).collect();
    assert_eq!(actions, ["open", "pause", "resume", "close", "admission"]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_join_works_after_redis_forgot_its_scripts(pool: PgPool) {
    // As after a Redis restart: the script cache is empty, and the one-round-trip
    // join falls back to loading the script.
    let app = spawn_app(pool).await;
    let (_, event) = app.opened_event().await;
    let mut redis = app.redis.clone();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .expect("flush");
    let fan = app.fan_token("fan@example.com").await;
    let joined = join(&app, &event, &fan, None, &json!({"quantity": 1})).await;
    assert_eq!(joined.status(), StatusCode::ACCEPTED);
    let joined: Value = joined.json().await.expect("json");
    let path = format!(
        "/v1/requests/{}",
        joined["request_id"].as_str().expect("id")
    );
    let status: Value = app.get_json(&path, Some(&fan)).await;
    assert_eq!(status["state"], "queued");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_join_reloads_a_seat_map_redis_lost(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event) = app.opened_event().await;
    let event_id: proto::EventId = event.parse().expect("id");
    let mut redis = app.redis.clone();
    let _: () = redis::pipe()
        .del(app.keys.seat_states(event_id))
        .del(app.keys.seat_counts(event_id))
        .del(app.keys.layout(event_id))
        .del(app.keys.row_free(event_id))
        .query_async(&mut redis)
        .await
        .expect("forget");
    let fan = app.fan_token("fan@example.com").await;
    let joined = join(&app, &event, &fan, None, &json!({"seats": ["Floor-A-3"]})).await;
    assert_eq!(joined.status(), StatusCode::ACCEPTED);
    let exists: bool = redis::cmd("EXISTS")
        .arg(app.keys.layout(event_id))
        .query_async(&mut redis)
        .await
        .expect("exists");
    assert!(exists, "the seat map was loaded again");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn concurrent_joins_share_script_calls_and_each_fan_is_in_line_once(pool: PgPool) {
    use waiting_room::requests::{Ask, idempotency_digest};
    use waiting_room::{Error, Joiner};

    let app = spawn_app(pool.clone()).await;
    let (_, event) = app.opened_event().await;
    let event_id: proto::EventId = event.parse().expect("id");
    let joiner = Joiner::start(pool, app.redis.clone(), app.keys.clone(), None);

    // Every fan asks twice at once: even fans retry with the same Idempotency-Key,
    // odd fans ask again from a second device, without one.
    const FANS: usize = 300;
    let fans: Vec<proto::UserId> = (0..FANS).map(|_| proto::UserId::new()).collect();
    let mut tasks = Vec::new();
    for (i, fan) in fans.iter().copied().enumerate() {
        for _ in 0..2 {
            let joiner = joiner.clone();
            let key = (i % 2 == 0).then(|| idempotency_digest(&format!("k-{i}")).expect("key"));
            tasks.push(tokio::spawn(async move {
                let ask = Ask::Best {
                    quantity: 1,
                    section: Some("Floor".into()),
                    price_tier: None,
                };
                (i, joiner.join(event_id, fan, &ask, key.as_deref()).await)
            }));
        }
    }
    let mut accepted: Vec<Vec<(proto::RequestId, u64)>> = vec![Vec::new(); FANS];
    let mut already_in_line = 0;
    for task in tasks {
        match task.await.expect("task") {
            (i, Ok(joined)) => {
                accepted[i].push((joined.request_id, joined.queue_number.expect("numbered")))
            }
            (
                _,
                Err(Error::Refused {
                    code: proto::ErrorCode::AlreadyInLine,
                    ..
                }),
            ) => already_in_line += 1,
            (i, Err(error)) => panic!("fan {i}: {error:?}"),
        }
    }
    for (i, answers) in accepted.iter().enumerate() {
        let expected = if i % 2 == 0 { 2 } else { 1 };
        assert_eq!(answers.len(), expected, "fan {i}: {answers:?}");
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "fan {i}'s retry is the same request: {answers:?}"
        );
    }
    assert_eq!(already_in_line, FANS / 2);
    let mut numbers: Vec<u64> = accepted.iter().map(|a| a[0].1).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=FANS as u64).collect::<Vec<_>>());

    let mut redis = app.redis.clone();
    let (streamed, bound): (usize, std::collections::HashMap<String, String>) = redis::pipe()
        .xlen(app.keys.stream(event_id))
        .hgetall(app.keys.fans(event_id))
        .query_async(&mut redis)
        .await
        .expect("line");
    assert_eq!(streamed, FANS, "one stream entry per accepted request");
    for (i, fan) in fans.iter().enumerate() {
        assert_eq!(
            bound.get(&fan.to_string()),
            Some(&accepted[i][0].0.to_string()),
            "fan {i} is bound to its request"
        );
    }
    let calls = joiner.calls();
    assert!(
        calls < (FANS as u64) / 2,
        "{} joins took {calls} script calls",
        2 * FANS
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_anonymous_lottery_read_writes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    // The sale, with its commitment, is made with the event.
    assert_eq!(app.count("waiting_room.sales").await, 1);
    let (commitment, updated_at): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT commitment, updated_at FROM waiting_room.sales WHERE event_id = $1::uuid",
    )
    .bind(&event)
    .fetch_one(&app.pool)
    .await
    .expect("the event's sale");
    for _ in 0..3 {
        let lottery: Value = app
            .get_json(&format!("/v1/events/{event}/lottery"), None)
            .await;
        assert_eq!(lottery["commitment"], commitment.as_str());
    }
    let after: (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT commitment, updated_at FROM waiting_room.sales WHERE event_id = $1::uuid",
    )
    .bind(&event)
    .fetch_one(&app.pool)
    .await
    .expect("the event's sale");
    assert_eq!(after, (commitment, updated_at), "the sale is as it was");

    // An event made before sales came with their events has none; reading its
    // lottery says so and makes none.
    let venue_id: proto::VenueId =
        sqlx::query_scalar("SELECT venue_id FROM inventory.events WHERE event_id = $1::uuid")
            .bind(&event)
            .fetch_one(&app.pool)
            .await
            .expect("venue");
    let older = inventory::events::create(
        &app.pool,
        &proto::wire::inventory::CreateEvent {
            venue_id,
            name: "Older Show".into(),
            starts_at: chrono::Utc::now() + chrono::Duration::days(30),
            onsale_at: chrono::Utc::now() + chrono::Duration::days(1),
            max_per_fan: 4,
            hold_seconds: 600,
            prices: [("standard".to_owned(), 4500), ("premium".to_owned(), 9900)].into(),
            admission_per_second: 100,
            refund_policy: None,
            tax: None,
        },
    )
    .await
    .expect("event without a sale");
    assert_error(
        app.get(&format!("/v1/events/{older}/lottery"), None).await,
        StatusCode::NOT_FOUND,
        "sale_not_found",
    )
    .await;
    assert_error(
        app.get(
            &format!("/v1/events/{}/lottery", uuid::Uuid::new_v4()),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "event_not_found",
    )
    .await;
    assert_eq!(app.count("waiting_room.sales").await, 1);

    // An operator's lever still sets up the older event's sale.
    let opened = app
        .post(
            &format!("/v1/ops/events/{older}/open"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::OK);
    let lottery: Value = app
        .get_json(&format!("/v1/events/{older}/lottery"), None)
        .await;
    assert_eq!(lottery["seed"].as_str().map(str::len), Some(64));
}

/// The drawn order comes in pages by queue number, each read an index range of
/// its size; pages put together are the whole order, each request once. A drawn
/// page may be cached for a day (it never changes).
#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_drawn_order_is_read_in_pages(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    for i in 0..7 {
        let fan = app.fan_token(&format!("prequeue-{i}@example.com")).await;
        let joined = join(&app, &event, &fan, None, &json!({"quantity": 1})).await;
        assert_eq!(joined.status(), StatusCode::ACCEPTED);
    }
    let before = app.get(&format!("/v1/events/{event}/lottery"), None).await;
    assert_eq!(
        before.headers()["cache-control"],
        "public, max-age=5",
        "before the draw the answer changes"
    );
    let opened = app
        .post(
            &format!("/v1/ops/events/{event}/open"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::OK);

    let drawn: Vec<String> = sqlx::query_scalar(
        "SELECT request_id::text FROM waiting_room.draw_entries WHERE event_id = $1::uuid
         ORDER BY queue_number",
    )
    .bind(&event)
    .fetch_all(&app.pool)
    .await
    .expect("the draw");
    assert_eq!(drawn.len(), 7);
    let (mut pages, mut read) = (Vec::new(), Vec::new());
    let mut after = 0;
    loop {
        let response = app
            .get(
                &format!("/v1/events/{event}/lottery?after={after}&limit=3"),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let cache = response.headers()["cache-control"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(cache.contains("immutable"), "{cache}");
        let page: Value = response.json().await.expect("json");
        let ids = page["order"].as_array().expect("the order, after the draw");
        pages.push(ids.len());
        read.extend(ids.iter().map(|id| id.as_str().expect("id").to_owned()));
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(read, drawn, "the pages put together are the drawn order");
    assert_eq!(pages, [3, 3, 1]);
    // The default page holds them all; a limit outside 1..=5000 is refused.
    let whole: Value = app
        .get_json(&format!("/v1/events/{event}/lottery"), None)
        .await;
    assert_eq!(whole["order"].as_array().map(Vec::len), Some(7));
    assert_eq!(whole["next_after"], Value::Null);
    for bad in ["limit=0", "limit=5001", "after=-1", "page=2"] {
        let response = app
            .get(&format!("/v1/events/{event}/lottery?{bad}"), None)
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}
