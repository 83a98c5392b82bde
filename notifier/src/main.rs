use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::runtime::init_tracing("notifier");
    let config = notifier::Config::load().context("loading configuration")?;
    notifier::Application::build(config)
        .await?
        .run(proto::runtime::shutdown_signal())
        .await
}
