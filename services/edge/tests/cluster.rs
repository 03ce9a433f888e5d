//! Herald on a three-server JetStream cluster: an R3 stream, edge nodes
//! attached to different servers, events crossing cluster routes, and a
//! client resuming across nodes while one NATS server is down.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, publish::PublishAck};
use herald_testkit::{
    eventually, eventually_mut, get_json, EdgeOptions, EdgeProcess, NatsCluster, TokenBuilder,
    SECRET,
};
use serde_json::{json, Value};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// How long a publish may keep failing while the stream elects a new leader.
const ELECTION: Duration = Duration::from_secs(30);

/// Publishes `body` with `Nats-Msg-Id: msg_id` until it is acknowledged
/// (30 s at most): the stream may be electing a new leader for a moment,
/// and the message id makes a retry of a stored-but-unacknowledged publish
/// harmless.
async fn publish_retrying(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    body: &str,
) -> PublishAck {
    let what = format!("an ack for {msg_id} on {subject}");
    eventually(ELECTION, &what, || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let sent: Result<PublishAckFuture, _> = js
            .publish_with_headers(subject.to_owned(), headers, body.to_owned().into())
            .await;
        match sent {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

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
        let subject = format!("herald.events.acme.tasks.p{}", i % 2);
        let ack = publish_retrying(&js, &subject, &format!("acme:tasks:{i}"), &body).await;
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
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn({
        let progress = Arc::clone(&progress);
        async move {
            let mut seqs = Vec::new();
            for i in 0..1500 {
                let body = json!({"eventType": "x", "n": i}).to_string();
                let subject = format!("herald.events.acme.finance.p{}", i % 5);
                let ack =
                    publish_retrying(&js, &subject, &format!("acme:finance:k{i}"), &body).await;
                // A duplicate ack names the copy an earlier attempt stored
                // (its ack lost in the failover): stored once, there.
                seqs.push(ack.sequence);
                progress.fetch_add(1, Ordering::Relaxed);
                // Pacing: the load is spread out, so that the server goes
                // away in the middle of it.
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seqs
        }
    });
    // Under load: a fifth of the events are out when the server goes away.
    eventually(Duration::from_secs(30), "300 events published", || async {
        let n = progress.load(Ordering::Relaxed);
        if n >= 300 {
            Ok(())
        } else {
            Err(format!("{n} published"))
        }
    })
    .await;
    cluster.stop(0);
    let published = publisher.await.expect("publisher");
    // While the stream elects a new leader the node may answer 503 (the
    // stream is not reachable); a client retries, as the SDK does.
    let mut got: Vec<u64> = Vec::new();
    let mut cursor = start;
    let poll_url = |cursor: u64| {
        format!(
            "{}/v1/realtime/poll?lastSeq={cursor}&timeout=2",
            edge.base_url()
        )
    };
    eventually_mut(
        Duration::from_secs(60),
        &format!("all {} events read", published.len()),
        async || {
            let (status, body, _) = get_json(&poll_url(cursor), Some(&token)).await;
            if status != 503 {
                assert_eq!(status, 200, "{body}");
                assert!(body["reset"].is_null(), "no reset: {body}");
                for e in body["events"].as_array().into_iter().flatten() {
                    got.push(e["seq"].as_u64().unwrap_or(0));
                }
                cursor = body["lastSeq"].as_u64().unwrap_or(cursor);
            }
            if got.len() >= published.len() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} events (cursor {cursor}, last answer {status})",
                    got.len(),
                    published.len()
                ))
            }
        },
    )
    .await;
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

/// Stores an event without RePublishing it (the stream's RePublish is off
/// for that one publish), as when its leader dies before the servers route
/// the RePublished copy here: no node sees it live.
async fn publish_unseen(js: &jetstream::Context, subject: &str) -> u64 {
    let mut stream = js.get_stream("HERALD_EVENTS").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    let republish = config.republish.take();
    js.update_stream(config.clone()).await.unwrap();
    let body = json!({"eventType": "unseen"}).to_string();
    let seq = publish_retrying(js, subject, "acme:unseen", &body)
        .await
        .sequence;
    config.republish = republish;
    js.update_stream(config).await.unwrap();
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_leader_makes_the_node_read_what_the_old_one_never_republished() {
    let cluster = NatsCluster::start(3).await;
    // Audits are rare here: only the leader change can make the node look.
    let edge = EdgeProcess::spawn(
        EDGE,
        EdgeOptions::new(cluster.urls(), SECRET)
            .with_env("HERALD_STREAM_REPLICAS", "3")
            .with_env("HERALD_AUDIT_INTERVAL", "120s")
            .with_env("HERALD_METRICS_PUBLIC", "true"),
    )
    .await;
    let base = edge.base_url();
    let token = TokenBuilder::new(SECRET).sub("u1").org("acme").build();
    let js = async_nats::jetstream::new(cluster.connect().await);
    let start = poll(&edge, &token, "timeout=0").await["lastSeq"]
        .as_u64()
        .unwrap();
    // Past the start-up audits: the org's live feed is trusted.
    herald_testkit::wait_metric(&base, "/orgs/untrusted", 0, Duration::from_secs(10)).await;
    let before = herald_testkit::metrics(&base).await["stream"]["leaderChanges"]
        .as_u64()
        .unwrap();

    let unseen = publish_unseen(&js, "herald.events.acme.finance.p1").await;
    // The leader steps down; a new one is elected.
    let stepdown: Value = {
        let reply = cluster
            .connect()
            .await
            .request("$JS.API.STREAM.LEADER.STEPDOWN.HERALD_EVENTS", "".into())
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    };
    assert_eq!(stepdown["success"], true, "{stepdown}");
    herald_testkit::wait_metric_at_least(
        &base,
        "/stream/leaderChanges",
        before + 1,
        Duration::from_secs(10),
    )
    .await;
    // The next event is on another subject: its headers cannot tell that
    // the one before it was missed.
    let next = publish_retrying(
        &js,
        "herald.events.acme.finance.p2",
        "acme:next",
        &json!({"eventType": "seen"}).to_string(),
    )
    .await
    .sequence;
    let (seqs, _) = collect(&edge, &token, start, 2).await;
    assert_eq!(
        seqs,
        vec![unseen, next],
        "the missed event first, then the live one"
    );
}
