//! Money back and paper, measured: invoice PDFs rendered per second against the
//! same PDF writer making a one-line page (the least a PDF costs), and refunds per
//! second through the gateway (in this process) against single-row Postgres
//! commits at the same concurrency, in the same run: a refund's seat part is one
//! transaction, its physical limit one commit.
//!
//! The refunds are of `--orders` paid orders of one ticket each, written straight to
//! the ledgers (request confirmed, seat claim sold, order with its prices and policy,
//! ticket, invoice) and the seat map rebuilt from them, so the clock sees only the
//! refunds: each voids its ticket, releases its seat in the ledger and in Redis,
//! and issues its credit note.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use platform::auth::TokenIssuer;
use proto::{EventId, OrderId, Role, UserId};
use serde_json::json;

use crate::chaos::SECRET;
use crate::setup::{self, Stack, bar};

#[derive(clap::Args)]
pub struct MoneyArgs {
    /// Paid orders to refund (one ticket each).
    #[arg(long, default_value_t = 2_000)]
    orders: usize,
    /// Refund calls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds each PDF phase and the commit baseline run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

/// Documents made per second by `threads` threads running `make` for `seconds`.
async fn per_second(
    threads: usize,
    seconds: u64,
    make: Arc<dyn Fn() -> anyhow::Result<usize> + Send + Sync>,
) -> anyhow::Result<(f64, usize)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let made = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..threads {
        let (make, made) = (make.clone(), made.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut size = 0;
            while Instant::now() < deadline {
                size = make()?;
                made.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(size)
        }));
    }
    let mut size = 0;
    for task in tasks {
        size = task.await??;
    }
    Ok((made.load(Ordering::Relaxed) as f64 / seconds as f64, size))
}

/// A one-line A4 page: the least a PDF with text costs in the same writer.
fn minimal_pdf() -> anyhow::Result<usize> {
    use krilla::geom::Point;
    use krilla::page::PageSettings;
    use krilla::text::{Font, TextDirection};
    static FONT: std::sync::OnceLock<Font> = std::sync::OnceLock::new();
    let font = FONT.get_or_init(|| {
        Font::new(
            Arc::new(include_bytes!("../../billing/fonts/DejaVuSans.ttf").to_vec()).into(),
            0,
        )
        .expect("the kept font")
    });
    let mut pdf = krilla::Document::new();
    let mut page = pdf.start_page_with(PageSettings::from_wh(595.0, 842.0).context("page")?);
    let mut surface = page.surface();
    surface.draw_text(
        Point::from_xy(56.0, 66.0),
        font.clone(),
        12.0,
        "INV-2026-1",
        false,
        TextDirection::Auto,
    );
    surface.finish();
    page.finish();
    Ok(pdf.finish().map_err(|e| anyhow::anyhow!("{e:?}"))?.len())
}

fn sample_invoice(lines: usize) -> billing::Content {
    let line = |i: usize| billing::Line {
        description: format!("Ticket, seat Floor-A-{i}"),
        net_cents: 4202,
        tax_cents: 798,
        total_cents: 5000,
    };
    billing::Content {
        kind: billing::Kind::Invoice,
        number: "INV-2026-123456".into(),
        issued_at: chrono::Utc::now(),
        refers_to: None,
        order_id: OrderId::new(),
        seller: billing::Party {
            name: Some("onsale demo box office".into()),
            address: Some("1 Main Street, 10115 Berlin, Germany".into()),
            vat_id: Some("DE000000000".into()),
        },
        buyer: billing::Party {
            name: Some("Ada Lovelace".into()),
            address: Some("12 Analytical Row, London".into()),
            vat_id: None,
        },
        fan_email: None,
        event: billing::documents::EventRef {
            name: "Benchmark Night".into(),
            starts_at: chrono::Utc::now(),
        },
        currency: "EUR".into(),
        tax_rate_bp: 1900,
        tax_included: true,
        lines: (1..=lines).map(line).collect(),
        reason: None,
        fee_cents: 0,
        net_cents: 4202 * lines as i64,
        tax_cents: 798 * lines as i64,
        total_cents: 5000 * lines as i64,
    }
}

/// `orders` paid orders of one seat each, written to the ledgers: `(order, fan)`.
async fn paid_orders(
    stack: &mut Stack,
    event_id: EventId,
    seats: &[String],
) -> anyhow::Result<Vec<(OrderId, UserId)>> {
    let n = seats.len();
    let requests: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let orders: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let fans: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let mut tx = stack.pool.begin().await?;
    sqlx::query(
        "INSERT INTO booking.requests (request_id, event_id, fan_id, queue_number, state, seats)
         SELECT r, $1, f, i, 'confirmed', ARRAY[s]
         FROM unnest($2::uuid[], $3::uuid[], $4::text[]) WITH ORDINALITY AS t(r, f, s, i)",
    )
    .bind(event_id)
    .bind(&requests)
    .bind(&fans)
    .bind(seats)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO booking.seat_claims (event_id, seat_id, request_id, state)
         SELECT $1, s, r, 'sold' FROM unnest($2::uuid[], $3::text[]) AS t(r, s)",
    )
    .bind(event_id)
    .bind(&requests)
    .bind(seats)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO payments.orders (order_id, request_id, event_id, fan_id, state, seats,
             amount_cents, currency, card_last4, provider, charge_id, seat_cents, seat_tax_cents,
             tax_rate_bp, tax_included, refund_until, refund_fee_percent)
         SELECT o, r, $1, f, 'paid', ARRAY[s], 5000, 'EUR', '4242', 'sandbox', 'ch_' || o,
                ARRAY[5000::bigint], ARRAY[798::bigint], 1900, true, now() + interval '1 day', 10
         FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) AS t(o, r, f, s)",
    )
    .bind(event_id)
    .bind(&orders)
    .bind(&requests)
    .bind(&fans)
    .bind(seats)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO tickets.tickets (ticket_id, event_id, seat_id, order_id, request_id, fan_id,
                                      valid_from, valid_until)
         SELECT gen_random_uuid(), $1, s, o, r, f, now(), now() + interval '30 days'
         FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) AS t(o, r, f, s)",
    )
    .bind(event_id)
    .bind(&orders)
    .bind(&requests)
    .bind(&fans)
    .bind(seats)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let seller: billing::Seller = serde_json::from_value(billing::Seller::defaults())?;
    let progress = bar(n as u64, "invoices");
    for order in &orders {
        let mut tx = stack.pool.begin().await?;
        let row = payments::orders::lock(&mut tx, OrderId::from(*order))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        payments::invoices::issue_invoice(&mut tx, &seller, &row)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
        progress.inc(1);
    }
    progress.finish();
    inventory::seatmap::rebuild(
        &stack.pool,
        &mut stack.redis,
        &stack.keys,
        event_id,
        inventory::seatmap::LoadMode::Force,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(orders
        .into_iter()
        .zip(fans)
        .map(|(o, f)| (OrderId::from(o), UserId::from(f)))
        .collect())
}

pub async fn money(stack: &mut Stack, args: MoneyArgs) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // PDFs: the writer's floor, then invoices of 2 and of 10 tickets.
    let (floor, floor_size) = per_second(threads, args.seconds, Arc::new(minimal_pdf)).await?;
    let mut rendered = Vec::new();
    for lines in [2, 10] {
        let content = Arc::new(sample_invoice(lines));
        let (rate, size) = per_second(
            threads,
            args.seconds,
            Arc::new(move || Ok(billing::pdf::render(&content)?.len())),
        )
        .await?;
        rendered.push((lines, rate, size));
    }

    // Refunds through the gateway.
    let per_row = (args.orders as u32).div_ceil(200).max(1);
    let venue_id = setup::venue(&stack.pool, 10, 20, per_row).await?;
    let event_id = setup::event(stack, venue_id, 8).await?;
    let seats: Vec<String> = sqlx::query_scalar(
        "SELECT seat_id FROM inventory.seats WHERE venue_id = $1 ORDER BY seat_id LIMIT $2",
    )
    .bind(venue_id)
    .bind(args.orders as i64)
    .fetch_all(&stack.pool)
    .await?;
    let orders = paid_orders(stack, event_id, &seats).await?;
    // The invoices' PDFs, rendered and stored as the payments loop does.
    let started = Instant::now();
    let mut stored = 0;
    loop {
        let done = billing::render_pending(&stack.pool, 100).await?;
        if done == 0 {
            break;
        }
        stored += done;
    }
    let stored_rate = stored as f64 / started.elapsed().as_secs_f64();

    let baseline = crate::checkout::baseline(stack, args.concurrency, args.seconds).await?;
    let base = crate::chaos::gateway(stack).await?;
    let key = TokenIssuer::onsale(SECRET, 3600);
    let mut work = Vec::with_capacity(orders.len());
    for (order, fan) in &orders {
        work.push((key.issue(*fan, Role::Fan)?, *order));
    }
    let work = Arc::new(tokio::sync::Mutex::new(work));
    let client = reqwest::Client::new();
    let progress = bar(orders.len() as u64, "refunds");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (work, client, base, progress) =
            (work.clone(), client.clone(), base.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut failed = 0u64;
            loop {
                // Taken in its own statement: the lock is not held over the call.
                let Some((token, order)) = work.lock().await.pop() else {
                    break;
                };
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/v1/orders/{order}/refunds"))
                    .bearer_auth(&token)
                    .header("idempotency-key", order.to_string())
                    .json(&json!({}))
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                latency.record(sent.elapsed().as_micros() as u64)?;
                if status.as_u16() != 202 || body["credit_note_number"].is_null() {
                    if failed == 0 {
                        progress
                            .suspend(|| eprintln!("a refund was not approved: {status} {body}"));
                    }
                    failed += 1;
                }
                progress.inc(1);
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
    progress.finish();
    let (free, sold): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tickets.tickets WHERE event_id = $1 AND state = 'void'),
                (SELECT count(*) FROM booking.seat_claims WHERE event_id = $1)",
    )
    .bind(event_id)
    .fetch_one(&stack.pool)
    .await?;
    let rate = orders.len() as f64 / elapsed;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!("pdf floor: {floor:.0} one-line pages/s ({floor_size} bytes) on {threads} threads");
    for (lines, rate, size) in &rendered {
        println!(
            "invoice of {lines} tickets: {rate:.0} PDFs/s ({size} bytes); ratio to the floor {:.3}",
            rate / floor
        );
    }
    println!(
        "invoices rendered and stored (SHA-256, one UPDATE each) by the payments loop's pass: {stored} at {stored_rate:.0}/s"
    );
    println!(
        "refunds: {} approved in {elapsed:.2} s = {rate:.0} refunds/s through the gateway ({failed} not), \
         latency p50 {:.1} ms, p99 {:.1} ms, concurrency {}; {free} tickets void, {sold} seat claims left",
        orders.len() as u64 - failed,
        ms(0.5),
        ms(0.99),
        args.concurrency
    );
    println!(
        "baseline: {baseline:.0} single-row Postgres commits/s at the same concurrency; ratio {:.3}",
        rate / baseline
    );
    if failed > 0 {
        bail!("{failed} refunds were not approved");
    }
    if free as usize != orders.len() || sold != 0 {
        bail!(
            "{free} of {} tickets void, {sold} seat claims left",
            orders.len()
        );
    }
    Ok(())
}
