//! `loadgen sockets-client`: one client process of the fan-out benchmark. It holds
//! up to 15,000 sockets (one process may keep 20,000 files open here) from its own
//! source address, stamps every `position` it receives, and reports to the parent
//! over stdout ([`super::wire::MARKER`] lines): a status every 250 ms, and after the
//! parent's `end`, a latency histogram per move.
//!
//! The parent tells the moves over stdin (`move <n> <served> <at_ns>`) only after
//! making them, so receipts are kept per socket (each time the line it sees moves:
//! a few dozen entries a socket) and matched to moves at the end.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use platform::auth::TokenIssuer;
use proto::{EventId, Role};
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::wire::{self, ClientReport, Command, MARKER, MoveReport, Status, Summary};

#[derive(clap::Args)]
pub struct ClientArgs {
    /// The servers, comma-separated; global socket `i` goes to `servers[i % len]`.
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<SocketAddr>,
    #[arg(long)]
    event: EventId,
    /// The run's seed for fan and request ids ([`wire::fan`], [`wire::request`]).
    #[arg(long)]
    run: u64,
    /// The global index of this client's first socket.
    #[arg(long)]
    first: u64,
    #[arg(long)]
    count: u64,
    /// Socket `i` follows the request with queue number `offset + i + 1`.
    #[arg(long)]
    offset: u64,
    /// The address every socket binds before connecting: each source address has its
    /// own ~28k ephemeral ports.
    #[arg(long)]
    source: Ipv4Addr,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Also pass `n=<queue number>` (the bare server has no line to look it up in).
    #[arg(long)]
    bare: bool,
}

/// Counters the socket tasks update and the status line reads.
#[derive(Default)]
struct Shared {
    attempted: AtomicUsize,
    connected: AtomicUsize,
    failed: AtomicUsize,
    ready: AtomicUsize,
    dropped: AtomicUsize,
    wrong_number: AtomicUsize,
    first_error: Mutex<Option<String>>,
    first_drop: Mutex<Option<String>>,
}

impl Shared {
    fn note(slot: &Mutex<Option<String>>, why: String) {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(why);
    }

    fn status(&self) -> Status {
        let read =
            |slot: &Mutex<Option<String>>| slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Status {
            attempted: self.attempted.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            first_error: read(&self.first_error),
            ready: self.ready.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            first_drop: read(&self.first_drop),
            latest_move: 0,
            have_latest: 0,
        }
    }
}

/// A receipt: socket (index within this client), the `served` its position implies,
/// when it arrived ([`wire::now_ns`]).
type Receipt = (usize, u64, u64);

/// The fields of a server message this client reads.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    queue_number: Option<u64>,
    position: Option<i64>,
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<Receipt>();
    let opening = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let key = TokenIssuer::onsale(crate::joins::SECRET, 3600);
    for local in 0..args.count as usize {
        let index = args.first + local as u64;
        let server = args.servers[index as usize % args.servers.len()];
        let number = args.offset + index + 1;
        let token = token(&key, args.run, index)?;
        let mut url = format!(
            "ws://{server}/v1/events/{}/live?access_token={token}&request_id={}",
            args.event,
            wire::request(args.run, index)
        );
        if args.bare {
            url.push_str(&format!("&n={number}"));
        }
        let (shared, receipts_tx, opening) = (shared.clone(), receipts_tx.clone(), opening.clone());
        let source = args.source;
        tokio::spawn(async move {
            let permit = opening.acquire_owned().await;
            let opened =
                tokio::time::timeout(Duration::from_secs(30), open(server, source, url)).await;
            drop(permit);
            shared.attempted.fetch_add(1, Ordering::Relaxed);
            let ws = match opened {
                Ok(Ok(ws)) => ws,
                Ok(Err(why)) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    Shared::note(&shared.first_error, format!("{why:#}"));
                    return;
                }
                Err(_) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    Shared::note(
                        &shared.first_error,
                        format!("connecting to {server}: no handshake in 30 s"),
                    );
                    return;
                }
            };
            shared.connected.fetch_add(1, Ordering::Relaxed);
            listen(ws, local, number, &shared, &receipts_tx).await;
        });
    }
    drop(receipts_tx);

    // stdin is read on a thread of its own: the workspace's tokio has no io-std, and
    // the parent writes a few dozen short lines in all. The channel closes when the
    // parent goes away, which ends this process too.
    let (commands_tx, mut commands) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if commands_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut seen: Vec<Vec<(u64, u64)>> = vec![Vec::new(); args.count as usize];
    let mut moves: Vec<(u32, u64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Some((socket, served, at)) = receipts.recv() => {
                // Only the first receipt of each new `served` matters: a move is
                // delivered when the socket first sees the line at or past it.
                let history = &mut seen[socket];
                if history.last().is_none_or(|&(last, _)| served > last) {
                    history.push((served, at));
                }
            }
            line = commands.recv() => match line.as_deref().map(Command::parse) {
                Some(Some(Command::Move { number, served, at_ns })) => {
                    moves.push((number, served, at_ns));
                }
                Some(Some(Command::End)) | None => break,
                Some(None) => eprintln!("sockets-client: ignoring {line:?}"),
            },
            _ = tick.tick() => {
                report(&ClientReport::Status(status(&shared, &seen, &moves)))?;
            }
        }
    }
    // Receipts that arrived just before `end` are still queued.
    while let Ok((socket, served, at)) = receipts.try_recv() {
        let history = &mut seen[socket];
        if history.last().is_none_or(|&(last, _)| served > last) {
            history.push((served, at));
        }
    }
    let summary = summarize(&shared, &seen, &moves);
    report(&ClientReport::Summary(summary))?;
    // Returning ends the process; the kernel closes the sockets.
    Ok(())
}

/// Connecting, idling and moving take minutes; the issuer's hour spares the margin.
fn token(key: &TokenIssuer, run: u64, index: u64) -> anyhow::Result<String> {
    Ok(key.issue(wire::fan(run, index), Role::Fan)?)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A TCP connection from `source` (bound first, so the kernel picks the port from
/// that address's range), upgraded to a WebSocket.
async fn open(server: SocketAddr, source: Ipv4Addr, url: String) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .with_context(|| format!("binding {source}"))?;
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server} from {source}"))?;
    stream.set_nodelay(true)?;
    // Closed with a reset when the process ends: no TIME_WAIT, whose ports and
    // kernel memory would linger a minute into the next phase's measurements.
    stream.set_zero_linger()?;
    match tokio_tungstenite::client_async_with_config(url, stream, Some(wire::client_config()))
        .await
    {
        Ok((ws, _)) => Ok(ws),
        // A refusal before the upgrade: its status and the `{code, message}` body say
        // why (a token the server does not accept, an unknown request...).
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            anyhow::bail!(
                "{server} refused the upgrade: {} {}",
                response.status(),
                String::from_utf8_lossy(body)
            )
        }
        Err(why) => Err(why).with_context(|| format!("upgrading a connection to {server}")),
    }
}

/// Reads one socket until it closes, handing on each `position`.
async fn listen(
    mut ws: Socket,
    local: usize,
    number: u64,
    shared: &Shared,
    receipts: &mpsc::UnboundedSender<Receipt>,
) {
    let mut ready = false;
    // Reading also answers the server's pings (tungstenite queues the pong and
    // writes it on the next read).
    while let Some(message) = ws.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                Shared::note(
                    &shared.first_drop,
                    format!("closed by the server: {frame:?}"),
                );
                return;
            }
            Ok(_) => continue,
            Err(why) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                Shared::note(&shared.first_drop, format!("{why}"));
                return;
            }
        };
        // Stamped before parsing: the latency is the server's and the kernel's, and
        // this process's scheduling, not its JSON parser's.
        let at = wire::now_ns();
        let Ok(incoming) = serde_json::from_str::<Incoming>(text.as_str()) else {
            continue;
        };
        let (true, Some(position)) = (incoming.kind == "position", incoming.position) else {
            continue;
        };
        if incoming.queue_number.is_some_and(|n| n != number) {
            shared.wrong_number.fetch_add(1, Ordering::Relaxed);
        }
        if !ready {
            ready = true;
            shared.ready.fetch_add(1, Ordering::Relaxed);
        }
        // position = queue_number − served: the line as far as this socket knows.
        let served = (number as i64 - position).max(0) as u64;
        if receipts.send((local, served, at)).is_err() {
            return;
        }
    }
    shared.dropped.fetch_add(1, Ordering::Relaxed);
    Shared::note(&shared.first_drop, "the connection ended".to_owned());
}

fn status(shared: &Shared, seen: &[Vec<(u64, u64)>], moves: &[(u32, u64, u64)]) -> Status {
    let mut status = shared.status();
    if let Some(&(number, served, _)) = moves.last() {
        status.latest_move = number;
        status.have_latest = seen
            .iter()
            .filter(|h| h.last().is_some_and(|&(s, _)| s >= served))
            .count();
    }
    status
}

fn summarize(shared: &Shared, seen: &[Vec<(u64, u64)>], moves: &[(u32, u64, u64)]) -> Summary {
    let status = status(shared, seen, moves);
    let mut before_move = 0;
    let mut reports = Vec::with_capacity(moves.len());
    for &(number, served, at_ns) in moves {
        let mut latency = wire::latency_histogram();
        let (mut have, mut missing) = (0, 0);
        for history in seen {
            if history.is_empty() {
                // Never connected, or never sent a position: counted as failed or
                // not ready already, not as a move that went missing.
                continue;
            }
            match history.iter().find(|&&(s, _)| s >= served) {
                Some(&(_, at)) => {
                    have += 1;
                    if at < at_ns {
                        before_move += 1;
                    }
                    latency.saturating_record((at.saturating_sub(at_ns) / 1000).max(1));
                }
                None => missing += 1,
            }
        }
        reports.push(MoveReport {
            number,
            have,
            missing,
            latency: wire::histogram_pairs(&latency),
        });
    }
    Summary {
        moves: reports,
        before_move,
        wrong_number: shared.wrong_number.load(Ordering::Relaxed) as u64,
        status,
    }
}

fn report(report: &ClientReport) -> anyhow::Result<()> {
    // One write of a whole line, so a report reaches the parent whole; an error
    // (the parent has gone) ends this process instead of a panic in `println!`.
    let line = format!("{MARKER}{}\n", serde_json::to_string(report)?);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
