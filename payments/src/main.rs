use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::runtime::init_tracing("payments");
    let config = payments::Config::load().context("loading configuration")?;
    payments::Application::build(config)
        .await?
        .run(platform::runtime::shutdown_signal())
        .await
}
