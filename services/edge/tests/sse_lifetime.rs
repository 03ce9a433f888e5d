//! A busy SSE stream (always more events to send) still ends on time: at
//! its token's expiry, at an admin disconnect, when the kill switch turns on
//! and when the node drains. The client reads at a steady, modest pace so
//! that the node is never caught up; whether the node ended the stream is
//! read from its metrics (or its exit), not from what the socket buffers
//! still hold.

use std::time::{Duration, Instant};

use herald_testkit::{post_json, Herald};
use serde_json::json;
use tokio::task::JoinHandle;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// Client read pace: far below what the node could send.
const BYTES_PER_SEC: usize = 256 * 1024;

/// Publishes about 24 MB into org `acme`, service `bulk`; returns the seq
/// before the first.
async fn backlog(h: &Herald) -> u64 {
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let body = json!({"eventType": "x", "payload": "b".repeat(4000)}).to_string();
    let mut acks = Vec::new();
    for _ in 0..6000 {
        acks.push(
            js.publish("herald.events.acme.bulk.p1", body.clone().into())
                .await
                .unwrap(),
        );
    }
    let mut first = None;
    for a in acks {
        let seq = a.await.unwrap().sequence;
        first.get_or_insert(seq);
    }
    first.unwrap() - 1
}

/// Opens an SSE stream from `from` and reads it at [`BYTES_PER_SEC`] in the
/// background; the task ends with the bytes read when the stream ends.
async fn paced_reader(base: &str, token: &str, from: u64) -> JoinHandle<usize> {
    let url = format!("{base}/v2/realtime/sse?services=bulk&lastSeq={from}");
    let mut response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::spawn(async move {
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            let pause = chunk.len() as f64 / BYTES_PER_SEC as f64;
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        }
        read
    })
}

async fn sse_count(h: &Herald, node: usize) -> Option<u64> {
    h.metrics(node).await["connections"]["sse"].as_u64()
}

/// Waits until node `node` has `want` SSE streams; false at the deadline.
async fn wait_sse(h: &Herald, node: usize, want: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if sse_count(h, node).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Opens a busy stream and waits until it has delivered for a moment.
async fn busy_stream(h: &Herald, node: usize, token: &str, from: u64) -> JoinHandle<usize> {
    let reader = paced_reader(&h.edges[node].base_url(), token, from).await;
    assert!(
        wait_sse(h, node, 1, Duration::from_secs(10)).await,
        "stream open"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!reader.is_finished(), "the stream is busy, not over");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sse_stream_ends_at_expiry_disconnect_kill_switch_and_drain() {
    let mut h = Herald::start(EDGE, 1).await;
    let draining = h.add_edge(&[("HERALD_DRAIN_TIMEOUT", "60s")]).await;
    let from = backlog(&h).await;

    // Token expiry.
    let lapsing = h.user("acme").expires_in(Duration::from_secs(4)).build();
    let t0 = Instant::now();
    let reader = busy_stream(&h, 0, &lapsing, from).await;
    assert!(
        wait_sse(&h, 0, 0, Duration::from_secs(18)).await,
        "still open {:?} after a 4 s token",
        t0.elapsed()
    );
    reader.abort();

    // Admin disconnect.
    let kicked = h.user("acme").sub("kicked").build();
    let reader = busy_stream(&h, 0, &kicked, from).await;
    let admin = h.user("acme").sub("boss").role("admin").build();
    let url = format!("{}/v2/realtime/disconnect", h.edges[0].base_url());
    let (status, body, _) = post_json(&url, Some(&admin), &json!({"userId": "kicked"})).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        wait_sse(&h, 0, 0, Duration::from_secs(10)).await,
        "still open after the disconnect"
    );
    reader.abort();

    // Drain (on the other node): the node exits long before its drain timeout.
    let reader = busy_stream(&h, draining, &h.token("acme"), from).await;
    h.edges[draining].sigterm();
    let exit = h.edges[draining]
        .wait_exit(Duration::from_secs(20))
        .await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "the draining node kept its busy stream: {exit:?}"
    );
    reader.abort();

    // Kill switch, flipped at runtime.
    let reader = busy_stream(&h, 0, &h.token("acme"), from).await;
    let switches = format!("{}/v2/realtime/switches", h.edges[0].base_url());
    let status = herald_testkit::http::client()
        .put(&switches)
        .bearer_auth(h.user("*").role("admin").build())
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(
        wait_sse(&h, 0, 0, Duration::from_secs(15)).await,
        "still open after the kill switch"
    );
    reader.abort();
}
