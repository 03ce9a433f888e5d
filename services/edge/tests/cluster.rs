//! Herald on a three-server JetStream cluster: an R3 stream, edge nodes
//! attached to different servers, events crossing cluster routes, and a
//! client resuming across nodes while one NATS server is down.

use std::time::Duration;

use herald_testkit::{get_json, EdgeOptions, EdgeProcess, NatsCluster, TokenBuilder, SECRET};
use serde_json::{json, Value};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

async fn poll(edge: &EdgeProcess, token: &str, query: &str) -> Value {
    let (status, body, _) = get_json(
        &format!("{}/v1/realtime/poll?{query}", edge.base_url()),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn collect(edge: &EdgeProcess, token: &str, from: u64, count: usize) -> (Vec<u64>, u64) {
    let mut seqs = Vec::new();
    let mut cursor = from;
    for _ in 0..50 {
        if seqs.len() >= count {
            break;
        }
        let body = poll(edge, token, &format!("lastSeq={cursor}&timeout=5")).await;
        seqs.extend(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap()),
        );
        cursor = body["lastSeq"].as_u64().unwrap();
    }
    (seqs, cursor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_different_cluster_servers_deliver_and_resume() {
    let mut cluster = NatsCluster::start(3).await;
    let edge = |url: String| EdgeOptions::new(url, SECRET).with_env("HERALD_STREAM_REPLICAS", "3");
    let a = EdgeProcess::spawn(EDGE, edge(cluster.servers()[0].url())).await;
    let b = EdgeProcess::spawn(EDGE, edge(cluster.servers()[1].url())).await;
    let token = TokenBuilder::new(SECRET).sub("u1").org("acme").build();
    let publisher = cluster.servers()[2].connect().await;
    let js = async_nats::jetstream::new(publisher);
    let info = js
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(
        info.config.num_replicas, 3,
        "the first node created an R3 stream"
    );

    let start = poll(&a, &token, "timeout=0").await["lastSeq"]
        .as_u64()
        .unwrap();
    let _ = poll(&b, &token, "timeout=0").await;
    let mut published = Vec::new();
    for i in 0..20 {
        let body = json!({"eventType": "x", "eventId": i.to_string()}).to_string();
        published.push(
            js.publish(
                format!("herald.events.acme.finance.p{}", i % 2),
                body.into(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence,
        );
    }
    let (on_a, cursor_a) = collect(&a, &token, start, 20).await;
    assert_eq!(
        on_a, published,
        "node A (server 0) got every event published on server 2"
    );
    let (on_b, _) = collect(&b, &token, start, 20).await;
    assert_eq!(on_b, published, "node B (server 1) too");

    // Node A's server goes away; the client continues on node B with A's cursor.
    cluster.stop(0);
    let mut more = Vec::new();
    for i in 20..30 {
        let body = json!({"eventType": "x", "eventId": i.to_string()}).to_string();
        let ack = loop {
            // The stream may be electing a new leader for a moment; the
            // message id makes a retry of a stored-but-unacknowledged publish harmless.
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("acme:tasks:{i}").as_str());
            match js
                .publish_with_headers(
                    format!("herald.events.acme.tasks.p{}", i % 2),
                    headers,
                    body.clone().into(),
                )
                .await
            {
                Ok(f) => match f.await {
                    Ok(ack) => break ack,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                },
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        more.push(ack.sequence);
    }
    let (on_b, _) = collect(&b, &token, cursor_a, 10).await;
    assert_eq!(on_b, more, "exactly the events after A's cursor");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_edges_nats_server_under_load_loses_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    // The edge knows only server 0 and learns the others from the cluster.
    let opts = EdgeOptions::new(cluster.servers()[0].url(), SECRET)
        .with_env("HERALD_STREAM_REPLICAS", "3");
    let edge = EdgeProcess::spawn(EDGE, opts).await;
    let token = TokenBuilder::new(SECRET).sub("u1").org("acme").build();
    let start = poll(&edge, &token, "timeout=0").await["lastSeq"]
        .as_u64()
        .expect("lastSeq");
    let js = async_nats::jetstream::new(cluster.servers()[2].connect().await);
    let publisher = tokio::spawn(async move {
        let mut seqs = Vec::new();
        for i in 0..1500 {
            let body = json!({"eventType": "x", "n": i}).to_string();
            let subject = format!("herald.events.acme.finance.p{}", i % 5);
            let ack = loop {
                // Retries during the leader election reuse the message id.
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("acme:finance:k{i}").as_str());
                match js
                    .publish_with_headers(subject.clone(), headers, body.clone().into())
                    .await
                {
                    Ok(f) => match f.await {
                        Ok(ack) => break ack,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    },
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            if !ack.duplicate {
                seqs.push(ack.sequence);
            }
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        seqs
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    cluster.stop(0);
    let published = publisher.await.expect("publisher");
    // While the stream elects a new leader the node may answer 503 (the
    // stream is not reachable); a client retries, as the SDK does.
    let mut got: Vec<u64> = Vec::new();
    let mut cursor = start;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < published.len() && tokio::time::Instant::now() < deadline {
        let (status, body, _) = get_json(
            &format!(
                "{}/v1/realtime/poll?lastSeq={cursor}&timeout=2",
                edge.base_url()
            ),
            Some(&token),
        )
        .await;
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        assert!(body["reset"].is_null(), "no reset: {body}");
        for e in body["events"].as_array().into_iter().flatten() {
            got.push(e["seq"].as_u64().unwrap_or(0));
        }
        cursor = body["lastSeq"].as_u64().unwrap_or(cursor);
    }
    if got != published {
        let log = edge.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let missing: Vec<&u64> = published
            .iter()
            .filter(|s| !got.contains(s))
            .take(10)
            .collect();
        panic!(
            "got {} of {} events (cursor {cursor}; first missing {missing:?}); edge log, newest first:\n{}",
            got.len(),
            published.len(),
            tail.join("\n")
        );
    }
    assert_eq!(got, published, "in order, once");
}
