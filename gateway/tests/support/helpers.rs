use std::net::SocketAddr;

use gateway::config::{AuthSettings, Config, LimitSettings};
use platform::auth::TokenSettings;
use platform::settings::{DatabaseSettings, RedisSettings};
use platform::store::Redis;
use proto::Keys;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789";

pub use testkit::redis_url;

pub fn config(prefix: &str) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ops_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: DatabaseSettings {
            url: SecretString::from("unused: the test passes its pool"),
            max_connections: 5,
        },
        redis: RedisSettings {
            url: SecretString::from(redis_url()),
            key_prefix: prefix.to_owned(),
            replicas_to_wait: 0,
            replica_wait_ms: 500,
        },
        auth: AuthSettings {
            token: TokenSettings {
                jwt_secret: SecretString::from(SECRET),
                jwt_previous_secret: None,
                issuer: "onsale".into(),
                audience: "onsale".into(),
            },
            token_ttl_seconds: 600,
            refresh_ttl_seconds: 86_400,
            idempotency_secret: None,
            hash_concurrency: None,
            hash_queue: 32,
            hash_wait_ms: 2_000,
            signin_failures: 5,
            signin_window_seconds: 60,
            require_verified_email: false,
        },
        limits: LimitSettings {
            per_ip_per_second: 10_000,
            per_ip_burst: 10_000,
            per_user_per_second: 10_000,
            per_user_burst: 10_000,
            body_bytes: 64 * 1024,
            housekeeping_seconds: 30,
            shared: true,
            trusted_proxies: String::new(),
            forwarded_header: "x-forwarded-for".into(),
        },
        bootstrap_admin: Some(SecretString::from(format!(
            "{ADMIN_EMAIL}:{ADMIN_PASSWORD}"
        ))),
        payments: payments::Settings {
            webhook_secret: SecretString::from(WEBHOOK_SECRET),
            paying_grace_seconds: 120,
            sandbox_webhook_seconds: 0,
            sandbox_webhook_url: "http://127.0.0.1:1/unused".into(),
            currency: "EUR".into(),
            reconcile_after_seconds: 10,
            seller: serde_json::from_value(billing::Seller::defaults())
                .expect("the default seller"),
            retention_days: 7,
        },
        live: realtime::Settings::default(),
    }
}

pub struct TestApp {
    pub base: String,
    /// The operations port's base URL (`/metrics`).
    pub ops_base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, |_| {}).await
}

pub async fn spawn_app_with(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> TestApp {
    platform::runtime::init_test_tracing();
    let prefix = format!("test:{}", uuid::Uuid::new_v4().simple());
    let mut config = config(&prefix);
    adjust(&mut config);
    let redis = platform::store::Redis::connect(&redis_url())
        .await
        .expect("connecting to redis");
    let app = gateway::Application::with_connections(config, pool.clone(), redis.clone())
        .await
        .expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let ops_base = format!("http://127.0.0.1:{}", app.ops_port());
    tokio::spawn(app.run(std::future::pending()));
    TestApp {
        base,
        ops_base,
        client: reqwest::Client::new(),
        pool,
        redis,
        keys: Keys::new(prefix),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// The gateway's Prometheus text, from its operations port.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.ops_base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.sign_in(email, password).await.0
    }

    /// Signs in: (access token, refresh token).
    pub async fn sign_in(&self, email: &str, password: &str) -> (String, String) {
        let response = self
            .post(
                "/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "login of {email}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["refresh_expires_in"].as_u64().unwrap_or(0) > 0);
        let token = |field: &str| body[field].as_str().expect(field).to_owned();
        (token("access_token"), token("refresh_token"))
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers a fan (password `fan-password-1`).
    pub async fn register(&self, email: &str) {
        let response = self
            .post(
                "/v1/auth/register",
                None,
                &json!({"email": email, "password": "fan-password-1"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// Registers a fan and returns its token.
    pub async fn fan_token(&self, email: &str) -> String {
        self.register(email).await;
        self.login(email, "fan-password-1").await
    }

    /// Creates a venue and returns its id.
    pub async fn create_venue(&self, token: &str, body: &Value) -> String {
        let response = self.post("/v1/venues", Some(token), body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["venue_id"].as_str().expect("venue_id").to_owned()
    }

    pub async fn create_event(&self, token: &str, venue_id: &str) -> String {
        let response = self
            .post("/v1/events", Some(token), &event_body(venue_id))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

/// Two sections, two tiers, 3 rows: 10 + 12 + 8 = 30 seats.
pub fn venue_body() -> Value {
    json!({
        "name": "Test Arena",
        "sections": [
            {"name": "Floor", "price_tier": "standard", "rows": [{"label": "A", "seats": 10}, {"label": "B", "seats": 12}]},
            {"name": "Balcony", "price_tier": "premium", "rows": [{"label": "A", "seats": 8}]},
        ]
    })
}

pub fn event_body(venue_id: &str) -> Value {
    json!({
        "venue_id": venue_id,
        "name": "Test Show",
        "starts_at": "2030-06-01T20:00:00Z",
        "onsale_at": "2030-05-01T10:00:00Z",
        "max_per_fan": 4,
        "hold_seconds": 600,
        "prices": {"standard": 4500, "premium": 9900},
    })
}

/// Asserts an error response's status and code, and returns its body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error body is json");
    assert_eq!(body["code"], code, "body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
    body
}

impl TestApp {
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> T {
        let response = self.get(path, token).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }
}

/// `(available, held, sold)` of an event or rebuild outcome.
pub fn counts(body: &Value) -> (u64, u64, u64) {
    let count = |field: &str| {
        body[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {body}"))
    };
    (count("available"), count("held"), count("sold"))
}

impl TestApp {
    /// The admin's token and a new event on a new [`venue_body`] venue, its sale
    /// opened.
    pub async fn opened_event(&self) -> (String, String) {
        let (admin, event) = self.seeded_event().await;
        let opened = self
            .post(
                &format!("/v1/ops/events/{event}/open"),
                Some(&admin),
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(opened.status(), StatusCode::OK);
        (admin, event)
    }

    /// A booking worker in this process, draining every active event with short
    /// leases and sweeps; stop it with the token, and its task says how it ended.
    pub fn start_worker(
        &self,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let worker = booking_worker::Worker {
            pool: self.pool.clone(),
            store: platform::store::Store::open(&redis_url()).expect("url"),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            name: format!("w-{}", uuid::Uuid::new_v4().simple()),
            settings: booking_worker::DrainSettings {
                lease_ms: 1_000,
                block_ms: 50,
                sold_out_horizon_ms: 0,
                sweep_interval_ms: 100,
                ..Default::default()
            },
            discover_every: std::time::Duration::from_millis(50),
            health: Default::default(),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        (stop, task)
    }

    /// The admin's token and a new event on a new [`venue_body`] venue.
    pub async fn seeded_event(&self) -> (String, String) {
        let admin = self.admin_token().await;
        let venue_id = self.create_venue(&admin, &venue_body()).await;
        let event_id = self.create_event(&admin, &venue_id).await;
        (admin, event_id)
    }
}

/// A fan's token minted directly (no account, no password hashing), for tests that
/// need many fans quickly.
pub fn minted_fan_token() -> String {
    minted_token(proto::Role::Fan)
}

/// A token with `role` for a new user, minted directly.
pub fn minted_token(role: proto::Role) -> String {
    platform::auth::TokenIssuer::onsale(SECRET, 600)
        .issue(proto::UserId::new(), role)
        .expect("token")
}
