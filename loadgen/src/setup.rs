//! Venues, events and lines for the benchmarks, made through the services' own
//! library functions.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use inventory::seatmap::{self, LoadMode};
use inventory::{events, venues};
use platform::auth::TokenIssuer;
use platform::settings::{DatabaseSettings, RedisSettings};
use platform::store::Redis;
use proto::wire::inventory::{CreateEvent, CreateVenue};
use proto::{ErrorCode, EventId, Keys, UserId};
use secrecy::SecretString;
use sqlx::PgPool;
use waiting_room::requests::Ask;

pub struct Stack {
    pub pool: PgPool,
    pub store: platform::store::Store,
    pub redis: Redis,
    pub redis_url: String,
    pub database_url: String,
    pub keys: Keys,
}

pub async fn connect() -> anyhow::Result<Stack> {
    let database_url =
        std::env::var("DATABASE_URL").context("DATABASE_URL must name the Postgres to use")?;
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL must name the Redis to use")?;
    let pool = platform::runtime::connect_postgres(&DatabaseSettings {
        url: SecretString::from(database_url.clone()),
        max_connections: 16,
    })
    .await?;
    let settings = RedisSettings {
        url: SecretString::from(redis_url.clone()),
        key_prefix: String::new(),
        replicas_to_wait: 0,
        replica_wait_ms: 500,
    };
    let redis = platform::runtime::connect_redis(&settings).await?;
    let store = platform::store::Store::open(redis_url.as_str())?;
    let keys = Keys::new(format!("bench:{}", uuid::Uuid::new_v4().simple()));
    Ok(Stack {
        pool,
        store,
        redis,
        redis_url,
        database_url,
        keys,
    })
}

/// A bearer token for a new user of `role`, signed with `key` (the gateway's
/// secret), valid for an hour.
pub fn sign(key: &TokenIssuer, role: proto::Role) -> anyhow::Result<String> {
    Ok(key.issue(UserId::new(), role)?)
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A venue of `sections` × `rows` × `per_row` seats, one standard tier.
pub async fn venue(
    pool: &PgPool,
    sections: u32,
    rows: u32,
    per_row: u32,
) -> anyhow::Result<proto::VenueId> {
    let names: Vec<String> = (1..=sections).map(|s| format!("S{s}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    venue_named(pool, &names, rows, per_row).await
}

/// A venue of the named sections, each of `rows` × `per_row` seats, one standard tier.
pub async fn venue_named(
    pool: &PgPool,
    sections: &[&str],
    rows: u32,
    per_row: u32,
) -> anyhow::Result<proto::VenueId> {
    let venue = venues::validate(CreateVenue::grid(
        "Benchmark Arena",
        sections,
        "standard",
        rows,
        per_row,
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    venues::create(pool, &venue)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// An event on `venue`, its seat map loaded, its sale scheduled.
pub async fn event(
    stack: &mut Stack,
    venue_id: proto::VenueId,
    max_per_fan: u32,
) -> anyhow::Result<EventId> {
    let event_id = events::create(
        &stack.pool,
        &CreateEvent {
            venue_id,
            name: "Benchmark Night".into(),
            starts_at: Utc::now() + chrono::Duration::days(30),
            onsale_at: Utc::now() + chrono::Duration::days(1),
            max_per_fan,
            hold_seconds: 600,
            prices: BTreeMap::from([("standard".into(), 5000)]),
            admission_per_second: 100_000,
            refund_policy: None,
            tax: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    seatmap::rebuild(
        &stack.pool,
        &mut stack.redis,
        &stack.keys,
        event_id,
        LoadMode::Force,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sale = waiting_room::sale::ensure_sale(&stack.pool, event_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    waiting_room::sale::load_into_redis(&mut stack.redis, &stack.keys, &sale)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(event_id)
}

/// Joins `asks` to the event's pre-queue from distinct fans, `concurrency` at a time.
pub async fn fill_line(
    stack: &Stack,
    event_id: EventId,
    asks: Vec<Ask>,
    concurrency: usize,
) -> anyhow::Result<usize> {
    let bar = bar(asks.len() as u64, "joining");
    let (tx, rx) = tokio::sync::mpsc::channel::<Ask>(concurrency * 4);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, mut redis, keys, rx, bar) = (
            stack.pool.clone(),
            stack.redis.clone(),
            stack.keys.clone(),
            rx.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut joined = 0usize;
            loop {
                let Some(ask) = rx.lock().await.recv().await else {
                    break;
                };
                let fan = UserId::new();
                let mut tries = 0;
                loop {
                    tries += 1;
                    let outcome = waiting_room::joins::join(
                        &pool, &mut redis, &keys, event_id, fan, &ask, None,
                    )
                    .await;
                    match outcome {
                        Ok(_) => break,
                        // An earlier try took effect though its reply was lost (a
                        // response timeout while Redis stalled): the fan is in line once.
                        Err(waiting_room::Error::Refused {
                            code: ErrorCode::AlreadyInLine,
                            ..
                        }) if tries > 1 => break,
                        Err(waiting_room::Error::Redis(why)) if tries < 5 => {
                            bar.suspend(|| eprintln!("a join failed ({why}); asking again"));
                        }
                        Err(error) => anyhow::bail!("join: {error}"),
                    }
                }
                joined += 1;
                bar.inc(1);
            }
            anyhow::Ok(joined)
        }));
    }
    // Only the tasks hold the receiver: should every one of them fail, sending fails
    // too, instead of waiting forever on a full channel.
    drop(rx);
    for ask in asks {
        if tx.send(ask).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    bar.finish();
    Ok(total)
}

/// Admits as fast as the farm can go: the benchmark measures the farm, not the rate.
pub async fn unlimited_admission(stack: &mut Stack, event_id: EventId) -> anyhow::Result<()> {
    let _: () = redis::cmd("HSET")
        .arg(stack.keys.sale(event_id))
        .arg(proto::sale_hash::ADMISSION_PER_SECOND)
        .arg(100_000_000)
        .query_async(&mut stack.redis)
        .await?;
    Ok(())
}

/// Requests the ledger has decided.
pub async fn decided(pool: &PgPool, event_id: EventId) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM booking.requests WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await?,
    )
}

/// Removes every key this run made (they all carry its prefix). A step that times
/// out (the connection's 500 ms response timeout, on a machine that stalls) is tried
/// again a few times before the run reports the keys it left.
pub async fn cleanup(stack: &mut Stack) -> anyhow::Result<()> {
    let pattern = format!("{}:*", stack.keys.prefix());
    if stack.store.is_cluster() {
        // Each master scanned in turn; UNLINK of keys in many slots is split by node.
        let keys = stack.redis.scan_everywhere(&pattern).await?;
        for chunk in keys.chunks(1_000) {
            let _: i64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut stack.redis)
                .await
                .with_context(|| format!("removing this run's keys ({pattern})"))?;
        }
        return Ok(());
    }
    let mut cursor: u64 = 0;
    loop {
        let mut attempt = 0;
        let next = loop {
            attempt += 1;
            match cleanup_step(stack, &pattern, cursor).await {
                Ok(next) => break next,
                Err(error) if error.is_timeout() && attempt < 5 => {
                    eprintln!("removing keys timed out (attempt {attempt}): {error}; trying again")
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("removing this run's keys ({pattern})"));
                }
            }
        };
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// One `SCAN` step from `cursor` and the `UNLINK` of what it found; the next cursor.
async fn cleanup_step(stack: &mut Stack, pattern: &str, cursor: u64) -> redis::RedisResult<u64> {
    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(5_000)
        .query_async(&mut stack.redis)
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("UNLINK")
            .arg(&keys)
            .query_async(&mut stack.redis)
            .await?;
    }
    Ok(next)
}

/// A paid order of `seats` for `fan`'s `request`, written straight to the ledger, and
/// its tickets issued as a settled checkout issues them (signed with `signer`).
pub async fn paid_tickets(
    pool: &PgPool,
    signer: &tickets::keys::Signer,
    event_id: EventId,
    request_id: proto::RequestId,
    fan: proto::UserId,
    seats: &[String],
) -> anyhow::Result<Vec<proto::wire::tickets::Ticket>> {
    let order_id = proto::OrderId::new();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO payments.orders (order_id, request_id, event_id, fan_id, state, seats,
                                      amount_cents, currency, card_last4, provider)
         VALUES ($1, $2, $3, $4, 'paid', $5, 0, 'EUR', '4242', 'sandbox')",
    )
    .bind(order_id)
    .bind(request_id)
    .bind(event_id)
    .bind(fan)
    .bind(seats)
    .execute(&mut *tx)
    .await?;
    let issued = tickets::ledger::issue(
        &mut tx,
        signer,
        &tickets::ledger::Sale {
            order_id,
            request_id,
            event_id,
            fan_id: fan,
            seats,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(issued)
}
