//! Rate limits through the real server.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::support::helpers::*;

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

/// `GET /v1/events` with `X-Forwarded-For: forwarded`; its status.
async fn forwarded_for(app: &TestApp, forwarded: &str) -> StatusCode {
    app.client
        .get(app.url("/v1/events"))
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .expect("request")
        .status()
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn behind_a_trusted_proxy_each_client_has_its_own_bucket(pool: PgPool) {
    // The test client connects from 127.0.0.1: here that is the load balancer.
    let app = spawn_app_with(pool, |config| {
        config.limits.per_ip_per_second = 1;
        config.limits.per_ip_burst = 2;
        config.limits.trusted_proxies = "127.0.0.1/32".into();
    })
    .await;
    for _ in 0..2 {
        assert_eq!(forwarded_for(&app, "198.51.100.7").await, StatusCode::OK);
    }
    assert_eq!(
        forwarded_for(&app, "198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A client rewriting the left of the header is still the hop the proxy added.
    assert_eq!(
        forwarded_for(&app, "203.0.113.1, 198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has a full bucket.
    assert_eq!(forwarded_for(&app, "198.51.100.8").await, StatusCode::OK);
    // IPv6: the whole /64 is one client.
    for _ in 0..2 {
        assert_eq!(forwarded_for(&app, "2001:db8:7:7::1").await, StatusCode::OK);
    }
    assert_eq!(
        forwarded_for(&app, "2001:db8:7:7:ffff::2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(forwarded_for(&app, "2001:db8:7:8::1").await, StatusCode::OK);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_untrusted_peer_cannot_pick_its_bucket_with_x_forwarded_for(pool: PgPool) {
    let app = spawn_app_with(pool, |config| {
        config.limits.per_ip_per_second = 1;
        config.limits.per_ip_burst = 2;
    })
    .await;
    assert_eq!(forwarded_for(&app, "198.51.100.1").await, StatusCode::OK);
    assert_eq!(forwarded_for(&app, "198.51.100.2").await, StatusCode::OK);
    assert_eq!(
        forwarded_for(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}
