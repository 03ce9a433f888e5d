//! Traces end to end: an event published with a W3C `traceparent` is
//! ingested and delivered under that trace, and a real OTLP/HTTP receiver
//! (`herald_testkit::OtlpReceiver`, decoding the official protocol
//! definitions) gets one connected trace: the publisher's span, the edge's
//! `herald.ingest` (a consumer receiving from NATS) as its child, and the
//! `herald.deliver` span of each client as the ingest span's child.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{eventually, Herald, OtlpReceiver};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// The publisher's span: trace id and span id of a `traceparent`.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN: &str = "00f067aa0ba902b7";

/// A receiver, and one edge exporting every span to it at once (JSON logs,
/// every delivery traced).
async fn traced_edge() -> (OtlpReceiver, Herald) {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("HERALD_TRACE_DELIVERY_SAMPLE", "1"),
            ("HERALD_LOG_JSON", "true"),
        ],
    )
    .await;
    (receiver, h)
}

/// A poll of org `acme` held at its head on the edge.
async fn held_poll(h: &Herald) -> tokio::task::JoinHandle<herald_testkit::Polled> {
    let token = h.token("acme");
    let cursor = h.poll(0, &token, "timeout=0").await.last_seq();
    h.held_poll(0, &token, &format!("lastSeq={cursor}&timeout=20"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_yields_one_trace_from_publisher_to_delivery() {
    let (receiver, h) = traced_edge().await;
    let held = held_poll(&h).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{TRACE}-{PUBLISHER_SPAN}-01").as_str(),
    );
    h.nats_client()
        .publish_with_headers(
            "herald.events.acme.finance.p1",
            headers,
            r#"{"eventType":"traced"}"#.into(),
        )
        .await
        .unwrap();
    let polled = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    let seq = polled.seqs()[0].to_string();

    let (ingest, deliver) = eventually(
        Duration::from_secs(15),
        "ingest and delivery spans",
        || async {
            let spans = receiver.spans();
            let find = |name: &str| {
                spans
                    .iter()
                    .find(|s| s.name == name && s.trace_id == TRACE)
                    .cloned()
            };
            match (find("herald.ingest"), find("herald.deliver")) {
                (Some(i), Some(d)) => Ok((i, d)),
                _ => Err(format!(
                    "{spans:#?}\n--- edge log ---\n{}",
                    h.edges[0].log()
                )),
            }
        },
    )
    .await;
    assert_eq!(ingest.service, "herald-edge");
    assert_eq!(ingest.parent_span_id, PUBLISHER_SPAN, "{ingest:#?}");
    assert_eq!(ingest.attributes["messaging.system"], "nats");
    assert_eq!(ingest.attributes["messaging.operation.type"], "receive");
    assert_eq!(
        ingest.attributes["messaging.destination.template"],
        "herald.events.{org}.{service}.{property}"
    );
    assert_eq!(ingest.attributes["herald.seq"], seq);
    assert_eq!(deliver.parent_span_id, ingest.span_id, "{deliver:#?}");
    assert_eq!(deliver.attributes["herald.transport"], "longpoll");
    assert_eq!(deliver.attributes["herald.seq"], seq);
    assert_eq!(deliver.attributes["messaging.operation.type"], "send");

    // What the node logs while ingesting a traced message names the trace:
    // a body that is not JSON is rejected, and the JSON log line says so
    // with the trace id.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{other}-b7ad6b7169203331-01").as_str(),
    );
    h.nats_client()
        .publish_with_headers("herald.events.acme.finance.p1", headers, "not json".into())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "a log line with the trace id",
        || async {
            let log = h.edges[0].log();
            log.lines()
                .find(|l| l.contains(other) && l.contains("reject"))
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .ok_or(log)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_endpoint_continues_the_callers_trace_to_delivery() {
    let (receiver, h) = traced_edge().await;
    let held = held_poll(&h).await;
    let publisher = h.user("acme").role("publisher").build();
    let response = herald_testkit::http::client()
        .post(format!("{}/v2/realtime/publish", h.edges[0].base_url()))
        .bearer_auth(&publisher)
        .header("traceparent", format!("00-{TRACE}-{PUBLISHER_SPAN}-01"))
        .json(&serde_json::json!({"service": "finance", "propertyId": "p1", "eventType": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let polled = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(polled.seqs().len(), 1, "{}", polled.body);

    let names = [
        "POST /v2/realtime/publish",
        "herald.publish",
        "herald.ingest",
        "herald.deliver",
    ];
    let spans = eventually(Duration::from_secs(15), "the whole trace", || async {
        let spans = receiver.spans();
        let found: Vec<_> = names
            .iter()
            .map(|n| {
                spans
                    .iter()
                    .find(|s| {
                        s.trace_id == TRACE
                            && s.name == *n
                            && s.attributes
                                .get("http.route")
                                .is_none_or(|r| r == "/v2/realtime/publish")
                    })
                    .cloned()
            })
            .collect();
        if found.iter().all(Option::is_some) {
            Ok(found.into_iter().flatten().collect::<Vec<_>>())
        } else {
            let missing: Vec<&&str> = names
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(n, _)| n)
                .collect();
            Err(format!("missing {missing:?} among {spans:#?}"))
        }
    })
    .await;
    let [server, publish, ingest, deliver] = &spans[..] else {
        unreachable!()
    };
    assert_eq!(server.parent_span_id, PUBLISHER_SPAN, "{server:#?}");
    assert_eq!(server.attributes["http.request.method"], "POST");
    assert_eq!(server.attributes["http.response.status_code"], "200");
    assert_eq!(publish.parent_span_id, server.span_id, "{publish:#?}");
    assert_eq!(
        publish.attributes["messaging.destination.name"],
        "herald.events.acme.finance.p1"
    );
    assert_eq!(ingest.parent_span_id, publish.span_id, "{ingest:#?}");
    assert_eq!(deliver.parent_span_id, ingest.span_id, "{deliver:#?}");
}
