//! Email confirmation before joining a line (`auth.require_verified_email`): sign-up
//! writes the confirmation link's event to the outbox (Kafka is not running here:
//! the token is read from the outbox row), an unconfirmed fan's join is refused and
//! changes nothing, confirming then refreshing lets it in; bad, expired and used
//! links get their codes; links are sent again at most 3 times an hour; with the
//! setting off nothing changes for fans.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

const PASSWORD: &str = "fan-password-1";

async fn spawn_requiring(pool: PgPool) -> TestApp {
    spawn_app_with(pool, |config| config.auth.require_verified_email = true).await
}

async fn join(app: &TestApp, event: &str, token: &str) -> reqwest::Response {
    app.post(
        &format!("/v1/events/{event}/requests"),
        Some(token),
        &json!({"quantity": 1}),
    )
    .await
}

async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/v1/auth/verify-email", None, &json!({"token": token}))
        .await
}

async fn resend(app: &TestApp, access: &str) -> reqwest::Response {
    app.post("/v1/auth/verify-email/resend", Some(access), &json!({}))
        .await
}

async fn refreshed(app: &TestApp, refresh_token: &str) -> String {
    let response = app
        .post(
            "/v1/auth/refresh",
            None,
            &json!({"refresh_token": refresh_token}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.expect("json");
    pair["access_token"].as_str().expect("access").to_owned()
}

async fn me(app: &TestApp, access: &str) -> Value {
    app.get_json("/v1/auth/me", Some(access)).await
}

/// The confirmation tokens the outbox holds for `email`, oldest first, with each
/// record's topic and event id.
async fn links_sent(app: &TestApp, email: &str) -> Vec<(String, String, uuid::Uuid)> {
    sqlx::query_as(
        "SELECT payload->>'token', topic, event_id FROM outbox.messages
         WHERE kind = 'account.verification_requested' AND payload->>'email' = $1
         ORDER BY seq",
    )
    .bind(email)
    .fetch_all(&app.pool)
    .await
    .expect("outbox rows")
}

async fn token_sent(app: &TestApp, email: &str) -> String {
    let sent = links_sent(app, email).await;
    assert_eq!(sent.len(), 1, "one link for {email}: {sent:?}");
    sent[0].0.clone()
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_unconfirmed_fan_is_refused_at_the_join_until_it_confirms_and_refreshes(pool: PgPool) {
    let app = spawn_requiring(pool.clone()).await;
    let (admin, event) = app.opened_event().await;
    let email = "unconfirmed@example.com";
    app.register(email).await;
    let (access, refresh) = app.sign_in(email, PASSWORD).await;
    assert_eq!(me(&app, &access).await["email_verified"], false);
    assert_eq!(
        me(&app, &admin).await["email_verified"],
        true,
        "the bootstrap admin's address counts as confirmed"
    );

    // Sign-up wrote the link's event in its own transaction: on the accounts topic,
    // belonging to no sale, with a token stored only as its hash.
    let sent = links_sent(&app, email).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (token, topic, event_id) = sent[0].clone();
    assert_eq!(topic, proto::topics::ACCOUNTS);
    assert_eq!(event_id, uuid::Uuid::nil());
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gateway.email_verifications
         WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(&token)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stored, 1, "the token is stored as its SHA-256");

    // Refused, and nothing is put in line.
    assert_error(
        join(&app, &event, &access).await,
        StatusCode::FORBIDDEN,
        "email_unverified",
    )
    .await;
    assert_eq!(app.count("waiting_room.requests").await, 0);

    let confirmed = verify(&app, &token).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    assert_eq!(
        confirmed.json::<Value>().await.expect("json"),
        json!({"email_verified": true})
    );
    assert_eq!(me(&app, &access).await["email_verified"], true);
    // The token issued before says nothing of it: still refused, until a refresh.
    assert_error(
        join(&app, &event, &access).await,
        StatusCode::FORBIDDEN,
        "email_unverified",
    )
    .await;
    let access = refreshed(&app, &refresh).await;
    let joined = join(&app, &event, &access).await;
    assert_eq!(joined.status(), StatusCode::ACCEPTED);
    let joined: Value = joined.json().await.expect("json");
    assert_eq!(
        joined["queue_number"], 1,
        "the refused joins put nobody in line"
    );

    // The link again: used.
    assert_error(
        verify(&app, &token).await,
        StatusCode::CONFLICT,
        "verification_token_used",
    )
    .await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn staff_join_without_confirming_and_tools_tokens_vouch_for_themselves(pool: PgPool) {
    let app = spawn_requiring(pool).await;
    let (admin, event) = app.opened_event().await;
    // A fan made operator by the admin, address unconfirmed: staff are exempt.
    app.register("staff@example.com").await;
    let (fan, refresh) = app.sign_in("staff@example.com", PASSWORD).await;
    let user_id = me(&app, &fan).await["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned();
    let promoted = app
        .client
        .put(app.url(&format!("/v1/users/{user_id}/role")))
        .bearer_auth(&admin)
        .json(&json!({"role": "operator"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(promoted.status(), StatusCode::OK);
    let operator = refreshed(&app, &refresh).await;
    assert_eq!(me(&app, &operator).await["email_verified"], false);
    assert_eq!(
        join(&app, &event, &operator).await.status(),
        StatusCode::ACCEPTED
    );
    // A token the tools sign for themselves says the address is confirmed.
    assert_eq!(
        join(&app, &event, &minted_fan_token()).await.status(),
        StatusCode::ACCEPTED
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn garbage_expired_and_used_links_get_their_codes_and_confirm_nothing(pool: PgPool) {
    let app = spawn_requiring(pool.clone()).await;
    for (body, status, code) in [
        (
            json!({"token": "not-a-token"}),
            StatusCode::BAD_REQUEST,
            "verification_token_invalid",
        ),
        (
            json!({"token": ""}),
            StatusCode::BAD_REQUEST,
            "verification_token_invalid",
        ),
        (
            json!({"token": "x".repeat(10_000)}),
            StatusCode::BAD_REQUEST,
            "verification_token_invalid",
        ),
        (
            json!({"token": "\u{0}"}),
            StatusCode::BAD_REQUEST,
            "verification_token_invalid",
        ),
        (
            json!({"token": 42}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"token": "a", "email": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ] {
        assert_error(
            app.post("/v1/auth/verify-email", None, &body).await,
            status,
            code,
        )
        .await;
    }

    // A link past its 24 hours.
    app.register("late@example.com").await;
    let (access, _) = app.sign_in("late@example.com", PASSWORD).await;
    let token = token_sent(&app, "late@example.com").await;
    sqlx::query(
        "UPDATE gateway.email_verifications SET expires_at = now() - interval '1 second'
         WHERE user_id = (SELECT user_id FROM gateway.users WHERE email = 'late@example.com')",
    )
    .execute(&pool)
    .await
    .expect("expire the link");
    assert_error(
        verify(&app, &token).await,
        StatusCode::GONE,
        "verification_token_expired",
    )
    .await;
    assert_eq!(me(&app, &access).await["email_verified"], false);
    let unconfirmed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gateway.users WHERE email_verified_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(unconfirmed, 1, "nothing confirmed by a bad or late link");

    // Two uses of one link at once: one confirms, the other finds it used.
    app.register("race@example.com").await;
    let token = token_sent(&app, "race@example.com").await;
    let (a, b) = tokio::join!(verify(&app, &token), verify(&app, &token));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn links_are_sent_again_three_an_hour_and_not_to_a_confirmed_address(pool: PgPool) {
    let app = spawn_requiring(pool).await;
    let email = "again@example.com";
    app.register(email).await;
    let (access, _) = app.sign_in(email, PASSWORD).await;
    assert_error(
        app.post("/v1/auth/verify-email/resend", None, &json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;

    // Sign-up's link and two more; the fourth within the hour is refused.
    for _ in 0..2 {
        let response = resend(&app, &access).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(
            response.json::<Value>().await.expect("json"),
            json!({"email_verified": false})
        );
    }
    let refused = resend(&app, &access).await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let sent = links_sent(&app, email).await;
    assert_eq!(sent.len(), 3, "{sent:?}");

    // Every link still works; the first used confirms, a later one confirms nothing
    // new and succeeds, and no link is sent to a confirmed address.
    assert_eq!(verify(&app, &sent[0].0).await.status(), StatusCode::OK);
    assert_eq!(verify(&app, &sent[2].0).await.status(), StatusCode::OK);
    let response = resend(&app, &access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"email_verified": true})
    );
    assert_eq!(links_sent(&app, email).await.len(), 3);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn with_the_setting_off_fans_join_unconfirmed_and_sign_up_emails_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, event) = app.opened_event().await;
    app.register("relaxed@example.com").await;
    let (access, _) = app.sign_in("relaxed@example.com", PASSWORD).await;
    assert_eq!(me(&app, &access).await["email_verified"], false);
    assert_eq!(
        join(&app, &event, &access).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(links_sent(&app, "relaxed@example.com").await.is_empty());
    // A fan may still ask for a link, and confirm with it.
    assert_eq!(resend(&app, &access).await.status(), StatusCode::ACCEPTED);
    let token = token_sent(&app, "relaxed@example.com").await;
    assert_eq!(verify(&app, &token).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &access).await["email_verified"], true);
}
