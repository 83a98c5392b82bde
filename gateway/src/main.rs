use anyhow::Context;

// A general-purpose allocator that keeps the many small per-request allocations
// off glibc's contended arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `gateway openapi` prints the document alone, with no log line before it.
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        println!(
            "{}",
            serde_json::to_string_pretty(&gateway::openapi()).context("rendering openapi")?
        );
        return Ok(());
    }
    platform::runtime::init_tracing("gateway");
    let config = gateway::Config::load().context("loading configuration")?;
    gateway::Application::build(config)
        .await?
        .run(platform::runtime::shutdown_signal())
        .await
}
