//! `notifier` runs the service; `notifier catch-mail [--listen ADDR] [--dir DIR]`
//! runs the development SMTP sink instead.

use std::path::PathBuf;

use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: notifier [catch-mail [--listen 127.0.0.1:2525] [--dir DIR]]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("catch-mail") {
        let (mut listen, mut dir) = ("127.0.0.1:2525".to_owned(), PathBuf::from("mail"));
        let mut rest = args[1..].iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
            match flag.as_str() {
                "--listen" => listen = value.clone(),
                "--dir" => dir = PathBuf::from(value),
                _ => anyhow::bail!("unknown argument {flag:?}; {USAGE}"),
            }
        }
        platform::runtime::init_tracing("notifier catch-mail");
        let listen = listen
            .parse()
            .with_context(|| format!("--listen {listen:?}"))?;
        return notifier::sink::catch_mail(listen, dir, platform::runtime::shutdown_signal()).await;
    }
    if let Some(other) = args.first() {
        anyhow::bail!("unknown argument {other:?}; {USAGE}");
    }
    platform::runtime::init_tracing("notifier");
    let config = notifier::Config::load().context("loading configuration")?;
    notifier::Application::build(config)
        .await?
        .run(platform::runtime::shutdown_signal())
        .await
}
