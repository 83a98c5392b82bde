//! Sessions: refresh tokens spent once (a second use ends the session), sign-out
//! of one session and of all, a role change that applies at once, revocations that
//! reach every gateway and open sockets, signing keys rotated without signing
//! anyone out, and socket tickets instead of tokens in URLs.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;

use crate::support::helpers::*;

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/v1/auth/refresh", None, &json!({"refresh_token": token}))
        .await
}

/// The code of a `/v1/auth/me` answer with `token` (`"ok"` for a 200).
async fn me(app: &TestApp, token: &str) -> String {
    let response = app.get("/v1/auth/me", Some(token)).await;
    if response.status() == StatusCode::OK {
        return "ok".into();
    }
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("json");
    body["code"].as_str().unwrap_or_default().to_owned()
}

async fn user_id(app: &TestApp, token: &str) -> String {
    let body: Value = app
        .get("/v1/auth/me", Some(token))
        .await
        .json()
        .await
        .expect("json");
    body["user_id"].as_str().expect("user_id").to_owned()
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_refresh_token_is_spent_once_and_its_second_use_ends_the_session(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("refresh@example.com").await;
    let (first_access, first_refresh) = app.sign_in("refresh@example.com", "fan-password-1").await;

    let response = refresh(&app, &first_refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.expect("json");
    let (access, next_refresh) = (
        pair["access_token"].as_str().expect("access").to_owned(),
        pair["refresh_token"].as_str().expect("refresh").to_owned(),
    );
    assert_ne!(
        next_refresh, first_refresh,
        "a refresh gives a new refresh token"
    );
    assert_eq!(me(&app, &access).await, "ok");
    assert_eq!(
        me(&app, &first_access).await,
        "ok",
        "earlier access tokens live on"
    );

    // The spent one again: someone else holds it. The session ends for both.
    let reused = refresh(&app, &first_refresh).await;
    assert_error(reused, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    assert_error(
        refresh(&app, &next_refresh).await,
        StatusCode::UNAUTHORIZED,
        "session_ended",
    )
    .await;
    assert_eq!(me(&app, &access).await, "session_ended");
    assert_eq!(me(&app, &first_access).await, "session_ended");
    let why: String = sqlx::query_scalar("SELECT ended_why FROM gateway.sessions")
        .fetch_one(&pool)
        .await
        .expect("the session");
    assert_eq!(why, "refresh_token_reused");
    // Only hashes are stored.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gateway.refresh_tokens WHERE token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&first_refresh)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stored, 0);

    // Not a token of ours, or not a token at all.
    assert_error(
        refresh(&app, "not-a-refresh-token").await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let response = app
        .post("/v1/auth/refresh", None, &json!({"refresh": "x"}))
        .await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn two_refreshes_of_one_token_at_once_are_one_refresh_and_one_reuse(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("race@example.com").await;
    let (_, token) = app.sign_in("race@example.com", "fan-password-1").await;
    let (a, b) = tokio::join!(refresh(&app, &token), refresh(&app, &token));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn sign_out_ends_this_session_at_once_and_leaves_the_others(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("two-devices@example.com").await;
    let (phone, phone_refresh) = app
        .sign_in("two-devices@example.com", "fan-password-1")
        .await;
    let (laptop, _) = app
        .sign_in("two-devices@example.com", "fan-password-1")
        .await;

    let response = app.post("/v1/auth/logout", Some(&phone), &json!({})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &phone).await, "session_ended");
    assert_eq!(me(&app, &laptop).await, "ok");
    assert_error(
        refresh(&app, &phone_refresh).await,
        StatusCode::UNAUTHORIZED,
        "session_ended",
    )
    .await;
    // A tool's token belongs to no session: sign-out has nothing to end.
    let response = app
        .post("/v1/auth/logout", Some(&minted_fan_token()), &json!({}))
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn sign_out_everywhere_ends_every_session_and_every_earlier_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("everywhere@example.com").await;
    let (one, one_refresh) = app
        .sign_in("everywhere@example.com", "fan-password-1")
        .await;
    let (two, _) = app
        .sign_in("everywhere@example.com", "fan-password-1")
        .await;
    let other = app.fan_token("bystander@example.com").await;

    let response = app
        .post("/v1/auth/logout-all", Some(&two), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &one).await, "session_ended");
    assert_eq!(me(&app, &two).await, "session_ended");
    assert_eq!(me(&app, &other).await, "ok", "another account is untouched");
    assert_error(
        refresh(&app, &one_refresh).await,
        StatusCode::UNAUTHORIZED,
        "session_ended",
    )
    .await;
    // Signing in again starts afresh.
    let (again, _) = app
        .sign_in("everywhere@example.com", "fan-password-1")
        .await;
    assert_eq!(me(&app, &again).await, "ok");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_role_change_applies_at_once_and_a_refresh_carries_the_new_role(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    app.register("demoted@example.com").await;
    let (fan, _) = app.sign_in("demoted@example.com", "fan-password-1").await;
    let id = user_id(&app, &fan).await;
    let ops = format!("/v1/ops/events/{}/stats", uuid::Uuid::now_v7());
    let set_role = |role: &'static str| {
        app.client
            .put(app.url(&format!("/v1/users/{id}/role")))
            .bearer_auth(&admin)
            .json(&json!({"role": role}))
            .send()
    };

    assert_eq!(
        set_role("operator").await.expect("sent").status(),
        StatusCode::OK
    );
    let (operator, operator_refresh) = app.sign_in("demoted@example.com", "fan-password-1").await;
    let allowed = app.get(&ops, Some(&operator)).await.status();
    assert_eq!(
        allowed,
        StatusCode::NOT_FOUND,
        "an operator reaches the route"
    );

    // Demoted: the operator's token is refused at once, not when it expires.
    assert_eq!(
        set_role("fan").await.expect("sent").status(),
        StatusCode::OK
    );
    assert_error(
        app.get(&ops, Some(&operator)).await,
        StatusCode::UNAUTHORIZED,
        "token_outdated",
    )
    .await;
    let response = refresh(&app, &operator_refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.expect("json");
    let fan_again = pair["access_token"].as_str().expect("access");
    assert_error(
        app.get(&ops, Some(fan_again)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Setting the same role again changes nothing and refuses nothing.
    assert_eq!(
        set_role("fan").await.expect("sent").status(),
        StatusCode::OK
    );
    assert_eq!(me(&app, fan_again).await, "ok");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_sign_out_on_one_gateway_is_refused_on_another(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let prefix = first.keys.prefix().to_owned();
    let second = spawn_app_with(pool, |config| config.redis.key_prefix = prefix).await;
    first.register("roaming@example.com").await;
    let (token, _) = first.sign_in("roaming@example.com", "fan-password-1").await;
    assert_eq!(me(&second, &token).await, "ok");

    let response = first
        .post("/v1/auth/logout", Some(&token), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // The other gateway hears of it over Redis: within moments, not at expiry.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let code = me(&second, &token).await;
        if code == "session_ended" {
            break;
        }
        assert_eq!(code, "ok");
        assert!(
            Instant::now() < deadline,
            "the second gateway still accepts an ended session's token"
        );
        tokio::task::yield_now().await;
    }
    // A gateway started afterwards reads the list whole.
    let prefix = first.keys.prefix().to_owned();
    let third = spawn_app_with(first.pool.clone(), |config| {
        config.redis.key_prefix = prefix
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while me(&third, &token).await != "session_ended" {
        assert!(
            Instant::now() < deadline,
            "a new gateway missed the revocation"
        );
        tokio::task::yield_now().await;
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_rotated_signing_key_signs_nobody_out(pool: PgPool) {
    const NEXT: &str = "the-next-signing-secret-of-the-test-0123456789";
    let before = spawn_app(pool.clone()).await;
    before.register("rotation@example.com").await;
    let (token, refresh_token) = before
        .sign_in("rotation@example.com", "fan-password-1")
        .await;

    // The new key signs; the old one is kept to verify what it signed.
    let prefix = before.keys.prefix().to_owned();
    let after = spawn_app_with(pool.clone(), |config| {
        config.redis.key_prefix = prefix;
        config.auth.token.jwt_previous_secret = Some(config.auth.token.jwt_secret.clone());
        config.auth.token.jwt_secret = secrecy::SecretString::from(NEXT);
    })
    .await;
    assert_eq!(me(&after, &token).await, "ok");
    let response = refresh(&after, &refresh_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.expect("json");
    let fresh = pair["access_token"].as_str().expect("access");
    let header = jsonwebtoken::decode_header(fresh).expect("header");
    assert_eq!(header.kid, Some(platform::auth::key_id(NEXT)));
    assert_eq!(me(&after, fresh).await, "ok");

    // Once the old key is dropped, what it signed is refused by name.
    let prefix = before.keys.prefix().to_owned();
    let later = spawn_app_with(pool, |config| {
        config.redis.key_prefix = prefix;
        config.auth.token.jwt_secret = secrecy::SecretString::from(NEXT);
    })
    .await;
    assert_eq!(me(&later, &token).await, "invalid_token");
    assert_eq!(me(&later, fresh).await, "ok");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_socket_ticket_opens_one_socket_once_and_never_another_events(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let (_admin2, other_event) = app.opened_event().await;
    let fan = app.fan_token("ticket@example.com").await;
    let ticket = |event: String| {
        let (app, fan) = (&app, fan.clone());
        async move {
            let response = app
                .post(
                    &format!("/v1/events/{event}/live/ticket"),
                    Some(&fan),
                    &json!({}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["expires_in"], 30);
            body["ticket"].as_str().expect("ticket").to_owned()
        }
    };

    let once = ticket(event.clone()).await;
    let url = app.live_url(&event, &format!("ticket={once}"));
    let (mut socket, response) = tokio_tungstenite::connect_async(url.clone())
        .await
        .expect("the ticket opens a socket");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a first message");
    assert!(matches!(first, Some(Ok(Message::Text(_)))));
    let (status, body) = app.refused(url, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    let elsewhere = ticket(other_event).await;
    let (status, body) = app
        .refused(app.live_url(&event, &format!("ticket={elsewhere}")), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("another event")
    );

    let response = app
        .post(&format!("/v1/events/{event}/live/ticket"), None, &json!({}))
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_open_socket_closes_when_its_session_ends(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    app.register("socket-out@example.com").await;
    let (token, _) = app
        .sign_in("socket-out@example.com", "fan-password-1")
        .await;
    let mut socket = app.live(&event, &token, None).await;
    // The snapshot's first message: the socket is serving.
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a first message");
    assert!(matches!(first, Some(Ok(Message::Text(_)))));

    let response = app.post("/v1/auth/logout", Some(&token), &json!({})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let mut said = None;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let body: Value = serde_json::from_str(&text).unwrap_or_default();
                    if body["type"] == "error" {
                        said = body["code"].as_str().map(str::to_owned);
                    }
                }
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the socket closes within seconds of the sign-out");
    assert_eq!(closed, Some(realtime::socket::SESSION_ENDED_CLOSE));
    assert_eq!(said.as_deref(), Some("session_ended"));
}
