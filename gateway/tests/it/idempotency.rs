//! Idempotency-Key on the admins' and operators' requests: a retry gets the first
//! answer and has no second effect, whatever route family it is.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

/// Sends `method path` with a bearer token, an optional Idempotency-Key and a body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("sent")
}

fn replayed(response: &reqwest::Response) -> bool {
    response.headers().get("idempotent-replayed").is_some()
}

/// Status, whether it was replayed, and body.
async fn answer(response: reqwest::Response) -> (StatusCode, bool, Value) {
    let (status, replayed) = (response.status(), replayed(&response));
    (status, replayed, response.json().await.expect("json"))
}

async fn audit_rows(app: &TestApp, event: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT action FROM waiting_room.audit WHERE event_id = $1::uuid ORDER BY audit_id",
    )
    .bind(event)
    .fetch_all(&app.pool)
    .await
    .expect("audit")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_retried_venue_creation_returns_the_first_answer_and_creates_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let post = |key, body| send(&app, Method::POST, "/v1/venues", &admin, key, body);

    let (status, was_replayed, first) = answer(post(Some("venue-1"), venue_body()).await).await;
    assert_eq!((status, was_replayed), (StatusCode::CREATED, false));
    let (status, was_replayed, again) = answer(post(Some("venue-1"), venue_body()).await).await;
    assert_eq!((status, was_replayed), (StatusCode::CREATED, true));
    assert_eq!(again, first, "the first answer, venue id and all");
    assert_eq!(app.count("inventory.venues").await, 1);
    assert_eq!(app.count("inventory.seats").await, 30);

    let mut other = venue_body();
    other["name"] = json!("Another Arena");
    let reused = assert_error(
        post(Some("venue-1"), other).await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    )
    .await;
    assert!(reused.get("venue_id").is_none());
    assert_eq!(app.count("inventory.venues").await, 1);

    // Without a key, or with another, a request is a new request.
    assert_eq!(post(None, venue_body()).await.status(), StatusCode::CREATED);
    assert_eq!(
        post(Some("venue-2"), venue_body()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.count("inventory.venues").await, 3);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_retried_event_creation_returns_the_first_answer_and_creates_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let venue_id = app.create_venue(&admin, &venue_body()).await;
    let body = event_body(&venue_id);
    let post = |key, body| send(&app, Method::POST, "/v1/events", &admin, key, body);

    let (status, _, first) = answer(post(Some("event-1"), body.clone()).await).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, was_replayed, again) = answer(post(Some("event-1"), body.clone()).await).await;
    assert_eq!(
        (status, was_replayed, &again),
        (StatusCode::CREATED, true, &first)
    );
    assert_eq!(app.count("inventory.events").await, 1);
    assert_eq!(app.count("waiting_room.sales").await, 1);

    let mut other = body.clone();
    other["name"] = json!("Another Show");
    assert_error(
        post(Some("event-1"), other).await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.count("inventory.events").await, 1);

    // An operator's rebuild is covered as well.
    let event = first["event_id"].as_str().expect("event_id");
    let rebuild = format!("/v1/ops/events/{event}/rebuild");
    let (status, _, rebuilt) = answer(
        send(
            &app,
            Method::POST,
            &rebuild,
            &admin,
            Some("rebuild-1"),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, was_replayed, again) = answer(
        send(
            &app,
            Method::POST,
            &rebuild,
            &admin,
            Some("rebuild-1"),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!((status, was_replayed), (StatusCode::OK, true));
    assert_eq!(
        again["generation"], rebuilt["generation"],
        "not rebuilt twice"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_retried_lever_returns_the_first_answer_and_pulls_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    let lever = |action: &str| format!("/v1/ops/events/{event}/{action}");

    let (status, _, opened) = answer(
        send(
            &app,
            Method::POST,
            &lever("open"),
            &admin,
            Some("k-open"),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(opened["state"], "open");
    // Pulled again, `open` would be an invalid transition; the retry is the first answer.
    let (status, was_replayed, again) = answer(
        send(
            &app,
            Method::POST,
            &lever("open"),
            &admin,
            Some("k-open"),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, was_replayed, &again),
        (StatusCode::OK, true, &opened)
    );
    assert_eq!(audit_rows(&app, &event).await, ["open"]);

    // The same key on another lever is another request.
    assert_error(
        send(
            &app,
            Method::POST,
            &lever("pause"),
            &admin,
            Some("k-open"),
            json!({}),
        )
        .await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    )
    .await;
    for _ in 0..2 {
        let (status, _, paused) = answer(
            send(
                &app,
                Method::POST,
                &lever("pause"),
                &admin,
                Some("k-pause"),
                json!({}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, &paused["state"]),
            (StatusCode::OK, &json!("paused"))
        );
    }
    assert_eq!(audit_rows(&app, &event).await, ["open", "pause"]);

    // Keys belong to accounts: an operator's "k-pause" is not the admin's.
    let fan = app.fan_token("op@example.com").await;
    let me: Value = app.get_json("/v1/auth/me", Some(&fan)).await;
    let role = app
        .client
        .put(app.url(&format!(
            "/v1/users/{}/role",
            me["user_id"].as_str().expect("id")
        )))
        .bearer_auth(&admin)
        .json(&json!({"role": "operator"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(role.status(), StatusCode::OK);
    let operator = app.login("op@example.com", "fan-password-1").await;
    let (status, was_replayed, resumed) = answer(
        send(
            &app,
            Method::POST,
            &lever("resume"),
            &operator,
            Some("k-pause"),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!((status, was_replayed), (StatusCode::OK, false));
    assert_eq!(resumed["state"], "open");
    assert_eq!(audit_rows(&app, &event).await, ["open", "pause", "resume"]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_retried_admission_change_is_recorded_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.seeded_event().await;
    let path = format!("/v1/ops/events/{event}/admission");
    let put = |key, per_second: u32| {
        send(
            &app,
            Method::PUT,
            &path,
            &admin,
            key,
            json!({"per_second": per_second}),
        )
    };
    let (status, _, first) = answer(put(Some("rate-1"), 250).await).await;
    assert_eq!(
        (status, &first["admission_per_second"]),
        (StatusCode::OK, &json!(250))
    );
    let (status, was_replayed, again) = answer(put(Some("rate-1"), 250).await).await;
    assert_eq!(
        (status, was_replayed, &again),
        (StatusCode::OK, true, &first)
    );
    assert_error(
        put(Some("rate-1"), 300).await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(audit_rows(&app, &event).await, ["admission"]);
    let per_second: i32 = sqlx::query_scalar(
        "SELECT admission_per_second FROM waiting_room.sales WHERE event_id = $1::uuid",
    )
    .bind(&event)
    .fetch_one(&app.pool)
    .await
    .expect("sale");
    assert_eq!(per_second, 250);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_idempotency_keys_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    for key in ["has space", "", &"k".repeat(256)] {
        assert_error(
            send(
                &app,
                Method::POST,
                "/v1/venues",
                &admin,
                Some(key),
                venue_body(),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        )
        .await;
    }
    let not_ascii = app
        .client
        .post(app.url("/v1/venues"))
        .bearer_auth(&admin)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).expect("header"),
        )
        .json(&venue_body())
        .send()
        .await
        .expect("sent");
    assert_error(
        not_ascii,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    )
    .await;
    assert_eq!(app.count("inventory.venues").await, 0);
    assert_eq!(app.count("gateway.idempotency_keys").await, 0);
    // 255 visible characters are a key.
    assert_eq!(
        send(
            &app,
            Method::POST,
            "/v1/venues",
            &admin,
            Some(&"k".repeat(255)),
            venue_body()
        )
        .await
        .status(),
        StatusCode::CREATED
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn requests_sent_at_once_with_one_key_have_one_effect(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (client, url, admin) = (app.client.clone(), app.url("/v1/venues"), admin.clone());
        posts.spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(admin)
                .header("idempotency-key", "at-once")
                .json(&venue_body())
                .send()
                .await
                .expect("sent");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
            )
        });
    }
    let answers = posts.join_all().await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body["venue_id"], answers[0].1["venue_id"]);
    }
    assert_eq!(app.count("inventory.venues").await, 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_key_is_forgotten_after_a_day(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let post = |key| {
        send(
            &app,
            Method::POST,
            "/v1/venues",
            &admin,
            Some(key),
            venue_body(),
        )
    };
    for key in ["old-1", "old-2"] {
        assert_eq!(post(key).await.status(), StatusCode::CREATED);
    }
    sqlx::query("UPDATE gateway.idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .expect("age the keys");

    // Found expired on use: the request runs again.
    let response = post("old-1").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(!replayed(&response));
    assert_eq!(app.count("inventory.venues").await, 3);
    // Or purged on the gateway's interval.
    assert_eq!(
        gateway::idempotency::purge_expired(&app.pool)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(app.count("gateway.idempotency_keys").await, 1);
}
