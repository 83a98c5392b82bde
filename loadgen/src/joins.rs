//! Queue joins through the gateway binary, against a baseline of the same client
//! hitting the gateway's not-found fallback (the whole middleware stack, no handler
//! work) in the same run.
//!
//! The client shares the two cores with the gateway and Redis, so it is kept cheap:
//! one keep-alive HTTP/1.1 connection per task driven by hyper directly, and every
//! fan's token signed before the clock starts. Each phase also reports the CPU time
//! the gateway, the generator and Redis spent per request.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use platform::auth::TokenIssuer;
use proto::Role;

use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct JoinArgs {
    /// Seconds each phase (baseline, joins) runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The most requests per second a phase can send: each join is a distinct fan,
    /// and `seconds` × this many fan tokens are signed before the phase starts.
    #[arg(long, default_value_t = 40_000)]
    max_rate: usize,
    /// Gateway processes to run; connections are spread over them in turn, as a
    /// round-robin balancer would (without a balancer's own cost in the figures).
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// The gateway binary to run.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: String,
}

/// The gateway binary, running against the stack on a port of its own; stopped when
/// dropped.
pub(crate) struct Gateway {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The `Host` header its requests carry.
    pub(crate) host: HeaderValue,
    /// Its operations port (`/metrics`).
    pub(crate) ops_addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `binary` against the stack's Postgres, Redis and key prefix, with the
    /// per-address limit out of the way (every fan comes from 127.0.0.1), and waits
    /// until it answers /healthz.
    pub(crate) async fn start(stack: &Stack, binary: &str) -> anyhow::Result<Self> {
        let port = testkit::free_port();
        let ops_port = testkit::free_port();
        let child = Command::new(binary)
            .env("DATABASE_URL", &stack.database_url)
            .env("REDIS_URL", &stack.redis_url)
            .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
            .env("ONSALE_OPS_LISTEN", format!("127.0.0.1:{ops_port}"))
            .env("ONSALE_AUTH__JWT_SECRET", SECRET)
            .env("ONSALE_PAYMENTS__WEBHOOK_SECRET", "loadgen-webhook-secret")
            .env("ONSALE_REDIS__KEY_PREFIX", stack.keys.prefix())
            .env("ONSALE_LIMITS__PER_IP_PER_SECOND", "10000000")
            .env("ONSALE_LIMITS__PER_IP_BURST", "10000000")
            // A door's devices scan far faster here than a person could.
            .env("ONSALE_LIMITS__PER_USER_PER_SECOND", "10000000")
            .env("ONSALE_LIMITS__PER_USER_BURST", "10000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary} (cargo build --release -p gateway)"))?;
        let gateway = Gateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            host: HeaderValue::try_from(format!("127.0.0.1:{port}"))?,
            ops_addr: SocketAddr::from(([127, 0, 0, 1], ops_port)),
        };
        let ready = Instant::now();
        loop {
            let healthy = async {
                let mut sender = connect(gateway.addr).await?;
                let request = Request::get("/healthz")
                    .header(HOST, gateway.host.clone())
                    .body(Full::new(Bytes::new()))?;
                anyhow::Ok(sender.send_request(request).await?.status().is_success())
            };
            if healthy.await.unwrap_or(false) {
                return Ok(gateway);
            }
            if ready.elapsed() > Duration::from_secs(30) {
                bail!("the gateway did not become healthy on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub(crate) const SECRET: &str = "loadgen-secret-loadgen-secret-loadgen-0123";

/// `Authorization` values of distinct fans, signed ahead on every core, handed out
/// once each ([`Tokens::take`]) or round and round ([`Tokens::cycle`]).
pub(crate) struct Tokens {
    values: Vec<HeaderValue>,
    next: AtomicUsize,
}

impl Tokens {
    pub(crate) fn sign(count: usize, key: &TokenIssuer) -> anyhow::Result<Self> {
        Self::sign_as(count, key, Role::Fan)
    }

    /// `count` tokens of distinct users with `role`.
    pub(crate) fn sign_as(count: usize, key: &TokenIssuer, role: Role) -> anyhow::Result<Self> {
        let progress = bar(count as u64, "signing");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunks: Vec<anyhow::Result<Vec<HeaderValue>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let share = count / threads + usize::from(i < count % threads);
                    let progress = progress.clone();
                    scope.spawn(move || {
                        (0..share)
                            .map(|_| {
                                progress.inc(1);
                                Ok(HeaderValue::try_from(format!(
                                    "Bearer {}",
                                    setup::sign(key, role)?
                                ))?)
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("signing thread panicked")))
                })
                .collect()
        });
        progress.finish();
        let mut values = Vec::with_capacity(count);
        for chunk in chunks {
            values.extend(chunk?);
        }
        Ok(Self {
            values,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn take(&self) -> Option<HeaderValue> {
        self.values
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .cloned()
    }

    /// The next fan's token, starting again after the last.
    pub(crate) fn cycle(&self) -> HeaderValue {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.values[i % self.values.len()].clone()
    }
}

/// Builds one request of a phase; `None` when the phase has used up its fans.
pub(crate) type MakeRequest = Arc<dyn Fn() -> Option<Request<Full<Bytes>>> + Send + Sync>;

pub(crate) struct Phase {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) seconds: f64,
    latency: Histogram<u64>,
    /// CPU time each process spent during the phase.
    cpu: Cpu,
}

/// CPU time used by the gateway, the load generator and Redis: on one machine the
/// three share the cores, so what each spends per request says where the time goes,
/// which requests per second alone does not.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cpu {
    pub(crate) gateway: f64,
    pub(crate) loadgen: f64,
    pub(crate) redis: f64,
}

impl Cpu {
    pub(crate) fn since(self, start: Cpu) -> Cpu {
        Cpu {
            gateway: self.gateway - start.gateway,
            loadgen: self.loadgen - start.loadgen,
            redis: self.redis - start.redis,
        }
    }
}

/// Where the CPU times are read: the gateway's and this process's from /proc, Redis's
/// from `INFO cpu`.
pub(crate) struct Meter {
    /// Every gateway process of the run.
    pub(crate) gateway_pids: Vec<u32>,
    pub(crate) redis: platform::store::Redis,
}

impl Meter {
    /// CPU seconds so far: the gateways', this process's, and Redis's (every master
    /// of a cluster, summed).
    pub(crate) async fn read(&mut self) -> anyhow::Result<Cpu> {
        let infos: Vec<String> = self
            .redis
            .on_each_master(redis::cmd("INFO").arg("cpu"))
            .await?;
        let mut redis = 0.0;
        for info in &infos {
            let field = |name: &str| -> anyhow::Result<f64> {
                info.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                    .with_context(|| format!("no {name} in INFO cpu"))?
                    .trim()
                    .parse()
                    .with_context(|| format!("{name} in INFO cpu"))
            };
            redis += field("used_cpu_user")? + field("used_cpu_sys")?;
        }
        let mut gateway = 0.0;
        for pid in &self.gateway_pids {
            gateway += process_cpu(&format!("/proc/{pid}/stat"))?;
        }
        Ok(Cpu {
            gateway,
            loadgen: process_cpu("/proc/self/stat")?,
            redis,
        })
    }
}

/// User plus system CPU seconds of a process, its finished threads included.
fn process_cpu(stat: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat).with_context(|| format!("reading {stat}"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and
    // 13th of them, in clock ticks, which Linux fixes at 100 per second for user space.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("parsing {stat}"))?;
    let ticks: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().with_context(|| format!("parsing {stat}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(ticks.iter().sum::<u64>() as f64 / 100.0)
}

impl Phase {
    pub(crate) fn line(&self, name: &str) -> String {
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

    pub(crate) fn cpu_line(&self, name: &str) -> String {
        let per = |seconds: f64| seconds * 1e6 / self.ok.max(1) as f64;
        format!(
            "{name}: CPU per request: gateway {:.1} µs, load generator {:.1} µs, redis {:.1} µs",
            per(self.cpu.gateway),
            per(self.cpu.loadgen),
            per(self.cpu.redis)
        )
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `concurrency` connections sending requests made by `make` for `seconds`.
pub(crate) async fn phase(
    name: &str,
    meter: &mut Meter,
    addrs: &[SocketAddr],
    concurrency: usize,
    seconds: u64,
    make: MakeRequest,
    expect: StatusCode,
) -> anyhow::Result<Phase> {
    let mut senders = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        senders.push(connect(addrs[i % addrs.len()]).await?);
    }
    let cpu_at_start = meter.read().await?;
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
    for mut sender in senders {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let Some(request) = make() else {
                    bail!("out of signed fan tokens: raise --max-rate");
                };
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if status == expect {
                    latency.record(sent.elapsed().as_micros().max(1) as u64)?;
                    ok += 1;
                } else {
                    failed += 1;
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
        cpu: Cpu::default(),
    };
    for task in tasks {
        let (ok, failed, latency) = task.await??;
        total.ok += ok;
        total.failed += failed;
        total.latency.add(latency)?;
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.cpu = meter.read().await?.since(cpu_at_start);
    ticker.abort();
    progress.finish();
    Ok(total)
}

pub async fn joins(stack: &mut Stack, args: JoinArgs) -> anyhow::Result<()> {
    let venue_id = setup::venue(&stack.pool, 10, 20, 50).await?;
    let event_id = setup::event(stack, venue_id, 8).await?;
    waiting_room::sale::draw(&stack.pool, &mut stack.redis, &stack.keys, event_id, None)
        .await
        .context("drawing the pre-queue")?;

    let mut gateways = Vec::new();
    for _ in 0..args.gateways.max(1) {
        gateways.push(Gateway::start(stack, &args.gateway).await?);
    }
    let mut meter = Meter {
        gateway_pids: gateways.iter().map(Gateway::pid).collect(),
        redis: stack.redis.clone(),
    };
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let (addr, host) = (addrs.as_slice(), gateways[0].host.clone());

    let key = TokenIssuer::onsale(SECRET, 3600);
    // The baseline may reuse tokens (a 404 does not care who asks); joins may not.
    let baseline_tokens = Arc::new(Tokens::sign(10_000, &key)?);
    let baseline_host = host.clone();
    let baseline = phase(
        "baseline",
        &mut meter,
        addr,
        args.concurrency,
        args.seconds,
        Arc::new(move || {
            Request::get("/v1/benchmark-baseline")
                .header(HOST, baseline_host.clone())
                .header(AUTHORIZATION, baseline_tokens.cycle())
                .body(Full::new(Bytes::new()))
                .ok()
        }),
        StatusCode::NOT_FOUND,
    )
    .await?;
    let fans = Arc::new(Tokens::sign(args.max_rate * args.seconds as usize, &key)?);
    let path = format!("/v1/events/{event_id}/requests");
    let body = Bytes::from(serde_json::json!({"quantity": 2}).to_string());
    let joined = phase(
        "joins",
        &mut meter,
        addr,
        args.concurrency,
        args.seconds,
        Arc::new(move || {
            Request::builder()
                .method(Method::POST)
                .uri(&path)
                .header(HOST, host.clone())
                .header(AUTHORIZATION, fans.take()?)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .ok()
        }),
        StatusCode::ACCEPTED,
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
    println!(
        "{}",
        joined.line(&format!(
            "joins through {} gateway{}",
            addr.len(),
            if addr.len() == 1 { "" } else { "s" }
        ))
    );
    println!("{}", baseline.cpu_line("baseline"));
    println!("{}", joined.cpu_line("joins"));
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
