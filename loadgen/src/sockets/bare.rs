//! `loadgen sockets-bare`: the fan-out benchmark's baseline, the least a WebSocket
//! server can do for the same job. It accepts sockets on any path (the queue number
//! comes in `n=`, there is no token check and no lookup), subscribes to the event's
//! live channel, and on every `batch` sends each socket its new position through a
//! tokio `broadcast`: one message per socket, nothing coalesced or re-read. Its
//! sockets have the buffers REALTIME.md gives the realtime node's
//! ([`super::wire::server_config`]).
//!
//! It prints one [`super::wire::MARKER`] line once it listens and is subscribed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::wire::{self, MARKER};

#[derive(clap::Args)]
pub struct BareArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// The pub/sub channel moves are published on.
    #[arg(long)]
    channel: String,
    /// The sale hash, whose `served` is the line's position at start.
    #[arg(long)]
    sale_key: String,
}

#[derive(Deserialize)]
struct Published<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    served: Option<u64>,
}

pub async fn run(args: BareArgs) -> anyhow::Result<()> {
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL must name the Redis to use")?;
    let store = platform::store::Store::open(redis_url.as_str())?;
    let (pushes, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let mut pubsub = store
        .sharded_pubsub(pushes)
        .await
        .context("connecting to Redis for pub/sub")?;
    pubsub
        .subscribe(&args.channel)
        .await
        .context("subscribing")?;
    // Read after subscribing: a move made in between is then both read and heard.
    let mut redis = store.shared().await?;
    let served: Option<u64> = redis::cmd("HGET")
        .arg(&args.sale_key)
        .arg(proto::sale_hash::SERVED)
        .query_async(&mut redis)
        .await
        .context("reading served")?;
    let served = Arc::new(AtomicU64::new(served.unwrap_or(0)));
    // Capacity is of messages, not sockets; a socket that falls behind skips to the
    // latest `served`.
    let (moves, _) = broadcast::channel::<u64>(64);

    let feed = {
        let (served, moves) = (served.clone(), moves.clone());
        async move {
            // Held for as long as the feed runs: the subscription lives on it.
            let _pubsub = pubsub;
            while let Some(push) = messages.recv().await {
                if push.kind != redis::PushKind::SMessage {
                    continue;
                }
                let Some(redis::Value::BulkString(payload)) = push.data.get(1) else {
                    continue;
                };
                let Ok(text) = std::str::from_utf8(payload) else {
                    continue;
                };
                let Ok(published) = serde_json::from_str::<Published>(text) else {
                    continue;
                };
                if let ("batch", Some(now)) = (published.kind, published.served) {
                    served.fetch_max(now, Ordering::Relaxed);
                    let _ = moves.send(now);
                }
            }
            eprintln!("sockets-bare: the pub/sub connection ended");
        }
    };
    tokio::spawn(feed);

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("{MARKER}{{\"kind\":\"ready\"}}");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (served, moves) = (served.clone(), moves.subscribe());
                tokio::spawn(async move {
                    let _ = serve(stream, served, moves).await;
                });
            }
            // Out of files, most likely: the benchmark reports the client's failures.
            Err(why) => {
                eprintln!("sockets-bare: accept failed: {why}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One socket: its position now, then after every move, until it closes.
async fn serve(
    stream: TcpStream,
    served: Arc<AtomicU64>,
    mut moves: broadcast::Receiver<u64>,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut query = String::new();
    #[allow(
        clippy::result_large_err,
        reason = "tungstenite's handshake callback fixes the signature"
    )]
    let capture = |request: &Request, response: Response| {
        query = request.uri().query().unwrap_or_default().to_owned();
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        capture,
        Some(wire::server_config()),
    )
    .await?;
    let (mut number, mut request_id) = (0u64, String::new());
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        match name {
            "n" => number = value.parse().unwrap_or(0),
            "request_id" => request_id = value.to_owned(),
            _ => {}
        }
    }
    // The receiver was made before this read, so no move falls between the two.
    let mut sent = served.load(Ordering::Relaxed);
    ws.send(position(&request_id, number, sent)).await?;
    loop {
        tokio::select! {
            message = ws.next() => match message {
                // Reading answers pings; the client sends nothing else but a close.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                Some(Ok(_)) => {}
            },
            moved = moves.recv() => {
                let now = match moved {
                    Ok(now) => now,
                    Err(broadcast::error::RecvError::Lagged(_)) => served.load(Ordering::Relaxed),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                if now > sent {
                    sent = now;
                    ws.send(position(&request_id, number, sent)).await?;
                }
            }
        }
    }
}

fn position(request_id: &str, number: u64, served: u64) -> Message {
    Message::text(format!(
        r#"{{"type":"position","request_id":"{request_id}","queue_number":{number},"position":{}}}"#,
        number as i64 - served as i64
    ))
}
