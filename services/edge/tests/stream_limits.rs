//! What the WebSocket stream promises under pressure: frames cut by bytes
//! (large events arrive, in both encodings), a client that floods `update`
//! without reading is closed with a bounded queue, close reasons fit a close
//! frame, and a quarantined connection says what it dropped before any
//! cursor passes it.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use herald_testkit::{eventually_mut, seqs_of, Herald, Received, WsClient};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// The default `HERALD_MAX_BATCH_BYTES`.
const MAX_BATCH: usize = 1024 * 1024;

/// Reads `events` frames until `count` events arrived; returns, per frame,
/// its payload size and its events' seqs.
async fn frames_of(ws: &mut WsClient, count: usize) -> Vec<(usize, Vec<u64>)> {
    let mut frames = Vec::new();
    let mut total = 0;
    while total < count {
        let f = ws.frame().await;
        match f["type"].as_str() {
            Some("events") => {
                let seqs = seqs_of(f["events"].as_array().expect("events array"));
                total += seqs.len();
                frames.push((ws.last_frame_bytes, seqs));
            }
            Some("ping") => {}
            _ => panic!("unexpected frame: {f}"),
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_arrive_in_frames_cut_by_bytes_in_both_encodings() {
    let mut h = Herald::start(EDGE, 1).await;
    // A second node with a cap below one event: each event goes out alone.
    let small = h.add_edge(&[("HERALD_MAX_BATCH_BYTES", "100000")]).await;
    let token = h.token("acme");
    // 20 events of about 250 KiB: 5 MB together, over tungstenite's 4 MiB
    // write limit if they went out as one frame.
    let blob = "z".repeat(250 * 1024);
    let mut published = Vec::new();
    for i in 0..20 {
        published.push(
            h.publish(
                "acme",
                "files",
                Some("p1"),
                json!({"eventType": "file.stored", "payload": {"i": i, "blob": blob}}),
            )
            .await,
        );
    }
    let from = published[0] - 1;
    for (node, cap) in [(0, MAX_BATCH), (small, 100_000)] {
        for protocol in ["herald.v1.json", "herald.v1.msgpack"] {
            let base = h.edges[node].base_url();
            let mut ws = WsClient::connect(&base, "", Some(&token), Some(protocol)).await;
            assert_eq!(ws.protocol.as_deref(), Some(protocol));
            ws.hello(&["files"], None, Some(from), None).await;
            let frames = frames_of(&mut ws, published.len()).await;
            let got: Vec<u64> = frames.iter().flat_map(|(_, s)| s.clone()).collect();
            assert_eq!(got, published, "{protocol} on node {node}: all, in order");
            for (bytes, seqs) in &frames {
                assert!(
                    *bytes <= cap || seqs.len() == 1,
                    "{protocol} on node {node}: a frame of {bytes} bytes with {} events",
                    seqs.len()
                );
            }
            if cap == MAX_BATCH {
                assert!(
                    frames.len() < published.len(),
                    "{protocol}: events are still batched"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_updates_without_reading_is_closed_and_memory_stays_bounded() {
    let h = Herald::start(EDGE, 1).await;
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&h.token("acme")), None).await;
    ws.hello(&["finance"], None, None, None).await;
    let before = h.edges[0].rss_kib();
    // Each `updated` answer echoes 64 long service names (about 4 KiB).
    let services: Vec<String> = (0..64)
        .map(|i| format!("{i:02}{}", "s".repeat(62)))
        .collect();
    let update = json!({"type": "update", "services": services, "filters": {"propertyId": "p1"}})
        .to_string();
    // Flood until the node closes the client as slow (its outbound queue
    // filled), checking every 50 updates: the node stops reading at the
    // close, and the socket buffers take far more than 50 more updates.
    let mut sent = 0;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent < 30_000 && Instant::now() < deadline {
        if sent % 50 == 0 && h.metrics(0).await["slowConsumerCloses"] == 1 {
            closed = true;
            break;
        }
        let frame = Message::Text(update.clone().into());
        match tokio::time::timeout(Duration::from_secs(20), ws.send_raw(frame)).await {
            Ok(true) => sent += 1,
            Ok(false) | Err(_) => break,
        }
    }
    assert!(closed, "not closed as slow after {sent} unread updates");
    let grown_mib = h.edges[0].rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 100,
        "the node grew by {grown_mib} MiB after {sent} updates"
    );
    // Reading at once, within the node's close grace (5 s for the frame in
    // flight, then for the close frame): whatever was queued, then 4008.
    assert_eq!(ws.close_code().await, Some(4008));
    assert_eq!(
        h.poll(0, &h.token("acme"), "timeout=0").await.status,
        200,
        "the node is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reasons_fit_in_a_close_frame() {
    let h = Herald::start(EDGE, 1).await;
    let base = h.edges[0].base_url();
    let token = h.token("acme");
    let long = "é".repeat(300);
    // At the handshake...
    let mut ws = WsClient::connect(&base, "", Some(&token), None).await;
    ws.send(json!({"type": "hello", "version": long, "services": ["finance"]}))
        .await;
    match ws.recv(Duration::from_secs(10)).await {
        Received::Close(code, reason) => {
            assert_eq!(code, Some(4000));
            assert!(reason.len() <= 123, "{} bytes: {reason}", reason.len());
            assert!(!reason.is_empty());
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // ...and on an open stream.
    let mut ws = WsClient::connect(&base, "", Some(&token), None).await;
    ws.hello(&["finance"], None, None, None).await;
    ws.send(json!({"type": "update", "services": long})).await;
    match ws.recv(Duration::from_secs(10)).await {
        Received::Close(code, reason) => {
            assert_eq!(code, Some(4000));
            assert!(reason.len() <= 123, "{} bytes: {reason}", reason.len());
        }
        other => panic!("expected a close, got {other:?}"),
    }
}

/// Checks what a quarantined client was told against what was published.
#[derive(Default)]
struct Coverage {
    /// Low-tier (`analytics`) events published so far.
    published: BTreeSet<u64>,
    received: HashSet<u64>,
    /// `[fromSeq, toSeq]` of every `dropped` frame naming `analytics`.
    dropped: Vec<(u64, u64)>,
    bulk: Vec<u64>,
    cursors: usize,
}

impl Coverage {
    fn covered(&self, seq: u64) -> bool {
        self.received.contains(&seq) || self.dropped.iter().any(|(a, b)| (*a..=*b).contains(&seq))
    }

    /// No cursor (events frame or ping) passes an analytics event the
    /// client neither got nor was told about.
    fn cursor(&mut self, at: u64, what: &Value) {
        self.cursors += 1;
        if let Some(lost) = self.published.range(..=at).find(|s| !self.covered(**s)) {
            panic!("cursor {at} passed analytics event {lost}, neither delivered nor reported dropped: {what}");
        }
    }

    fn frame(&mut self, f: &Value) {
        match f["type"].as_str() {
            Some("events") => {
                let seqs = seqs_of(f["events"].as_array().expect("events"));
                if f["service"] == "analytics" {
                    self.received.extend(&seqs);
                } else {
                    self.bulk.extend(&seqs);
                }
                self.cursor(
                    f["seq"].as_u64().expect("seq"),
                    &json!({"type": "events", "seq": f["seq"]}),
                );
            }
            Some("ping") => self.cursor(f["seq"].as_u64().expect("seq"), f),
            Some("dropped") => {
                let (a, b) = (
                    f["fromSeq"].as_u64().expect("fromSeq"),
                    f["toSeq"].as_u64().expect("toSeq"),
                );
                assert!(a <= b, "{f}");
                let services = f["services"].as_array().expect("services");
                assert!(
                    services.iter().all(|s| s == "analytics"),
                    "only low-tier services: {f}"
                );
                self.dropped.push((a, b));
            }
            _ => panic!("unexpected frame: {f}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_client_is_told_what_was_dropped_before_any_cursor_passes_it() {
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("HERALD_ORG_BUFFER_EVENTS", "50"),
            // Long enough to outlast the test: no close from the quarantine.
            ("HERALD_QUARANTINE", "300s"),
            ("HERALD_SLOW_CLIENT_TIMEOUT", "300s"),
            ("HERALD_PING_INTERVAL", "2s"),
        ],
    )
    .await;
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&h.token("acme")), None).await;
    let ack = ws.hello(&["bulk", "analytics"], None, None, None).await;
    let mut cov = Coverage::default();
    cov.cursor(ack["seq"].as_u64().expect("ack seq"), &ack);

    // Phase 1: the client stops reading (but answers pings, blindly) while
    // about 30 MB of `bulk` with `analytics` in between arrive.
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let blob = "q".repeat(16_000);
    let mut acks = Vec::new();
    for i in 0..2000 {
        let (svc, payload) = if i % 10 == 0 {
            ("analytics", json!({"i": i}))
        } else {
            ("bulk", json!(blob))
        };
        let body = json!({"eventType": "x", "payload": payload}).to_string();
        acks.push((
            svc,
            js.publish(format!("herald.events.acme.{svc}.p1"), body.into())
                .await
                .expect("publish"),
        ));
        if i % 100 == 0 {
            ws.send(json!({"type": "pong"})).await;
        }
    }
    let mut bulk = Vec::new();
    for (svc, a) in acks {
        let seq = a.await.expect("ack").sequence;
        if svc == "analytics" {
            cov.published.insert(seq);
        } else {
            bulk.push(seq);
        }
    }
    eventually_mut(
        Duration::from_secs(60),
        "the stalled client quarantined",
        async || {
            let m = h.metrics(0).await;
            if m["quarantined"] == 1 {
                return Ok(());
            }
            // Still answering pings, blindly, so it is not closed as silent.
            ws.send(json!({"type": "pong"})).await;
            Err(format!("quarantined = {}", m["quarantined"]))
        },
    )
    .await;

    // Phase 2: it reads again and catches up, still quarantined.
    let caught_up = tokio::time::timeout(Duration::from_secs(60), async {
        while cov.bulk.len() < bulk.len() {
            let f = ws.frame().await;
            if f["type"] == "ping" {
                ws.send(json!({"type": "pong"})).await;
            }
            cov.frame(&f);
        }
    })
    .await;
    assert!(
        caught_up.is_ok(),
        "caught up with {} of {} bulk events in 60 s",
        cov.bulk.len(),
        bulk.len()
    );
    assert_eq!(cov.bulk, bulk, "every bulk event, in order");

    // Phase 3: quiet traffic while still quarantined; the pings' cursor
    // must not pass what was dropped without saying so.
    let mut last = 0;
    for i in 0..5 {
        cov.published.insert(
            h.publish(
                "acme",
                "analytics",
                Some("p1"),
                json!({"eventType": "x", "payload": i}),
            )
            .await,
        );
        last = h
            .publish("acme", "bulk", Some("p1"), json!({"eventType": "x"}))
            .await;
        bulk.push(last);
    }
    let mut seen = 0;
    eventually_mut(
        Duration::from_secs(60),
        &format!("a ping at or past {last}"),
        async || {
            let f = ws.frame().await;
            cov.frame(&f);
            if f["type"] == "ping" {
                ws.send(json!({"type": "pong"})).await;
                seen = f["seq"].as_u64().unwrap_or(0);
                if seen >= last {
                    return Ok(());
                }
            }
            Err(format!("last ping at {seen}"))
        },
    )
    .await;
    assert_eq!(cov.bulk, bulk, "every bulk event, in order");
    let m = h.metrics(0).await;
    assert!(
        m["events"]["dropped"].as_u64() > Some(0),
        "the quarantine dropped something: {m}"
    );
    assert!(!cov.dropped.is_empty(), "dropped frames were sent");
}
