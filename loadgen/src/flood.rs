//! The edge under a flood: many fans refreshing the seat map while others join the
//! line, through the gateway binary, against a baseline of the gateway's cheapest
//! route (the not-found fallback, through every layer) at the same number of
//! connections, in the same run.
//!
//! Refreshing fans are distinct (`--fans` signed tokens, sent round the connections,
//! each refresh as the next fan); each join is a fan of its own, joining once. The
//! client is the joins benchmark's: keep-alive HTTP/1.1 connections driven by hyper
//! directly, one request in flight on each, tokens signed before the clock starts.
//! Besides seat-map GETs per second and join latency, the report gives the CPU each
//! process spent per request and how often the gateway read the seat states from Redis
//! meanwhile (from its /metrics): the shared snapshot allows once per second per event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HOST, HeaderValue, IF_NONE_MATCH};
use hyper::{Method, Request, StatusCode};
use platform::auth::TokenIssuer;

mod live;

use crate::joins::{Cpu, Gateway, Meter, SECRET, Tokens, connect};
use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct FloodArgs {
    /// Seconds each phase (baseline, flood) runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinct fans refreshing the seat map.
    #[arg(long, default_value_t = 10_000)]
    fans: usize,
    /// Connections refreshing the seat map, one request in flight on each.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Connections joining the line meanwhile; each join is a new fan.
    #[arg(long, default_value_t = 16)]
    joiners: usize,
    /// The most joins per second the run can send: this many × `seconds` joining
    /// fans' tokens are signed before the clock starts.
    #[arg(long, default_value_t = 5_000)]
    max_join_rate: usize,
    /// Sections of the event's venue, each 10 rows of 10 seats (the map's size).
    #[arg(long, default_value_t = 10)]
    sections: u32,
    /// Send each refresh with the ETag the connection last got, as a browser
    /// revalidating does (a 304 when nothing changed).
    #[arg(long)]
    revalidate: bool,
    /// The gateway binary to run.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: String,
    /// Flood the live sockets instead, of a realtime node or of the gateway's
    /// socket route (`--fans` fans in line follow the event meanwhile; 1,000 is
    /// plenty).
    #[arg(long, value_enum)]
    live: Option<live::LiveTarget>,
    /// The realtime binary to run, with `--live realtime`.
    #[arg(long, default_value = "target/release/realtime")]
    realtime: String,
}

/// Builds a request, given the ETag of the connection's last answer; `None` when
/// the group has run out of fans.
type MakeRequest = Arc<dyn Fn(Option<&HeaderValue>) -> Option<Request<Full<Bytes>>> + Send + Sync>;

/// Keep-alive connections to the gateway, opened before a phase starts.
type Connections = Vec<SendRequest<Full<Bytes>>>;

/// What one group of connections did.
struct Group {
    ok: u64,
    not_modified: u64,
    bytes: u64,
    /// Answers with another status than expected, by status.
    failed: BTreeMap<u16, u64>,
    latency: Histogram<u64>,
}

impl Group {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            not_modified: 0,
            bytes: 0,
            failed: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }

    fn add(&mut self, other: Group) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.not_modified += other.not_modified;
        self.bytes += other.bytes;
        for (status, count) in other.failed {
            *self.failed.entry(status).or_default() += count;
        }
        self.latency.add(other.latency)?;
        Ok(())
    }

    /// Answers as expected (304s included), per second.
    fn rate(&self, seconds: f64) -> f64 {
        (self.ok + self.not_modified) as f64 / seconds
    }

    fn line(&self, name: &str, seconds: f64) -> String {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let failed: u64 = self.failed.values().sum();
        let not_modified = match self.not_modified {
            0 => String::new(),
            n => format!(", {n} not modified"),
        };
        format!(
            "{name}: {:.0}/s ({} ok{not_modified}, {failed} failed {:?}, {:.1} MB/s of bodies), \
             latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            self.rate(seconds),
            self.ok,
            self.failed,
            self.bytes as f64 / seconds / 1e6,
            ms(0.50),
            ms(0.99),
            ms(0.999),
        )
    }
}

/// Sends requests on one connection until `deadline`.
async fn drive(
    mut sender: SendRequest<Full<Bytes>>,
    deadline: Instant,
    make: MakeRequest,
    expect: StatusCode,
) -> anyhow::Result<Group> {
    let mut group = Group::new()?;
    let mut etag: Option<HeaderValue> = None;
    while Instant::now() < deadline {
        let Some(request) = make(etag.as_ref()) else {
            bail!("out of signed fan tokens: raise --max-join-rate");
        };
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        if let Some(tag) = response.headers().get(ETAG) {
            etag = Some(tag.clone());
        }
        let body = response.into_body().collect().await?.to_bytes();
        let micros = sent.elapsed().as_micros().max(1) as u64;
        if status == expect {
            group.ok += 1;
            group.bytes += body.len() as u64;
            group.latency.record(micros)?;
        } else if status == StatusCode::NOT_MODIFIED {
            group.not_modified += 1;
            group.latency.record(micros)?;
        } else {
            *group.failed.entry(status.as_u16()).or_default() += 1;
        }
    }
    Ok(group)
}

/// Opens `connections` connections now, to be driven from when the phase starts.
async fn open(addr: SocketAddr, connections: usize) -> anyhow::Result<Connections> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await?);
    }
    Ok(senders)
}

/// Drives each group's connections with its requests for `seconds`; each group's
/// outcome, the phase's length and the CPU spent meanwhile.
async fn phase(
    name: &str,
    meter: &mut Meter,
    seconds: u64,
    groups: Vec<(Connections, MakeRequest, StatusCode)>,
) -> anyhow::Result<(Vec<Group>, f64, Cpu)> {
    let cpu_at_start = meter.read().await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
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
    let mut running = Vec::new();
    for (senders, make, expect) in groups {
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|sender| tokio::spawn(drive(sender, deadline, make.clone(), expect)))
            .collect();
        running.push(tasks);
    }
    let mut outcomes = Vec::new();
    for tasks in running {
        let mut group = Group::new()?;
        for task in tasks {
            group.add(task.await??)?;
        }
        outcomes.push(group);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = meter.read().await?.since(cpu_at_start);
    ticker.abort();
    progress.finish();
    Ok((outcomes, elapsed, cpu))
}

/// The sum of a counter's samples in the gateway's /metrics (its operations port).
async fn counter(gateway: &Gateway, name: &str) -> anyhow::Result<f64> {
    let mut sender = connect(gateway.ops_addr).await?;
    let request = Request::get("/metrics")
        .header(HOST, gateway.ops_addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = std::str::from_utf8(&body).context("/metrics is not text")?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn cpu_line(name: &str, cpu: Cpu, requests: u64) -> String {
    let per = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
    format!(
        "{name}: CPU per request: gateway {:.1} µs, load generator {:.1} µs, redis {:.1} µs",
        per(cpu.gateway),
        per(cpu.loadgen),
        per(cpu.redis)
    )
}

pub async fn flood(stack: &mut Stack, args: FloodArgs) -> anyhow::Result<()> {
    if let Some(target) = args.live {
        return live::flood(
            stack,
            live::LiveArgs {
                target,
                seconds: args.seconds,
                fans: args.fans as u64,
                realtime: args.realtime,
                gateway: args.gateway,
            },
        )
        .await;
    }
    if args.fans == 0 || args.concurrency == 0 || args.joiners == 0 {
        bail!("--fans, --concurrency and --joiners must be positive");
    }
    let venue_id = setup::venue(&stack.pool, args.sections, 10, 10).await?;
    let event_id = setup::event(stack, venue_id, 8).await?;
    waiting_room::sale::draw(&stack.pool, &mut stack.redis, &stack.keys, event_id, None)
        .await
        .context("drawing the pre-queue")?;
    let gateway = Gateway::start(stack, &args.gateway).await?;
    let mut meter = Meter {
        gateway_pids: vec![gateway.pid()],
        redis: stack.redis.clone(),
    };
    let host = gateway.host.clone();

    let key = TokenIssuer::onsale(SECRET, 3600);
    let fans = Arc::new(Tokens::sign(args.fans, &key)?);
    let joining = Arc::new(Tokens::sign(
        args.max_join_rate * args.seconds as usize,
        &key,
    )?);
    let connections = args.concurrency + args.joiners;

    // Baseline: every connection of the flood asks for an unknown path, as fans.
    let make_baseline: MakeRequest = {
        let (fans, host) = (fans.clone(), host.clone());
        Arc::new(move |_| {
            Request::get("/v1/benchmark-baseline")
                .header(HOST, host.clone())
                .header(AUTHORIZATION, fans.cycle())
                .body(Full::new(Bytes::new()))
                .ok()
        })
    };
    let senders = open(gateway.addr, connections).await?;
    let (baseline, baseline_seconds, baseline_cpu) = phase(
        "baseline",
        &mut meter,
        args.seconds,
        vec![(senders, make_baseline, StatusCode::NOT_FOUND)],
    )
    .await?;
    let baseline = baseline.into_iter().next().context("the baseline group")?;

    // The flood: fans refresh the seat map while others join the line.
    let seats_path = format!("/v1/events/{event_id}/seats");
    let make_refresh: MakeRequest = {
        let (fans, host, revalidate) = (fans.clone(), host.clone(), args.revalidate);
        Arc::new(move |etag| {
            let mut request = Request::get(seats_path.as_str())
                .header(HOST, host.clone())
                .header(AUTHORIZATION, fans.cycle());
            if let (true, Some(etag)) = (revalidate, etag) {
                request = request.header(IF_NONE_MATCH, etag.clone());
            }
            request.body(Full::new(Bytes::new())).ok()
        })
    };
    let join_path = format!("/v1/events/{event_id}/requests");
    let join_body = Bytes::from(serde_json::json!({"quantity": 2}).to_string());
    let make_join: MakeRequest = {
        let host = host.clone();
        Arc::new(move |_| {
            Request::builder()
                .method(Method::POST)
                .uri(join_path.as_str())
                .header(HOST, host.clone())
                .header(AUTHORIZATION, joining.take()?)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(join_body.clone()))
                .ok()
        })
    };
    let refreshers = open(gateway.addr, args.concurrency).await?;
    let joiners = open(gateway.addr, args.joiners).await?;
    let state_reads_before = counter(&gateway, "onsale_seat_map_state_reads_total").await?;
    let catalog_loads_before = counter(&gateway, "onsale_seat_map_catalog_loads_total").await?;
    let (flood, flood_seconds, flood_cpu) = phase(
        "flood",
        &mut meter,
        args.seconds,
        vec![
            (refreshers, make_refresh, StatusCode::OK),
            (joiners, make_join, StatusCode::ACCEPTED),
        ],
    )
    .await?;
    let state_reads =
        counter(&gateway, "onsale_seat_map_state_reads_total").await? - state_reads_before;
    let catalog_loads =
        counter(&gateway, "onsale_seat_map_catalog_loads_total").await? - catalog_loads_before;
    let mut flood = flood.into_iter();
    let (refreshes, joins) = (
        flood.next().context("the refresh group")?,
        flood.next().context("the join group")?,
    );
    let stream_len: u64 = redis::cmd("XLEN")
        .arg(stack.keys.stream(event_id))
        .query_async(&mut stack.redis)
        .await?;

    let seats = args.sections * 100;
    let baseline_rate = baseline.rate(baseline_seconds);
    println!(
        "{} fans refreshing a {seats}-seat map on {} connections, {} joining connections",
        args.fans, args.concurrency, args.joiners
    );
    println!(
        "{}",
        baseline.line(
            &format!("baseline (404 fallback through every layer, {connections} connections)"),
            baseline_seconds
        )
    );
    println!("{}", refreshes.line("seat-map GETs", flood_seconds));
    println!("{}", joins.line("joins", flood_seconds));
    println!(
        "{}",
        cpu_line(
            "baseline",
            baseline_cpu,
            baseline.ok + baseline.not_modified
        )
    );
    println!(
        "{}",
        cpu_line(
            "flood (GETs and joins together)",
            flood_cpu,
            refreshes.ok + refreshes.not_modified + joins.ok
        )
    );
    println!(
        "seat-map GETs/baseline = {:.2}; joins/baseline = {:.2}; (GETs + joins)/baseline = {:.2}",
        refreshes.rate(flood_seconds) / baseline_rate,
        joins.rate(flood_seconds) / baseline_rate,
        (refreshes.rate(flood_seconds) + joins.rate(flood_seconds)) / baseline_rate,
    );
    println!(
        "during the flood the gateway read the seat states from redis {state_reads:.0} times \
         and the catalog from postgres {catalog_loads:.0} times in {flood_seconds:.1} s"
    );
    println!(
        "{} joins accepted and {stream_len} entries in the line",
        joins.ok
    );
    if stream_len != joins.ok {
        bail!(
            "the line holds {stream_len} entries but {} joins were accepted",
            joins.ok
        );
    }
    let failed: u64 = [&baseline, &refreshes, &joins]
        .iter()
        .map(|group| group.failed.values().sum::<u64>())
        .sum();
    if failed > 0 {
        bail!("{failed} requests got an unexpected status (listed above)");
    }
    Ok(())
}
