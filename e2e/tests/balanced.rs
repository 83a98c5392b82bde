//! The farm behind a real load balancer: haproxy (Debian's package) in front of two
//! gateways and two realtime nodes, with two booking-worker processes, a waiting
//! room, a private Redis and Postgres. Fans register, join, watch their socket,
//! are held and pay, all through haproxy's one address, while one gateway and one
//! realtime node are killed (SIGKILL) at random moments of the sale.
//!
//! What it proves, over the whole history of every fan's calls and socket frames:
//! - no join is lost or doubled: every fan ends with one request, its retries (the
//!   same `Idempotency-Key`) answered with that same request, and the ledger holds
//!   exactly one request per fan;
//! - every socket the dead realtime node held is closed, reconnects through
//!   haproxy to the survivor, and starts again from a snapshot (`sale`, then the
//!   fan's `request`); every socket then sees its fan held;
//! - haproxy's `X-Forwarded-For` is believed (a trusted proxy): fans behind it
//!   from different addresses have their own rate-limit buckets.
//!
//! And the fan's page (`gateway/tests/browser/fan.mjs`, in Debian's Chromium) goes
//! from the countdown to a confirmation through haproxy, unchanged.
//!
//! And `ONSALE_BALANCED=1 deploy/run` itself supervises its farm: a gateway killed
//! with SIGKILL is restarted and said to be back, while haproxy answers every
//! request; a TERM stops every process with no restart on the way out; a service
//! that crashes five times within two minutes stops the farm, with its log's end.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{PrivatePostgres, PrivateRedis, free_port};

mod support;
use support::Service;

const ADMIN: (&str, &str) = ("lb-admin@onsale.test", "lb-admin-password");
const JWT_SECRET: &str = "balanced-test-secret-at-least-32-bytes!!";
const FANS: usize = 24;
const WATCHERS: usize = 16;

/// haproxy on a free port.
struct Haproxy {
    child: Child,
    port: u16,
}

impl Haproxy {
    /// haproxy with `deploy/haproxy/local.cfg`, as `ONSALE_BALANCED=1 deploy/run` runs it.
    fn start(dir: &std::path::Path, gateways: [u16; 2], realtime: [u16; 2]) -> Self {
        let port = free_port();
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/local.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("ONSALE_LB_LISTEN", format!("127.0.0.1:{port}"))
            .env("ONSALE_GATEWAY_1", format!("127.0.0.1:{}", gateways[0]))
            .env("ONSALE_GATEWAY_2", format!("127.0.0.1:{}", gateways[1]))
            .env("ONSALE_REALTIME_1", format!("127.0.0.1:{}", realtime[0]))
            .env("ONSALE_REALTIME_2", format!("127.0.0.1:{}", realtime[1]))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting haproxy (Debian: apt-get install haproxy; deploy/test installs it)");
        testkit::wait_for_port(port, "haproxy");
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fan's HTTP client, connecting from `source` (a loopback address of its own).
fn fan_client(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Sends until an answer that is not the balancer's own 502/503/504 or a broken
/// connection, as a fan's page does; the answer and how many tries it took.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    idempotency: Option<&str>,
) -> (StatusCode, Value, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut request = client.request(method.clone(), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Some(key) = idempotency {
            request = request.header("Idempotency-Key", key);
        }
        match request.send().await {
            Ok(response) if !matches!(response.status().as_u16(), 502..=504) || tries >= 20 => {
                let status = response.status();
                let body = response.json().await.unwrap_or(Value::Null);
                return (status, body, tries);
            }
            Ok(_) | Err(_) if tries < 20 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{method} {url} failed 20 times: {error}"),
            Ok(_) => unreachable!("the first arm takes the last try"),
        }
    }
}

async fn token(client: &reqwest::Client, lb: &Haproxy, email: &str, password: &str) -> String {
    let credentials = json!({"email": email, "password": password});
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        &lb.url("/v1/auth/login"),
        None,
        Some(credentials),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "login: {body}");
    body["access_token"].as_str().expect("token").to_owned()
}

async fn new_fan(client: &reqwest::Client, lb: &Haproxy, n: usize) -> String {
    let email = format!("lb-fan-{n}-{}@onsale.test", uuid::Uuid::new_v4().simple());
    let credentials = json!({"email": email, "password": "a fan's password"});
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        &lb.url("/v1/auth/register"),
        None,
        Some(credentials),
        Some(&format!("register-{email}")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "register: {body}");
    token(client, lb, &email, "a fan's password").await
}

/// What one watcher's socket saw: frames since each (re)connection.
#[derive(Default)]
struct Watch {
    connections: Vec<Vec<Value>>,
}

/// Holds a socket through the balancer for `request`, reconnecting whenever it
/// drops, until `stop`; every frame is kept, per connection.
async fn watch(
    lb_port: u16,
    event: String,
    token: String,
    request: String,
    log: Arc<Mutex<Watch>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let url = format!(
        "ws://127.0.0.1:{lb_port}/v1/events/{event}/live?access_token={token}&request_id={request}"
    );
    while !stop.is_cancelled() {
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        log.lock().unwrap().connections.push(Vec::new());
        loop {
            let frame = tokio::select! {
                frame = socket.next() => frame,
                _ = stop.cancelled() => return,
            };
            match frame {
                Some(Ok(message)) if message.is_text() => {
                    let value: Value = serde_json::from_str(message.to_text().unwrap_or("null"))
                        .unwrap_or(Value::Null);
                    log.lock()
                        .unwrap()
                        .connections
                        .last_mut()
                        .unwrap()
                        .push(value);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
}

/// The farm behind haproxy; every process goes when it is dropped, haproxy first.
struct Balanced {
    lb: Haproxy,
    gateways: Vec<Service>,
    realtime: Vec<Service>,
    _others: Vec<Service>,
    postgres: PrivatePostgres,
    _redis: PrivateRedis,
    _logs: KeepLogs,
}

impl Balanced {
    /// Two gateways, two realtime nodes, the waiting room and two booking workers on
    /// a private Redis and Postgres, behind haproxy; `extra` settings win over the
    /// defaults.
    async fn start(extra: &[(&'static str, String)]) -> Self {
        let redis = PrivateRedis::start();
        let postgres = PrivatePostgres::start();
        let dir = std::env::temp_dir().join(format!("onsale-lb-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", postgres.url()),
            ("REDIS_URL", redis.url()),
            ("ONSALE_AUTH__JWT_SECRET", JWT_SECRET.into()),
            (
                "ONSALE_PAYMENTS__WEBHOOK_SECRET",
                "lb-webhook-secret".into(),
            ),
            ("ONSALE_PAYMENTS__SANDBOX_WEBHOOK_SECONDS", "0".into()),
            ("ONSALE_BOOTSTRAP_ADMIN", format!("{}:{}", ADMIN.0, ADMIN.1)),
            ("ONSALE_LIMITS__TRUSTED_PROXIES", "127.0.0.1".into()),
            ("ONSALE_LIMITS__PER_IP_PER_SECOND", "200".into()),
            ("ONSALE_LIMITS__PER_IP_BURST", "40".into()),
            ("ONSALE_DISCOVER_INTERVAL_MS", "50".into()),
            ("ONSALE_DRAIN__BLOCK_MS", "50".into()),
            ("ONSALE_DRAIN__LEASE_MS", "1000".into()),
            ("RUST_LOG", "warn".into()),
        ];
        env.retain(|(name, _)| !extra.iter().any(|(other, _)| other == name));
        env.extend(extra.iter().cloned());
        // The first gateway alone first: it migrates the database and creates the
        // admin, so the others start on a finished schema.
        let mut gateway_1 = Service::spawn("gateway-1", "gateway", &dir, &env);
        wait_ready(&mut gateway_1).await;
        let mut gateways = vec![
            gateway_1,
            Service::spawn("gateway-2", "gateway", &dir, &env),
        ];
        let mut realtime = vec![
            Service::spawn("realtime-1", "realtime", &dir, &env),
            Service::spawn("realtime-2", "realtime", &dir, &env),
        ];
        let mut others: Vec<Service> = [
            ("waiting-room", "waiting-room"),
            ("booking-worker-1", "booking-worker"),
            ("booking-worker-2", "booking-worker"),
        ]
        .into_iter()
        .map(|(name, program)| Service::spawn(name, program, &dir, &env))
        .collect();
        for service in gateways
            .iter_mut()
            .chain(realtime.iter_mut())
            .chain(others.iter_mut())
        {
            wait_ready(service).await;
        }
        let lb = Haproxy::start(
            &dir,
            [gateways[0].port, gateways[1].port],
            [realtime[0].port, realtime[1].port],
        );
        Self {
            lb,
            gateways,
            realtime,
            _others: others,
            postgres,
            _redis: redis,
            _logs: KeepLogs(dir),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_a_sale_survives_losing_a_gateway_and_a_realtime_node() {
    let mut farm = Balanced::start(&[]).await;
    let mut gateway_1 = farm.gateways.remove(0);
    let mut realtime_1 = farm.realtime.remove(0);
    let lb = &farm.lb;

    // The sale: 60 seats, admission slow enough that the line is still moving when
    // the nodes die.
    let operator = fan_client(Ipv4Addr::LOCALHOST);
    let admin = token(&operator, lb, ADMIN.0, ADMIN.1).await;
    let event = sale(&operator, lb, &admin).await;

    // Fans each come from an address of their own (127.0.0.10 + n): behind the
    // trusted balancer each has its own bucket.
    let fans: Vec<(reqwest::Client, String)> = futures_util::future::join_all((0..FANS).map(|n| {
        let client = fan_client(Ipv4Addr::new(127, 0, 0, 10 + n as u8));
        let lb = &*lb;
        async move {
            let token = new_fan(&client, lb, n).await;
            (client, token)
        }
    }))
    .await;

    // Joins, concurrently; gateway-1 dies after a random number of them.
    let kill_gateway_after = rand::rng().random_range(FANS / 4..FANS * 3 / 4);
    let joined = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gateway_killed = tokio_util::sync::CancellationToken::new();
    let killer = {
        let (joined, killed) = (joined.clone(), gateway_killed.clone());
        tokio::spawn(async move {
            while joined.load(std::sync::atomic::Ordering::SeqCst) < kill_gateway_after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            gateway_1.kill();
            killed.cancel();
            gateway_1
        })
    };
    let path = lb.url(&format!("/v1/events/{event}/requests"));
    let joins: Vec<(String, u32)> =
        futures_util::future::join_all(fans.iter().enumerate().map(|(n, (client, token))| {
            let (path, joined) = (path.clone(), joined.clone());
            async move {
                let key = format!("join-{n}");
                let (status, body, tries) = call(
                    client,
                    reqwest::Method::POST,
                    &path,
                    Some(token),
                    Some(json!({"quantity": 2})),
                    Some(&key),
                )
                .await;
                joined.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(status, StatusCode::ACCEPTED, "fan {n}'s join: {body}");
                let request = body["request_id"].as_str().expect("request id").to_owned();
                // The same key again, through whichever gateway is left: the same request.
                let (again, body, _) = call(
                    client,
                    reqwest::Method::POST,
                    &path,
                    Some(token),
                    Some(json!({"quantity": 2})),
                    Some(&key),
                )
                .await;
                assert_eq!(again, StatusCode::ACCEPTED, "fan {n}'s retry: {body}");
                assert_eq!(body["request_id"], request.as_str(), "fan {n}'s retry");
                (request, tries)
            }
        }))
        .await;
    let _gateway_1 = killer.await.expect("killer");
    assert!(
        gateway_killed.is_cancelled(),
        "gateway-1 was killed mid-sale"
    );

    // Watchers: the first WATCHERS fans hold a socket each through the balancer.
    let stop = tokio_util::sync::CancellationToken::new();
    let watches: Vec<Arc<Mutex<Watch>>> = (0..WATCHERS).map(|_| Arc::default()).collect();
    let mut watchers = Vec::new();
    for (n, watch_log) in watches.iter().enumerate() {
        watchers.push(tokio::spawn(watch(
            lb.port,
            event.clone(),
            fans[n].1.clone(),
            joins[n].0.clone(),
            watch_log.clone(),
            stop.clone(),
        )));
    }
    // Every watcher connected once, then the line moves and realtime-1 dies at a
    // random moment of it.
    eventually(
        Duration::from_secs(20),
        "every watcher's first snapshot",
        || {
            watches.iter().all(|w| {
                w.lock()
                    .unwrap()
                    .connections
                    .first()
                    .is_some_and(|c| !c.is_empty())
            })
        },
    )
    .await;
    let (status, body, _) = call(
        &operator,
        reqwest::Method::PUT,
        &lb.url(&format!("/v1/ops/events/{event}/admission")),
        Some(&admin),
        Some(json!({"per_second": 4})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "admission: {body}");
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..1500))).await;
    realtime_1.kill();

    // Every fan is held in the end, and every watcher's socket says so.
    for (n, (client, token)) in fans.iter().enumerate() {
        let url = lb.url(&format!("/v1/requests/{}", joins[n].0));
        let started = Instant::now();
        loop {
            let (status, body, _) =
                call(client, reqwest::Method::GET, &url, Some(token), None, None).await;
            assert_eq!(status, StatusCode::OK, "fan {n}'s request: {body}");
            match body["state"].as_str() {
                Some("held") => break,
                Some("queued") => {}
                other => panic!("fan {n}'s request went {other:?}: {body}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "fan {n} never held"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eventually(
        Duration::from_secs(30),
        "every watcher's socket to show its fan held",
        || {
            watches.iter().all(|w| {
                w.lock().unwrap().connections.last().is_some_and(|frames| {
                    frames
                        .iter()
                        .any(|f| f["type"] == "request" && f["state"] == "held")
                })
            })
        },
    )
    .await;
    stop.cancel();
    for watcher in watchers {
        watcher.await.expect("watcher");
    }

    // The history: sockets cut by the kill reconnected and began from a snapshot.
    let mut reconnected = 0;
    for (n, watch_log) in watches.iter().enumerate() {
        let watch_log = watch_log.lock().unwrap();
        for (c, frames) in watch_log.connections.iter().enumerate() {
            let types: Vec<&str> = frames.iter().filter_map(|f| f["type"].as_str()).collect();
            assert_eq!(
                types.first().copied(),
                Some("sale"),
                "watcher {n}'s connection {c} starts with the sale: {types:?}"
            );
            assert!(
                types.contains(&"request"),
                "watcher {n}'s connection {c} carries the fan's request: {types:?}"
            );
        }
        reconnected += usize::from(watch_log.connections.len() > 1);
    }
    assert!(
        reconnected > 0,
        "leastconn spread the sockets over both nodes, so killing one cut some"
    );

    // Nothing doubled: one request per fan in the ledger, each the one its fan was given.
    let pool = sqlx::PgPool::connect(&farm.postgres.url())
        .await
        .expect("pool");
    let ledger: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT request_id FROM waiting_room.requests WHERE event_id = $1::uuid")
            .bind(&event)
            .fetch_all(&pool)
            .await
            .expect("ledger");
    let mut given: Vec<String> = joins.iter().map(|(r, _)| r.clone()).collect();
    let mut recorded: Vec<String> = ledger.iter().map(|(r,)| r.to_string()).collect();
    given.sort();
    recorded.sort();
    assert_eq!(
        recorded, given,
        "the ledger holds exactly the fans' requests"
    );

    // A fan pays through whichever gateway is left.
    let (client, token) = &fans[0];
    let (status, order, _) = call(
        client,
        reqwest::Method::POST,
        &lb.url(&format!("/v1/requests/{}/checkout", joins[0].0)),
        Some(token),
        Some(json!({"card_number": "4242424242424242", "expiry": "12/34", "cvc": "123"})),
        Some("pay-0"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "checkout: {order}");
    assert_eq!(order["state"], "paid", "{order}");

    // Behind the trusted balancer, one address's bucket does not drain another's.
    let greedy = fan_client(Ipv4Addr::new(127, 0, 0, 2));
    let mut limited = false;
    for _ in 0..200 {
        let response = greedy
            .get(lb.url("/v1/events"))
            .send()
            .await
            .expect("answer");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "127.0.0.2 ran out of its own bucket");
    let patient = fan_client(Ipv4Addr::new(127, 0, 0, 3));
    let response = patient
        .get(lb.url("/v1/events"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "127.0.0.3 has a bucket of its own"
    );
    let retried = joins.iter().filter(|(_, tries)| *tries > 1).count();
    eprintln!(
        "balanced: {FANS} fans joined ({retried} after a retry), gateway-1 killed after \
         {kill_gateway_after} joins, {reconnected} of {WATCHERS} sockets reconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_two_gateways_let_an_address_through_at_its_rate_once() {
    // 1 request a second per address, a burst of 10, shared by the tier.
    let farm = Balanced::start(&[
        ("ONSALE_LIMITS__PER_IP_PER_SECOND", "1".into()),
        ("ONSALE_LIMITS__PER_IP_BURST", "10".into()),
    ])
    .await;
    // A client of its own address (the balancer says so in X-Forwarded-For); the
    // balancer sends its requests to each gateway in turn.
    let client = fan_client(Ipv4Addr::new(127, 0, 0, 77));
    let started = Instant::now();
    let (mut admitted, mut refused) = (0u64, 0u64);
    for _ in 0..40 {
        let response = client
            .get(farm.lb.url("/v1/events"))
            .send()
            .await
            .expect("an answer");
        match response.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Unshared, each gateway would admit its burst: 20 of 40.
    let allowed = 10 + started.elapsed().as_secs() + 1;
    assert!(admitted >= 10, "{admitted} admitted");
    assert!(
        admitted <= allowed,
        "{admitted} admitted through two gateways, {allowed} allowed"
    );
    assert_eq!(admitted + refused, 40);
    // Both gateways answered (round robin): each counted refusals of its own.
    for gateway in &farm.gateways {
        let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", gateway.ops_port))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with("onsale_rate_limited_total")),
            "{} refused nothing",
            gateway.name
        );
    }
}

async fn wait_ready(service: &mut Service) {
    let started = Instant::now();
    loop {
        service.assert_running();
        if let Ok(response) = reqwest::get(service.url("/readyz")).await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} not ready within 90 s (log: {})",
            service.name,
            service.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "no {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A venue of 60 seats and an open sale on it; its event id.
async fn sale(operator: &reqwest::Client, lb: &Haproxy, admin: &str) -> String {
    let rows: Vec<Value> = (1..=3)
        .map(|r| json!({"label": format!("R{r}"), "seats": 20}))
        .collect();
    let (status, venue, _) = call(
        operator,
        reqwest::Method::POST,
        &lb.url("/v1/venues"),
        Some(admin),
        Some(json!({"name": "Balanced Hall", "sections": [
            {"name": "Floor", "price_tier": "standard", "rows": rows}
        ]})),
        Some("venue"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "venue: {venue}");
    let onsale = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, event, _) = call(
        operator,
        reqwest::Method::POST,
        &lb.url("/v1/events"),
        Some(admin),
        Some(json!({
            "venue_id": venue["venue_id"], "name": "Balanced Night",
            "starts_at": (onsale + chrono::Duration::days(30)).to_rfc3339(),
            "onsale_at": onsale.to_rfc3339(),
            "max_per_fan": 4, "hold_seconds": 600, "prices": {"standard": 5000}
        })),
        Some("event"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "event: {event}");
    let event = event["event_id"].as_str().expect("event id").to_owned();
    // Held back until the sockets are up: the operator lets the line move later.
    let (status, body, _) = call(
        operator,
        reqwest::Method::PUT,
        &lb.url(&format!("/v1/ops/events/{event}/admission")),
        Some(admin),
        Some(json!({"per_second": 1})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "admission: {body}");
    let (status, body, _) = call(
        operator,
        reqwest::Method::POST,
        &lb.url(&format!("/v1/ops/events/{event}/open")),
        Some(admin),
        Some(json!({})),
        Some("open"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "open: {body}");
    event
}

/// Keeps the run's logs when the test fails, removes them when it passes.
struct KeepLogs(PathBuf);

impl Drop for KeepLogs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the balanced farm's logs are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fans_page_works_unchanged_through_haproxy() {
    let browser = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (deploy/test does)",
        browser.display()
    );
    // The browser's pages, the script's fans and the admin all come from 127.0.0.1.
    let farm = Balanced::start(&[
        ("ONSALE_LIMITS__PER_IP_PER_SECOND", "10000".into()),
        ("ONSALE_LIMITS__PER_IP_BURST", "10000".into()),
    ])
    .await;
    let screenshots =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser/fan-balanced");
    let _ = std::fs::remove_dir_all(&screenshots);
    let (base, shots) = (farm.lb.url(""), screenshots.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("fan.mjs")
            .current_dir(&browser)
            .env("BASE_URL", base)
            .env("ADMIN_EMAIL", ADMIN.0)
            .env("ADMIN_PASSWORD", ADMIN.1)
            .env("SCREENSHOTS", &shots)
            .output()
    })
    .await
    .expect("the browser task")
    .expect("node runs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the fan's scenario through haproxy failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        screenshots.join("01-countdown.png").is_file(),
        "the scenario photographed its first step"
    );
}

/// `ONSALE_BALANCED=1 deploy/run` itself, as a developer starts it, on a private
/// Redis and Postgres, with its data, logs and pids (`pids/<service>`) in a
/// directory of its own and its output in `deploy-run.out` there; stopped with a
/// TERM, as Ctrl-C does, when dropped.
struct DeployRun {
    child: Child,
    dir: PathBuf,
    port: u16,
    _postgres: PrivatePostgres,
    _redis: PrivateRedis,
    _logs: KeepLogs,
}

impl DeployRun {
    /// Starts the farm with the binaries already built (`ONSALE_BUILD=0`: deploy/test
    /// built them) and waits until it says it is running.
    fn start() -> Self {
        let redis = PrivateRedis::start();
        let postgres = PrivatePostgres::start();
        let dir =
            std::env::temp_dir().join(format!("onsale-run-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let output = std::fs::File::create(dir.join("deploy-run.out")).expect("output");
        // No broker is needed to supervise the farm: the one the suite has, or an
        // address where none answers (domain events wait in the outbox).
        let brokers =
            std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| format!("127.0.0.1:{}", free_port()));
        let child = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/run"))
            .env("ONSALE_BALANCED", "1")
            .env("ONSALE_BUILD", "0")
            .env("ONSALE_RUN_DIR", &dir)
            .env("ONSALE_PORT", port.to_string())
            .env("REDIS_URL", redis.url())
            .env("DATABASE_URL", postgres.url())
            .env("KAFKA_BROKERS", brokers)
            .env("ONSALE_LIMITS__PER_IP_PER_SECOND", "10000")
            .env("ONSALE_LIMITS__PER_IP_BURST", "10000")
            .env_remove("ONSALE_SMTP_URL")
            .env_remove("ONSALE_REDIS_CLUSTER")
            .stdout(output.try_clone().expect("output"))
            .stderr(output)
            .stdin(Stdio::null())
            .spawn()
            .expect("deploy/run starts");
        let mut run = Self {
            child,
            dir: dir.clone(),
            port,
            _postgres: postgres,
            _redis: redis,
            _logs: KeepLogs(dir),
        };
        let started = Instant::now();
        while !run.output().contains("onsale is running") {
            run.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "deploy/run not up within 120 s:\n{}",
                run.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        run
    }

    /// What deploy/run has printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("deploy-run.out")).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("deploy/run exited ({status}):\n{}", self.output());
        }
    }

    /// The pid deploy/run keeps for `service`, once it runs (after a restart too).
    fn pid(&self, service: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pids").join(service))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every pid deploy/run keeps, by service.
    fn pids(&self) -> Vec<(String, u32)> {
        let entries = std::fs::read_dir(self.dir.join("pids")).expect("deploy/run's pids");
        let mut pids: Vec<(String, u32)> = entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().to_string_lossy().into_owned();
                Some((name.clone(), self.pid(&name)?))
            })
            .collect();
        pids.sort();
        pids
    }

    /// The port of `service`, from the `service ops:` line deploy/run printed.
    fn port_of(&self, service: &str) -> u16 {
        let output = self.output();
        let marker = format!(" {service} http://127.0.0.1:");
        let at = output
            .find(&marker)
            .expect("deploy/run printed the service's port")
            + marker.len();
        output[at..]
            .split('/')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port")
    }

    /// A TERM, as Ctrl-C's trap sends, and how long deploy/run took to stop.
    fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        signal("TERM", self.child.id());
        loop {
            if let Some(status) = self.child.try_wait().expect("deploy/run's status") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "deploy/run still running 60 s after its TERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DeployRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal("TERM", self.child.id());
            let started = Instant::now();
            while matches!(self.child.try_wait(), Ok(None))
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` (`TERM`, `KILL`) to a process.
fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Whether a process is gone (reaped, not merely dead).
fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Requests through the balancer: when each was sent and its status (`None`: no
/// answer at all).
type Answers = Arc<Mutex<Vec<(Instant, Option<u16>)>>>;

/// GETs `url` every 50 ms until `stop`, keeping every answer.
async fn probe(url: String, answers: Answers, stop: tokio_util::sync::CancellationToken) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    while !stop.is_cancelled() {
        let sent = Instant::now();
        let status = client
            .get(&url)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        answers.lock().unwrap().push((sent, status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_run_restarts_a_killed_gateway_while_haproxy_keeps_answering() {
    let mut farm = DeployRun::start();
    let gateway_port = farm.port_of("gateway-1");
    let killed = farm
        .pid("gateway-1")
        .expect("deploy/run keeps gateway-1's pid");

    let answers: Answers = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = tokio::spawn(probe(
        format!("http://127.0.0.1:{}/v1/events", farm.port),
        answers.clone(),
        stop.clone(),
    ));
    eventually(Duration::from_secs(10), "answer through haproxy", || {
        !answers.lock().unwrap().is_empty()
    })
    .await;

    // A crash, not a goodbye: gateway-1 is gone at once.
    let down = Instant::now();
    signal("KILL", killed);
    eventually(Duration::from_secs(20), "word of gateway-1's restart", || {
        farm.assert_running();
        farm.output().contains(
            "gateway-1 exited (status 137 / killed by signal 9, SIGKILL); restarting in 1 s (restart 1;",
        )
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "word that gateway-1 is back",
        || {
            farm.assert_running();
            farm.output().contains("gateway-1 is back")
        },
    )
    .await;
    // Its own port answers again, from a new process that deploy/run keeps.
    let health = format!("http://127.0.0.1:{gateway_port}/healthz");
    let response = reqwest::get(&health).await.expect("gateway-1 answers");
    assert_eq!(response.status(), StatusCode::OK, "gateway-1's /healthz");
    let back = Instant::now();
    let restarted = farm.pid("gateway-1").expect("gateway-1's new pid");
    assert_ne!(restarted, killed, "a new gateway-1");
    assert!(gone(killed), "the killed gateway-1 was reaped");

    // Through haproxy, every request was answered while gateway-1 was down, and
    // still is now that it is back.
    let after = answers.lock().unwrap().len();
    eventually(
        Duration::from_secs(10),
        "20 answers after the return",
        || answers.lock().unwrap().len() >= after + 20,
    )
    .await;
    stop.cancel();
    prober.await.expect("prober");
    let answers = answers.lock().unwrap().clone();
    let while_down = answers
        .iter()
        .filter(|(sent, _)| *sent >= down && *sent < back)
        .count();
    assert!(
        while_down >= 5,
        "the balancer was asked while gateway-1 was down ({while_down} times)"
    );
    let unanswered: Vec<&(Instant, Option<u16>)> = answers
        .iter()
        .filter(|(_, status)| *status != Some(200))
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} of {} requests through haproxy not answered 200 (at {:?} after the kill): {:?}",
        unanswered.len(),
        answers.len(),
        unanswered
            .first()
            .map(|(sent, _)| sent.saturating_duration_since(down)),
        unanswered
            .iter()
            .map(|(_, status)| status)
            .collect::<Vec<_>>()
    );
    farm.assert_running();

    // TERM, as Ctrl-C: every process stops, none is restarted on the way out.
    let pids = farm.pids();
    let exits_before = farm.output().matches(" exited (").count();
    let (status, took) = farm.stop();
    assert_eq!(status.code(), Some(130), "deploy/run's status after a TERM");
    assert!(
        took < Duration::from_secs(30),
        "deploy/run took {took:?} to stop"
    );
    let output = farm.output();
    assert_eq!(
        output.matches(" exited (").count(),
        exits_before,
        "a service stopped by the TERM was taken for a crash:\n{output}"
    );
    for (service, pid) in pids {
        assert!(gone(pid), "{service} ({pid}) outlived deploy/run");
    }
    eprintln!(
        "deploy/run: gateway-1 back {:?} after its kill; {while_down} requests answered \
         meanwhile, {} in all; stopped in {took:?}",
        back - down,
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_run_stops_the_farm_when_a_service_keeps_crashing() {
    let mut farm = DeployRun::start();
    let mut last = None;
    let mut pids = Vec::new();
    for crash in 1..=5 {
        // The next gateway-1, once deploy/run has started it again.
        let started = Instant::now();
        let pid = loop {
            farm.assert_running();
            match farm.pid("gateway-1") {
                Some(pid) if Some(pid) != last => break pid,
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "gateway-1 not started again after crash {}:\n{}",
                crash - 1,
                farm.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if crash == 5 {
            pids = farm.pids();
        }
        signal("KILL", pid);
        last = Some(pid);
    }

    // The fifth crash within two minutes: the farm stops, saying why and showing
    // the end of gateway-1's log, and takes every process with it.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = farm.child.try_wait().expect("deploy/run's status") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "deploy/run still running after gateway-1's fifth crash:\n{}",
            farm.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = farm.output();
    assert_eq!(status.code(), Some(1), "deploy/run gave up:\n{output}");
    for backoff in [1, 2, 4, 8] {
        assert!(
            output.contains(&format!("restarting in {backoff} s")),
            "a backoff of {backoff} s:\n{output}"
        );
    }
    assert!(
        output.contains("gateway-1 exited (status 137 / killed by signal 9, SIGKILL), its 5th crash within 2 minutes: stopping the farm"),
        "{output}"
    );
    let log =
        std::fs::read_to_string(farm.dir.join("logs/gateway-1.log")).expect("gateway-1's log");
    let last_line = log
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .expect("a log line");
    let shown = &output[output
        .find("the last 20 lines of")
        .expect("the log's end is shown")..];
    assert!(
        shown.contains(last_line),
        "the log's last line {last_line:?} is shown:\n{output}"
    );
    for (service, pid) in pids {
        assert!(gone(pid), "{service} ({pid}) outlived deploy/run");
    }
}
