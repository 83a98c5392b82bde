use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::runtime::init_tracing("booking-worker");
    let config = booking_worker::Config::load().context("loading configuration")?;
    booking_worker::Application::build(config)
        .await?
        .run(platform::runtime::shutdown_signal())
        .await
}
