//! The span of one publish, and the W3C `traceparent` it puts on the
//! message, so that the edges that ingest and deliver the event continue
//! the publisher's trace (OpenTelemetry messaging conventions: a producer
//! sending to NATS). The span is exported only where the application
//! installed an OpenTelemetry layer for `tracing`; elsewhere it costs a
//! disabled span and the message carries no trace context of its own.

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A producer span for publishing to `subject`, child of the current span.
pub(crate) fn publish_span(subject: &str) -> tracing::Span {
    tracing::info_span!(
        "herald.publish",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = subject,
        messaging.destination.template = "herald.events.{org}.{service}.{property}",
    )
}

/// The W3C `traceparent` naming `span`, when it is exported.
pub(crate) fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_trace_context() {
        let span = publish_span("herald.events.acme.finance.p1");
        assert_eq!(traceparent_of(&span), None);
    }
}
