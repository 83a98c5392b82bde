use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::Claims;
use proto::{Role, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

fn claims(role: Role, expires_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: UserId::new(),
        role,
        iss: "onsale".into(),
        aud: "onsale".into(),
        iat: now,
        exp: now + expires_in,
        sid: None,
        ver: 0,
        evf: false,
    }
}

fn sign(claims: &Claims, algorithm: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A token with `alg: none` and no signature, as an attacker would hand-craft it.
fn unsigned(claims: &Claims) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).expect("claims"))
    )
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_registers_logs_in_and_sees_itself(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .post(
            "/v1/auth/register",
            None,
            &json!({"email": "Fan@Example.com", "password": "fan-password-1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user_id = response.json::<Value>().await.expect("json")["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned();

    let token = app.login("fan@example.com", "fan-password-1").await;
    let me: Value = app.get_json("/v1/auth/me", Some(&token)).await;
    assert_eq!(
        me,
        json!({"user_id": user_id, "email": "fan@example.com", "role": "fan", "email_verified": false})
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn registering_an_email_twice_is_a_conflict(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body = json!({"email": "fan@example.com", "password": "fan-password-1"});
    assert_eq!(
        app.post("/v1/auth/register", None, &body).await.status(),
        StatusCode::CREATED
    );
    let again = json!({"email": "FAN@example.com", "password": "other-password-2"});
    assert_error(
        app.post("/v1/auth/register", None, &again).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_eq!(
        app.count("gateway.users WHERE email = 'fan@example.com'")
            .await,
        1
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_wrong_password_or_unknown_email_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.fan_token("fan@example.com").await;
    for (email, password) in [
        ("fan@example.com", "not-the-password"),
        ("nobody@example.com", "fan-password-1"),
    ] {
        let response = app
            .post(
                "/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn wrong_passwords_from_many_addresses_lock_the_account_not_the_others(pool: PgPool) {
    // The gateway believes a trusted proxy's X-Forwarded-For: each guess comes from
    // another address, as credential stuffing spread over a botnet would.
    let app = spawn_app_with(pool, |config| {
        config.limits.trusted_proxies = "127.0.0.1/32".into();
        config.auth.signin_failures = 3;
    })
    .await;
    app.fan_token("victim@example.com").await;
    app.fan_token("bystander@example.com").await;
    let login = |email: &str, password: &str, from: u8| {
        let request = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{from}"))
            .json(&json!({"email": email, "password": password}));
        async move { request.send().await.expect("sent") }
    };
    for from in 1..=3 {
        let wrong = login("victim@example.com", "guess-number-one", from).await;
        assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // The fourth try, from yet another address and even with the right password
    // (in any case of the email), waits out the window.
    let locked = login("Victim@Example.com", "fan-password-1", 4).await;
    let retry_after: u64 = locked
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = assert_error(locked, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("this account"),
        "{body}"
    );
    // Another account is not held back by it.
    let other = login("bystander@example.com", "fan-password-1", 4).await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_burst_of_guesses_sent_at_once_gets_only_the_accounts_few_checked(pool: PgPool) {
    // Guesses sent together, from many addresses: each is counted before its
    // password is checked, so only the account's allowance ever reaches the hasher.
    let app = spawn_app_with(pool, |config| {
        config.limits.trusted_proxies = "127.0.0.1/32".into();
        config.auth.signin_failures = 3;
    })
    .await;
    app.fan_token("target@example.com").await;
    let guesses = (0..40u8).map(|from| {
        let request = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("203.0.113.{from}"))
            .json(&json!({"email": "target@example.com", "password": format!("guess-{from}")}));
        async move { request.send().await.expect("sent").status() }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        (checked, throttled),
        (3, 37),
        "wrong passwords checked, and refused unchecked: {answers:?}"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn forged_expired_and_foreign_tokens_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = claims(Role::Admin, 600);
    // The real thing works, so the refusals below are about the token alone.
    let good = sign(&admin, Algorithm::HS256, SECRET);
    assert_eq!(
        app.get("/v1/auth/me", Some(&good)).await.status(),
        StatusCode::NOT_FOUND,
        "unknown user, valid token"
    );

    let mut foreign_audience = admin.clone();
    foreign_audience.aud = "someone-else".into();
    let mut foreign_issuer = admin.clone();
    foreign_issuer.iss = "someone-else".into();
    let refused = [
        (
            "expired",
            sign(&claims(Role::Admin, -120), Algorithm::HS256, SECRET),
        ),
        (
            "other key",
            sign(
                &admin,
                Algorithm::HS256,
                "another-secret-another-secret-another-1",
            ),
        ),
        ("other algorithm", sign(&admin, Algorithm::HS512, SECRET)),
        ("alg none", unsigned(&admin)),
        (
            "other audience",
            sign(&foreign_audience, Algorithm::HS256, SECRET),
        ),
        (
            "other issuer",
            sign(&foreign_issuer, Algorithm::HS256, SECRET),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in refused {
        let response = app.post("/v1/venues", Some(&token), &venue_body()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "invalid_token", "{what}: {body}");
    }
    assert_eq!(app.count("inventory.venues").await, 0);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn admin_endpoints_refuse_fans_and_anonymous_callers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let fan = app.fan_token("fan@example.com").await;
    assert_error(
        app.post("/v1/venues", Some(&fan), &venue_body()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        app.post("/v1/venues", None, &venue_body()).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    let response = app
        .client
        .post(app.url("/v1/venues"))
        .header("authorization", "Basic abc")
        .json(&venue_body())
        .send()
        .await;
    assert_error(
        response.expect("sent"),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(app.count("inventory.venues").await, 0);
}

/// The role an operation needs is declared once, beside its handler, whose
/// extractor enforces it: every operation the contract reserves for operators or
/// admins answers 403 to the roles below, and lets the role itself past the check
/// (whatever it then answers about the made-up ids).
#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn every_operation_reserved_for_a_role_refuses_the_roles_below_it(pool: PgPool) {
    use proto::Role;
    let app = spawn_app(pool).await;
    let doc = gateway::openapi();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let Some(needed) = operation["security"][0]["bearer"][0]
                .as_str()
                .and_then(Role::parse)
                .filter(|r| *r != Role::Fan)
            else {
                continue;
            };
            // Made-up ids: the role check comes before any lookup.
            let url = app.url(
                &path
                    .split('/')
                    .map(|segment| {
                        if segment.starts_with('{') {
                            uuid::Uuid::new_v4().to_string()
                        } else {
                            segment.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/"),
            );
            let call = |role: Role| {
                let method =
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                app.client
                    .request(method, &url)
                    .bearer_auth(minted_token(role))
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({}))
                    .send()
            };
            let below = [Role::Fan, Role::Operator]
                .into_iter()
                .filter(|r| !r.includes(needed));
            for role in below {
                let answer = call(role).await.expect("sent");
                assert_eq!(
                    answer.status(),
                    StatusCode::FORBIDDEN,
                    "{method} {path} with a {} token",
                    role.as_str()
                );
            }
            let answer = call(needed).await.expect("sent");
            assert_ne!(
                answer.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} refuses the {} role it declares",
                needed.as_str()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} operations declare a role");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_admin_grants_the_operator_role(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let fan = app.fan_token("op@example.com").await;
    let me: Value = app.get_json("/v1/auth/me", Some(&fan)).await;
    let path = format!("/v1/users/{}/role", me["user_id"].as_str().expect("id"));

    let forbidden = app
        .client
        .put(app.url(&path))
        .bearer_auth(&fan)
        .json(&json!({"role": "admin"}))
        .send()
        .await;
    assert_error(forbidden.expect("sent"), StatusCode::FORBIDDEN, "forbidden").await;

    let granted = app
        .client
        .put(app.url(&path))
        .bearer_auth(&admin)
        .json(&json!({"role": "operator"}))
        .send()
        .await;
    let granted: Value = granted.expect("sent").json().await.expect("json");
    assert_eq!(granted["role"], "operator");
    let token = app.login("op@example.com", "fan-password-1").await;
    let me: Value = app.get_json("/v1/auth/me", Some(&token)).await;
    assert_eq!(me["role"], "operator");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_last_admin_cannot_give_up_the_role_and_every_change_is_recorded(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_token().await;
    let me: Value = app.get_json("/v1/auth/me", Some(&admin)).await;
    let admin_id = me["user_id"].as_str().expect("id").to_owned();
    let set = |user: &str, role: &str, token: &str| {
        let request = app
            .client
            .put(app.url(&format!("/v1/users/{user}/role")))
            .bearer_auth(token)
            .json(&json!({"role": role}));
        async move { request.send().await.expect("sent") }
    };

    // The only admin demoting themselves: refused, and nothing changes.
    let refused = set(&admin_id, "operator", &admin).await;
    assert_error(refused, StatusCode::CONFLICT, "last_admin").await;
    let me: Value = app.get_json("/v1/auth/me", Some(&admin)).await;
    assert_eq!(me["role"], "admin");
    assert_eq!(app.count("gateway.role_changes").await, 0);

    // With a second admin, either may step down; the last one left may not.
    let fan = app.fan_token("second@example.com").await;
    let second: Value = app.get_json("/v1/auth/me", Some(&fan)).await;
    let second_id = second["user_id"].as_str().expect("id").to_owned();
    assert_eq!(
        set(&second_id, "admin", &admin).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        set(&admin_id, "operator", &admin).await.status(),
        StatusCode::OK
    );
    let second_admin = app.login("second@example.com", "fan-password-1").await;
    let refused = set(&second_id, "fan", &second_admin).await;
    assert_error(refused, StatusCode::CONFLICT, "last_admin").await;

    // Each change is on record: whose, from what, to what, by whom.
    let changes: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT user_id::text, from_role, to_role, changed_by::text FROM gateway.role_changes
         ORDER BY change_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("role changes");
    assert_eq!(
        changes,
        [
            (
                second_id.clone(),
                "fan".into(),
                "admin".into(),
                admin_id.clone()
            ),
            (
                admin_id.clone(),
                "admin".into(),
                "operator".into(),
                admin_id.clone()
            ),
        ]
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_login_flood_beyond_the_hashing_cap_gets_503_with_retry_after(pool: PgPool) {
    // One hash at a time and one more waiting: the rest of a burst is shed.
    let app = spawn_app_with(pool, |config| {
        config.auth.hash_concurrency = Some(1);
        config.auth.hash_queue = 1;
        config.auth.hash_wait_ms = 2_000;
        // The burst is one account's: its own throttle (which counts sign-ins in
        // flight) is out of the way here, where the hashing cap is under test.
        config.auth.signin_failures = 100;
    })
    .await;
    app.fan_token("fan@example.com").await;

    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (client, url) = (app.client.clone(), app.url("/v1/auth/login"));
        logins.spawn(async move {
            client
                .post(url)
                .json(&json!({"email": "fan@example.com", "password": "fan-password-1"}))
                .send()
                .await
                .expect("sent")
        });
    }
    let (mut ok, mut shed) = (0, 0);
    for response in logins.join_all().await {
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
                shed += 1;
            }
            other => panic!("a login got {other}"),
        }
    }
    assert!(ok >= 1, "some logins went through");
    assert!(
        shed >= 1,
        "a burst of 40 on one hasher sheds some ({ok} ok)"
    );
    // Once the burst is over, a login goes through again.
    app.login("fan@example.com", "fan-password-1").await;
}
