//! The Grafana dashboard (`deploy/grafana/dashboards/herald.json`) shows
//! data for every panel: a real Prometheus, run with the repository's
//! `deploy/prometheus/prometheus.yml` and alert rules, scrapes two real
//! edge nodes while they serve every kind of traffic the panels are about
//! (live and catch-up deliveries over long-poll, WebSocket and SSE, history
//! reads, resets, rejected events, rooms, tus uploads finished, deleted,
//! refused and expired), and every query of every panel, asked through
//! Prometheus's HTTP API, returns a number.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use herald_testkit::upload::{checksum, metadata, Tus};
use herald_testkit::ws::Received;
use herald_testkit::{get_json, EdgeNode, Herald, Prometheus, SseClient, WsClient};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// How long the load runs: enough scrapes (every 5 s) for `rate()` over 1 m.
const LOAD: Duration = Duration::from_secs(25);
/// How long an unfinished upload lives: short, so that uploads expire
/// during the load (the sweep then runs every second), long enough for a
/// whole upload to finish first.
const UPLOAD_EXPIRES: &str = "4s";
/// Upload counters that the load must move. They are exported at 0 from
/// the start, so a panel's `rate()` of them is a number even without any
/// upload; these queries return a series only once the traffic counted.
const UPLOADS_COUNTED: [&str; 6] = [
    "sum(herald_upload_bytes_total) > 0",
    "sum(herald_uploads_started_total) > 0",
    "sum(herald_uploads_completed_total) > 0",
    "sum(herald_uploads_deleted_total) > 0",
    "sum(herald_uploads_expired_total) > 0",
    "sum(herald_uploads_failed_total{reason=\"checksum\"}) > 0",
];

/// `len` bytes of a PDF file as content sniffing sees it: the signature,
/// then filler.
fn pdf(len: usize) -> Vec<u8> {
    let mut file = b"%PDF-1.7\n".to_vec();
    file.extend((0..len.saturating_sub(file.len())).map(|i| b'a' + (i % 26) as u8));
    file
}

/// Every (panel title, query) of the dashboard, with the dashboard's
/// variables set as Grafana sets them for "All" and a 1 m rate interval.
fn panel_queries() -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/dashboards/herald.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$node", ".*")
                .replace("$service", ".*");
            queries.push((title.to_owned(), expr));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_data_from_real_edges() {
    let queries = panel_queries();
    assert!(queries.len() >= 30, "{} queries", queries.len());
    // A small buffer, so that clients behind it read history; uploads
    // that expire within the load.
    let env = [
        ("HERALD_ORG_BUFFER_EVENTS", "20"),
        ("HERALD_UPLOAD_EXPIRES", UPLOAD_EXPIRES),
    ];
    let h = Arc::new(Herald::start_with(EDGE, 2, &env).await);
    let addrs: Vec<_> = h.edges.iter().map(EdgeNode::addr).collect();
    let prometheus = Prometheus::start(&addrs).await;
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Publishers: two orgs, two services, ten events a second, and a body
    // that is not JSON now and then (rejected).
    tasks.push(tokio::spawn({
        let (h, done) = (Arc::clone(&h), Arc::clone(&done));
        async move {
            let mut i = 0u64;
            while !done.load(Relaxed) {
                let org = ["acme", "globex"][(i % 2) as usize];
                let service = ["finance", "tasks"][(i / 2 % 2) as usize];
                h.publish(org, service, Some("p1"), json!({"eventType": "demo"}))
                    .await;
                if i.is_multiple_of(10) {
                    h.nats_client()
                        .publish(
                            format!("herald.events.{org}.{service}.p1"),
                            "not json".into(),
                        )
                        .await
                        .unwrap();
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }));
    // A long-poll chain on each node: live deliveries and held polls.
    for node in 0..2 {
        tasks.push(tokio::spawn({
            let (h, done) = (Arc::clone(&h), Arc::clone(&done));
            async move {
                let token = h.token("acme");
                let mut cursor = h.poll(node, &token, "timeout=0").await.last_seq();
                while !done.load(Relaxed) {
                    let r = h
                        .poll(node, &token, &format!("lastSeq={cursor}&timeout=5"))
                        .await;
                    cursor = r.last_seq();
                }
            }
        }));
    }
    // Clients coming back: a poll from an old cursor (catch-up and history
    // reads), one from another stream incarnation (reset), a WebSocket and
    // an SSE stream opened afresh (connect to ack), every two seconds.
    tasks.push(tokio::spawn({
        let (h, done) = (Arc::clone(&h), Arc::clone(&done));
        async move {
            let token = h.token("acme");
            let start = h.poll(1, &token, "timeout=0").await.last_seq();
            let base = h.edges[1].base_url();
            while !done.load(Relaxed) {
                let _ = h
                    .poll(1, &token, &format!("lastSeq={start}&timeout=0"))
                    .await;
                let _ = h
                    .poll(1, &token, &format!("lastSeq={start}&epoch=gone&timeout=0"))
                    .await;
                let mut ws = WsClient::connect(&base, "", Some(&token), None).await;
                ws.hello(&["finance", "tasks"], None, Some(start), None)
                    .await;
                let _ = tokio::time::timeout(Duration::from_millis(300), ws.frame()).await;
                ws.close().await;
                // What sampled browsers report.
                let report = json!({"events": [
                    {"name": "delivery_latency_ms", "value": 42},
                    {"name": "reconnect", "value": 1, "attrs": {"transport": "websocket"}},
                    {"name": "leader_acquired", "value": 1},
                ]});
                let _ = herald_testkit::http::client()
                    .post(format!("{base}/v2/telemetry/client"))
                    .bearer_auth(&token)
                    .json(&report)
                    .send()
                    .await;
                let url = format!("{base}/v2/realtime/sse?services=finance");
                let (_, sse) = SseClient::connect(&url, Some(&token), None).await;
                if let Some(mut sse) = sse {
                    let _ = sse.next(Duration::from_millis(300)).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }));

    // Rooms: a member on each node saying, typing, reading and going
    // away and back, a bad request now and then, and a member joining
    // afresh with history every two seconds.
    for node in 0..2 {
        tasks.push(tokio::spawn({
            let (h, done) = (Arc::clone(&h), Arc::clone(&done));
            async move {
                let token = h.token("acme");
                let base = h.edges[node].base_url();
                let mut ws = WsClient::connect(&base, "", Some(&token), None).await;
                ws.hello(&["tasks"], None, None, None).await;
                ws.send(json!({"type": "join", "room": "lobby"})).await;
                let mut i = 0u64;
                while !done.load(Relaxed) {
                    ws.send(json!({"type": "say", "room": "lobby", "text": format!("hi {i}")}))
                        .await;
                    ws.send(json!({"type": "typing", "room": "lobby"})).await;
                    ws.send(json!({"type": "read", "room": "lobby", "seq": i + 1}))
                        .await;
                    let state = if i.is_multiple_of(2) {
                        "away"
                    } else {
                        "online"
                    };
                    ws.send(json!({"type": "status", "state": state})).await;
                    ws.send(json!({"type": "say", "room": "elsewhere", "text": "x"}))
                        .await;
                    // Read what came (the room's frames), then pause.
                    for _ in 0..100 {
                        if !matches!(ws.recv(Duration::from_millis(20)).await, Received::Frame(_)) {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    if node == 1 && i.is_multiple_of(4) {
                        let mut joiner = WsClient::connect(&base, "", Some(&token), None).await;
                        joiner.hello(&["tasks"], None, None, None).await;
                        joiner
                            .send(json!({"type": "join", "room": "lobby", "history": 50}))
                            .await;
                        let _ = joiner.recv(Duration::from_millis(500)).await;
                        joiner.close().await;
                    }
                    i += 1;
                }
                ws.close().await;
            }
        }));
    }

    // Uploads, on each node in turn every two seconds: a PDF created and
    // finished, one deleted halfway, and one whose PATCH carries a wrong
    // checksum (a failure by reason), left unfinished until it expires and
    // the sweep removes it.
    tasks.push(tokio::spawn({
        let (h, done) = (Arc::clone(&h), Arc::clone(&done));
        async move {
            let meta = metadata(&[("filename", "report.pdf"), ("filetype", "application/pdf")]);
            let file = pdf(4000);
            let len = file.len() as u64;
            let wrong = checksum("sha256", &Sha256::digest(b"other bytes"));
            let mut i = 0usize;
            while !done.load(Relaxed) {
                let tus = Tus::new(&h.edges[i % 2].base_url(), Some(&h.token("acme")));
                let finished = tus.create_ok(len, &meta).await;
                let _ = tus.patch(&finished, 0, &file).await;
                let deleted = tus.create_ok(len, &meta).await;
                let _ = tus.patch(&deleted, 0, &file[..1000]).await;
                let _ = tus.delete(&deleted).await;
                let refused = tus.create_ok(len, &meta).await;
                let _ = tus.patch_checked(&refused, 0, &file[..1000], &wrong).await;
                i += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }));

    tokio::time::sleep(LOAD).await;
    // Past at least one more scrape of everything the load did.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let up = prometheus.query("up{job=\"herald-edge\"} == 1").await;
    assert_eq!(
        up.len(),
        2,
        "both edges scraped: {}",
        prometheus.targets().await
    );

    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let result = prometheus.query(expr).await;
        let numbers = result
            .iter()
            .filter(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            })
            .count();
        if numbers == 0 {
            empty.push(format!("{title}: {expr} -> {result:?}"));
        }
    }
    for expr in UPLOADS_COUNTED {
        if prometheus.query(expr).await.is_empty() {
            empty.push(format!("Uploads: nothing counted: {expr}"));
        }
    }
    done.store(true, Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    assert!(
        empty.is_empty(),
        "panels without data ({} of {} queries):\n{}",
        empty.len(),
        queries.len() + UPLOADS_COUNTED.len(),
        empty.join("\n")
    );
    // The alert rules were loaded with the config.
    let (status, rules, _) =
        get_json(&format!("{}/api/v1/rules", prometheus.base_url()), None).await;
    assert_eq!(status, 200);
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 9, "{rules}");
}
