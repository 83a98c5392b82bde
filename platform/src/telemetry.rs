//! Traces across the services: the W3C trace context (`traceparent`) carried with a
//! change wherever it goes, and the spans exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the OpenTelemetry SDK, through
//! `tracing-opentelemetry`: every `tracing` span becomes a span of the trace).
//!
//! The trail, beside the correlation id ([`crate::correlation`]), so that one join,
//! its hold, its payment and its emails are one trace:
//! - the gateway's `http` span continues a caller's `traceparent` header, or starts
//!   a trace;
//! - a join writes its span's context into the request hash and the stream entry
//!   (the `x` field, after the correlation id: [`crate::correlation::field`]);
//! - the booking worker's `decide` span continues it; its ledger row
//!   (`booking.requests.traceparent`) and its outbox rows carry the decision's context;
//! - a checkout's `pay` span continues the hold's context from the ledger, and the
//!   order keeps it (`payments.orders.traceparent`) for whatever settles it later (a
//!   webhook, the reconciler) and for the order's outbox rows;
//! - the relay sends an outbox row's context as the Kafka header `traceparent`;
//! - the notifier's `notify` span continues it and the email carries it in its
//!   `Traceparent` header.
//!
//! Without an exporter no span has a trace context and nothing is carried: the
//! fields stay as they were, and the hot path writes no more than before.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The Kafka header and the email header that carry the context.
pub const TRACEPARENT: &str = "traceparent";
/// The environment variable that turns the export on (the SDK's own name).
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The OTLP exporter (HTTP, protobuf) to `endpoint`'s `/v1/traces`, batched on a
/// thread of its own, with `service` as the resource's `service.name`.
pub fn otlp_provider(
    service: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}

/// The `tracing` layer that turns spans into spans of `provider`'s traces; the
/// provider is kept for [`flush`].
pub fn layer<S>(
    service: &'static str,
    provider: SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let tracer = provider.tracer(service);
    let _ = PROVIDER.set(provider);
    tracing_opentelemetry::layer().with_tracer(tracer)
}

/// Exports what is still buffered: the last step of a service's shutdown. The
/// exporter keeps working (a process may run several services). Does nothing when
/// nothing is exported.
pub fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::warn!(%error, "flushing the traces failed");
    }
}

/// The W3C `traceparent` of `span`, when it belongs to a trace.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the span the caller is in.
pub fn traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Makes `span` (not yet entered) a child of the context `traceparent` names.
/// Nothing happens without a valid one or without an exporter.
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| !t.is_empty()) else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace id a `traceparent` names (its second field), for logs and tests.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut fields = traceparent.split('-');
    let (_version, id) = (fields.next()?, fields.next()?);
    (id.len() == 32).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_child_continues_the_trace_its_traceparent_names_and_carries_it_on() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let span = tracing::info_span!("decide");
            continue_from(&span, Some(upstream));
            let carried = span.in_scope(traceparent).expect("a traced span");
            assert_eq!(trace_id(&carried), Some("0af7651916cd43dd8448eb211c80319c"));
            assert_ne!(carried, upstream, "the child has its own span id");

            let fresh = tracing::info_span!("join");
            continue_from(&fresh, Some("not a traceparent"));
            let started = fresh.in_scope(traceparent).expect("a new trace");
            assert_ne!(trace_id(&started), trace_id(upstream));
        });
    }

    #[test]
    fn without_an_exporter_nothing_is_carried() {
        let span = tracing::info_span!("join");
        assert_eq!(span.in_scope(traceparent), None);
        assert_eq!(trace_id("00-abc-def-01"), None);
    }
}
