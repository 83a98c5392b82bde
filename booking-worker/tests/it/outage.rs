//! Postgres out of reach mid-sale: the farm talks to it through a TCP proxy that the
//! test cuts (every connection dropped, new ones refused) and restores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::RequestId;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A TCP proxy that can be cut and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    /// Cancelled on a cut: every connection made before it ends.
    cut: Arc<Mutex<CancellationToken>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (up_flag, cut_token) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up_flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let token = cut_token.lock().expect("cut token").clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut token = self.cut.lock().expect("cut token");
        token.cancel();
        *token = CancellationToken::new();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn redis_state(sale: &Sale, request: RequestId) -> Option<String> {
    let mut redis = sale.redis.clone();
    redis::cmd("HGET")
        .arg(sale.keys.request(sale.event_id, request))
        .arg("state")
        .query_async(&mut redis)
        .await
        .expect("request state")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn holds_that_end_while_postgres_is_away_reach_the_ledger_when_it_is_back(pool: PgPool) {
    // 10 seats, 30 fans in line for one seat each, holds of 1.5 s: each group of 10
    // holds and expires, and the next 10 wait for the seats.
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    sale.set_hold_ms(1_500).await;
    let asks = one_seat_each(30);
    assert_eq!(sale.join_many(asks, 8).await.len(), 30);
    sale.open().await;

    let options = (*sale.pool.connect_options()).clone();
    let upstream = format!("127.0.0.1:{}", options.get_port());
    let proxy = Proxy::start(upstream).await;
    let proxied = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options.host("127.0.0.1").port(proxy.port));
    let settings = booking_worker::DrainSettings {
        sold_out_horizon_ms: 60_000,
        ..fast_settings()
    };
    let worker = booking_worker::Worker {
        pool: proxied,
        ..sale.worker("w", settings)
    };
    let (stop, task) = start(worker);
    sale.wait_for(Duration::from_secs(30), "the first 10 holds", |o| {
        o.get("held").copied().unwrap_or(0) == 10
    })
    .await;

    let first: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "SELECT request_id FROM booking.requests WHERE event_id = $1 AND state = 'held'",
    )
    .bind(sale.event_id)
    .fetch_all(&sale.pool)
    .await
    .expect("held requests");
    let first: Vec<RequestId> = first.into_iter().map(|(id,)| id.into()).collect();

    proxy.cut();
    // The first 10 holds expire in Redis while the ledger cannot be written.
    let deadline = Instant::now() + Duration::from_secs(30);
    for request in &first {
        while redis_state(&sale, *request).await.as_deref() != Some("expired") {
            assert!(
                Instant::now() < deadline,
                "{request} did not expire in redis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        sale.outcomes().await.get("held").copied(),
        Some(10),
        "the ledger was written while postgres was cut off"
    );

    proxy.restore();
    sale.wait_for(Duration::from_secs(60), "every fan held a seat once", |o| {
        o.get("expired").copied().unwrap_or(0) == 30
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");
    sale.assert_no_seat_held_twice(10).await;
    sale.assert_redis_agrees_with_ledger().await;
}
