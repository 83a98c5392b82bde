//! The hot path's cost guard: it counts the work instead of timing it, so it cannot
//! flake on a busy machine and still catches the slow creep that timings miss.
//!
//! On a fixed workload, against a Redis of its own (nothing else sends it commands)
//! and the test's own database:
//! - `JOINS` fans join the pre-queue one after another through the waiting room's
//!   [`Joiner`] (what the gateway runs; one at a time, so no batch shares its cost);
//! - one booking worker drains the drawn line of `JOINS` requests;
//! - `CHECKOUTS` of the held requests are paid with the sandbox's paying card.
//!
//! For each phase it counts the Redis commands (`INFO commandstats` deltas; commands
//! that scripts run count too, so a script that grows shows), the Postgres statements
//! (sqlx's own statement events, counted by a tracing layer: this binary runs this
//! one test, so the process-wide subscriber sees nothing else) and the rows those
//! statements wrote, and divides by the units of work. A figure above its ceiling
//! fails the test. The ceilings are today's counts plus less than one command or
//! statement, so one more call per join, per decision or per checkout fails it.
//! Raising a ceiling needs a reason in the commit that does it; the figures are in
//! docs/BENCHMARKS.md.
//!
//! Work not in these figures: the gateway's own per-request work (rate limits,
//! idempotency keys), which the join benchmark measures against a bare 404.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use platform::store::{Redis, Store};
use proto::wire::inventory::{CreateEvent, CreateVenue};
use proto::wire::payments::Checkout;
use proto::{EventId, Keys, RequestId, UserId};
use sqlx::PgPool;
use tracing::Instrument;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use waiting_room::joins::Joiner;
use waiting_room::requests::Ask;

/// Fans who join, and requests the worker decides.
const JOINS: usize = 400;
/// Held requests paid for.
const CHECKOUTS: usize = 100;

/// A phase's work per unit: Redis commands, Postgres statements, rows written.
#[derive(Clone, Copy, Debug)]
struct Cost {
    redis: f64,
    statements: f64,
    rows: f64,
}

/// The ceilings: today's counts (2026-12-07: per join 12.01 commands, 1 statement,
/// 1 row; per decided request 7.32, 0.04, 3; per checkout 25.04, 18, 11), each
/// with less than one more of its unit as room. A checkout's 18th statement and
/// 11th row are its invoice: the number is taken from a counter row in the settling
/// transaction (gapless numbering), in one statement with the document.
const JOIN_CEILING: Cost = Cost {
    redis: 12.5,
    statements: 1.5,
    rows: 1.5,
};
const DECISION_CEILING: Cost = Cost {
    redis: 7.75,
    statements: 0.5,
    rows: 3.5,
};
const CHECKOUT_CEILING: Cost = Cost {
    redis: 25.5,
    statements: 18.5,
    rows: 11.5,
};

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_hot_path_does_no_more_work_per_join_decision_and_checkout_than_its_ceilings(
    pool: PgPool,
) {
    let statements = StatementCounter::install();
    let server = testkit::PrivateRedis::start();
    let mut redis = Redis::connect(&server.url()).await.expect("redis");
    let keys = Keys::new("cost");
    let (event_id, seats) = sale(&pool, &mut redis, &keys).await;

    // Joins, one at a time, as the gateway makes them.
    let joiner = Joiner::start(pool.clone(), redis.clone(), keys.clone(), None);
    let fans: Vec<UserId> = (0..JOINS).map(|_| UserId::new()).collect();
    let before = Counts::read(&mut redis, &statements).await;
    let mut requests: Vec<(UserId, RequestId)> = Vec::with_capacity(JOINS);
    for fan in &fans {
        let ask = Ask::Best {
            quantity: 1,
            section: None,
            price_tier: None,
        };
        let joined = joiner
            .join(event_id, *fan, &ask, None)
            .await
            .expect("a join");
        requests.push((*fan, joined.request_id));
    }
    let joins = Counts::read(&mut redis, &statements).await.since(&before);

    // The draw is once per sale, not per request: not counted.
    waiting_room::sale::draw(&pool, &mut redis, &keys, event_id, None)
        .await
        .expect("the draw");
    let _: () = redis::cmd("HSET")
        .arg(keys.sale(event_id))
        .arg(proto::sale_hash::ADMISSION_PER_SECOND)
        .arg(100_000_000)
        .query_async(&mut redis)
        .await
        .expect("unlimited admission");

    // One worker drains the line; the count ends when the ledger has every decision.
    let before = Counts::read(&mut redis, &statements).await;
    let worker = booking_worker::Worker {
        pool: pool.clone(),
        store: Store::open(server.url().as_str()).expect("store"),
        redis: redis.clone(),
        keys: keys.clone(),
        name: "cost".into(),
        settings: booking_worker::DrainSettings {
            batch_size: 256,
            ..Default::default()
        },
        discover_every: Duration::from_millis(200),
        health: Default::default(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    wait_until_decided(&pool, event_id, JOINS).await;
    stop.cancel();
    task.await.expect("worker task").expect("worker");
    let decisions = Counts::read(&mut redis, &statements).await.since(&before);
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.requests WHERE event_id = $1 AND state = 'held'",
    )
    .bind(event_id)
    .fetch_one(&pool)
    .await
    .expect("held");
    assert_eq!(
        held as usize,
        JOINS.min(seats),
        "every fan holds a seat while seats last"
    );

    // Checkouts with the paying card.
    let payments = payments::Payments {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        provider: Arc::new(payments::provider::Sandbox::new(pool.clone(), None)),
        settings: Arc::new(payments::Settings {
            webhook_secret: secrecy::SecretString::from("whsec-cost-0123456789"),
            paying_grace_seconds: 120,
            sandbox_webhook_seconds: 0,
            sandbox_webhook_url: "http://127.0.0.1:1/unused".into(),
            currency: "EUR".into(),
            reconcile_after_seconds: 3600,
            seller: serde_json::from_value(billing::Seller::defaults())
                .expect("the default seller"),
            retention_days: 7,
        }),
        ring: Arc::new(tickets::KeyRing::new()),
    };
    let card = Checkout {
        card_number: "4242424242424242".into(),
        expiry: "12/34".into(),
        cvc: "123".into(),
        billing: None,
    };
    let before = Counts::read(&mut redis, &statements).await;
    for (fan, request) in requests.iter().take(CHECKOUTS) {
        let order = payments::checkout::checkout(&payments, *fan, *request, &card)
            .await
            .expect("a checkout");
        assert_eq!(
            order.state,
            proto::wire::payments::OrderState::Paid,
            "the paying card pays"
        );
    }
    let checkouts = Counts::read(&mut redis, &statements).await.since(&before);

    let figures = [
        ("join", joins.per(JOINS), JOIN_CEILING),
        ("decided request", decisions.per(JOINS), DECISION_CEILING),
        ("checkout", checkouts.per(CHECKOUTS), CHECKOUT_CEILING),
    ];
    let mut over = Vec::new();
    println!("work per unit: redis commands, postgres statements, rows written (ceiling)");
    for (unit, cost, ceiling) in figures {
        println!(
            "per {unit:<16} {:>7.2} ({:.2})  {:>6.2} ({:.2})  {:>6.2} ({:.2})",
            cost.redis, ceiling.redis, cost.statements, ceiling.statements, cost.rows, ceiling.rows
        );
        for (what, figure, limit) in [
            ("redis commands", cost.redis, ceiling.redis),
            ("postgres statements", cost.statements, ceiling.statements),
            ("rows written", cost.rows, ceiling.rows),
        ] {
            if figure > limit {
                over.push(format!("{what} per {unit}: {figure:.2} > {limit:.2}"));
            }
        }
    }
    println!("redis commands per join: {:?}", joins.top_commands(8));
    println!(
        "redis commands per decided request: {:?}",
        decisions.top_commands(8)
    );
    println!(
        "redis commands per checkout: {:?}",
        checkouts.top_commands(8)
    );
    assert!(
        over.is_empty(),
        "the hot path does more work than its ceilings allow: {over:#?}"
    );
}

/// A venue of 600 seats, an event on it with a scheduled sale, its seat map loaded.
async fn sale(pool: &PgPool, redis: &mut Redis, keys: &Keys) -> (EventId, usize) {
    let (sections, rows, per_row) = (["S1", "S2", "S3"], 10u32, 20u32);
    let venue = inventory::venues::validate(CreateVenue::grid(
        "Cost Hall",
        &sections,
        "standard",
        rows,
        per_row,
    ))
    .expect("a valid venue");
    let venue_id = inventory::venues::create(pool, &venue)
        .await
        .expect("venue");
    let event_id = inventory::events::create(
        pool,
        &CreateEvent {
            venue_id,
            name: "Cost Night".into(),
            starts_at: Utc::now() + chrono::Duration::days(30),
            onsale_at: Utc::now() + chrono::Duration::days(1),
            max_per_fan: 4,
            hold_seconds: 600,
            prices: [("standard".to_owned(), 4500)].into(),
            admission_per_second: 1000,
            refund_policy: None,
            tax: None,
        },
    )
    .await
    .expect("event");
    inventory::seatmap::rebuild(
        pool,
        redis,
        keys,
        event_id,
        inventory::seatmap::LoadMode::Force,
    )
    .await
    .expect("seat map");
    let sale = waiting_room::sale::ensure_sale(pool, event_id)
        .await
        .expect("sale");
    waiting_room::sale::load_into_redis(redis, keys, &sale)
        .await
        .expect("sale in redis");
    (event_id, sections.len() * (rows * per_row) as usize)
}

/// Waits until the ledger holds `total` decisions of the event. The probe's own
/// statements run in a `cost_probe` span, which the counter leaves out; it reads no
/// Redis at all.
async fn wait_until_decided(pool: &PgPool, event_id: EventId, total: usize) {
    let started = Instant::now();
    loop {
        let decided: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM booking.requests WHERE event_id = $1 AND state <> 'queued'",
        )
        .bind(event_id)
        .fetch_one(pool)
        .instrument(tracing::info_span!(PROBE))
        .await
        .expect("decided");
        if decided as usize >= total {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the worker decided {decided} of {total} in two minutes"
        );
        tokio::time::sleep(Duration::from_millis(10))
            .instrument(tracing::info_span!(PROBE))
            .await;
    }
}

const PROBE: &str = "cost_probe";

/// Counts sqlx's statement events (target `sqlx::query`) and the rows they wrote
/// (`rows_affected` of every statement but a plain `SELECT`), outside probe spans.
#[derive(Clone, Default)]
struct StatementCounter {
    statements: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl StatementCounter {
    fn install() -> Self {
        let counter = StatementCounter::default();
        let subscriber = tracing_subscriber::registry().with(counter.clone());
        tracing::subscriber::set_global_default(subscriber)
            .expect("this binary's only test installs the only subscriber");
        counter
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S>
    for StatementCounter
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        if ctx
            .event_scope(event)
            .is_some_and(|mut scope| scope.any(|span| span.name() == PROBE))
        {
            return;
        }
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        self.statements.fetch_add(1, Ordering::Relaxed);
        if !fields
            .summary
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("SELECT")
        {
            self.rows.fetch_add(fields.rows_affected, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct StatementFields {
    summary: String,
    rows_affected: u64,
}

impl tracing::field::Visit for StatementFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "rows_affected" {
            self.rows_affected = value;
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            self.summary = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.summary = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
}

/// Redis's calls per command and the statement counter, at one moment.
struct Counts {
    commands: HashMap<String, u64>,
    statements: u64,
    rows: u64,
}

impl Counts {
    async fn read(redis: &mut Redis, counter: &StatementCounter) -> Self {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(redis)
            .await
            .expect("INFO commandstats");
        Counts {
            commands: commandstats(&info),
            statements: counter.statements.load(Ordering::Relaxed),
            rows: counter.rows.load(Ordering::Relaxed),
        }
    }

    /// The work between `earlier` and this reading, leaving out the `INFO` that
    /// took each reading.
    fn since(&self, earlier: &Counts) -> Delta {
        let commands: HashMap<String, u64> = self
            .commands
            .iter()
            .map(|(name, calls)| {
                let before = earlier.commands.get(name).copied().unwrap_or(0);
                (name.clone(), calls - before)
            })
            .filter(|(name, calls)| *calls > 0 && name != "info")
            .collect();
        Delta {
            commands,
            statements: self.statements - earlier.statements,
            rows: self.rows - earlier.rows,
        }
    }
}

struct Delta {
    commands: HashMap<String, u64>,
    statements: u64,
    rows: u64,
}

impl Delta {
    fn per(&self, units: usize) -> Cost {
        let units = units as f64;
        Cost {
            redis: self.commands.values().sum::<u64>() as f64 / units,
            statements: self.statements as f64 / units,
            rows: self.rows as f64 / units,
        }
    }

    fn top_commands(&self, n: usize) -> Vec<(String, u64)> {
        let mut commands: Vec<(String, u64)> = self
            .commands
            .iter()
            .map(|(name, calls)| (name.clone(), *calls))
            .collect();
        commands.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        commands.truncate(n);
        commands
    }
}

/// `cmdstat_<name>:calls=<n>,…` lines of `INFO commandstats`, as name → calls.
fn commandstats(info: &str) -> HashMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}
