//! Bad input gets a 4xx with a stable code and writes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

async fn assert_nothing_written(app: &TestApp) {
    for table in [
        "inventory.venues",
        "inventory.sections",
        "inventory.seats",
        "inventory.events",
        "inventory.event_prices",
    ] {
        assert_eq!(app.count(table).await, 0, "{table} was written");
    }
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    token: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn unreadable_bodies_are_refused_with_stable_codes(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;

    let malformed = post_raw(
        &app,
        "/v1/venues",
        &admin,
        "application/json",
        r#"{"name": "Arena", "sections": ["#,
    )
    .await;
    assert_error(malformed, StatusCode::BAD_REQUEST, "malformed_json").await;

    let not_json = post_raw(
        &app,
        "/v1/venues",
        &admin,
        "text/plain",
        venue_body().to_string(),
    )
    .await;
    assert_error(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let mut unknown_field = venue_body();
    unknown_field["sections"][0]["rows"][0]["seat"] = json!(3);
    let response = app.post("/v1/venues", Some(&admin), &unknown_field).await;
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("seat")),
        "{body}"
    );

    let wrong_type = json!({"name": "Arena", "sections": [{"name": "Floor", "price_tier": "std", "rows": [{"label": "A", "seats": "ten"}]}]});
    assert_error(
        app.post("/v1/venues", Some(&admin), &wrong_type).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;

    let negative = json!({"name": "Arena", "sections": [{"name": "Floor", "price_tier": "std", "rows": [{"label": "A", "seats": -1}]}]});
    assert_error(
        app.post("/v1/venues", Some(&admin), &negative).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;

    assert_nothing_written(&app).await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_oversized_body_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let rows: Vec<Value> = (0..5_000)
        .map(|i| json!({"label": format!("R{i}"), "seats": 10}))
        .collect();
    let huge = json!({"name": "Arena", "sections": [{"name": "Floor", "price_tier": "standard", "rows": rows}]});
    assert!(huge.to_string().len() > 64 * 1024);
    assert_error(
        app.post("/v1/venues", Some(&admin), &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_nothing_written(&app).await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn venues_that_make_no_sense_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let cases = [
        (
            json!({"name": "Arena", "sections": []}),
            "venue_has_no_seats",
        ),
        (
            json!({"name": "Arena", "sections": [{"name": "Floor", "price_tier": "std", "rows": []}]}),
            "venue_has_no_seats",
        ),
        (
            json!({"name": "Arena", "sections": [{"name": "Floor", "price_tier": "std",
                "rows": [{"label": "A", "seats": 5}, {"label": "A", "seats": 6}]}]}),
            "duplicate_row_label",
        ),
        (
            json!({"name": "Arena", "sections": [
                {"name": "Floor", "price_tier": "std", "rows": [{"label": "A", "seats": 5}]},
                {"name": "Floor", "price_tier": "std", "rows": [{"label": "B", "seats": 5}]}]}),
            "duplicate_section",
        ),
        (
            json!({"name": "Arena", "sections": [{"name": "Floor-1", "price_tier": "std", "rows": [{"label": "A", "seats": 5}]}]}),
            "invalid_request",
        ),
        (
            json!({"name": "", "sections": [{"name": "Floor", "price_tier": "std", "rows": [{"label": "A", "seats": 5}]}]}),
            "invalid_request",
        ),
    ];
    for (body, code) in cases {
        let response = app.post("/v1/venues", Some(&admin), &body).await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    assert_nothing_written(&app).await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn events_that_make_no_sense_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let venue_id = app.create_venue(&admin, &venue_body()).await;

    let mut after_start = event_body(&venue_id);
    after_start["onsale_at"] = json!("2030-06-02T20:00:00Z");
    let mut missing_price = event_body(&venue_id);
    missing_price["prices"] = json!({"standard": 4500});
    let mut unknown_tier = event_body(&venue_id);
    unknown_tier["prices"]["vip"] = json!(20000);
    let mut zero_cap = event_body(&venue_id);
    zero_cap["max_per_fan"] = json!(0);
    let mut bad_date = event_body(&venue_id);
    bad_date["starts_at"] = json!("next tuesday");
    let mut extra = event_body(&venue_id);
    extra["max_per_person"] = json!(2);

    let cases = [
        (
            after_start,
            StatusCode::UNPROCESSABLE_ENTITY,
            "onsale_after_start",
        ),
        (
            missing_price,
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_price",
        ),
        (
            unknown_tier,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_price_tier",
        ),
        (
            zero_cap,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            bad_date,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (extra, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (
            event_body(&uuid::Uuid::new_v4().to_string()),
            StatusCode::NOT_FOUND,
            "venue_not_found",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(
            app.post("/v1/events", Some(&admin), &body).await,
            status,
            code,
        )
        .await;
    }
    assert_eq!(app.count("inventory.events").await, 0);
    assert_eq!(app.count("inventory.event_prices").await, 0);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_paths_and_unknown_routes_get_json_errors(pool: PgPool) {
    let app = spawn_app(pool).await;
    assert_error(
        app.get("/v1/events/not-a-uuid", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        app.get(&format!("/v1/events/{unknown}"), None).await,
        StatusCode::NOT_FOUND,
        "event_not_found",
    )
    .await;
    assert_error(
        app.get(&format!("/v1/events/{unknown}/seats"), None).await,
        StatusCode::NOT_FOUND,
        "event_not_found",
    )
    .await;
    assert_error(
        app.get("/v1/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let wrong_method = app
        .client
        .delete(app.url("/v1/venues"))
        .send()
        .await
        .expect("sent");
    assert_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.get("/v1/events?limit=lots", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}
