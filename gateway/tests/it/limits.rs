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

/// Two gateways of one tier (one Redis key prefix) with `adjust`ed settings, as
/// behind a load balancer that sends a client's requests to each in turn.
async fn two_gateways(
    pool: &PgPool,
    adjust: impl Fn(&mut gateway::config::Config),
) -> (TestApp, TestApp) {
    let first = spawn_app_with(pool.clone(), &adjust).await;
    let prefix = first.keys.prefix().to_owned();
    let second = spawn_app_with(pool.clone(), |config| {
        adjust(config);
        config.redis.key_prefix = prefix;
    })
    .await;
    (first, second)
}

/// `GET path` on `app`, its status.
async fn status(app: &TestApp, path: &str, token: Option<&str>) -> StatusCode {
    app.get(path, token).await.status()
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn two_gateways_let_an_address_and_an_account_through_at_their_rate_once(pool: PgPool) {
    let limited = |config: &mut gateway::config::Config| {
        config.limits.per_ip_per_second = 1;
        config.limits.per_ip_burst = 6;
        config.limits.per_user_per_second = 1;
        config.limits.per_user_burst = 4;
    };
    let (first, second) = two_gateways(&pool, limited).await;
    let started = std::time::Instant::now();
    let mut admitted = 0;
    for i in 0..12 {
        let app = if i % 2 == 0 { &first } else { &second };
        if status(app, "/v1/events", None).await == StatusCode::OK {
            admitted += 1;
        }
    }
    // Each node alone would admit its burst of 6: 12 in all. Shared: the burst
    // once, plus one a second that passed.
    let allowed = 6 + started.elapsed().as_secs() + 1;
    assert!(admitted >= 6, "{admitted} admitted");
    assert!(
        admitted <= allowed,
        "{admitted} admitted, {allowed} allowed"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn two_gateways_let_an_account_through_at_its_rate_once(pool: PgPool) {
    let limited = |config: &mut gateway::config::Config| {
        config.limits.per_user_per_second = 1;
        config.limits.per_user_burst = 4;
    };
    let (first, second) = two_gateways(&pool, limited).await;
    let token = minted_fan_token();
    let started = std::time::Instant::now();
    let mut admitted = 0;
    for i in 0..10 {
        let app = if i % 2 == 0 { &first } else { &second };
        let response = app
            .client
            .get(app.url("/v1/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["code"], "rate_limited");
            assert!(
                body["message"].as_str().unwrap_or("").contains("account"),
                "{body}"
            );
        } else {
            admitted += 1;
        }
    }
    // Each node alone would let 4 through: 8 of 10. Shared: 4, plus one a second.
    let allowed = 4 + started.elapsed().as_secs() + 1;
    assert!(admitted >= 4, "{admitted} admitted");
    assert!(
        admitted <= allowed,
        "{admitted} admitted, {allowed} allowed"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn with_sharing_off_each_gateway_keeps_its_own_buckets(pool: PgPool) {
    // The control for the test above: the same two nodes, unshared, admit each
    // node's burst.
    let unshared = |config: &mut gateway::config::Config| {
        config.limits.per_ip_per_second = 1;
        config.limits.per_ip_burst = 6;
        config.limits.shared = false;
    };
    let (first, second) = two_gateways(&pool, unshared).await;
    let mut admitted = 0;
    for i in 0..12 {
        let app = if i % 2 == 0 { &first } else { &second };
        if status(app, "/v1/events", None).await == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 12);
}

#[tokio::test]
async fn a_batch_of_shared_checks_costs_three_redis_commands() {
    // A Redis of its own: its command counts are this test's alone.
    let server = testkit::PrivateRedis::start();
    let redis = platform::store::Redis::connect(&server.url())
        .await
        .expect("redis");
    let keys = proto::Keys::new("test");
    let limits = gateway::shared_limits::SharedLimits::start(redis.clone(), &keys);
    let calls = |redis: platform::store::Redis| async move {
        let mut redis = redis;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut redis)
            .await
            .expect("INFO");
        let count = |name: &str| -> u64 {
            info.lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next()?.parse().ok())
                .unwrap_or(0)
        };
        (
            count("evalsha") + count("eval"),
            count("time") + count("hmget") + count("hset"),
        )
    };
    // The script loaded first (its first call is refused NOSCRIPT and sent again).
    limits
        .check(vec![gateway::shared_limits::Bucket::new(
            "warm-up".into(),
            10,
            20,
        )])
        .await;
    let before = calls(redis.clone()).await;
    // 400 requests at once, each asking for its address and its account.
    let checks = (0..400).map(|i| {
        let limits = limits.clone();
        async move {
            limits
                .check(vec![
                    gateway::shared_limits::Bucket::new(format!("ip:10.0.0.{}", i % 50), 10, 20),
                    gateway::shared_limits::Bucket::new(format!("user:{i}"), 10, 20),
                ])
                .await
        }
    });
    let answers = futures_util::future::join_all(checks).await;
    let after = calls(redis.clone()).await;
    // 50 addresses with a burst of 20 each admit 8 requests apiece; every account
    // is fresh.
    for answer in &answers {
        assert_eq!(answer.len(), 2, "Redis answered every check");
        assert!(answer[1].is_zero());
    }
    assert_eq!(answers.iter().filter(|a| a[0].is_zero()).count(), 400);
    let scripts = after.0 - before.0;
    let inner = after.1 - before.1;
    assert!(
        scripts < 400,
        "{scripts} script calls for 400 requests: batched"
    );
    assert_eq!(inner, 3 * scripts, "TIME, HMGET and HSET per batch");
}

#[tokio::test]
async fn buckets_full_again_are_forgotten_and_the_others_kept() {
    let server = testkit::PrivateRedis::start();
    let mut redis = platform::store::Redis::connect(&server.url())
        .await
        .expect("redis");
    let keys = proto::Keys::new("test");
    let limits = gateway::shared_limits::SharedLimits::start(redis.clone(), &keys);
    // 1,200 buckets full again (their arrival time long past: clients gone), and
    // 300 still counting (far ahead).
    let mut fields: Vec<(String, u64)> = (0..1200).map(|i| (format!("ip:gone-{i}"), 1)).collect();
    fields.extend((0..300).map(|i| (format!("ip:busy-{i}"), u64::MAX / 4)));
    let _: () = redis::cmd("HSET")
        .arg(keys.rate_buckets())
        .arg(&fields)
        .query_async(&mut redis)
        .await
        .expect("HSET");
    assert_eq!(limits.housekeep().await.expect("housekeeping"), 1200);
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.rate_buckets())
        .query_async(&mut redis)
        .await
        .expect("HKEYS");
    assert_eq!(left.len(), 300);
    assert!(left.iter().all(|name| name.starts_with("ip:busy-")));
}
