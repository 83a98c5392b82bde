//! The socket fan-out benchmark: how many live sockets realtime nodes hold on one
//! machine, what each idle socket costs them in memory, and how long a move of the
//! line takes to reach every socket, against a bare tokio-tungstenite broadcast
//! server ([`bare`]) measured in the same run.
//!
//! Limits shape the processes. One process may keep 20,000 files open here, and a
//! source address has ~28k ephemeral ports. So the sockets are spread over K server
//! processes (each on its own port) and C client processes ([`client`], this binary
//! again), each client binding a source address of its own (127.0.<phase>.<2 + c>)
//! and holding at most 15,000 sockets. Client sockets close with a reset (no
//! TIME_WAIT), and a phase's clients use other addresses than the previous phase's
//! all the same.
//!
//! Each phase (bare, then realtime):
//! 1. start K servers; read their resident memory and the kernel's socket memory;
//! 2. start the clients, which open every socket and wait for its first `position`;
//! 3. read the memory again: the difference over the sockets is the cost of one;
//! 4. move the line every `interval`, as a booking worker does ([`line::advance`]),
//!    telling the clients when each move was made; they stamp every receipt;
//! 5. after the last move reached every socket (or a timeout), collect the clients'
//!    latency histograms per move and stop everything.
//!
//! The line is synthetic ([`line`]): request hashes written straight into Redis,
//! numbered after every position the moves pass, so each socket stays in line and
//! gets a new position on every move.

mod bare;
mod board;
mod client;
pub(crate) mod line;
mod procs;
mod report;
pub(crate) mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use proto::EventId;
use tokio::sync::mpsc;

pub use bare::{BareArgs, run as bare};
use board::Board;
pub use client::{ClientArgs, run as client};
use procs::{ClientProcess, Server};
use report::Phase;
use wire::Status;

use crate::setup::{Stack, bar};

#[derive(clap::Args)]
pub struct SocketArgs {
    /// Sockets held at once, in each phase.
    #[arg(long, default_value_t = 50_000)]
    sockets: u64,
    /// Server processes (realtime nodes, and as many bare servers).
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Client processes, each holding at most 15,000 sockets.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Moves of the line per phase.
    #[arg(long, default_value_t = 20)]
    moves: u32,
    /// Seconds between moves.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// How far each move advances the line (`served`).
    #[arg(long, default_value_t = 1000)]
    step: u64,
    /// Connections each client process opens at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// The realtime binary; by default `realtime` next to this one.
    #[arg(long)]
    realtime: Option<PathBuf>,
    /// Measure the realtime nodes only (no ratio to the baseline).
    #[arg(long)]
    skip_baseline: bool,
}

/// Most sockets one client holds: its files, and its source address's ports.
const PER_CLIENT: u64 = 15_000;

/// Files a server keeps open besides its sockets (listener, Redis, Postgres, epoll).
const SERVER_SPARE_FILES: u64 = 500;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bare,
    Realtime,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Realtime => "realtime",
        }
    }
}

pub async fn sockets(stack: &mut Stack, args: SocketArgs) -> anyhow::Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let realtime = match &args.realtime {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("realtime"),
    };
    if !realtime.is_file() {
        bail!(
            "no realtime binary at {}: build it: cargo build --release -p realtime",
            realtime.display()
        );
    }
    check_limits(&args)?;

    let seed: u64 = rand::random();
    // Queue numbers start past every position the moves reach: each socket stays in
    // line, and gets a new position, on every move.
    let offset = u64::from(args.moves) * args.step;
    let event = line::create(stack, seed, args.sockets, offset).await?;
    let run = Run {
        event,
        seed,
        offset,
        realtime,
    };

    let mut phases = Vec::new();
    let kinds: &[Kind] = if args.skip_baseline {
        &[Kind::Realtime]
    } else {
        &[Kind::Bare, Kind::Realtime]
    };
    for (block, &kind) in kinds.iter().enumerate() {
        line::rewind(stack, event).await?;
        let phase = phase(stack, &args, &run, kind, block as u8)
            .await
            .with_context(|| format!("the {} phase", kind.name()))?;
        phases.push(phase);
    }

    println!();
    println!("{command_line}");
    println!(
        "event {event}, keys {}:*; {} sockets over {} servers and {} clients; {} moves of {} every {:.1} s",
        stack.keys.prefix(),
        args.sockets,
        args.servers,
        args.clients,
        args.moves,
        args.step,
        args.interval
    );
    for phase in &phases {
        phase.report(args.sockets);
    }
    if let [bare, realtime] = &phases[..] {
        let p = |phase: &Phase, q: f64| phase.latency.value_at_quantile(q).max(1) as f64;
        println!(
            "realtime/bare: p99 {:.2}x, p50 {:.2}x, server memory per socket {:.2}x",
            p(realtime, 0.99) / p(bare, 0.99),
            p(realtime, 0.50) / p(bare, 0.50),
            realtime.rss_per_socket() / bare.rss_per_socket().max(1.0),
        );
    }
    for phase in &phases {
        phase.verdict(args.sockets)?;
    }
    Ok(())
}

/// The sockets must fit the machine's limits, or the run fails halfway.
fn check_limits(args: &SocketArgs) -> anyhow::Result<()> {
    if args.servers == 0 || args.clients == 0 || args.moves == 0 || args.step == 0 {
        bail!("--servers, --clients, --moves and --step must be at least 1");
    }
    if args.clients > 250 {
        bail!("at most 250 clients (one source address each, 127.0.x.2-251)");
    }
    let per_client = args.sockets.div_ceil(args.clients as u64);
    if per_client > PER_CLIENT {
        bail!(
            "{} sockets need --clients {} or more (at most {PER_CLIENT} sockets a client)",
            args.sockets,
            args.sockets.div_ceil(PER_CLIENT)
        );
    }
    let files = procs::open_files_limit().unwrap_or(20_000);
    let per_server_max = files.saturating_sub(SERVER_SPARE_FILES);
    if args.sockets.div_ceil(args.servers as u64) > per_server_max {
        bail!(
            "{} sockets need --servers {} or more (a process may open {files} files here)",
            args.sockets,
            args.sockets.div_ceil(per_server_max.max(1))
        );
    }
    if per_client + 100 > files {
        bail!("a client would hold {per_client} sockets but may open only {files} files");
    }
    Ok(())
}

/// What every phase of a run shares.
struct Run {
    event: EventId,
    /// Seeds the fan and request ids ([`wire::fan`], [`wire::request`]).
    seed: u64,
    /// Socket `i` follows queue number `offset + i + 1`.
    offset: u64,
    realtime: PathBuf,
}

/// One phase against `kind` servers; clients bind 127.0.`block`.x.
async fn phase(
    stack: &mut Stack,
    args: &SocketArgs,
    run: &Run,
    kind: Kind,
    block: u8,
) -> anyhow::Result<Phase> {
    let name = kind.name();
    let event = run.event;
    eprintln!("{name}: starting {} servers", args.servers);
    let (channel, sale_key) = (stack.keys.live(event), stack.keys.sale(event));
    let mut servers: Vec<Server> = Vec::with_capacity(args.servers);
    for _ in 0..args.servers {
        servers.push(match kind {
            Kind::Realtime => procs::start_realtime(&run.realtime, stack).await?,
            Kind::Bare => procs::start_bare(stack, &channel, &sale_key).await?,
        });
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    // Let start-up allocations settle before the baseline reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_kib = rss(&servers)?;
    let kernel_idle = procs::kernel()?;

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut clients: Vec<ClientProcess> = Vec::with_capacity(args.clients);
    let per_client = args.sockets.div_ceil(args.clients as u64);
    let started = Instant::now();
    for c in 0..args.clients {
        let first = c as u64 * per_client;
        let count = per_client.min(args.sockets.saturating_sub(first));
        let mut client_args = vec![
            format!("--servers={}", addrs.join(",")),
            format!("--event={event}"),
            format!("--run={}", run.seed),
            format!("--first={first}"),
            format!("--count={count}"),
            format!("--offset={}", run.offset),
            format!("--source=127.0.{block}.{}", c + 2),
            format!("--concurrency={}", args.connect_concurrency),
        ];
        if kind == Kind::Bare {
            client_args.push("--bare".to_owned());
        }
        clients.push(procs::start_client(c, client_args, events_tx.clone())?);
    }
    drop(events_tx);
    let mut board = Board::new(args.clients);

    // Connecting: until every attempt has finished and every socket has its first
    // position, or nothing has changed for 30 s.
    let progress = bar(args.sockets, &format!("{name} open"));
    let mut connect_seconds = None;
    board
        .follow(&mut events, Duration::from_secs(30), |total| {
            progress.set_position(total.attempted as u64);
            let attempted = total.attempted as u64 >= args.sockets;
            if attempted && connect_seconds.is_none() {
                connect_seconds = Some(started.elapsed().as_secs_f64());
            }
            attempted && total.ready >= total.alive()
        })
        .await?;
    progress.finish();
    let connect_seconds = connect_seconds.unwrap_or_else(|| started.elapsed().as_secs_f64());
    let total = board.total();
    eprintln!(
        "{name}: {} connected, {} failed, {} ready in {connect_seconds:.1} s",
        total.connected, total.failed, total.ready
    );
    if let Some(why) = &total.first_error {
        eprintln!("{name}: first failure: {why}");
    }
    if total.connected == 0 {
        bail!("{name}: no socket connected");
    }
    // Idle sockets: let the servers settle (a first tick, freed handshake buffers).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected_kib = rss(&servers)?;
    let kernel_connected = procs::kernel()?;

    // Moves, every `interval` from now.
    let interval = Duration::from_secs_f64(args.interval);
    let progress = bar(u64::from(args.moves), &format!("{name} move"));
    let mut receivers = Vec::with_capacity(args.moves as usize);
    let moves_start = Instant::now();
    for number in 1..=args.moves {
        let due = moves_start + interval * number;
        board.pump_until(&mut events, due.into()).await?;
        let served = u64::from(number) * args.step;
        let at_ns = wire::now_ns();
        receivers.push(line::advance(stack, event, served).await?);
        let command = wire::Command::Move {
            number,
            served,
            at_ns,
        };
        for client in &mut clients {
            client.send(&command);
        }
        progress.inc(1);
        show_have(&progress, name, &board.total());
    }
    // Until the last move has reached every open socket.
    let settle = Duration::from_secs(10).max(interval * 5);
    board
        .follow(&mut events, settle, |total| {
            show_have(&progress, name, total);
            total.latest_move == args.moves && total.have_latest >= total.alive()
        })
        .await?;
    progress.finish();
    let rss_after_moves_kib = rss(&servers)?;

    for client in &mut clients {
        client.send(&wire::Command::End);
    }
    let summaries = board
        .summaries(&mut events, Duration::from_secs(30))
        .await?;
    drop(clients);
    drop(servers);

    let mut phase = Phase {
        kind,
        status: Status::default(),
        connect_seconds,
        rss_idle_kib,
        rss_connected_kib,
        rss_after_moves_kib,
        kernel_idle,
        kernel_connected,
        latency: wire::latency_histogram(),
        whole_line: Vec::new(),
        missing: 0,
        before_move: 0,
        wrong_number: 0,
        receivers,
    };
    // Per move: every socket's latency, and how many sockets never had it.
    let mut per_move: Vec<(Histogram<u64>, u64)> = (0..args.moves)
        .map(|_| (wire::latency_histogram(), 0))
        .collect();
    for summary in &summaries {
        phase.status.add(&summary.status);
        phase.before_move += summary.before_move;
        phase.wrong_number += summary.wrong_number;
        for report in &summary.moves {
            let Some((latency, missing)) = per_move.get_mut(report.number as usize - 1) else {
                continue;
            };
            wire::add_pairs(latency, &report.latency);
            wire::add_pairs(&mut phase.latency, &report.latency);
            *missing += report.missing;
            phase.missing += report.missing;
        }
    }
    // The whole line has moved when its slowest socket has; never, if one missed it.
    phase.whole_line = per_move
        .iter()
        .map(|(latency, missing)| (*missing == 0 && !latency.is_empty()).then(|| latency.max()))
        .collect();
    Ok(phase)
}

/// The phase, and how many open sockets have the latest move.
fn show_have(progress: &ProgressBar, name: &str, total: &Status) {
    progress.set_message(format!("{name} {}/{}", total.have_latest, total.alive()));
}

/// Total resident memory of the servers, in KiB.
fn rss(servers: &[Server]) -> anyhow::Result<u64> {
    servers.iter().map(|s| procs::rss_kib(s.child.pid())).sum()
}
