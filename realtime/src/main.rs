use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::runtime::init_tracing("realtime");
    let config = realtime::Config::load().context("loading configuration")?;
    realtime::Application::build(config)
        .await?
        .run(proto::runtime::shutdown_signal())
        .await
}
