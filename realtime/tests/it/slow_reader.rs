//! A fan whose browser stops reading for a minute while the line moves and the seat
//! map churns must not make the node's memory grow: the node is run as its own
//! process, and its resident memory is read from /proc.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use proto::wire::inventory::{CreateEvent, CreateVenue};
use proto::wire::queue::SaleState;
use proto::{EventId, Keys, RequestId, UserId};
use redis::AsyncCommands;
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;

pub(crate) const SECRET: &str = "realtime-test-secret-realtime-test-0123";

/// How long the reader stalls while the line moves.
const STALL: Duration = Duration::from_secs(60);

pub(crate) struct Node(pub(crate) Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Node {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("the node is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

use testkit::redis_url;

pub(crate) fn token(fan: UserId) -> String {
    platform::auth::TokenIssuer::onsale(SECRET, 600)
        .issue(fan, proto::Role::Fan)
        .expect("token")
}

/// An event with its sale set up (scheduled), as the gateway makes one.
pub(crate) async fn event(pool: &PgPool) -> EventId {
    let venue = inventory::venues::validate(CreateVenue::grid(
        "Slow Arena",
        &["Floor"],
        "standard",
        10,
        100,
    ))
    .expect("valid venue");
    let venue_id = inventory::venues::create(pool, &venue)
        .await
        .expect("venue");
    let event = inventory::events::create(
        pool,
        &CreateEvent {
            venue_id,
            name: "Slow Night".into(),
            starts_at: Utc::now() + chrono::Duration::days(30),
            onsale_at: Utc::now() - chrono::Duration::minutes(1),
            max_per_fan: 4,
            hold_seconds: 600,
            prices: BTreeMap::from([("standard".into(), 5000)]),
            admission_per_second: 100,
            refund_policy: None,
            tax: None,
        },
    )
    .await
    .expect("event");
    waiting_room::sale::create_sale(pool, event)
        .await
        .expect("the event's sale");
    event
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_reader_that_stops_for_a_minute_does_not_grow_the_nodes_memory(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::new_v4().simple());
    let keys = Keys::new(prefix.clone());
    let mut redis = platform::store::Redis::connect(&redis_url()).await.unwrap();
    let event = event(&pool).await;
    // A line: the sale open, two fans far back in it.
    let (slow_fan, live_fan) = (UserId::new(), UserId::new());
    let (slow_request, live_request) = (RequestId::new(), RequestId::new());
    let _: () = redis
        .hset_multiple(
            keys.sale(event),
            &[
                (proto::sale_hash::STATE, SaleState::Open.as_str()),
                (proto::sale_hash::SERVED, "0"),
                (proto::sale_hash::ADMISSION_PER_SECOND, "100"),
            ],
        )
        .await
        .unwrap();
    let _: () = redis
        .hset_multiple(
            keys.seat_counts(event),
            &[("available", 1000), ("version", 1)],
        )
        .await
        .unwrap();
    for (fan, request, number) in [
        (slow_fan, slow_request, 1_000_000),
        (live_fan, live_request, 1_000_001),
    ] {
        let _: () = redis
            .hset_multiple(
                keys.request(event, request),
                &[
                    ("fan", fan.to_string()),
                    ("state", "queued".into()),
                    ("number", number.to_string()),
                ],
            )
            .await
            .unwrap();
    }

    let port = testkit::free_port();
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let database_url = format!("{}/{database}", &base[..base.rfind('/').unwrap()]);
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_realtime"))
            .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("ONSALE_REDIS__KEY_PREFIX", &prefix)
            .env("ONSALE_AUTH__JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the realtime binary starts"),
    );
    let url = |fan: UserId, request: RequestId| {
        format!(
            "ws://127.0.0.1:{port}/v1/events/{event}/live?access_token={}&request_id={request}",
            token(fan)
        )
    };
    let connect = |address: String| async move {
        let started = Instant::now();
        loop {
            match tokio_tungstenite::connect_async(&address).await {
                Ok((socket, _)) => return socket,
                Err(error) if started.elapsed() < Duration::from_secs(30) => {
                    tracing::debug!(%error, "node not up yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("the node never answered: {error}"),
            }
        }
    };
    // The slow reader: connected, then never read again.
    let mut slow = connect(url(slow_fan, slow_request)).await;
    let mut live = connect(url(live_fan, live_request)).await;
    // Let the node settle before the baseline reading: the first messages sent,
    // the feed's task started.
    let mut baseline_messages = 0;
    while baseline_messages < 4 {
        if let Some(Ok(Message::Text(_))) = live.next().await {
            baseline_messages += 1;
        }
    }
    let before = node.rss_kib();

    // The line moves every 100 ms and the seat map churns: each change message
    // names 500 seats (~20 KB), 20 of them a second.
    let churn = {
        let (mut redis, keys) = (redis.clone(), keys.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut served, mut published) = (0u64, 0usize);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while started.elapsed() < STALL {
                tick.tick().await;
                let version: u64 = redis
                    .hincr(keys.seat_counts(event), "version", 1)
                    .await
                    .unwrap();
                let state = if version.is_multiple_of(2) {
                    "held"
                } else {
                    "available"
                };
                let seats: Vec<serde_json::Value> = (0..500)
                    .map(|i| serde_json::json!({"seat_id": format!("Floor-R{}-{}", i / 100 + 1, i % 100 + 1), "state": state}))
                    .collect();
                let message =
                    serde_json::json!({"type": "changes", "version": version, "seats": seats})
                        .to_string();
                published += message.len();
                let _: i64 = redis::cmd("SPUBLISH")
                    .arg(keys.live(event))
                    .arg(&message)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                if version.is_multiple_of(2) {
                    served += 10;
                    let _: () = redis
                        .hset(keys.sale(event), proto::sale_hash::SERVED, served)
                        .await
                        .unwrap();
                    let batch = proto::wire::live::Published::Batch {
                        served,
                        decided: Vec::new(),
                    };
                    let _: i64 = batch
                        .publish(&keys, event)
                        .query_async(&mut redis)
                        .await
                        .unwrap();
                }
            }
            (served, published)
        })
    };
    // The live reader keeps reading and sees the line move the whole time.
    let mut positions = Vec::new();
    let mut deltas = 0;
    let reading = tokio::time::timeout(STALL + Duration::from_secs(5), async {
        while let Some(Ok(message)) = live.next().await {
            if let Message::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                match value["type"].as_str() {
                    Some("position") => positions.push(value["position"].as_u64().unwrap()),
                    Some("seats") => deltas += 1,
                    _ => {}
                }
            }
            if churn.is_finished() {
                break;
            }
        }
    })
    .await;
    assert!(
        reading.is_ok() || churn.is_finished(),
        "the live reader stopped"
    );
    let (served, published) = churn.await.unwrap();
    let after = node.rss_kib();
    // The reader that stopped was let go rather than buffered for: reading what the
    // kernel still holds for it ends, with the node's close ("too slow") if that
    // frame still fit in the socket's buffers, else with the connection cut. A
    // socket the node still served would wait here for the next message, in vain.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow reader's socket ends");
    assert!(matches!(ended, Some(1008) | None), "closed with {ended:?}");

    assert!(deltas > 100, "the live reader got {deltas} seat deltas");
    assert!(
        positions.len() > 50,
        "the live reader got {} positions",
        positions.len()
    );
    assert!(positions.windows(2).all(|w| w[1] <= w[0]));
    assert!(served >= 1000, "the line moved {served}");
    let grown = after.saturating_sub(before);
    eprintln!(
        "node RSS {before} → {after} KiB; {published} bytes published; the live reader got \
         {deltas} seat deltas and {} positions",
        positions.len()
    );
    assert!(
        published > 20 * 1024 * 1024,
        "enough was published to notice buffering: {published} bytes"
    );
    // A node that buffered for the stopped reader would grow by about what went past
    // it; the allocator's own retention here has reached 8 MiB. Half of what was
    // published (over 10 MiB) tells the two apart.
    let bound = published as u64 / 1024 / 2;
    assert!(
        grown < bound,
        "the node grew by {grown} KiB ({before} → {after} KiB, bound {bound} KiB) while \
         {published} bytes went past a reader that did not read"
    );
}
