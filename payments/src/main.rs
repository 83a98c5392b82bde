use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::runtime::init_tracing("payments");
    let config = payments::Config::load().context("loading configuration")?;
    payments::Application::build(config)
        .await?
        .run(proto::runtime::shutdown_signal())
        .await
}
