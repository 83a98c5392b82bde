//! What the gateway tells Prometheus: `/metrics` is Prometheus text a real parser
//! reads, with the sale's figures in it. Every other service's `/metrics`, and the
//! Grafana dashboard's expressions, are checked against the farm run as processes
//! (`e2e/tests/farm.rs`).
//!
//! A binary of its own: the metrics recorder is process-wide, and here no other
//! test writes to it while this one reads it.

use std::collections::BTreeSet;

use serde_json::json;
use sqlx::PgPool;

#[path = "support/mod.rs"]
mod support;

use crate::support::helpers::{minted_fan_token, spawn_app};
use crate::support::live::{next_of, snapshot};

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn metrics_parse_and_carry_the_sales_figures(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    // A sale in miniature, so every figure the dashboard shows has been recorded:
    // a join, a hold by the farm, a live socket, a payment.
    let token = minted_fan_token();
    let request = app.join(&event, &token, json!({"quantity": 2})).await;
    let mut socket = app.live(&event, &token, Some(&request)).await;
    snapshot(&mut socket, true).await;
    let (stop, worker) = app.start_worker();
    loop {
        let message = next_of(&mut socket, "request").await;
        if message["state"] == "held" {
            break;
        }
    }
    stop.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");
    let order = crate::support::sale::pay(&app, &token, &request, "4242424242424242", None).await;
    assert_eq!(order["state"], "paid");

    let text = app.metrics().await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics is Prometheus text");
    let exposed: BTreeSet<String> = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    assert!(
        exposed.iter().all(|name| name.starts_with("onsale_")),
        "every metric carries the onsale_ prefix: {exposed:?}"
    );

    for figure in [
        "onsale_requests_joined_total",
        "onsale_holds_total",
        "onsale_orders_total",
        "onsale_realtime_sockets",
        "onsale_http_requests_total",
    ] {
        assert!(
            exposed.contains(figure),
            "/metrics lacks {figure}: {exposed:?}"
        );
    }
    socket.close(None).await.ok();
}
