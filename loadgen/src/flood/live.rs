//! The live sockets under a flood (`loadgen flood --live realtime|gateway`): fans
//! in line follow the event on their sockets while attackers, from other
//! addresses, try what the node's limits are for: one account opening hundreds of
//! sockets, many accounts behind one address, upgrades for made-up event ids as
//! fast as they can, and sockets that chatter. The line moves every 250 ms
//! throughout; the report compares how fast a move reaches the fans before and
//! during the flood, and what the node held meanwhile: its resident memory, its
//! Redis connections and channels, and the Postgres lookups the made-up ids cost.
//!
//! Addresses: the node listens on 127.0.0.1; the fans connect 20 to an address
//! from 127.1.0.1 on, each attacker group from addresses of its own (127.0.0.3 and
//! up), so the node's per-address limits see them apart, as they would see them on
//! the internet.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use platform::auth::TokenIssuer;
use proto::{EventId, Role, UserId};
use tokio::net::TcpSocket;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::joins::{Gateway, SECRET};
use crate::setup::Stack;
use crate::sockets::{line, wire};

/// Which process serves the sockets.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LiveTarget {
    /// The realtime binary, as the load balancer sends `/live` to it.
    Realtime,
    /// The gateway binary's own socket route.
    Gateway,
}

pub struct LiveArgs {
    pub target: LiveTarget,
    pub seconds: u64,
    pub fans: u64,
    pub realtime: String,
    pub gateway: String,
}

/// The process under test.
enum Node {
    Realtime { child: Child, addr: SocketAddr },
    Gateway(Gateway),
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Node::Realtime { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Node {
    async fn start(stack: &Stack, args: &LiveArgs) -> anyhow::Result<Self> {
        match args.target {
            LiveTarget::Gateway => Ok(Node::Gateway(Gateway::start(stack, &args.gateway).await?)),
            LiveTarget::Realtime => {
                let port = testkit::free_port();
                let child = Command::new(&args.realtime)
                    .env("DATABASE_URL", &stack.database_url)
                    .env("REDIS_URL", &stack.redis_url)
                    .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
                    .env("ONSALE_AUTH__JWT_SECRET", SECRET)
                    .env("ONSALE_REDIS__KEY_PREFIX", stack.keys.prefix())
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .with_context(|| {
                        format!(
                            "starting {} (cargo build --release -p realtime)",
                            args.realtime
                        )
                    })?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let node = Node::Realtime { child, addr };
                let started = Instant::now();
                while tokio::net::TcpStream::connect(addr).await.is_err() {
                    if started.elapsed() > Duration::from_secs(30) {
                        bail!("the realtime node did not listen on {addr}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(node)
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Node::Realtime { addr, .. } => *addr,
            Node::Gateway(gateway) => gateway.addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Node::Realtime { child, .. } => child.id(),
            Node::Gateway(gateway) => gateway.pid(),
        }
    }

    /// Resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The node's /metrics (the realtime node's own port; the gateway's ops port).
    async fn metric(&self, name: &str, label: &str) -> f64 {
        let addr = match self {
            Node::Realtime { addr, .. } => *addr,
            Node::Gateway(gateway) => gateway.ops_addr,
        };
        let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains(label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How an upgrade went.
#[derive(Debug)]
enum Upgrade {
    Open(Box<Socket>),
    Refused(u16),
    Failed(String),
}

/// Opens a socket from `from` with `token`, following `request` if given.
async fn upgrade(
    node: SocketAddr,
    from: Ipv4Addr,
    event: EventId,
    token: &str,
    request: Option<proto::RequestId>,
) -> Upgrade {
    let follow = request.map_or(String::new(), |r| format!("?request_id={r}"));
    let Ok(mut request) =
        format!("ws://{node}/v1/events/{event}/live{follow}").into_client_request()
    else {
        return Upgrade::Failed("bad request".into());
    };
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    let stream = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        socket.connect(node).await
    };
    let stream = match stream.await {
        Ok(stream) => stream,
        Err(error) => return Upgrade::Failed(error.to_string()),
    };
    match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((socket, _)) => Upgrade::Open(Box::new(socket)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Upgrade::Refused(response.status().as_u16())
        }
        Err(error) => Upgrade::Failed(error.to_string()),
    }
}

/// Counts of what a group's upgrades got.
#[derive(Default, Debug)]
struct Tally {
    opened: u64,
    refused: BTreeMap<u16, u64>,
    failed: u64,
    /// Why the first failure failed.
    why: Option<String>,
}

impl Tally {
    fn add(&mut self, upgrade: &Upgrade) {
        match upgrade {
            Upgrade::Open(_) => self.opened += 1,
            Upgrade::Refused(status) => *self.refused.entry(*status).or_default() += 1,
            Upgrade::Failed(why) => {
                self.failed += 1;
                self.why.get_or_insert_with(|| why.clone());
            }
        }
    }

    fn line(&self) -> String {
        let why = self
            .why
            .as_ref()
            .map_or(String::new(), |why| format!(" (first: {why})"));
        format!(
            "{} opened, refused {:?}, {} failed{why}",
            self.opened, self.refused, self.failed
        )
    }
}

async fn redis_clients(stack: &mut Stack) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut stack.redis)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn shard_channels(stack: &mut Stack) -> usize {
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .arg(format!("{}*", stack.keys.prefix()))
        .query_async(&mut stack.redis)
        .await
        .unwrap_or_default();
    channels.len()
}

pub async fn flood(stack: &mut Stack, args: LiveArgs) -> anyhow::Result<()> {
    if stack.store.is_cluster() {
        bail!("flood --live runs against one Redis server (its client count is read)");
    }
    let run = rand::random::<u64>() >> 16;
    let event = line::create(stack, run, args.fans, 1_000_000).await?;
    let node = Node::start(stack, &args).await?;
    let addr = node.addr();
    let issuer = TokenIssuer::onsale(SECRET, 3600);
    let fan_address = |index: u64| {
        let k = index / 20;
        Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8)
    };

    // The fans: each follows its own request, far back in the line.
    let last_move = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new((
        wire::latency_histogram(),
        wire::latency_histogram(),
    )));
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut fans = Vec::new();
    let mut fan_tally = Tally::default();
    for index in 0..args.fans {
        let token = issuer.issue(wire::fan(run, index), Role::Fan)?;
        let upgraded = upgrade(
            addr,
            fan_address(index),
            event,
            &token,
            Some(wire::request(run, index)),
        )
        .await;
        fan_tally.add(&upgraded);
        let Upgrade::Open(mut socket) = upgraded else {
            bail!("fan {index} could not connect: {upgraded:?}");
        };
        let (last_move, latencies, flooding) =
            (last_move.clone(), latencies.clone(), flooding.clone());
        fans.push(tokio::spawn(async move {
            let mut positions = 0u64;
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if !text.contains("\"type\":\"position\"") {
                    continue;
                }
                positions += 1;
                let moved = last_move.load(Ordering::Relaxed);
                if positions > 1 && moved > 0 {
                    let micros = wire::now_ns().saturating_sub(moved) / 1000;
                    let mut latencies = latencies.lock().await;
                    let histogram = if flooding.load(Ordering::Relaxed) {
                        &mut latencies.1
                    } else {
                        &mut latencies.0
                    };
                    histogram.saturating_record(micros.max(1));
                }
            }
            positions
        }));
    }
    println!(
        "{} fans following the line, from {} to {}",
        fan_tally.opened,
        fan_address(0),
        fan_address(args.fans.saturating_sub(1))
    );

    // The line moves every 250 ms for the whole run.
    let mover = {
        let (mut redis, keys, last_move) =
            (stack.redis.clone(), stack.keys.clone(), last_move.clone());
        tokio::spawn(async move {
            let mut served = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                served += 1;
                last_move.store(wire::now_ns(), Ordering::Relaxed);
                let _ = proto::wire::live::Published::Batch {
                    served,
                    decided: Vec::new(),
                }
                .publish(&keys, event)
                .query_async::<i64>(&mut redis)
                .await;
                let _: Result<(), _> = redis::cmd("HSET")
                    .arg(keys.sale(event))
                    .arg(proto::sale_hash::SERVED)
                    .arg(served)
                    .query_async(&mut redis)
                    .await;
            }
        })
    };

    let baseline = Duration::from_secs(args.seconds.clamp(3, 10));
    tokio::time::sleep(baseline).await;
    let (rss_before, clients_before, channels_before) = (
        node.rss_kib(),
        redis_clients(stack).await,
        shard_channels(stack).await,
    );
    let lookups_before = node
        .metric("onsale_realtime_unknown_events_total", "from=\"postgres\"")
        .await;
    println!(
        "baseline: node {} MiB resident, redis {clients_before} clients, {channels_before} live channel(s)",
        rss_before / 1024
    );

    // The flood.
    flooding.store(true, Ordering::Relaxed);
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let held = Arc::new(Mutex::new(Vec::<Box<Socket>>::new()));

    // 1. One account, 300 sockets, from 127.0.0.3.
    let one_account = {
        let (token, held) = (issuer.issue(UserId::new(), Role::Fan)?, held.clone());
        tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..300 {
                let upgraded =
                    upgrade(addr, Ipv4Addr::new(127, 0, 0, 3), event, &token, None).await;
                tally.add(&upgraded);
                if let Upgrade::Open(socket) = upgraded {
                    held.lock().await.push(socket);
                }
            }
            tally
        })
    };
    // 2. 2,000 accounts behind one address (127.0.0.4), as fast as it can.
    let tokens: Vec<String> = (0..2000)
        .map(|_| issuer.issue(UserId::new(), Role::Fan))
        .collect::<Result<_, _>>()?;
    let one_address = {
        let held = held.clone();
        tokio::spawn(async move {
            let mut tally = Tally::default();
            for token in tokens {
                let upgraded =
                    upgrade(addr, Ipv4Addr::new(127, 0, 0, 4), event, &token, None).await;
                tally.add(&upgraded);
                if let Upgrade::Open(socket) = upgraded {
                    held.lock().await.push(socket);
                }
            }
            tally
        })
    };
    // 3. Made-up event ids, from 16 addresses (127.0.0.10 on), until the end.
    let mut made_up = Vec::new();
    for address in 0..16u8 {
        let token = issuer.issue(UserId::new(), Role::Fan)?;
        made_up.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < stop {
                let upgraded = upgrade(
                    addr,
                    Ipv4Addr::new(127, 0, 0, 10 + address),
                    EventId::new(),
                    &token,
                    None,
                )
                .await;
                tally.add(&upgraded);
            }
            tally
        }));
    }
    // 4. Chatterers: 50 accounts from 127.0.0.5, each sending 100 frames a second.
    let mut chatter = Vec::new();
    for _ in 0..50 {
        let token = issuer.issue(UserId::new(), Role::Fan)?;
        chatter.push(tokio::spawn(async move {
            let upgraded = upgrade(addr, Ipv4Addr::new(127, 0, 0, 5), event, &token, None).await;
            let Upgrade::Open(mut socket) = upgraded else {
                return (false, None);
            };
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while Instant::now() < stop {
                tokio::select! {
                    _ = tick.tick() => {
                        if socket.send(Message::text("hello?")).await.is_err() {
                            break;
                        }
                    }
                    message = socket.next() => match message {
                        Some(Ok(Message::Close(frame))) => {
                            return (true, frame.map(|f| u16::from(f.code)));
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            (true, None)
        }));
    }

    // Memory, sampled while it lasts.
    let mut rss_peak = 0;
    while Instant::now() < stop {
        rss_peak = rss_peak.max(node.rss_kib());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let clients_during = redis_clients(stack).await;
    let channels_during = shard_channels(stack).await;
    let lookups = node
        .metric("onsale_realtime_unknown_events_total", "from=\"postgres\"")
        .await
        - lookups_before;
    flooding.store(false, Ordering::Relaxed);
    mover.abort();

    let one_account = one_account.await?;
    let one_address = one_address.await?;
    let mut unknown = Tally::default();
    for group in made_up {
        let tally = group.await?;
        unknown.opened += tally.opened;
        unknown.failed += tally.failed;
        unknown.why = unknown.why.or(tally.why);
        for (status, count) in tally.refused {
            *unknown.refused.entry(status).or_default() += count;
        }
    }
    let mut closes: BTreeMap<String, u64> = BTreeMap::new();
    for group in chatter {
        let (opened, code) = group.await?;
        let key = match (opened, code) {
            (false, _) => "never opened".to_owned(),
            (true, Some(code)) => format!("closed {code}"),
            (true, None) => "still open".to_owned(),
        };
        *closes.entry(key).or_default() += 1;
    }
    let held_sockets = held.lock().await.len();
    let rss_after = node.rss_kib();

    let (baseline_latency, flood_latency) = {
        let latencies = latencies.lock().await;
        (latencies.0.clone(), latencies.1.clone())
    };
    let fans_open = fans.iter().filter(|fan| !fan.is_finished()).count();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("one account, 300 upgrades: {}", one_account.line());
    println!("2,000 accounts behind one address: {}", one_address.line());
    println!("made-up event ids from 16 addresses: {}", unknown.line());
    println!("50 chatty sockets: {closes:?}");
    println!(
        "node: {} MiB resident before, {} MiB at the peak, {} MiB after ({held_sockets} attacker sockets held open)",
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );
    println!(
        "redis: {clients_before} clients before, {clients_during} during; live channels {channels_before} before, {channels_during} during; \
         postgres lookups of made-up ids: {lookups:.0}"
    );
    println!(
        "fans: {fans_open} of {} still connected; a move reached them in p50 {:.1} ms, p99 {:.1} ms before the flood ({} receipts), \
         p50 {:.1} ms, p99 {:.1} ms during it ({} receipts)",
        args.fans,
        ms(&baseline_latency, 0.5),
        ms(&baseline_latency, 0.99),
        baseline_latency.len(),
        ms(&flood_latency, 0.5),
        ms(&flood_latency, 0.99),
        flood_latency.len(),
    );
    for fan in fans {
        fan.abort();
    }
    Ok(())
}
