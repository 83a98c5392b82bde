//! Checkouts end to end through the gateway (in this process), against a baseline of
//! bare Postgres commits at the same concurrency, in the same run: a checkout's
//! durable work is Postgres transactions, so one single-row INSERT committed per
//! client is its physical limit here.
//!
//! Every fan first holds one seat (a pre-queue drawn and drained by the farm); then
//! `--concurrency` clients pay for them all with the sandbox's paying card. When
//! `KAFKA_BROKERS` is set, the outbox relay and the notifier run in this process too
//! (the notifier sending to an in-process SMTP sink), and the report gives the
//! outbox's lag (written to published) and the email's (written to accepted by
//! SMTP) for the run's `order.paid` events, p50 and p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use platform::auth::TokenIssuer;
use proto::{Role, UserId};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::chaos::SECRET;
use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct CheckoutArgs {
    /// Fans, each holding one seat and paying for it.
    #[arg(long, default_value_t = 2_000)]
    fans: usize,
    /// Clients paying at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds the bare-commit baseline runs.
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
}

fn token(key: &TokenIssuer, fan: UserId) -> anyhow::Result<String> {
    Ok(key.issue(fan, Role::Fan)?)
}

/// Single-row INSERT transactions per second from `concurrency` clients.
pub(crate) async fn baseline(
    stack: &Stack,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS public.loadgen_commit_baseline (id uuid PRIMARY KEY, at timestamptz NOT NULL)",
    )
    .execute(&stack.pool)
    .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let pool = stack.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut commits = 0u64;
            while Instant::now() < deadline {
                sqlx::query("INSERT INTO public.loadgen_commit_baseline VALUES ($1, now())")
                    .bind(uuid::Uuid::new_v4())
                    .execute(&pool)
                    .await?;
                commits += 1;
            }
            anyhow::Ok(commits)
        }));
    }
    let mut commits = 0;
    for task in tasks {
        commits += task.await??;
    }
    sqlx::query("DROP TABLE public.loadgen_commit_baseline")
        .execute(&stack.pool)
        .await?;
    Ok(commits as f64 / seconds as f64)
}

/// The in-process relay and notifier, when a broker is given: returns the sink and
/// the token that stops them.
async fn events_pipeline(
    stack: &Stack,
) -> anyhow::Result<Option<(notifier::sink::MailSink, CancellationToken)>> {
    let Ok(brokers) = std::env::var("KAFKA_BROKERS") else {
        return Ok(None);
    };
    let suffix = format!("bench{}", uuid::Uuid::new_v4().simple());
    let kafka = platform::settings::KafkaSettings {
        brokers: brokers.clone(),
        topic_suffix: suffix.clone(),
    };
    let stop = CancellationToken::new();
    tokio::spawn(payments::relay::run(
        stack.pool.clone(),
        kafka,
        stop.clone(),
    ));
    let sink = notifier::sink::MailSink::bind("127.0.0.1:0".parse()?).await?;
    let mut config = notifier::Config::defaults();
    config["listen"] = json!("127.0.0.1:0");
    config["ops_listen"] = json!("127.0.0.1:0");
    config["database"]["url"] = json!(stack.database_url);
    config["kafka"] = json!({"brokers": brokers, "topic_suffix": suffix});
    config["consumer"]["group_id"] = json!(format!("loadgen-{suffix}"));
    config["consumer"]["session_timeout_ms"] = json!(6000);
    config["smtp_url"] = json!(sink.url());
    let config: notifier::Config =
        serde_json::from_value(config).context("the notifier's configuration")?;
    let app = notifier::Application::with_pool(config, stack.pool.clone()).await?;
    let stopped = stop.clone();
    tokio::spawn(app.run(async move { stopped.cancelled().await }));
    Ok(Some((sink, stop)))
}

pub async fn checkout(stack: &mut Stack, args: CheckoutArgs) -> anyhow::Result<()> {
    // A venue of 100-seat sections, one seat per fan.
    let sections = args.fans.div_ceil(100) as u32;
    let venue_id = setup::venue(&stack.pool, sections, 10, 10).await?;
    let event_id = setup::event(stack, venue_id, 1).await?;
    let pipeline = events_pipeline(stack).await?;

    // Every fan has an account (the notifier mails its address), joins the
    // pre-queue, is numbered by the draw, and holds a seat after the farm's pass.
    let fans: Vec<UserId> = (0..args.fans).map(|_| UserId::new()).collect();
    sqlx::query(
        "INSERT INTO gateway.users (user_id, email, password_hash, role)
         SELECT id, 'fan-' || id || '@loadgen.local', 'not-a-hash', 'fan' FROM UNNEST($1::uuid[]) AS t(id)",
    )
    .bind(fans.iter().map(UserId::as_uuid).collect::<Vec<_>>())
    .execute(&stack.pool)
    .await?;
    let mut requests = Vec::with_capacity(fans.len());
    let bar_join = bar(fans.len() as u64, "joining");
    for fan in &fans {
        let ask = waiting_room::requests::Ask::Best {
            quantity: 1,
            section: None,
            price_tier: None,
        };
        let joined = waiting_room::joins::join(
            &stack.pool,
            &mut stack.redis,
            &stack.keys,
            event_id,
            *fan,
            &ask,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("join: {e}"))?;
        requests.push(joined.request_id);
        bar_join.inc(1);
    }
    bar_join.finish();
    waiting_room::sale::draw(&stack.pool, &mut stack.redis, &stack.keys, event_id, None)
        .await
        .context("drawing the pre-queue")?;
    setup::unlimited_admission(stack, event_id).await?;
    crate::drain::run_farm(stack, event_id, args.fans, 1, 256).await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.requests WHERE event_id = $1 AND state = 'held'",
    )
    .bind(event_id)
    .fetch_one(&stack.pool)
    .await?;
    if held as usize != args.fans {
        bail!("{held} of {} fans hold a seat", args.fans);
    }

    let baseline = baseline(stack, args.concurrency, args.baseline_seconds).await?;
    let base = crate::chaos::gateway(stack).await?;
    let key = TokenIssuer::onsale(SECRET, 3600);
    let mut work = Vec::with_capacity(fans.len());
    for (fan, request) in fans.iter().zip(&requests) {
        work.push((token(&key, *fan)?, *request));
    }
    let work = Arc::new(tokio::sync::Mutex::new(work));
    let client = reqwest::Client::new();
    let bar_pay = bar(args.fans as u64, "paying");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (work, client, base, bar_pay) =
            (work.clone(), client.clone(), base.clone(), bar_pay.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut failed = 0u64;
            loop {
                let Some((token, request)) = work.lock().await.pop() else {
                    break;
                };
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/v1/requests/{request}/checkout"))
                    .bearer_auth(&token)
                    .header("idempotency-key", request.to_string())
                    .json(&json!({"card_number": "4242424242424242", "expiry": "12/34", "cvc": "123"}))
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                latency.record(sent.elapsed().as_micros() as u64)?;
                if !status.is_success() || body["state"] != "paid" {
                    if failed == 0 {
                        bar_pay.suspend(|| eprintln!("a checkout was not paid: {status} {body}"));
                    }
                    failed += 1;
                }
                bar_pay.inc(1);
            }
            anyhow::Ok((latency, failed))
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    for task in tasks {
        let (h, f) = task.await??;
        latency.add(h)?;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar_pay.finish();
    let rate = args.fans as f64 / elapsed;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "checkout: {} paid in {elapsed:.2} s = {rate:.0} checkouts/s through the gateway ({failed} not paid), \
         latency p50 {:.1} ms, p99 {:.1} ms, concurrency {}",
        args.fans as u64 - failed,
        ms(0.5),
        ms(0.99),
        args.concurrency
    );
    println!(
        "baseline: {baseline:.0} single-row Postgres commits/s at the same concurrency; ratio {:.3}",
        rate / baseline
    );
    let sold: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets.tickets WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&stack.pool)
        .await?;
    println!(
        "audit: {sold} tickets for {} fans, one seat each",
        args.fans
    );
    if failed > 0 || sold as usize != args.fans {
        bail!("the audit failed");
    }

    if let Some((sink, stop)) = pipeline {
        // Each fan gets two emails: seats held, then the confirmation.
        let expected = 2 * args.fans;
        let waiting = Instant::now();
        while sink.messages().len() < expected {
            if waiting.elapsed() > Duration::from_secs(300) {
                bail!(
                    "{} of {expected} emails in 5 minutes",
                    sink.messages().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lag = |sql: &'static str| {
            let pool = stack.pool.clone();
            async move {
                let row: (f64, f64) = sqlx::query_as(sql).bind(event_id).fetch_one(&pool).await?;
                anyhow::Ok(row)
            }
        };
        let outbox = lag(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)
             FROM (SELECT extract(epoch FROM published_at - occurred_at) * 1000 AS lag
                   FROM outbox.messages WHERE event_id = $1 AND kind = 'order.paid') AS l",
        )
        .await?;
        let email = lag(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)
             FROM (SELECT extract(epoch FROM n.sent_at - m.occurred_at) * 1000 AS lag
                   FROM notifier.notifications n JOIN outbox.messages m ON m.id = n.envelope_id
                   WHERE m.event_id = $1 AND m.kind = 'order.paid' AND n.status = 'sent') AS l",
        )
        .await?;
        println!(
            "outbox: order.paid written to published p50 {:.0} ms, p99 {:.0} ms; \
             email: written to accepted by SMTP p50 {:.0} ms, p99 {:.0} ms ({} emails)",
            outbox.0,
            outbox.1,
            email.0,
            email.1,
            sink.messages().len()
        );
        stop.cancel();
    } else {
        println!(
            "outbox and email lag: not measured (set KAFKA_BROKERS to run the relay and the notifier)"
        );
    }
    Ok(())
}
