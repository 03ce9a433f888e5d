//! A real OTLP/HTTP receiver on a loopback port: it accepts `POST
//! /v1/traces` and `POST /v1/metrics` with protobuf bodies (the official
//! OpenTelemetry protocol definitions), keeps every span and every sum or
//! gauge data point it was sent, and answers as a collector does. Edges
//! export to it with `OTEL_EXPORTER_OTLP_ENDPOINT=<url>` and
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as Number};
use prost::Message;
use tokio::task::JoinHandle;

/// One received span, with what the tests look at.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource that sent it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its trace id, as 32 hex digits.
    pub trace_id: String,
    /// Its span id, as 16 hex digits.
    pub span_id: String,
    /// Its parent's span id (16 hex digits), empty for a root.
    pub parent_span_id: String,
    /// The span ids (hex) of its links.
    pub links: Vec<String>,
    /// Its string, integer and boolean attributes, as text.
    pub attributes: BTreeMap<String, String>,
}

/// One received data point of a sum (counter) or gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    /// The `service.instance.id` of the resource that sent it.
    pub instance: String,
    /// The metric's name.
    pub metric: String,
    /// `sum` or `gauge`.
    pub kind: &'static str,
    /// Its attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;
type Points = Arc<Mutex<Vec<ReceivedPoint>>>;

/// The receiver; dropping it stops the server.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Spans,
    points: Points,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a loopback port of the kernel's choice.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("its address");
        let spans = Spans::default();
        let points = Points::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&spans))
            .merge(
                Router::new()
                    .route("/v1/metrics", post(receive_metrics))
                    .with_state(Arc::clone(&points)),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            addr,
            spans,
            points,
            server,
        }
    }

    /// The base URL to give `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every sum and gauge data point received so far, oldest first.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|a| a.key == "service.name")
                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span.links.iter().map(|l| hex(&l.span_id)).collect(),
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|a| {
                            Some((a.key.clone(), text(a.value.as_ref()?.value.as_ref()?)?))
                        })
                        .collect(),
                });
            }
        }
    }
    spans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(received);
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, answer)
}

async fn receive_metrics(State(points): State<Points>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = Vec::new();
    for resource in request.resource_metrics {
        let instance = resource
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|a| a.key == "service.instance.id")
                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
            })
            .unwrap_or_default();
        for scope in resource.scope_metrics {
            for metric in scope.metrics {
                let (kind, data_points) = match metric.data {
                    Some(Data::Sum(s)) => ("sum", s.data_points),
                    Some(Data::Gauge(g)) => ("gauge", g.data_points),
                    _ => continue,
                };
                for point in data_points {
                    let value = match point.value {
                        Some(Number::AsDouble(v)) => v,
                        Some(Number::AsInt(v)) => v as f64,
                        None => continue,
                    };
                    received.push(ReceivedPoint {
                        instance: instance.clone(),
                        metric: metric.name.clone(),
                        kind,
                        attributes: point
                            .attributes
                            .iter()
                            .filter_map(|a| {
                                Some((a.key.clone(), text(a.value.as_ref()?.value.as_ref()?)?))
                            })
                            .collect(),
                        value,
                    });
                }
            }
        }
    }
    points
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(received);
    (
        StatusCode::OK,
        ExportMetricsServiceResponse::default().encode_to_vec(),
    )
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
