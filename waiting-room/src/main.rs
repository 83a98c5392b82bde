use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::runtime::init_tracing("waiting-room");
    let config = waiting_room::Config::load().context("loading configuration")?;
    waiting_room::Application::build(config)
        .await?
        .run(proto::runtime::shutdown_signal())
        .await
}
