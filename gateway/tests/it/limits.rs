//! Rate limits through the real server.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_address_past_its_burst_gets_429_with_retry_after(pool: PgPool) {
    let app = spawn_app_with(pool, |config| {
        config.limits.per_ip_per_second = 1;
        config.limits.per_ip_burst = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/events", None).await.status(), StatusCode::OK);
    }
    let response = app.get("/v1/events", None).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After header");
    assert!((1..=1).contains(&retry_after), "retry-after {retry_after}");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_account_past_its_burst_gets_429_while_others_go_on(pool: PgPool) {
    let app = spawn_app_with(pool, |config| {
        config.limits.per_user_per_second = 1;
        config.limits.per_user_burst = 2;
    })
    .await;
    let greedy = app.fan_token("greedy@example.com").await;
    let patient = app.fan_token("patient@example.com").await;
    for _ in 0..2 {
        assert_eq!(
            app.get("/v1/auth/me", Some(&greedy)).await.status(),
            StatusCode::OK
        );
    }
    let response = app.get("/v1/auth/me", Some(&greedy)).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(
        app.get("/v1/auth/me", Some(&patient)).await.status(),
        StatusCode::OK
    );
}
