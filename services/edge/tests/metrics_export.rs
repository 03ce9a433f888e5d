//! Metrics pushed over OTLP (`OTEL_METRICS_EXPORTER=otlp`): a real
//! OTLP/HTTP receiver (`herald_testkit::OtlpReceiver`, decoding the
//! official protocol definitions) gets the node's counters and gauges, with
//! the names and labels `/metrics` shows, labelled with the node.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{eventually, Herald, OtlpReceiver};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_gauges_reach_an_otlp_receiver() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    )
    .await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    for i in 0..3 {
        h.publish(
            "acme",
            "finance",
            Some("p1"),
            json!({"eventType": format!("e{i}")}),
        )
        .await;
    }
    let (events, _) = h.collect(0, &token, "", start, 3).await;
    assert_eq!(events.len(), 3);
    let node = h.edges[0].node_id().to_owned();

    eventually(
        Duration::from_secs(15),
        "the node's counters over OTLP",
        || async {
            let points = receiver.points();
            let latest = |metric: &str| points.iter().rev().find(|p| p.metric == metric).cloned();
            match (
                latest("herald_events_delivered_total"),
                latest("herald_nats_connected"),
                points.iter().rev().find(|p| {
                    p.metric == "herald_connections"
                        && p.attributes
                            .get("transport")
                            .is_some_and(|t| t == "longpoll")
                }),
            ) {
                (Some(delivered), Some(connected), Some(_)) if delivered.value >= 3.0 => {
                    assert_eq!(delivered.kind, "sum");
                    assert_eq!(delivered.instance, node);
                    assert_eq!(connected.kind, "gauge");
                    assert_eq!(connected.value, 1.0);
                    Ok(())
                }
                _ => Err(format!("{points:#?}")),
            }
        },
    )
    .await;
}
