//! `loadgen`: benchmarks of the hot path against the real stack (`DATABASE_URL`,
//! `REDIS_URL`), each reporting a ratio against a baseline measured in the same run.
//!
//! ```text
//! loadgen drain  --requests 100000 --seats 10000   drain a line, audit against Postgres
//! loadgen holds  --requests 100000                 farm holds/s vs redis-benchmark on the same script
//! loadgen joins  --seconds 10 --concurrency 64     queue joins/s through the gateway binary
//! loadgen chaos  --seed 1 --seconds 20              the history checker: faults, then proofs
//! loadgen flood  --seconds 10 --fans 10000         seat-map GETs/s and join latency under a flood
//! loadgen flood  --live realtime --fans 1000        live sockets under a flood: limits, memory, fans served
//! loadgen checkout --fans 2000 --concurrency 32     checkouts/s through the gateway; outbox and email lag
//! loadgen sockets --sockets 50000 --servers 4      live sockets held, memory per socket, move fan-out latency
//! loadgen sale --event ID --fans 30                 a simulated on-sale through a running gateway's REST API
//! loadgen scans --tickets 60000 --seconds 5         door scans/s through the gateway, each admitting a ticket
//! ```

mod chaos;
mod checkout;
mod drain;
mod flood;
mod joins;
mod money;
mod sale;
mod scans;
mod setup;
mod sockets;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "onsale load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fill an event's line, open the sale, time the farm draining it, audit the ledger.
    Drain(drain::DrainArgs),
    /// Holds per second for one hot event: the farm vs redis-benchmark running
    /// hold_batch.lua pipelined, in the same run.
    Holds(drain::HoldsArgs),
    /// Queue joins per second through the gateway, with latency percentiles.
    Joins(joins::JoinArgs),
    /// Fans, workers and a nemesis on a seeded schedule; then a check of every
    /// promise over the recorded history, Redis and Postgres.
    Chaos(chaos::ChaosArgs),
    /// Fans refreshing the seat map while others join the line, through the gateway:
    /// seat-map GETs per second and join latency, against the 404 baseline.
    Flood(flood::FloodArgs),
    /// Checkouts per second through the gateway against bare Postgres commits; with
    /// KAFKA_BROKERS, the outbox's and the email's lag under that load.
    Checkout(checkout::CheckoutArgs),
    /// Live sockets held by realtime nodes: memory per idle socket and the time a
    /// move of the line takes to reach every socket, against a bare tokio-tungstenite
    /// broadcast server.
    Sockets(sockets::SocketArgs),
    /// A simulated on-sale through a running gateway's REST API: fans sign up, join
    /// in waves, pay for (or decline, or let run out) their holds; progress each
    /// second. For demos and the operators' dashboard test.
    Sale(sale::SaleArgs),
    /// Scans at the door per second through the gateway binary (each admits a new
    /// ticket of a stadium-sized event), against the 404 baseline.
    Scans(scans::ScanArgs),
    /// Invoice PDFs per second against the PDF writer's one-line page, and refunds
    /// per second through the gateway against single-row Postgres commits.
    Money(money::MoneyArgs),
    /// A client process of `sockets` (started by it).
    #[command(hide = true)]
    SocketsClient(sockets::ClientArgs),
    /// The bare baseline server of `sockets` (started by it).
    #[command(hide = true)]
    SocketsBare(sockets::BareArgs),
}

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::runtime::init_tracing("loadgen");
    let command = Cli::parse().command;
    // The helpers of `sockets` serve or hold sockets for a parent run: no Postgres,
    // no run of their own, no keys to clean up.
    let command = match command {
        Command::SocketsClient(args) => return sockets::client(args).await,
        Command::SocketsBare(args) => return sockets::bare(args).await,
        // A sale goes through a gateway's public API only.
        Command::Sale(args) => return sale::sale(args).await,
        command => command,
    };
    let mut stack = setup::connect().await?;
    let outcome = match command {
        Command::Drain(args) => drain::drain(&mut stack, args).await,
        Command::Holds(args) => drain::holds(&mut stack, args).await,
        Command::Joins(args) => joins::joins(&mut stack, args).await,
        Command::Scans(args) => scans::scans(&mut stack, args).await,
        Command::Money(args) => money::money(&mut stack, args).await,
        Command::Chaos(args) => chaos::chaos(&mut stack, args).await,
        Command::Flood(args) => flood::flood(&mut stack, args).await,
        Command::Checkout(args) => checkout::checkout(&mut stack, args).await,
        Command::Sockets(args) => sockets::sockets(&mut stack, args).await,
        Command::SocketsClient(_) | Command::SocketsBare(_) | Command::Sale(_) => {
            unreachable!("handled above")
        }
    };
    // The run's keys go whatever the outcome; its Postgres rows stay for inspection.
    setup::cleanup(&mut stack).await?;
    outcome
}
