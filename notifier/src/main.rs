//! `notifier` runs the service; `notifier catch-mail [--listen ADDR] [--dir DIR]`
//! runs the development SMTP sink instead.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "notifier",
    about = "Emails fans about their bookings (configured by ONSALE_* variables)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a development SMTP sink that writes each message it receives to a file.
    CatchMail {
        /// Where the sink listens.
        #[arg(long, default_value = "127.0.0.1:2525")]
        listen: SocketAddr,
        /// Where each message is written, one file per message.
        #[arg(long, default_value = "mail")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Some(Command::CatchMail { listen, dir }) => {
            platform::runtime::init_tracing("notifier catch-mail");
            notifier::sink::catch_mail(listen, dir, platform::runtime::shutdown_signal()).await
        }
        None => {
            platform::runtime::init_tracing("notifier");
            let config = notifier::Config::load().context("loading configuration")?;
            notifier::Application::build(config)
                .await?
                .run(platform::runtime::shutdown_signal())
                .await
        }
    }
}
