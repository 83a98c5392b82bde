//! Draining a line through the farm, and the hold benchmark against redis-benchmark.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use booking_worker::{DrainSettings, Worker};
use proto::wire::queue::RequestState;
use proto::{EventId, SeatId};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use waiting_room::requests::Ask;

use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct DrainArgs {
    /// Requests in the line.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Seats on sale (10 sections of rows of 50).
    #[arg(long, default_value_t = 10_000)]
    seats: u32,
    /// Workers in the farm (tasks in this process).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Requests decided per script call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
}

#[derive(clap::Args)]
pub struct HoldsArgs {
    /// Requests (one seat each) for the farm, and request hashes for the baseline.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Requests decided per script call by the farm.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Pipeline depth of redis-benchmark.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
}

fn mixed_asks(n: usize, sections: u32, rows: u32, per_row: u32) -> Vec<Ask> {
    // Deterministic, so runs compare: 70% best-available 1-4 seats, 30% one named seat.
    (0..n)
        .map(|i| {
            let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            if x % 10 < 3 {
                let seat = SeatId::new(
                    &format!("S{}", 1 + (x >> 8) % u64::from(sections)),
                    &format!("R{}", 1 + (x >> 16) % u64::from(rows)),
                    1 + ((x >> 24) % u64::from(per_row)) as u32,
                );
                Ask::Seats(vec![seat])
            } else {
                Ask::Best {
                    quantity: 1 + ((x >> 32) % 4) as u32,
                    section: None,
                    price_tier: None,
                }
            }
        })
        .collect()
}

fn worker(stack: &Stack, name: &str, batch: usize) -> Worker {
    Worker {
        pool: stack.pool.clone(),
        store: stack.store.clone(),
        redis: stack.redis.clone(),
        keys: stack.keys.clone(),
        name: name.to_owned(),
        settings: DrainSettings {
            batch_size: batch,
            sweep_interval_ms: 1_000,
            ..DrainSettings::default()
        },
        discover_every: Duration::from_millis(20),
        health: Default::default(),
    }
}

/// Runs `workers` workers until the ledger has decided `total` requests; returns the
/// time from start to the last decision.
pub(crate) async fn run_farm(
    stack: &Stack,
    event_id: EventId,
    total: usize,
    workers: usize,
    batch: usize,
) -> anyhow::Result<Duration> {
    let stop = CancellationToken::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| tokio::spawn(worker(stack, &format!("bench-{i}"), batch).run(stop.clone())))
        .collect();
    let bar = bar(total as u64, "deciding");
    // Progress comes from the stream's group: the farm acknowledges an entry only
    // after its outcome is committed to Postgres, so "read and nothing pending" means
    // every outcome is in the ledger. Postgres is asked once at the end to confirm;
    // polling it here would load the very database the farm writes to.
    let mut redis = stack.redis.clone();
    let stream = stack.keys.stream(event_id);
    loop {
        let groups: redis::streams::StreamInfoGroupsReply =
            redis.xinfo_groups(&stream).await.context("XINFO GROUPS")?;
        let acknowledged = groups
            .groups
            .iter()
            .find(|g| g.name == proto::keys::WORKER_GROUP)
            .map_or(0, |g| g.entries_read.unwrap_or(0).saturating_sub(g.pending));
        bar.set_position(acknowledged as u64);
        if acknowledged >= total && setup::decided(&stack.pool, event_id).await? as usize >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the farm acknowledged {acknowledged} of {total} in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    bar.finish();
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    Ok(elapsed)
}

/// The oversell audit: Postgres's claims against the requests and Redis.
async fn audit(
    stack: &mut Stack,
    event_id: EventId,
    seats: i64,
    total: usize,
) -> anyhow::Result<(i64, i64)> {
    let decided = setup::decided(&stack.pool, event_id).await?;
    let (held_requests, held_seats): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(cardinality(seats)), 0) FROM booking.requests WHERE event_id = $1 AND state = 'held'",
    )
    .bind(event_id)
    .fetch_one(&stack.pool)
    .await?;
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking.seat_claims WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&stack.pool)
            .await?;
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT seat FROM booking.requests, unnest(seats) AS seat
         WHERE event_id = $1 AND state = 'held' GROUP BY seat HAVING count(*) > 1) AS d",
    )
    .bind(event_id)
    .fetch_one(&stack.pool)
    .await?;
    let diff = inventory::seatmap::diff_against_ledger(
        &stack.pool,
        &mut stack.redis,
        &stack.keys,
        event_id,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "audit: {decided}/{total} decided, {held_requests} holds on {held_seats} seats, {claims} ledger claims, \
         {doubled} seats held twice, {} seats where redis differs from postgres, {seats} seats on sale",
        diff.len()
    );
    if decided as usize != total
        || held_seats != claims
        || doubled != 0
        || !diff.is_empty()
        || held_seats > seats
    {
        bail!("the audit failed");
    }
    Ok((held_requests, held_seats))
}

pub async fn drain(stack: &mut Stack, args: DrainArgs) -> anyhow::Result<()> {
    let (sections, per_row) = (10, 50);
    let rows = args.seats.div_ceil(sections * per_row);
    let venue_id = setup::venue(&stack.pool, sections, rows, per_row).await?;
    let event_id = setup::event(stack, venue_id, 8).await?;
    let seats = i64::from(sections * rows * per_row);
    let asks = mixed_asks(args.requests, sections, rows, per_row);
    let joined = setup::fill_line(stack, event_id, asks, 128).await?;
    let draw_started = Instant::now();
    waiting_room::sale::draw(&stack.pool, &mut stack.redis, &stack.keys, event_id, None)
        .await
        .context("drawing the pre-queue")?;
    let draw_time = draw_started.elapsed();
    setup::unlimited_admission(stack, event_id).await?;
    let elapsed = run_farm(stack, event_id, joined, args.workers, args.batch).await?;
    let (holds, held_seats) = audit(stack, event_id, seats, joined).await?;
    println!(
        "drain: {joined} requests for {seats} seats decided in {:.2} s ({:.0} requests/s) by {} workers, \
         batch {}; {holds} holds on {held_seats} seats; draw of the {joined}-request pre-queue took {:.2} s",
        elapsed.as_secs_f64(),
        joined as f64 / elapsed.as_secs_f64(),
        args.workers,
        args.batch,
        draw_time.as_secs_f64(),
    );
    Ok(())
}

/// `host` and `port` of a `redis://host:port` URL, for redis-benchmark.
fn host_port(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("redis://")
        .context("REDIS_URL must be redis://host:port")?;
    let rest = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    let (host, port) = rest.split_once(':').unwrap_or((rest, "6379"));
    Ok((
        host.to_owned(),
        port.split('/').next().unwrap_or("6379").to_owned(),
    ))
}

pub async fn holds(stack: &mut Stack, args: HoldsArgs) -> anyhow::Result<()> {
    let per_row = 100;
    let rows = (args.requests as u32).div_ceil(10 * per_row);
    let venue_id = setup::venue(&stack.pool, 10, rows, per_row).await?;

    // The farm: every request is one best-available seat, and there is a seat for each.
    let farm_event = setup::event(stack, venue_id, 8).await?;
    let asks = (0..args.requests)
        .map(|_| Ask::Best {
            quantity: 1,
            section: None,
            price_tier: None,
        })
        .collect();
    let joined = setup::fill_line(stack, farm_event, asks, 128).await?;
    waiting_room::sale::draw(&stack.pool, &mut stack.redis, &stack.keys, farm_event, None)
        .await
        .context("drawing the pre-queue")?;
    setup::unlimited_admission(stack, farm_event).await?;
    let elapsed = run_farm(stack, farm_event, joined, 1, args.batch).await?;
    let (farm_holds, _) = audit(stack, farm_event, i64::from(10 * rows * per_row), joined).await?;
    let farm_rate = farm_holds as f64 / elapsed.as_secs_f64();

    // The baseline: redis-benchmark invoking the same script, one request per call,
    // pipelined, on another event of the same venue. Its request ids are the 12-digit
    // numbers redis-benchmark substitutes for __rand_int__.
    let base_event = setup::event(stack, venue_id, 8).await?;
    let keys = stack.keys.clone();
    let token = "redis-benchmark";
    let bar = bar(args.requests as u64, "preparing");
    for chunk in (0..args.requests).collect::<Vec<_>>().chunks(2_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let id = format!("{i:012}");
            pipe.hset_multiple(
                keys.request_named(base_event, &id),
                &[
                    ("fan", format!("fan{i}")),
                    ("kind", "best".into()),
                    ("qty", "1".into()),
                    ("state", RequestState::Queued.as_str().into()),
                ],
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut stack.redis).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let _: () = redis::pipe()
        .hset(keys.sale(base_event), "state", "open")
        .ignore()
        .set(keys.lease(base_event), token)
        .ignore()
        .query_async(&mut stack.redis)
        .await?;
    let script = &*proto::scripts::HOLD_BATCH;
    let _: String = script.prepare_invoke().load_async(&mut stack.redis).await?;
    let (host, port) = host_port(&stack.redis_url)?;
    // A quarter of the keyspace: about 88% of calls meet a request still queued; the
    // rest find it decided, and only holds are counted.
    let calls = args.requests / 4;
    let mut command = Command::new("redis-benchmark");
    command
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-c",
            "4",
            "-P",
            &args.pipeline.to_string(),
        ])
        .args([
            "-n",
            &calls.to_string(),
            "-r",
            &args.requests.to_string(),
            "--csv",
        ])
        .args(["EVALSHA", script.get_hash()])
        .arg((proto::scripts::hold_batch_keys(&keys, base_event).len() + 1).to_string())
        .args(proto::scripts::hold_batch_keys(&keys, base_event))
        .arg(keys.request_named(base_event, "__rand_int__"))
        .arg(chrono::Utc::now().timestamp_millis().to_string())
        .args([token, "0", "__rand_int__"]);
    let started = Instant::now();
    let output = command
        .output()
        .context("running redis-benchmark (Debian: apt-get install redis-tools)")?;
    let bench_wall = started.elapsed();
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let csv = String::from_utf8_lossy(&output.stdout);
    let calls_per_second: f64 = csv
        .lines()
        .nth(1)
        .and_then(|line| line.split(',').nth(1))
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("reading redis-benchmark's csv: {csv}"))?;
    let (base_holds,): (Option<i64>,) = redis::pipe()
        .hget(keys.seat_counts(base_event), "held")
        .query_async(&mut stack.redis)
        .await?;
    let base_holds = base_holds.unwrap_or(0);
    let base_rate = calls_per_second * base_holds as f64 / calls as f64;
    println!(
        "holds: farm {farm_holds} holds in {:.2} s = {farm_rate:.0} holds/s (batch {}); redis-benchmark -P {} \
         {calls} calls at {calls_per_second:.0} calls/s ({:.2} s wall), {base_holds} holds = {base_rate:.0} holds/s; \
         ratio farm/baseline = {:.2}",
        elapsed.as_secs_f64(),
        args.batch,
        args.pipeline,
        bench_wall.as_secs_f64(),
        farm_rate / base_rate,
    );
    Ok(())
}
