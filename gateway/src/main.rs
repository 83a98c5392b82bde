use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::runtime::init_tracing("gateway");
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        println!(
            "{}",
            gateway::openapi()
                .to_pretty_json()
                .context("rendering openapi")?
        );
        return Ok(());
    }
    let config = gateway::Config::load().context("loading configuration")?;
    gateway::Application::build(config)
        .await?
        .run(proto::runtime::shutdown_signal())
        .await
}
