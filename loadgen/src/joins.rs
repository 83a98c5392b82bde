//! Queue joins through the gateway binary, against a baseline of the same client
//! hitting the gateway's not-found fallback (the whole middleware stack, no handler
//! work) in the same run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use jsonwebtoken::{EncodingKey, Header};
use proto::auth::{ALGORITHM, Claims};
use proto::{Role, UserId};

use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct JoinArgs {
    /// Seconds each phase (baseline, joins) runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The gateway binary to run.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: String,
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SECRET: &str = "loadgen-secret-loadgen-secret-loadgen-0123";

fn token(key: &EncodingKey) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: UserId::new(),
        role: Role::Fan,
        iss: "onsale".into(),
        aud: "onsale".into(),
        iat: now,
        exp: now + 3600,
    };
    Ok(jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, key)?)
}

/// Builds one request of a phase.
type MakeRequest =
    Arc<dyn Fn(&reqwest::Client) -> anyhow::Result<reqwest::RequestBuilder> + Send + Sync>;

struct Phase {
    ok: u64,
    failed: u64,
    seconds: f64,
    latency: Histogram<u64>,
}

impl Phase {
    fn line(&self, name: &str) -> String {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{name}: {:.0} req/s ({} ok, {} failed in {:.1} s), latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            self.ok as f64 / self.seconds,
            self.ok,
            self.failed,
            self.seconds,
            ms(0.50),
            ms(0.99),
            ms(0.999)
        )
    }
}

/// `concurrency` loops sending requests made by `make` for `seconds`.
async fn phase(
    name: &str,
    client: &reqwest::Client,
    concurrency: usize,
    seconds: u64,
    make: MakeRequest,
    expect: reqwest::StatusCode,
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let progress = bar(seconds, name);
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress.inc(1);
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, make) = (client.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let request = make(&client)?;
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) if response.status() == expect => {
                        let _ = response.bytes().await;
                        latency.record(sent.elapsed().as_micros().max(1) as u64)?;
                        ok += 1;
                    }
                    _ => failed += 1,
                }
            }
            anyhow::Ok((ok, failed, latency))
        }));
    }
    let mut total = Phase {
        ok: 0,
        failed: 0,
        seconds: 0.0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (ok, failed, latency) = task.await??;
        total.ok += ok;
        total.failed += failed;
        total.latency.add(latency)?;
    }
    total.seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish();
    Ok(total)
}

pub async fn joins(stack: &mut Stack, args: JoinArgs) -> anyhow::Result<()> {
    let venue_id = setup::venue(&stack.pool, 10, 20, 50).await?;
    let event_id = setup::event(stack, venue_id, 8).await?;
    waiting_room::sale::draw(&stack.pool, &mut stack.redis, &stack.keys, event_id, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _gateway = Gateway(
        Command::new(&args.gateway)
            .env("DATABASE_URL", &stack.database_url)
            .env("REDIS_URL", &stack.redis_url)
            .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
            .env("ONSALE_AUTH__JWT_SECRET", SECRET)
            .env("ONSALE_REDIS__KEY_PREFIX", stack.keys.prefix())
            .env("ONSALE_LIMITS__PER_IP_PER_SECOND", "10000000")
            .env("ONSALE_LIMITS__PER_IP_BURST", "10000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (cargo build --release -p gateway)",
                    args.gateway
                )
            })?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let ready = Instant::now();
    while !client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
    {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the gateway did not become healthy on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let fallback = format!("{base}/v1/benchmark-baseline");
    let baseline_key = key.clone();
    let baseline = phase(
        "baseline",
        &client,
        args.concurrency,
        args.seconds,
        Arc::new(move |c: &reqwest::Client| {
            Ok(c.get(&fallback).bearer_auth(token(&baseline_key)?))
        }),
        reqwest::StatusCode::NOT_FOUND,
    )
    .await?;
    let url = format!("{base}/v1/events/{event_id}/requests");
    let body = serde_json::json!({"quantity": 2}).to_string();
    let joined = phase(
        "joins",
        &client,
        args.concurrency,
        args.seconds,
        Arc::new(move |c: &reqwest::Client| {
            Ok(c.post(&url)
                .bearer_auth(token(&key)?)
                .header("content-type", "application/json")
                .body(body.clone()))
        }),
        reqwest::StatusCode::ACCEPTED,
    )
    .await?;
    let stream_len: u64 = redis::cmd("XLEN")
        .arg(stack.keys.stream(event_id))
        .query_async(&mut stack.redis)
        .await?;
    println!(
        "{}",
        baseline.line("baseline (404 fallback through every layer)")
    );
    println!("{}", joined.line("joins"));
    println!(
        "joins/baseline = {:.2}; {} joins accepted and {stream_len} entries in the line",
        (joined.ok as f64 / joined.seconds) / (baseline.ok as f64 / baseline.seconds),
        joined.ok
    );
    if stream_len != joined.ok {
        bail!(
            "the line holds {stream_len} entries but {} joins were accepted",
            joined.ok
        );
    }
    Ok(())
}
