use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::runtime::init_tracing("realtime");
    let config = realtime::Config::load().context("loading configuration")?;
    realtime::Application::build(config)
        .await?
        .run(platform::runtime::shutdown_signal())
        .await
}
