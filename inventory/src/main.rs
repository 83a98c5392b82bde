//! `inventory`: serve the inventory API, or run an operator command.
//!
//! ```text
//! inventory                     serve the API
//! inventory rebuild <event_id>  rebuild the event's Redis seat map from Postgres
//! inventory audit <event_id>    compare the Redis seat map with Postgres
//! ```

use anyhow::{Context, bail};
use inventory::seatmap::{self, LoadMode};
use proto::{EventId, Keys};

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::runtime::init_tracing("inventory");
    let config = inventory::Config::load().context("loading configuration")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {
            inventory::Application::build(config)
                .await?
                .run(platform::runtime::shutdown_signal())
                .await
        }
        ["rebuild", event] | ["audit", event] => {
            let event_id: EventId = event
                .parse()
                .with_context(|| format!("{event:?} is not an event id"))?;
            let (pool, mut redis) = inventory::connect(&config).await?;
            let keys = Keys::new(config.redis.key_prefix.clone());
            if args[0] == "rebuild" {
                let report =
                    seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force).await?;
                println!(
                    "rebuilt seat map of event {event_id}: {} available, {} held, {} sold (generation {})",
                    report.counts.available,
                    report.counts.held,
                    report.counts.sold,
                    report.generation
                );
            } else {
                let diff = seatmap::diff_against_ledger(&pool, &mut redis, &keys, event_id).await?;
                for seat in &diff {
                    println!(
                        "{}: redis {:?}, postgres {:?}",
                        seat.seat_id, seat.redis, seat.ledger
                    );
                }
                if !diff.is_empty() {
                    bail!("{} seats differ between redis and postgres", diff.len());
                }
                println!("event {event_id}: redis agrees with postgres on every seat");
            }
            Ok(())
        }
        _ => bail!("usage: inventory [serve | rebuild <event_id> | audit <event_id>]"),
    }
}
