use anyhow::Context;

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
