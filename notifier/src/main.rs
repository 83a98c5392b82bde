use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::runtime::init_tracing("notifier");
    let config = notifier::Config::load().context("loading configuration")?;
    notifier::Application::build(config)
        .await?
        .run(proto::runtime::shutdown_signal())
        .await
}
