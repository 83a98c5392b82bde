//! What the farm tells Prometheus: `/metrics` is Prometheus text a real parser reads,
//! and the Grafana dashboard in `deploy/` asks only for metrics that exist.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{minted_fan_token, spawn_app};
use crate::live::{next_of, snapshot};

/// Every `onsale_*` metric name an expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("onsale_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn metrics_parse_and_the_grafana_dashboard_asks_only_for_metrics_that_exist(pool: PgPool) {
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
    let order = crate::checkout::pay(&app, &token, &request, "4242424242424242", None).await;
    assert_eq!(order["state"], "paid");

    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics is Prometheus text");
    let exposed: BTreeSet<String> = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    assert!(
        exposed.iter().all(|name| name.starts_with("onsale_")),
        "every metric carries the onsale_ prefix: {exposed:?}"
    );

    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/onsale.json"))
            .expect("the Grafana dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no metric");
            for name in names {
                assert!(
                    exposed.contains(&name),
                    "{} asks for {name}, which /metrics does not expose ({exposed:?})",
                    panel["title"]
                );
            }
        }
    }
    socket.close(None).await.ok();
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"max by (route) (onsale_http_request_duration_seconds{quantile="0.99"}) / sum(rate(onsale_holds_total[1m]))"#
        ),
        ["onsale_http_request_duration_seconds", "onsale_holds_total"]
    );
}
