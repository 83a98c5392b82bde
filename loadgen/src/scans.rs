//! Scans at the door through the gateway binary, against the same client hitting
//! the gateway's not-found fallback (every middleware layer, no handler work) in
//! the same run.
//!
//! The event has a stadium's tickets (60,000 by default), issued into the ledger
//! before the clock starts; each scan admits a different ticket once, as the doors
//! of a stadium do, through `concurrency` connections (door devices), each with an
//! operator's token. A stadium lets 60,000 fans in over about 45 minutes: 22 scans
//! a second; the figure says how far above that one gateway is.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use platform::auth::TokenIssuer;
use proto::{RequestId, Role, UserId};

use crate::joins::{Gateway, Meter, SECRET, Tokens, phase};
use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct ScanArgs {
    /// Seconds each phase (baseline, scans) runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Scans in flight at once (one connection, one door device, each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Tickets issued for the event (each scanned once).
    #[arg(long, default_value_t = 60_000)]
    tickets: u32,
    /// The gateway binary to run.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: String,
}

/// A stadium's doors: 60,000 fans in 45 minutes.
const STADIUM_SCANS_PER_SECOND: f64 = 60_000.0 / (45.0 * 60.0);

pub async fn scans(stack: &mut Stack, args: ScanArgs) -> anyhow::Result<()> {
    // 10 sections of 20 rows: seats per row to make the tickets asked for.
    let per_row = args.tickets.div_ceil(200).max(1);
    let venue_id = setup::venue(&stack.pool, 10, 20, per_row).await?;
    let event_id = setup::event(stack, venue_id, 8).await?;
    let seats: Vec<String> = sqlx::query_scalar(
        "SELECT seat_id FROM inventory.seats WHERE venue_id = $1 ORDER BY seat_id LIMIT $2",
    )
    .bind(venue_id)
    .bind(i64::from(args.tickets))
    .fetch_all(&stack.pool)
    .await
    .context("reading the event's seats")?;
    let codes = issue(stack, event_id, &seats).await?;

    let gateway = Gateway::start(stack, &args.gateway).await?;
    let mut meter = Meter {
        gateway_pids: vec![gateway.pid()],
        redis: stack.redis.clone(),
    };
    let addrs = [gateway.addr];
    let key = TokenIssuer::onsale(SECRET, 3600);
    let devices = Arc::new(Tokens::sign_as(
        args.concurrency.max(1),
        &key,
        Role::Operator,
    )?);

    let (host, tokens) = (gateway.host.clone(), devices.clone());
    let baseline = phase(
        "baseline",
        &mut meter,
        &addrs,
        args.concurrency,
        args.seconds,
        Arc::new(move || {
            Request::get("/v1/benchmark-baseline")
                .header(HOST, host.clone())
                .header(AUTHORIZATION, tokens.cycle())
                .body(Full::new(Bytes::new()))
                .ok()
        }),
        StatusCode::NOT_FOUND,
    )
    .await?;

    let path = format!("/v1/events/{event_id}/scans");
    let host = gateway.host.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let codes = Arc::new(codes);
    let scanned = {
        let (codes, next) = (codes.clone(), next.clone());
        phase(
            "scans",
            &mut meter,
            &addrs,
            args.concurrency,
            args.seconds,
            Arc::new(move || {
                let code = codes.get(next.fetch_add(1, Ordering::Relaxed))?;
                let body = serde_json::json!({"scans": [{
                    "scan_id": uuid::Uuid::new_v4(),
                    "code": code,
                    "direction": "entry",
                    "scanned_at": chrono::Utc::now(),
                    "device_id": "Gate 1",
                }]});
                Request::builder()
                    .method(Method::POST)
                    .uri(&path)
                    .header(HOST, host.clone())
                    .header(AUTHORIZATION, devices.cycle())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .ok()
            }),
            StatusCode::OK,
        )
        .await?
    };
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tickets.entries WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&stack.pool)
            .await?;
    let rate = scanned.ok as f64 / scanned.seconds;
    println!(
        "{}",
        baseline.line("baseline (404 fallback through every layer)")
    );
    println!("{}", scanned.line("scans (each admits a new ticket)"));
    println!("{}", baseline.cpu_line("baseline"));
    println!("{}", scanned.cpu_line("scans"));
    println!(
        "scans/baseline = {:.3}; {:.0}× a stadium's doors (60,000 fans in 45 minutes: {:.1} scans/s); {} scans answered, {entries} entries in the ledger",
        rate / (baseline.ok as f64 / baseline.seconds),
        rate / STADIUM_SCANS_PER_SECOND,
        STADIUM_SCANS_PER_SECOND,
        scanned.ok,
    );
    if scanned.failed > 0 {
        bail!("{} scans were not answered 200", scanned.failed);
    }
    if entries as u64 != scanned.ok {
        bail!(
            "{} scans were answered but the ledger has {entries} entries: each admits a new ticket",
            scanned.ok
        );
    }
    Ok(())
}

/// A paid order of every seat, its tickets issued into the ledger: their codes.
async fn issue(
    stack: &Stack,
    event_id: proto::EventId,
    seats: &[String],
) -> anyhow::Result<Vec<String>> {
    let progress = bar(seats.len() as u64, "tickets");
    let ring = tickets::KeyRing::new();
    let signer = ring.signer(&stack.pool, event_id).await?;
    let mut codes = Vec::with_capacity(seats.len());
    for chunk in seats.chunks(5_000) {
        let issued = setup::paid_tickets(
            &stack.pool,
            &signer,
            event_id,
            RequestId::new(),
            UserId::new(),
            chunk,
        )
        .await?;
        progress.inc(chunk.len() as u64);
        codes.extend(issued.into_iter().map(|t| t.code));
    }
    progress.finish();
    Ok(codes)
}
