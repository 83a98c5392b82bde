//! One fan's way through the services is one trace: the join at the gateway, the
//! booking worker's decision, the payment, and the notifier's emails share the
//! trace id the join started, carried through the stream entry, the ledger, the
//! outbox row, the Kafka header and the email's `Traceparent` header
//! (`platform::telemetry`).
//!
//! Every service runs in this process, with the tracing subscriber exporting to
//! the OpenTelemetry SDK's in-memory exporter. A binary of its own: the subscriber
//! is process-wide.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;

use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use sqlx::PgPool;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::support::helpers::*;
use crate::support::mail::*;
use crate::support::sale::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_join_its_hold_its_payment_and_its_emails_are_one_trace(pool: PgPool) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(platform::telemetry::layer("onsale", provider))
        .init();

    let app = spawn_app(pool).await;
    let pipeline = pipeline(&app, &brokers()).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (email, token, request, _) =
        registered_fan_holding(&app, &event, &json!({"quantity": 1})).await;
    let order = pay(&app, &token, &request, PAID, None).await;
    assert_eq!(order["state"], "paid", "{order}");
    let (tickets, _) = wait_for_mail(&pipeline.sink, &email, "your tickets").await;
    wait_until_quiet(&app).await;

    // The email names the trace...
    let header = tickets
        .header("traceparent")
        .expect("the email carries a Traceparent header");
    let trace = platform::telemetry::trace_id(header.trim())
        .expect("a W3C traceparent")
        .to_owned();
    let held: Vec<_> = mails_to(&pipeline.sink.messages(), &email, "held")
        .into_iter()
        .filter_map(|m| m.header("traceparent"))
        .collect();
    assert_eq!(held.len(), 1, "the hold's email carries one too");
    assert_eq!(
        platform::telemetry::trace_id(held[0].trim()),
        Some(trace.as_str()),
        "the hold's email is in the same trace"
    );

    // ...and the trace holds a span of every service on the way (the simple
    // exporter exports each span as it ends).
    let spans = exporter.get_finished_spans().expect("finished spans");
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace)
        .collect();
    let names: BTreeSet<String> = in_trace.iter().map(|s| s.name.to_string()).collect();
    for wanted in ["http", "decide", "pay", "notify"] {
        assert!(
            names.contains(wanted),
            "no {wanted:?} span in trace {trace}: it has {names:?}"
        );
    }
    let joins = in_trace
        .iter()
        .filter(|s| {
            s.name == "http"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "path" && kv.value.as_str().ends_with("/requests"))
        })
        .count();
    assert_eq!(joins, 1, "the trace starts at the one join");
    let checkouts = in_trace
        .iter()
        .filter(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "path" && kv.value.as_str().ends_with("/checkout"))
        })
        .count();
    assert_eq!(
        checkouts, 0,
        "the checkout call has its own trace; its payment joins the hold's"
    );
    let notified = in_trace.iter().filter(|s| s.name == "notify").count();
    assert!(
        notified >= 2,
        "the hold's email and the tickets': {notified} notify spans"
    );
    // One trace, not two that share an id by chance: every span but the join's has
    // its parent in the trace.
    let ids: std::collections::HashSet<_> =
        in_trace.iter().map(|s| s.span_context.span_id()).collect();
    let roots: Vec<_> = in_trace
        .iter()
        .filter(|s| !ids.contains(&s.parent_span_id))
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(roots, ["http"], "one root, the join");
    stop.cancel();
    pipeline.stop.cancel();
}
