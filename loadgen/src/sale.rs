//! `loadgen sale`: a simulated on-sale against a running gateway, through its public
//! REST API only, as fans would drive it: fans register and sign in, join the line
//! (in waves, so arrivals keep coming), and some pay for their holds as they get them
//! (card 4242: paid at once), some decline once first (card ...0002), the rest let
//! their holds run out. For demos and for the operators' dashboard test, which
//! watches the figures move while this runs.
//!
//! Progress goes to stdout, one line per second:
//! `sale: joined 30/30 held 12 paid 5 declined 1 ended 3 refused 0`, then a JSON
//! summary when every fan's request has ended, `--seconds` have passed, or the process
//! is told to stop (SIGTERM, Ctrl-C).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[derive(Args)]
pub struct SaleArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The event whose line the fans join (its sale must exist: scheduled or open).
    #[arg(long)]
    event: String,
    /// Fans who join, one request each.
    #[arg(long, default_value_t = 30)]
    fans: u64,
    /// Seats each fan asks for (best available).
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// Of every 10 fans, how many pay for their hold (the rest let it run out).
    #[arg(long, default_value_t = 6)]
    payers_per_10: u64,
    /// Fans who join per wave; a wave every `--wave-ms`.
    #[arg(long, default_value_t = 5)]
    wave: u64,
    #[arg(long, default_value_t = 1000)]
    wave_ms: u64,
    /// Stop after this long even if requests are still open.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Default)]
struct Tally {
    joined: AtomicU64,
    refused: AtomicU64,
    held: AtomicU64,
    paid: AtomicU64,
    declined: AtomicU64,
    ended: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn line(&self, fans: u64) -> String {
        format!(
            "sale: joined {}/{fans} held {} paid {} declined {} ended {} refused {} errors {}",
            self.joined.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
            self.paid.load(Ordering::Relaxed),
            self.declined.load(Ordering::Relaxed),
            self.ended.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// How many times a call answered "try again later" is tried again.
const RETRIES: u32 = 10;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// One call, retried as a fan's browser would when the answer is 429 or 503 with
    /// a `Retry-After` (a login flood beyond the hashing cap, a rate limit), up to
    /// [`RETRIES`] times, with the same Idempotency-Key.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("Idempotency-Key", &key);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.with_context(|| path.to_owned())?;
            let status = response.status().as_u16();
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            attempt += 1;
            match wait {
                Some(seconds) if matches!(status, 429 | 503) && attempt <= RETRIES => {
                    tokio::time::sleep(std::time::Duration::from_secs(seconds.clamp(1, 5))).await;
                }
                _ => return Ok((status, response.json().await.unwrap_or(Value::Null))),
            }
        }
    }

    /// Registers a fan and signs in; the token.
    async fn fan(&self, n: u64) -> anyhow::Result<String> {
        let email = format!("sale-{}-{n}@onsale.test", uuid::Uuid::new_v4().simple());
        let password = "a simulated fan's password";
        let credentials = json!({"email": email, "password": password});
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/register",
                None,
                Some(credentials.clone()),
            )
            .await?;
        if status != 201 {
            bail!("register answered {status}: {body}");
        }
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/login",
                None,
                Some(credentials),
            )
            .await?;
        match body["access_token"].as_str() {
            Some(token) if status == 200 => Ok(token.to_owned()),
            _ => bail!("login answered {status}: {body}"),
        }
    }
}

/// One fan's whole visit: sign up, join, then follow the request to its end.
async fn visit(client: &Client, args: &SaleArgs, n: u64, tally: &Tally) -> anyhow::Result<()> {
    let token = client.fan(n).await?;
    let (status, body) = client
        .call(
            reqwest::Method::POST,
            &format!("/v1/events/{}/requests", args.event),
            Some(&token),
            Some(json!({"quantity": args.quantity})),
        )
        .await?;
    if status != 202 {
        tally.refused.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    tally.joined.fetch_add(1, Ordering::Relaxed);
    let request = body["request_id"]
        .as_str()
        .context("a join without a request id")?
        .to_owned();
    let pays = n % 10 < args.payers_per_10;
    // Every third payer has a card declined first, as fans do.
    let mut declines_first = pays && n.is_multiple_of(3);
    let mut counted_held = false;
    let yy = (chrono::Utc::now().format("%y").to_string().parse::<u32>()? + 3) % 100;
    loop {
        let (status, body) = client
            .call(
                reqwest::Method::GET,
                &format!("/v1/requests/{request}"),
                Some(&token),
                None,
            )
            .await?;
        if status != 200 {
            bail!("request {request} answered {status}: {body}");
        }
        match body["state"].as_str().unwrap_or_default() {
            "prequeue" | "queued" | "paying" => {}
            "held" => {
                if !counted_held {
                    counted_held = true;
                    tally.held.fetch_add(1, Ordering::Relaxed);
                }
                if pays {
                    let card = if declines_first {
                        "4000000000000002"
                    } else {
                        "4242424242424242"
                    };
                    let (status, order) = client
                        .call(
                            reqwest::Method::POST,
                            &format!("/v1/requests/{request}/checkout"),
                            Some(&token),
                            Some(json!({"card_number": card, "expiry": format!("12/{yy:02}"), "cvc": "123"})),
                        )
                        .await?;
                    match (status, order["state"].as_str()) {
                        (200, Some("paid")) => {
                            tally.paid.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        (200, Some("declined")) => {
                            declines_first = false;
                            tally.declined.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            "confirmed" => {
                tally.paid.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            _ => {
                tally.ended.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        // A fan's page polls about this often when it has no socket.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn sale(args: SaleArgs) -> anyhow::Result<()> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?,
        base: args.gateway.trim_end_matches('/').to_owned(),
    });
    let (status, event) = client
        .call(
            reqwest::Method::GET,
            &format!("/v1/events/{}", args.event),
            None,
            None,
        )
        .await?;
    if status != 200 {
        bail!("event {} answered {status}: {event}", args.event);
    }
    println!(
        "sale: {} fans for \"{}\" at {}, {} per wave every {} ms, {} in 10 pay",
        args.fans,
        event["name"].as_str().unwrap_or("?"),
        client.base,
        args.wave,
        args.wave_ms,
        args.payers_per_10
    );
    let args = Arc::new(args);
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    // Fans arrive in waves; each visit runs to its end with at most `concurrency`
    // calls' worth of fans busy signing up at once.
    let arrivals = {
        let (client, args, tally) = (client.clone(), args.clone(), tally.clone());
        async move {
            let waves = futures_util::stream::iter(0..args.fans)
                .chunks(args.wave.max(1) as usize)
                .enumerate();
            let mut visits = tokio::task::JoinSet::new();
            futures_util::pin_mut!(waves);
            while let Some((i, wave)) = waves.next().await {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(args.wave_ms)).await;
                }
                for n in wave {
                    let (client, fan_args, tally) = (client.clone(), args.clone(), tally.clone());
                    visits.spawn(async move {
                        if let Err(error) = visit(&client, &fan_args, n, &tally).await {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("sale: fan {n}: {error:#}");
                        }
                    });
                    while visits.len() >= args.concurrency.max(1) * 8 {
                        visits.join_next().await;
                    }
                }
            }
            while visits.join_next().await.is_some() {}
        }
    };
    let mut report = tokio::time::interval(Duration::from_secs(1));
    let stop = platform::runtime::shutdown_signal();
    tokio::pin!(arrivals, stop);
    let reason = loop {
        tokio::select! {
            _ = &mut arrivals => break "every fan's request ended",
            _ = &mut stop => break "told to stop",
            _ = tokio::time::sleep_until(deadline.into()) => break "time is up",
            _ = report.tick() => println!("{}", tally.line(args.fans)),
        }
    };
    println!("{}", tally.line(args.fans));
    let summary = json!({
        "ended": reason,
        "seconds": started.elapsed().as_secs_f64(),
        "fans": args.fans,
        "joined": tally.joined.load(Ordering::Relaxed),
        "refused": tally.refused.load(Ordering::Relaxed),
        "held": tally.held.load(Ordering::Relaxed),
        "paid": tally.paid.load(Ordering::Relaxed),
        "declined": tally.declined.load(Ordering::Relaxed),
        "ended_otherwise": tally.ended.load(Ordering::Relaxed),
        "errors": tally.errors.load(Ordering::Relaxed),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
