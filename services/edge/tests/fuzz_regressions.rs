//! Regressions found by fuzzing (docs/fuzzing.md), checked against real
//! processes: deeply nested MessagePack, as a client frame and as a published
//! event body, is refused like deeply nested JSON instead of exhausting the
//! stack of the node that parses it.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{seqs_of, Herald, Received, WsClient};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

/// Nesting well past the JSON limit (128) and under rmp-serde's own (1024).
const DEPTH: usize = 1000;

/// A MessagePack map `{"type": "pong", "x": [[[…null…]]]}` nested `DEPTH` deep:
/// a few kilobytes, well under the frame limit.
fn deep_client_frame() -> Vec<u8> {
    let mut frame = vec![0x82, 0xa4];
    frame.extend_from_slice(b"type");
    frame.push(0xa4);
    frame.extend_from_slice(b"pong");
    frame.extend_from_slice(&[0xa1, b'x']);
    frame.extend(std::iter::repeat_n(0x91, DEPTH));
    frame.push(0xc0);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_msgpack_frame_is_refused_and_the_node_lives_on() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let url = h.edges[0].base_url();
    let mut ws = WsClient::connect(&url, "", Some(&token), Some("herald.v1.msgpack")).await;
    ws.hello(&["finance"], None, None, None).await;
    ws.send_raw(Message::Binary(deep_client_frame().into()))
        .await;
    assert_eq!(ws.close_code().await, Some(4000), "{}", h.edges[0].log());

    // The node still serves: a new client gets its ack and live events.
    let mut other = WsClient::connect(&url, "", Some(&token), Some("herald.v1.msgpack")).await;
    other.hello(&["finance"], None, None, None).await;
    let seq = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "x"}))
        .await;
    assert_eq!(seqs_of(&other.events(1).await), vec![seq]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_msgpack_event_is_rejected_and_the_next_one_delivered() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    ws.hello(&["finance"], None, None, None).await;

    // {"eventType": "x", "payload": [[[…null…]]]}
    let mut body = vec![0x82, 0xa9];
    body.extend_from_slice(b"eventType");
    body.extend_from_slice(&[0xa1, b'x', 0xa7]);
    body.extend_from_slice(b"payload");
    body.extend(std::iter::repeat_n(0x91, DEPTH));
    body.push(0xc0);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    let deep = h
        .publish_raw("herald.events.acme.finance.p1", headers, body)
        .await;
    let good = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "ok"}))
        .await;
    assert!(good > deep);
    let events = ws.events(1).await;
    assert_eq!(seqs_of(&events), vec![good], "{}", h.edges[0].log());
    assert!(matches!(
        ws.recv(Duration::from_millis(300)).await,
        Received::Timeout
    ));
    let m = h.metrics(0).await;
    assert_eq!(m["events"]["rejectedByReason"]["invalid"], 1, "{m}");
}

/// JetStream's RePublish appends its `Nats-Stream`, `Nats-Sequence`,
/// `Nats-Time-Stamp`… headers after the ones the publisher sent, so a message
/// carrying its own (forged, or copied from a message it consumed) must not
/// decide where the event sits in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_headers_sent_by_a_publisher_do_not_override_the_servers() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    ws.hello(&["finance"], None, None, None).await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Stream", "HERALD_EVENTS");
    headers.insert("Nats-Sequence", "999999");
    headers.insert("Nats-Last-Sequence", "999998");
    headers.insert("Nats-Subject", "herald.events.acme.finance.p2");
    headers.insert("Nats-Time-Stamp", "2099-01-01T00:00:00Z");
    let forged = h
        .publish_raw(
            "herald.events.acme.finance.p1",
            headers,
            br#"{"eventType":"x"}"#.to_vec(),
        )
        .await;
    let plain = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "y"}))
        .await;
    let events = ws.events(2).await;
    assert_eq!(seqs_of(&events), vec![forged, plain], "{events:?}");
    assert_eq!(events[0]["propertyId"], "p1");
    assert!(events[0]["timestamp"]
        .as_i64()
        .is_some_and(|t| t < 4_000_000_000_000));
}

/// serde_json's default float parsing is best-effort (off by one unit in
/// the last place for some inputs), so a JSON payload's number could reach
/// clients changed in its last digit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payload_floats_are_delivered_exactly_as_published() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let number = "7.094522737689082e-97";
    let body = format!(r#"{{"eventType":"x","payload":{{"f":{number}}}}}"#);
    let seq = h
        .publish_raw(
            "herald.events.acme.finance.p1",
            async_nats::HeaderMap::new(),
            body.into_bytes(),
        )
        .await;
    // Read the answer as text: a JSON parser in the test could round as well.
    let url = format!(
        "{}/v1/realtime/poll?lastSeq={start}&timeout=5",
        h.edges[0].base_url()
    );
    let text = reqwest::Client::new()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("poll")
        .text()
        .await
        .expect("poll body");
    assert!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    assert!(text.contains(&format!(r#""f":{number}"#)), "{text}");
}
