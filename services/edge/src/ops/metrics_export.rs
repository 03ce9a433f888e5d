//! The node's counters and gauges pushed over OTLP
//! (`OTEL_METRICS_EXPORTER=otlp`), for deployments whose collector takes
//! OTLP rather than scraping `/metrics`. Every counter and gauge of the
//! metrics table becomes an observable instrument of the same name and
//! labels; a collection reads them all once (one [`Sample`] set, shared by
//! the instruments' callbacks for a second). Histograms stay on `/metrics`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::config::OtlpProtocol;
use crate::ops::metrics::{Kind, Sample, METRICS};

/// How long one reading of the samples serves the instruments' callbacks:
/// a collection calls each of them in turn.
const READING_LASTS: Duration = Duration::from_secs(1);

/// Reads the node's samples now.
pub type Source = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// Starts pushing the samples `source` reads to `endpoint` every
/// `interval`, labelled with `node`; the provider must be kept (and shut
/// down to flush) for as long as the export runs.
pub fn start(
    endpoint: &str,
    protocol: OtlpProtocol,
    interval: Duration,
    node: &str,
    source: Source,
) -> Result<SdkMeterProvider, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let exporter = match protocol {
        OtlpProtocol::Grpc => builder.with_tonic().with_endpoint(endpoint).build()?,
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(format!("{}/v1/metrics", endpoint.trim_end_matches('/')))
            .build()?,
    };
    let reader = PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("herald-edge")
                .with_attribute(KeyValue::new("service.instance.id", node.to_owned()))
                .build(),
        )
        .build();
    let meter = provider.meter("herald-edge");
    let reading = Arc::new(Reading {
        source,
        last: Mutex::new(None),
    });
    let mut seen = BTreeSet::new();
    for metric in &METRICS {
        if metric.kind == Kind::Histogram || !seen.insert(metric.prom) {
            continue;
        }
        let (name, reading) = (metric.prom, Arc::clone(&reading));
        match metric.kind {
            Kind::Counter => {
                meter
                    .f64_observable_counter(name)
                    .with_description(metric.help)
                    .with_callback(move |o| reading.observe(name, |v, l| o.observe(v, l)))
                    .build();
            }
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(name)
                    .with_description(metric.help)
                    .with_callback(move |o| reading.observe(name, |v, l| o.observe(v, l)))
                    .build();
            }
            Kind::Histogram => {}
        }
    }
    Ok(provider)
}

/// The samples of one collection, read once and shared by every callback.
struct Reading {
    source: Source,
    last: Mutex<Option<(Instant, Arc<Vec<Sample>>)>>,
}

impl Reading {
    /// Calls `observe` with each sample of metric `name`.
    fn observe(&self, name: &str, mut observe: impl FnMut(f64, &[KeyValue])) {
        let samples = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            match &*last {
                Some((at, samples)) if at.elapsed() < READING_LASTS => Arc::clone(samples),
                _ => {
                    let samples = Arc::new((self.source)());
                    *last = Some((Instant::now(), Arc::clone(&samples)));
                    samples
                }
            }
        };
        for s in samples.iter().filter(|s| s.metric.prom == name) {
            let labels: Vec<KeyValue> = s
                .labels
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone()))
                .collect();
            observe(s.value, &labels);
        }
    }
}
