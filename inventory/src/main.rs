//! `inventory`: the operators' commands on an event's seat map. (The inventory API is
//! served by the gateway, which sets up each new event's sale with it.)
//!
//! ```text
//! inventory rebuild <event_id>  rebuild the event's Redis seat map from Postgres
//! inventory audit <event_id>    compare the Redis seat map with Postgres
//! ```
//!
//! Both read `DATABASE_URL`, `REDIS_URL` and `ONSALE_REDIS__KEY_PREFIX`.

use anyhow::bail;
use clap::{Parser, Subcommand};
use inventory::seatmap::{self, LoadMode};
use proto::{EventId, Keys};

#[derive(Parser)]
#[command(name = "inventory", about = "Operator commands on an event's seat map")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild the event's Redis seat map from the Postgres ledger.
    Rebuild { event_id: EventId },
    /// Compare the event's Redis seat map with the Postgres ledger; fails on a difference.
    Audit { event_id: EventId },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    platform::runtime::init_tracing("inventory");
    let config = inventory::Config::load()?;
    let (pool, mut redis) = inventory::connect(&config).await?;
    let keys = Keys::new(config.redis.key_prefix.clone());
    match cli.command {
        Command::Rebuild { event_id } => {
            let report =
                seatmap::rebuild(&pool, &mut redis, &keys, event_id, LoadMode::Force).await?;
            println!(
                "rebuilt seat map of event {event_id}: {} available, {} held, {} sold (generation {})",
                report.counts.available, report.counts.held, report.counts.sold, report.generation
            );
        }
        Command::Audit { event_id } => {
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
    }
    Ok(())
}
