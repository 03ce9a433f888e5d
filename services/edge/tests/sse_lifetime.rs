//! A busy SSE stream (always more events to send) still ends on time: at
//! its token's expiry, at an admin disconnect, when the kill switch turns on
//! and when the node drains. The client reads at a steady, modest pace so
//! that the node is never caught up; whether the node ended the stream is
//! read from its metrics (or its exit), not from what the socket buffers
//! still hold.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_testkit::{eventually, post_json, Herald};
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
    let mut first = None;
    // Acks awaited in rounds: the client bounds the acks in flight.
    for _ in 0..12 {
        let mut acks = Vec::new();
        for _ in 0..500 {
            acks.push(
                js.publish("herald.events.acme.bulk.p1", body.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            let seq = a.await.expect("ack").sequence;
            first.get_or_insert(seq);
        }
    }
    first.expect("published") - 1
}

/// Opens an SSE stream from `from` and reads it at [`BYTES_PER_SEC`] in the
/// background, counting the bytes in `read`; the task ends with the stream.
async fn paced_reader(
    base: &str,
    token: &str,
    from: u64,
    read: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    let url = format!("{base}/v2/realtime/sse?services=bulk&lastSeq={from}");
    let mut response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET sse");
    assert_eq!(response.status(), 200);
    tokio::spawn(async move {
        while let Ok(Some(chunk)) = response.chunk().await {
            read.fetch_add(chunk.len(), Relaxed);
            // Pacing, not waiting: the reader takes its time on purpose.
            let pause = chunk.len() as f64 / BYTES_PER_SEC as f64;
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        }
    })
}

/// Waits (at most `within`) until node `node` has no SSE stream left.
async fn wait_no_sse(h: &Herald, node: usize, within: Duration) {
    h.wait_metric(node, "/connections/sse", 0, within).await;
}

/// Opens a stream and waits until it is busy delivering the backlog.
async fn busy_stream(h: &Herald, node: usize, token: &str, from: u64) -> JoinHandle<()> {
    let read = Arc::new(AtomicUsize::new(0));
    let reader = paced_reader(&h.edges[node].base_url(), token, from, Arc::clone(&read)).await;
    eventually(
        Duration::from_secs(30),
        "the backlog flowing (512 KiB read)",
        || async {
            assert!(!reader.is_finished(), "the stream ended early");
            let n = read.load(Relaxed);
            if n >= 512 * 1024 {
                Ok(())
            } else {
                Err(format!("{n} bytes read"))
            }
        },
    )
    .await;
    assert_eq!(
        h.metrics(node).await["connections"]["sse"],
        1,
        "stream open"
    );
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sse_stream_ends_at_token_expiry() {
    let h = Herald::start(EDGE, 1).await;
    let from = backlog(&h).await;
    // Expired 10 s ago: still accepted for the 30 s clock leeway, so the
    // stream is served for the 20 s left of it (long enough for the backlog
    // to start flowing), then ends. Ending at `exp` itself would end it at
    // once, and an EventSource would reconnect into such streams for the
    // whole leeway.
    let exp = herald_testkit::token::now_secs() - 10;
    let lapsing = h.user("acme").exp(exp).build();
    let t0 = Instant::now();
    let reader = busy_stream(&h, 0, &lapsing, from).await;
    assert_eq!(
        h.metrics(0).await["connections"]["sse"],
        1,
        "a token inside the leeway is served"
    );
    // About time passing: the stream must still be open well after `exp`.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        h.metrics(0).await["connections"]["sse"],
        1,
        "the stream lasts until the leeway ends, not until exp"
    );
    // Ended within 15 s of the end of the leeway.
    wait_no_sse(&h, 0, (t0 + Duration::from_secs(20 + 15)) - Instant::now()).await;
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sse_stream_ends_at_an_admin_disconnect() {
    let h = Herald::start(EDGE, 1).await;
    let from = backlog(&h).await;
    let reader = busy_stream(&h, 0, &h.token("acme"), from).await;
    let admin = h.user("acme").sub("boss").role("admin").build();
    let url = format!("{}/v2/realtime/disconnect", h.edges[0].base_url());
    let (status, body, _) = post_json(&url, Some(&admin), &json!({"userId": "u1"})).await;
    assert_eq!(status, 202, "{body}");
    wait_no_sse(&h, 0, Duration::from_secs(10)).await;
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sse_stream_ends_when_the_kill_switch_turns_on() {
    let h = Herald::start(EDGE, 1).await;
    let from = backlog(&h).await;
    let reader = busy_stream(&h, 0, &h.token("acme"), from).await;
    let switches = format!("{}/v2/realtime/switches", h.edges[0].base_url());
    let status = herald_testkit::http::client()
        .put(&switches)
        .bearer_auth(h.user("*").role("admin").build())
        .json(&json!({"disabled": true}))
        .send()
        .await
        .expect("PUT switches")
        .status();
    assert_eq!(status, 200);
    wait_no_sse(&h, 0, Duration::from_secs(15)).await;
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sse_stream_ends_at_drain() {
    // A drain timeout far beyond the wait below: the node exits early only
    // if the busy stream ends.
    let mut h = Herald::start_with(EDGE, 1, &[("HERALD_DRAIN_TIMEOUT", "60s")]).await;
    let from = backlog(&h).await;
    let reader = busy_stream(&h, 0, &h.token("acme"), from).await;
    h.edges[0].sigterm();
    let exit = h.edges[0].wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "the draining node kept its busy stream for 20 s: {exit:?}"
    );
    reader.abort();
}
