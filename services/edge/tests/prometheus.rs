//! The Prometheus exposition of a busy node passes `promtool check metrics`
//! (the Debian package's promtool, installed into `.tools/prometheus` by
//! `scripts/setup.sh`): names, units, `_total` counters, histogram series
//! and help texts follow Prometheus's conventions.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use herald_testkit::{promtool_binary, Herald};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_nodes_metrics_pass_promtool() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // Something in every family: deliveries (catch-up, then live), a
    // rejected event, a held poll.
    h.publish("acme", "finance", Some("p1"), json!({"eventType": "a"}))
        .await;
    let (_, cursor) = h.collect(0, &token, "", start, 1).await;
    let held = h
        .held_poll(0, &token, &format!("lastSeq={cursor}&timeout=20"))
        .await;
    h.publish("acme", "tasks", Some("p1"), json!({"eventType": "b"}))
        .await;
    held.await.unwrap();
    h.nats_client()
        .publish("herald.events.acme.finance.p1", "not json".into())
        .await
        .unwrap();
    h.wait_metric_at_least(0, "/events/rejected", 1, std::time::Duration::from_secs(10))
        .await;

    let text = herald_testkit::http::client()
        .get(format!("{}/metrics", h.edges[0].base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("herald_delivery_latency_seconds_bucket"),
        "{text}"
    );
    let mut child = Command::new(promtool_binary())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}):\n{said}",
        out.status
    );
}
