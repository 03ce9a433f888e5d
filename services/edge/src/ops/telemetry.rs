//! Logs and traces: `tracing` with `RUST_LOG` filtering, text or JSON lines,
//! and an OpenTelemetry (OTLP/gRPC) exporter when an endpoint is configured.
//!
//! Tokens never reach a log: the node itself logs no URI, query or client
//! frame, and the WebSocket library's trace records, which print whole
//! frames (a `hello` or `auth` frame carries a token), are dropped whatever
//! `RUST_LOG` asks for ([`keeps`]).

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, OtlpProtocol};

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(config: &Config) -> TelemetryGuard {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let (provider, otel_layer) = match &config.otlp_endpoint {
        Some(endpoint) => match span_exporter(endpoint, config.otlp_protocol) {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("herald-edge")
                            .build(),
                    )
                    .build();
                opentelemetry::global::set_text_map_propagator(
                    opentelemetry_sdk::propagation::TraceContextPropagator::new(),
                );
                let layer =
                    tracing_opentelemetry::layer().with_tracer(provider.tracer("herald-edge"));
                (Some(provider), Some(layer))
            }
            Err(e) => {
                eprintln!("OTLP exporter disabled: {e}");
                (None, None)
            }
        },
        None => (None, None),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(|meta| keeps(meta.target(), *meta.level())))
        .with(otel_layer);
    if config.log_json {
        registry
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init();
    }
    match (&config.otlp_endpoint, &provider) {
        (Some(endpoint), Some(_)) => tracing::info!(
            endpoint = %endpoint,
            protocol = ?config.otlp_protocol,
            "trace export on (OTLP); export failures are logged by the opentelemetry crates"
        ),
        (Some(endpoint), None) => {
            tracing::warn!(endpoint = %endpoint, "trace export off: the OTLP exporter could not be built")
        }
        (None, _) => tracing::debug!("trace export off (no OTEL_EXPORTER_OTLP_ENDPOINT)"),
    }
    TelemetryGuard(provider)
}

/// The span exporter for `endpoint` over `protocol`; over HTTP the
/// endpoint is a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` is, and the
/// traces path `/v1/traces` is appended.
fn span_exporter(
    endpoint: &str,
    protocol: OtlpProtocol,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match protocol {
        OtlpProtocol::Grpc => builder.with_tonic().with_endpoint(endpoint).build(),
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build(),
    }
}

/// `RUST_LOG` (default `info`). The NATS client's own lines (an INFO line
/// per reconnect attempt, without the server or the reason) go down to
/// `warn`, since the node says what its connection does itself, once per
/// change and with the servers' addresses
/// ([`connection`](crate::nats::connection)); unless `RUST_LOG` names
/// `async_nats` or asks for `debug` or `trace`.
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    const DEFAULT: &str = "info,async_nats=warn";
    let Some(wanted) = rust_log.filter(|s| !s.trim().is_empty()) else {
        return EnvFilter::new(DEFAULT);
    };
    let verbose = ["async_nats", "debug", "trace"]
        .iter()
        .any(|w| wanted.to_ascii_lowercase().contains(w));
    let spec = if verbose {
        wanted.to_owned()
    } else {
        format!("{wanted},async_nats=warn")
    };
    EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("RUST_LOG={wanted:?} is not a valid filter ({e}); logging with {DEFAULT}");
        EnvFilter::new(DEFAULT)
    })
}

/// Crates whose trace records print the bytes of WebSocket frames.
const FRAME_DUMPING_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// False for records that could print a token: trace records of the
/// WebSocket library (frame dumps). Everything else is left to `RUST_LOG`.
pub fn keeps(target: &str, level: tracing::Level) -> bool {
    let crate_name = target.split("::").next().unwrap_or(target);
    level != tracing::Level::TRACE || !FRAME_DUMPING_TARGETS.contains(&crate_name)
}

/// A span for the ingestion of one event, continuing the publisher's trace
/// when the message carries a W3C `traceparent` header (OpenTelemetry
/// messaging conventions: a consumer receiving from NATS).
pub fn ingest_span(
    org: &str,
    seq: u64,
    headers: Option<&async_nats::HeaderMap>,
) -> Option<tracing::Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let parent = parent_of(headers?.get("traceparent")?.as_str());
    let span = tracing::info_span!(
        "herald.ingest",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "receive",
        messaging.destination.template = DESTINATION_TEMPLATE,
        herald.org = org,
        herald.seq = seq,
        trace_id = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    record_trace_id(&span);
    Some(span)
}

/// A server span for one HTTP request (`http.request.method`, `http.route`,
/// `url.path`; `http.response.status_code` is recorded by the caller),
/// continuing the caller's trace when the request carries `traceparent`.
/// The path only: a query may carry a token.
pub fn http_span(
    method: &str,
    route: &str,
    path: &str,
    traceparent: Option<&str>,
) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(parent) = traceparent.map(parent_of) {
        let _ = span.set_parent(parent);
    }
    record_trace_id(&span);
    span
}

/// Puts the span's trace id into its `trace_id` field, so that log lines
/// written inside it (JSON logs list the current span's fields) name the
/// trace to look up.
fn record_trace_id(span: &tracing::Span) {
    if let Some(sc) = span_context(span) {
        span.record("trace_id", sc.trace_id().to_string());
    }
}

/// The context a W3C `traceparent` value names (an empty one when invalid).
fn parent_of(traceparent: &str) -> opentelemetry::Context {
    use opentelemetry::propagation::TextMapPropagator;

    struct Traceparent<'a>(&'a str);
    impl opentelemetry::propagation::Extractor for Traceparent<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Traceparent(traceparent))
}

/// The subjects events are published to, as the messaging conventions name
/// a destination with variable parts.
const DESTINATION_TEMPLATE: &str = "herald.events.{org}.{service}.{property}";

/// The OpenTelemetry span context of `span`, when it is exported (an
/// OpenTelemetry layer is installed and the span is sampled).
pub fn span_context(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Records, as a span that is a child of `ingest` (the span that ingested
/// the event), the delivery of one event to one client over `transport`;
/// only a `sample` share (0 to 1) of the deliveries is recorded, since one
/// event may reach thousands of clients.
pub fn delivery_span(
    ingest: &opentelemetry::trace::SpanContext,
    org: &str,
    seq: u64,
    transport: &'static str,
    sample: f64,
) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if sample <= 0.0 || (sample < 1.0 && rand::random::<f64>() >= sample) {
        return;
    }
    let span = tracing::info_span!(
        "herald.deliver",
        otel.kind = "producer",
        messaging.system = "herald",
        messaging.operation.type = "send",
        messaging.destination.template = DESTINATION_TEMPLATE,
        herald.org = org,
        herald.seq = seq,
        herald.transport = transport,
    );
    let parent = opentelemetry::Context::new().with_remote_span_context(ingest.clone());
    let _ = span.set_parent(parent);
    // Entered and closed at once: the span marks the moment of delivery.
    drop(span.entered());
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_nats_clients_own_lines_are_quiet_unless_rust_log_says_otherwise() {
        let shown = |rust_log: Option<&str>| log_filter(rust_log).to_string();
        assert!(shown(None).contains("async_nats=warn"), "{}", shown(None));
        assert!(shown(Some(" ")).contains("async_nats=warn"));
        assert!(shown(Some("info")).contains("async_nats=warn"));
        assert_eq!(shown(Some("trace")), "trace");
        assert!(!shown(Some("info,herald_edge=debug")).contains("async_nats"));
        assert_eq!(shown(Some("async_nats=info")), "async_nats=info");
        assert!(shown(Some("not a [filter")).contains("async_nats=warn"));
    }

    #[test]
    fn frame_dumps_are_never_kept() {
        assert!(!keeps("tungstenite::protocol", Level::TRACE));
        assert!(!keeps("tokio_tungstenite", Level::TRACE));
        assert!(keeps("tungstenite::protocol", Level::DEBUG));
        assert!(keeps("herald_edge::ws", Level::TRACE));
        assert!(keeps("tungstenite_like", Level::TRACE));
    }
}
