//! `loadgen chaos`: a history checker in the spirit of Jepsen.
//!
//! Many fans join, leave, release, retry, pay with every sandbox card and ask for
//! refunds through a real gateway (in this process, with payments' loops) while
//! booking-worker processes drain the line and a nemesis strikes them on a seeded
//! schedule: SIGSTOP longer than the lease then SIGCONT, SIGKILL
//! and a new worker; the sale opens with two drawers at once. Every call and its
//! answer is recorded. When the faults stop, the run waits (up to a bound) for every
//! accepted request to end, closes the sale, and [`check`] proves the promises over
//! the whole history against Redis and Postgres. The process fails when any is
//! broken.

mod check;
mod door;
mod fans;
mod farm;
mod money;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use platform::auth::TokenIssuer;
use proto::wire::queue::RequestState;
use proto::{EventId, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::setup::{self, Stack};

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Seeds the fans' choices and the nemesis's schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long faults strike, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Fans, each with its own account.
    #[arg(long, default_value_t = 150)]
    fans: usize,
    /// Booking-worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// How long a hold lasts, in seconds (short, so seats churn).
    #[arg(long, default_value_t = 2)]
    hold_seconds: u64,
    /// How long every accepted request may take to end once the faults stop.
    #[arg(long, default_value_t = 60)]
    bound_seconds: u64,
    /// The booking-worker binary (default: beside this program).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Write the history (every call and answer) here as JSON.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Leave out the loss of the event's Redis keys (and its restore). The loss is
    /// injected only with `--own-redis`.
    #[arg(long)]
    no_key_loss: bool,
    /// Run on a Redis of the run's own (append-only, fsync always) instead of
    /// `REDIS_URL`, and let the nemesis kill and restart it.
    #[arg(long)]
    own_redis: bool,
    /// Run on a Redis Cluster of the run's own (three masters, a replica each), the
    /// gateway's joins waiting for their replica (`ONSALE_REDIS__REPLICAS_TO_WAIT=1`),
    /// and let the nemesis fail the event's master over, losing what it had not
    /// replicated. Key losses are left out.
    #[arg(long, conflicts_with = "own_redis")]
    own_cluster: bool,
    /// Scanners at the door, racing on the same tickets.
    #[arg(long, default_value_t = 4)]
    scanners: usize,
    /// Tickets the scanners share (few, so that they race).
    #[arg(long, default_value_t = 6)]
    door_tickets: usize,
    /// Run on a Postgres of the run's own (initdb in a temporary directory) instead
    /// of `DATABASE_URL`, and let the nemesis crash and restart it.
    #[arg(long)]
    own_postgres: bool,
    /// Leave out the money path (fans paying, refunds, the cancellation at the end).
    #[arg(long)]
    no_money: bool,
    /// When the checks fail, keep the run's own Postgres (and the process) up this
    /// many seconds, its address printed, to read what happened.
    #[arg(long, default_value_t = 0)]
    hold_on_failure: u64,
}

pub(crate) const SECRET: &str = "chaos-secret-chaos-secret-chaos-secret-0123";
/// Sections of the chaos venue; each has 2 rows of 10 seats.
const SECTIONS: [&str; 3] = ["A", "B", "C"];

/// Seats sold before the run (to a buyer of an earlier sale): all of section C but
/// five single seats with none adjacent, so asks for two seats there are refused
/// for good, and asks for one compete for few. Written to the ledger, then the seat
/// map and the buyer's request are put into Redis from it. Their tickets are what
/// the scanners scan.
async fn presell(
    stack: &mut Stack,
    event_id: EventId,
) -> anyhow::Result<Vec<proto::wire::tickets::Ticket>> {
    let free = ["C-R1-2", "C-R1-5", "C-R1-8", "C-R2-3", "C-R2-7"];
    let sold: Vec<String> = (1..=2)
        .flat_map(|row| (1..=10).map(move |n| format!("C-R{row}-{n}")))
        .filter(|seat| !free.contains(&seat.as_str()))
        .collect();
    let buyer = proto::RequestId::new();
    let fan = proto::UserId::new();
    let mut tx = stack.pool.begin().await?;
    sqlx::query(
        "INSERT INTO booking.requests (request_id, event_id, fan_id, queue_number, state, seats)
         VALUES ($1, $2, $3, 0, 'confirmed', $4)",
    )
    .bind(buyer)
    .bind(event_id)
    .bind(fan)
    .bind(&sold)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO booking.seat_claims (event_id, seat_id, request_id, state)
         SELECT $1, seat, $2, 'sold' FROM UNNEST($3::text[]) AS t(seat)",
    )
    .bind(event_id)
    .bind(buyer)
    .bind(&sold)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    inventory::seatmap::rebuild(
        &stack.pool,
        &mut stack.redis,
        &stack.keys,
        event_id,
        inventory::seatmap::LoadMode::Force,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _: () = redis::cmd("HSET")
        .arg(stack.keys.request(event_id, buyer))
        .arg(&[
            ("fan", fan.to_string()),
            ("state", RequestState::Confirmed.as_str().into()),
            ("seats", sold.join(" ")),
            ("number", "0".into()),
        ])
        .query_async(&mut stack.redis)
        .await?;
    door::issue(stack, event_id, buyer, fan, &sold).await
}

/// The gateway, in this process, on the run's key prefix.
pub(crate) async fn gateway(stack: &Stack) -> anyhow::Result<String> {
    let mut config = gateway::config::Config::defaults();
    config["listen"] = json!("127.0.0.1:0");
    config["ops_listen"] = json!("127.0.0.1:0");
    config["database"]["url"] = json!(stack.database_url);
    config["redis"] = json!({"url": stack.redis_url, "key_prefix": stack.keys.prefix()});
    // A cluster of the run's own has a replica per master: joins wait for it.
    if stack.store.is_cluster() && std::env::var_os("CHAOS_NO_REPLICA_WAIT").is_none() {
        config["redis"]["replicas_to_wait"] = json!(1);
    }
    config["auth"]["jwt_secret"] = json!(SECRET);
    config["payments"]["webhook_secret"] = json!(SECRET);
    // Pending cards are told by webhook a second later (the run's payments loops
    // send them).
    config["payments"]["sandbox_webhook_seconds"] = json!(1);
    // A paying hold runs at most this far past its end: within the sold-out horizon,
    // as every other hold, so a fan refused for want of seats could not have had
    // one that came back from an abandoned payment.
    config["payments"]["paying_grace_seconds"] = json!(2);
    for limit in [
        "per_ip_per_second",
        "per_ip_burst",
        "per_user_per_second",
        "per_user_burst",
    ] {
        config["limits"][limit] = json!(1_000_000);
    }
    let config: gateway::config::Config =
        serde_json::from_value(config).context("the chaos gateway's configuration")?;
    let app =
        gateway::Application::with_connections(config, stack.pool.clone(), stack.redis.clone())
            .await
            .context("starting the gateway")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run(std::future::pending()));
    Ok(base)
}

/// Opens the sale with two drawers at once (two operators' `open`); at least one
/// must succeed, and the other either succeeds too or finds the sale open.
async fn open_twice(
    client: &reqwest::Client,
    base: &str,
    event_id: EventId,
    admin: &str,
) -> anyhow::Result<()> {
    let url = format!("{base}/v1/ops/events/{event_id}/open");
    let call = || async {
        client
            .post(&url)
            .bearer_auth(admin)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let (one, two) = tokio::join!(call(), call());
    let fine = |s: u16| s == 200 || s == 409;
    if !(fine(one) && fine(two) && (one == 200 || two == 200)) {
        bail!("opening the sale with two drawers answered {one} and {two}");
    }
    Ok(())
}

async fn close(
    client: &reqwest::Client,
    base: &str,
    event_id: EventId,
    admin: &str,
) -> anyhow::Result<()> {
    let status = client
        .post(format!("{base}/v1/ops/events/{event_id}/close"))
        .bearer_auth(admin)
        .send()
        .await
        .context("closing the sale")?
        .status();
    if !status.is_success() {
        bail!("closing the sale answered {status}");
    }
    Ok(())
}

/// Whether every accepted request of the history has ended, as Redis has it.
async fn all_ended(
    stack: &mut Stack,
    event_id: EventId,
    history: &fans::History,
) -> anyhow::Result<usize> {
    let accepted: std::collections::BTreeSet<proto::RequestId> = history
        .ops()
        .iter()
        .filter(|op| op.kind == "join" && op.status == 202)
        .filter_map(|op| op.body["request_id"].as_str().and_then(|r| r.parse().ok()))
        .collect();
    let mut pipe = redis::pipe();
    for id in &accepted {
        pipe.hget(stack.keys.request(event_id, *id), "state");
    }
    let states: Vec<Option<String>> = pipe.query_async(&mut stack.redis).await?;
    Ok(states
        .iter()
        .filter(|s| {
            !s.as_deref()
                .and_then(RequestState::parse)
                .is_some_and(|s| s.is_terminal())
        })
        .count())
}

pub async fn chaos(stack: &mut Stack, args: ChaosArgs) -> anyhow::Result<()> {
    if !args.own_postgres {
        return with_redis(stack, args, None).await;
    }
    // The run's own Postgres stands in for DATABASE_URL's until the run ends; its
    // data goes with it (the shared one keeps nothing of the run).
    let postgres = std::sync::Arc::new(
        tokio::task::spawn_blocking(testkit::PrivatePostgres::start)
            .await
            .context("starting the run's own postgres")?,
    );
    let original = (stack.database_url.clone(), stack.pool.clone());
    stack.database_url = postgres.url();
    stack.pool = platform::runtime::connect_postgres(&platform::settings::DatabaseSettings {
        url: secrecy::SecretString::from(stack.database_url.clone()),
        max_connections: 16,
    })
    .await?;
    println!("chaos: postgres of the run's own at {}", stack.database_url);
    let hold = args.hold_on_failure;
    // The server lives until the checks are done (the nemesis holds a clone).
    let outcome = with_redis(stack, args, Some(postgres.clone())).await;
    if outcome.is_err() && hold > 0 {
        eprintln!(
            "chaos: the run's postgres stays up {hold} s for inspection: HOLDING {}",
            stack.database_url
        );
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    (stack.database_url, stack.pool) = original;
    drop(postgres);
    outcome
}

async fn with_redis(
    stack: &mut Stack,
    args: ChaosArgs,
    postgres: Option<std::sync::Arc<testkit::PrivatePostgres>>,
) -> anyhow::Result<()> {
    if args.own_cluster {
        let mut own = farm::Own::Cluster(farm::OwnCluster::start().await?);
        let farm::Own::Cluster(cluster) = &own else {
            unreachable!("made a cluster above")
        };
        println!(
            "chaos: a redis cluster of the run's own at {}",
            cluster.url()
        );
        let original = (
            stack.redis_url.clone(),
            stack.store.clone(),
            stack.redis.clone(),
        );
        stack.redis_url = cluster.url();
        stack.store = platform::store::Store::open(stack.redis_url.as_str())?;
        stack.redis = stack.store.shared().await?;
        let outcome = run(stack, args, Some(&mut own), postgres).await;
        (stack.redis_url, stack.store, stack.redis) = original;
        return outcome;
    }
    if !args.own_redis {
        return run(stack, args, None, postgres).await;
    }
    // The run's own Redis stands in for REDIS_URL's until the run ends, whatever
    // its outcome; then the stack points back at REDIS_URL's for the cleanup.
    let dir = std::env::temp_dir().join(format!("onsale-chaos-{}", uuid::Uuid::new_v4().simple()));
    let mut own = farm::Own::Server(farm::OwnRedis::start(dir).await?);
    let original = (
        stack.redis_url.clone(),
        stack.store.clone(),
        stack.redis.clone(),
    );
    let farm::Own::Server(server) = &own else {
        unreachable!("made a server above")
    };
    stack.redis_url = server.url();
    stack.store = platform::store::Store::open(stack.redis_url.as_str())?;
    stack.redis = stack.store.shared().await?;
    let outcome = run(stack, args, Some(&mut own), postgres).await;
    (stack.redis_url, stack.store, stack.redis) = original;
    outcome
}

async fn run(
    stack: &mut Stack,
    args: ChaosArgs,
    mut own_redis: Option<&mut farm::Own>,
    own_postgres: Option<std::sync::Arc<testkit::PrivatePostgres>>,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let binary = farm::worker_binary(args.worker_bin.as_deref())?;
    let venue_id = setup::venue_named(&stack.pool, &SECTIONS, 2, 10).await?;
    let event_id = setup::event(stack, venue_id, 4).await?;
    if let Some(farm::Own::Cluster(cluster)) = own_redis.as_deref_mut() {
        cluster.event_key = Some(stack.keys.sale(event_id));
    }
    let sold = presell(stack, event_id).await?;
    // The API's floor on hold time is a minute; the run wants seats to churn, in
    // Postgres too (a restore reloads the sale from there).
    sqlx::query("UPDATE inventory.events SET hold_seconds = $2 WHERE event_id = $1")
        .bind(event_id)
        .bind(args.hold_seconds.max(1) as i32)
        .execute(&stack.pool)
        .await?;
    let _: () = redis::cmd("HSET")
        .arg(stack.keys.sale(event_id))
        .arg(proto::sale_hash::HOLD_MS)
        .arg(args.hold_seconds.max(1) * 1000)
        .query_async(&mut stack.redis)
        .await?;
    // Fans may ask for their money back within a day, less 10 %; 19 % tax inside.
    sqlx::query(
        "UPDATE inventory.events SET refund_until = now() + interval '1 day',
             refund_fee_percent = 10, tax_rate_bp = 1900, tax_included = true
         WHERE event_id = $1",
    )
    .bind(event_id)
    .execute(&stack.pool)
    .await?;
    let base = gateway(stack).await?;
    let money_stop = CancellationToken::new();
    let work = if args.no_money {
        None
    } else {
        Some(money::payments_of(
            &stack.pool,
            &stack.redis,
            &stack.keys,
            &base,
            SECRET,
        )?)
    };
    let loops = work
        .clone()
        .map(|work| money::spawn_loops(work, &money_stop));
    let key = TokenIssuer::onsale(SECRET, 3600);
    let admin = setup::sign(&key, Role::Admin)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    // Seats many fans name: a few in each section.
    let hot_seats: Vec<String> = SECTIONS
        .iter()
        .flat_map(|s| (1..=3).map(move |n| format!("{s}-R1-{n}")))
        .collect();
    // Holds expire within the horizon, so a fan is refused only when no seat it
    // could use can come back: any later fan with the same ask getting seats is then
    // an inversion.
    let horizon_ms = (args.hold_seconds * 30_000).max(60_000);
    let mut farm = farm::Farm::start(stack, binary, args.workers, horizon_ms)?;

    let history = fans::History::new();
    let till = (!args.no_money).then(|| money::Till {
        client: client.clone(),
        base: base.clone(),
        history: history.clone(),
        refunded: money::Refunded::default(),
    });
    let refund_scanner = till.clone().map(|till| {
        let token = setup::sign(&key, Role::Operator);
        let stop = money_stop.clone();
        let seed = rng.random();
        tokio::spawn(async move {
            if let Ok(token) = token {
                money::scanner(till, event_id, token, seed, stop).await;
            }
        })
    });
    let line = fans::Line {
        client: client.clone(),
        base: base.clone(),
        event_id,
        history: history.clone(),
        joining: CancellationToken::new(),
        give_up: CancellationToken::new(),
        sections: SECTIONS.iter().map(|s| (*s).to_owned()).collect(),
        hot_seats,
        till,
    };
    println!(
        "chaos: seed {}, {} fans, {} workers, {} s of faults, holds of {} s, event {event_id}",
        args.seed, args.fans, args.workers, args.seconds, args.hold_seconds
    );
    let mut tasks = Vec::new();
    for index in 0..args.fans {
        let seed = rng.random();
        tasks.push(tokio::spawn(fans::fan(
            line.clone(),
            index,
            setup::sign(&key, Role::Fan)?,
            seed,
        )));
    }
    // Scanners race on a few of the presold tickets at the door, under the same
    // faults, as operators (who may scan any event's door).
    let door = door::Door {
        client: client.clone(),
        base: base.clone(),
        event_id,
        history: history.clone(),
        tickets: sold.into_iter().take(args.door_tickets.max(1)).collect(),
        stop: CancellationToken::new(),
    };
    let mut scanners = Vec::new();
    for index in 0..args.scanners {
        scanners.push(tokio::spawn(door::scanner(
            door.clone(),
            index,
            setup::sign(&key, Role::Operator)?,
            rng.random(),
        )));
    }
    // Fans join the pre-queue for a moment, then two drawers open the sale at once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    open_twice(&client, &base, event_id, &admin).await?;

    let started = Instant::now();
    let stop = CancellationToken::new();
    let timer = {
        let stop = stop.clone();
        let seconds = args.seconds;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.cancel();
        })
    };
    let mut operator = farm::Operator {
        client: client.clone(),
        base: base.clone(),
        token: admin.clone(),
        redis: stack.redis.clone(),
        keys: stack.keys.clone(),
        event_id,
    };
    // The loss is one script that scans the keyspace: on a Redis of the run's own
    // that is a few thousand keys; on a shared one it could block everyone else.
    let operator = (!args.no_key_loss
        && matches!(own_redis.as_deref(), Some(farm::Own::Server(_))))
    .then_some(&mut operator);
    let mut injected = farm::nemesis(
        &mut farm,
        &mut rng,
        &stack.pool,
        operator,
        own_redis.as_deref_mut(),
        own_postgres.clone(),
        stop,
    )
    .await?;
    timer.await?;
    *injected.entry("two drawers at once").or_default() += 1;
    line.joining.cancel();
    // Scanners finish the scan in hand (sent again until it is answered).
    door.stop.cancel();
    for scanner in scanners {
        let _ = scanner.await;
    }
    let faults_over = Instant::now();
    println!(
        "chaos: faults over after {:.1} s: {injected:?}; waiting for every request to end",
        started.elapsed().as_secs_f64()
    );

    // Every accepted request must end within the bound; halfway, the sale closes, so
    // the line's tail is refused rather than served.
    let bound = Duration::from_secs(args.bound_seconds);
    let mut closed = false;
    let open = loop {
        let open = all_ended(stack, event_id, &history).await?;
        if open == 0 || faults_over.elapsed() > bound {
            break open;
        }
        if !closed && faults_over.elapsed() > bound / 2 {
            close(&client, &base, event_id, &admin).await?;
            closed = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ended_after = faults_over.elapsed();
    if !closed {
        close(&client, &base, event_id, &admin).await?;
    }
    line.give_up.cancel();
    for task in tasks {
        let _ = task.await;
    }
    // The farm finishes what the close left (the line's tail refused, the last holds
    // expired) before the books are read.
    let quiet = Instant::now();
    loop {
        let open_now = all_ended(stack, event_id, &history).await?;
        let held: i64 = redis::cmd("ZCARD")
            .arg(stack.keys.holds(event_id))
            .query_async(&mut stack.redis)
            .await?;
        if (open_now == 0 && held == 0) || quiet.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let changes_waiting = loop {
        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stack.keys.changes(event_id))
            .query_async(&mut stack.redis)
            .await
            .unwrap_or_default();
        let waiting = groups
            .groups
            .iter()
            .any(|g| g.pending > 0 || g.lag != Some(0));
        if !waiting || quiet.elapsed() > Duration::from_secs(30) {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The money path ends with the event cancelled, under faults: the nemesis strikes
    // again (for half the run's fault time, 3 to 10 s) while the cancellation runs,
    // and a second payments instance working on it is killed mid-pass again and
    // again. Every order must still be refunded once.
    let mut cancel_faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let cancelled_after = if let Some(work) = &work {
        let phase = CancellationToken::new();
        let crashes = tokio::spawn(money::crashing_passes(
            work.clone(),
            rng.random(),
            phase.clone(),
        ));
        let strike_for = Duration::from_secs((args.seconds / 2).clamp(3, 10));
        let timer = {
            let phase = phase.clone();
            async move {
                tokio::time::sleep(strike_for).await;
                phase.cancel();
            }
        };
        let faults = farm::nemesis(
            &mut farm,
            &mut rng,
            &stack.pool,
            None,
            own_redis,
            own_postgres.clone(),
            phase.clone(),
        );
        let cancel = money::cancel_and_settle(
            &client,
            &base,
            event_id,
            &admin,
            &stack.pool,
            Duration::from_secs(args.bound_seconds),
        );
        let ((), faults, cancelled) = tokio::join!(timer, faults, cancel);
        cancel_faults = faults?;
        *cancel_faults.entry("payments passes killed").or_default() += crashes.await?;
        println!("chaos: the cancellation ran under faults: {cancel_faults:?}");
        // A Redis the faults killed and restarted breaks this process's connection
        // once: the checks below read Redis after it answers again.
        let answering = Instant::now();
        while redis::cmd("PING")
            .query_async::<String>(&mut stack.redis)
            .await
            .is_err()
        {
            anyhow::ensure!(
                answering.elapsed() < Duration::from_secs(30),
                "Redis did not answer again within 30 s of the faults"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancelled?
    } else {
        None
    };
    money_stop.cancel();
    if let Some(scanner) = refund_scanner {
        let _ = scanner.await;
    }
    if let Some(loops) = loops {
        loops.close();
        loops.wait().await;
    }
    drop(farm);

    let ops = history.ops();
    if let Some(path) = &args.history {
        std::fs::write(path, serde_json::to_vec_pretty(&ops)?)
            .with_context(|| format!("writing the history to {}", path.display()))?;
    }
    let findings = check::check(&stack.pool, &mut stack.redis, &stack.keys, event_id, &ops).await?;
    let door = door::check(&stack.pool, &mut stack.redis, &stack.keys, event_id, &ops).await?;
    let money = if args.no_money {
        None
    } else {
        Some(money::check(&stack.pool, &mut stack.redis, &stack.keys, event_id, &ops).await?)
    };
    let (key_count, bytes) = check::footprint(&mut stack.redis, &stack.keys, event_id).await?;
    let report = json!({
        "seed": args.seed,
        "fault_seconds": args.seconds,
        "faults": injected.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "operations": ops.len(),
        "operations_by_kind": findings.operations,
        "accepted_requests": findings.accepted,
        "final_states": findings.final_states,
        "holds": findings.holds,
        "all_ended_within_seconds": (open == 0).then_some(ended_after.as_secs_f64()),
        "doubles": findings.doubles,
        "stranded": findings.stranded,
        "inversions": findings.inversions,
        "queue_number_problems": findings.number_problems,
        "redis_postgres_diffs": findings.redis_postgres_diffs,
        "door": {
            "tickets": args.door_tickets,
            "scanners": args.scanners,
            "scans": door.scans,
            "results": door.results,
            "admitted": door.admitted,
            "admitted_twice": door.doubles,
            "answer_problems": door.answer_problems,
            "redis_postgres_diffs": door.redis_postgres_diffs,
        },
        "money": money.as_ref().map(|m| json!({
            "checkouts": m.checkouts,
            "orders": m.orders,
            "refund_calls": m.refunds,
            "refunded_scans": m.refunded_scans,
            "invoices": m.invoices,
            "credit_notes": m.credit_notes,
            "refund_states": m.refund_states,
            "cancelled_and_settled_within_seconds": cancelled_after,
            "faults_during_the_cancellation": cancel_faults.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "violations": m.violations.len(),
        })),
        "redis_keys_left": key_count,
        "redis_bytes_left": bytes,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let mut broken = findings.violations.clone();
    broken.extend(door.violations.iter().map(|v| format!("door: {v}")));
    if let Some(money) = &money {
        broken.extend(money.violations.iter().map(|v| format!("money: {v}")));
        if cancelled_after.is_none() {
            broken.push(format!(
                "money: the cancellation had not refunded every order {} s after it began",
                args.bound_seconds
            ));
        }
        if money.invoices == 0 {
            broken.push("money: no order was paid: the run proves nothing there".into());
        }
        if money.credit_notes == 0 {
            broken.push("money: nothing was refunded: the run proves nothing there".into());
        }
    }
    if door.admitted == 0 && args.scanners > 0 {
        broken.push("no scan was admitted at the door: the run proves nothing there".into());
    }
    if open > 0 {
        broken.push(format!(
            "{open} accepted requests had not ended {} s after the faults stopped",
            args.bound_seconds
        ));
    }
    if changes_waiting {
        broken.push("ended holds still waited for the ledger at the end".into());
    }
    if findings.accepted == 0 {
        broken.push("no request was accepted: the run proves nothing".into());
    }
    // Faults may make the service unavailable (503), never broken (500).
    let internal: usize = findings
        .operations
        .iter()
        .filter(|(kind, _)| kind.ends_with(": 500"))
        .map(|(_, count)| *count)
        .sum();
    if internal > 0 {
        broken.push(format!("{internal} answers were 500 internal errors"));
    }
    if !broken.is_empty() {
        for violation in &broken {
            eprintln!("violation: {violation}");
        }
        bail!("{} violations of the hot path's promises", broken.len());
    }
    println!("chaos: every promise held");
    Ok(())
}
