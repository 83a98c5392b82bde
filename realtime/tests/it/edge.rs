//! A realtime node at the edge, as its own process: an address holds a bounded
//! number of sockets and asks for upgrades, tickets and snapshots at a bounded
//! rate, whatever `X-Forwarded-For` it forges; an event with no sale is refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::{EventId, UserId};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::slow_reader::{Node, SECRET, event, token};

/// Starts a node on `pool`'s database with `settings` (`ONSALE_LIVE__*` names,
/// values) and waits until it answers.
async fn node(pool: &PgPool, settings: &[(&str, &str)]) -> (Node, u16) {
    let port = testkit::free_port();
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let database_url = format!("{}/{database}", &base[..base.rfind('/').unwrap()]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_realtime"));
    command
        .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", testkit::redis_url())
        .env(
            "ONSALE_REDIS__KEY_PREFIX",
            format!("test:{}", uuid::Uuid::new_v4().simple()),
        )
        .env("ONSALE_AUTH__JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for (name, value) in settings {
        command.env(format!("ONSALE_LIVE__{name}"), value);
    }
    let node = Node(command.spawn().expect("the realtime binary starts"));
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (node, port)
}

/// Opens a socket for a new fan; the HTTP status of a refusal.
async fn open(
    port: u16,
    event: EventId,
    forwarded_for: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    StatusCode,
> {
    let mut request = format!("ws://127.0.0.1:{port}/v1/events/{event}/live")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(UserId::new())).parse().unwrap(),
    );
    if let Some(address) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", address.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(other) => panic!("the upgrade failed without an answer: {other}"),
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_address_holds_a_bounded_number_of_sockets_whatever_it_forwards(pool: PgPool) {
    let event = event(&pool).await;
    let (_node, port) = node(
        &pool,
        &[
            ("MAX_SOCKETS_PER_ADDRESS", "3"),
            ("REQUESTS_BURST_PER_ADDRESS", "1000"),
        ],
    )
    .await;
    let mut open_sockets = Vec::new();
    for _ in 0..3 {
        open_sockets.push(open(port, event, None).await.expect("within the cap"));
    }
    // Three fans from one address hold its three sockets: a fourth, even under a
    // forged X-Forwarded-For (the peer is no trusted proxy), is refused.
    assert_eq!(
        open(port, event, None).await.err(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(
        open(port, event, Some("203.0.113.9")).await.err(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    // A socket that closes gives its place back.
    let mut closed = open_sockets.pop().expect("a socket");
    closed.close(None).await.expect("close");
    drop(closed);
    let started = Instant::now();
    loop {
        match open(port, event, None).await {
            Ok(socket) => {
                open_sockets.push(socket);
                break;
            }
            Err(status) => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the closed socket's place never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_address_asks_at_a_bounded_rate_and_hears_when_to_come_back(pool: PgPool) {
    let event = event(&pool).await;
    let (_node, port) = node(
        &pool,
        &[
            ("REQUESTS_PER_SECOND_PER_ADDRESS", "1"),
            ("REQUESTS_BURST_PER_ADDRESS", "5"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..30 {
        let response = client
            .get(format!(
                "http://127.0.0.1:{port}/v1/events/{event}/live/snapshot"
            ))
            .bearer_auth(token(UserId::new()))
            .send()
            .await
            .expect("an answer");
        match response.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                let wait: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&wait), "retry-after {wait}");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["code"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The burst, plus one per second that passed.
    let allowed = 5 + started.elapsed().as_secs() + 1;
    assert!(
        admitted <= allowed,
        "{admitted} admitted, {allowed} allowed"
    );
    assert!(refused >= 30 - allowed, "{refused} refused");

    // Upgrades count against the same budget, refused before any token is read:
    // of five in a row, at most one a second gets through.
    let started = Instant::now();
    let mut upgrades_refused = 0;
    for _ in 0..5 {
        if open(port, event, None).await.err() == Some(StatusCode::TOO_MANY_REQUESTS) {
            upgrades_refused += 1;
        }
    }
    let through = 1 + started.elapsed().as_secs() as usize;
    assert!(
        upgrades_refused >= 5 - through.min(5),
        "{upgrades_refused} of 5 upgrades refused"
    );
    assert!(upgrades_refused > 0);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_event_without_a_sale_gets_no_socket(pool: PgPool) {
    let event = event(&pool).await;
    sqlx::query("DELETE FROM waiting_room.sales WHERE event_id = $1")
        .bind(event)
        .execute(&pool)
        .await
        .expect("no sale");
    let (_node, port) = node(&pool, &[]).await;
    let response = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/v1/events/{event}/live/snapshot"
        ))
        .bearer_auth(token(UserId::new()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "sale_not_found");
    assert_eq!(
        open(port, event, None).await.err(),
        Some(StatusCode::NOT_FOUND)
    );
}
