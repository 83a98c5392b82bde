use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::runtime::init_tracing("waiting-room");
    let config = waiting_room::Config::load().context("loading configuration")?;
    waiting_room::Application::build(config)
        .await?
        .run(platform::runtime::shutdown_signal())
        .await
}
