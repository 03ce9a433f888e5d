//! `HERALD_PARTITIONS=K` against a real nats-server carrying the shipped
//! subject mapping: each org's events live in the stream of its partition,
//! with that stream's sequences and epoch; delivery, resume and history
//! reads hold per org; an event whose partition token is not its org's is
//! rejected (or, in another partition's stream, never read); a node whose K disagrees with the servers' mapping refuses to
//! start (exit 78).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_proto::Partitions;
use herald_testkit::{Herald, NatsServer, SECRET};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
const K: u32 = 4;

/// Two org names in different partitions of `K`.
fn orgs_in_two_partitions() -> (String, String) {
    let p = Partitions::new(K).unwrap();
    let a = "acme".to_owned();
    let b = (0..)
        .map(|i| format!("org{i}"))
        .find(|o| p.of(o) != p.of(&a))
        .unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_org_is_served_from_its_partition_stream() {
    let h = Herald::start_partitioned(EDGE, 2, K, &[]).await;
    let (a, b) = orgs_in_two_partitions();
    let p = Partitions::new(K).unwrap();
    let (ta, tb) = (h.token(&a), h.token(&b));
    let start_a = h.poll(0, &ta, "timeout=0").await.last_seq();
    let start_b = h.poll(1, &tb, "timeout=0").await.last_seq();

    // Publishers keep publishing to the plain subject; the mapping files
    // each event under its org's partition.
    let mut seqs_a = Vec::new();
    let mut seqs_b = Vec::new();
    for i in 0..3 {
        seqs_a.push(
            h.publish(
                &a,
                "finance",
                Some("p1"),
                json!({"eventType": "a", "eventId": format!("a{i}")}),
            )
            .await,
        );
        seqs_b.push(
            h.publish(
                &b,
                "finance",
                Some("p1"),
                json!({"eventType": "b", "eventId": format!("b{i}")}),
            )
            .await,
        );
    }
    // Each partition stream numbers its own events from 1.
    assert_eq!(seqs_a, [1, 2, 3]);
    assert_eq!(seqs_b, [1, 2, 3]);
    let js = async_nats::jetstream::new(h.nats_client().clone());
    for (org, want) in [(&a, 3), (&b, 3)] {
        let name = format!("HERALD_EVENTS_{}", p.of(org));
        let mut stream = js.get_stream(&name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.state.messages, want, "{name}");
        assert_eq!(
            info.config.subjects,
            [format!("herald.events.*.*.*.{}", p.of(org))]
        );
    }

    // Live, on either node, each org sees exactly its own events.
    let (got_a, _) = h.collect(1, &ta, "services=finance", start_a, 3).await;
    let (got_b, _) = h.collect(0, &tb, "services=finance", start_b, 3).await;
    assert_eq!(herald_testkit::seqs_of(&got_a), seqs_a);
    assert_eq!(herald_testkit::seqs_of(&got_b), seqs_b);
    assert!(got_a
        .iter()
        .all(|e| e["orgId"] == a.as_str() && e["eventType"] == "a"));
    assert!(got_b
        .iter()
        .all(|e| e["orgId"] == b.as_str() && e["eventType"] == "b"));

    // The epochs are those of the two partition streams.
    let ea = h.poll(0, &ta, "timeout=0").await;
    let eb = h.poll(0, &tb, "timeout=0").await;
    assert_ne!(
        ea.body["epoch"], eb.body["epoch"],
        "one epoch per partition stream"
    );

    // Resume from the middle, on the other node: read back from the stream.
    let r = h
        .poll(
            1,
            &ta,
            &format!("services=finance&lastSeq={}&timeout=0", seqs_a[0]),
        )
        .await;
    assert_eq!(r.seqs(), &seqs_a[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_come_from_the_org_partition() {
    // A one-event buffer: every resume below reads the stream.
    let h = Herald::start_partitioned(EDGE, 1, K, &[("HERALD_ORG_BUFFER_EVENTS", "1")]).await;
    let (a, b) = orgs_in_two_partitions();
    let ta = h.token(&a);
    h.poll(0, &ta, "timeout=0").await;
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(
            h.publish(
                &a,
                "tasks",
                None,
                json!({"eventType": "t", "eventId": format!("t{i}")}),
            )
            .await,
        );
        // Interleaved events of another partition must not show up, nor
        // move the org's sequences.
        h.publish(&b, "tasks", None, json!({"eventType": "other"}))
            .await;
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    let (got, _) = h.collect(0, &ta, "services=tasks", 0, 20).await;
    assert_eq!(herald_testkit::seqs_of(&got), seqs);
    assert!(got.iter().all(|e| e["orgId"] == a.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_filed_under_another_partition_is_rejected() {
    let h = Herald::start_partitioned(EDGE, 1, K, &[]).await;
    let p = Partitions::new(K).unwrap();
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let own = p.of("acme");
    let wrong = (own + 1) % K;
    // Published straight to a six-token subject of the wrong partition: its
    // stream stores it, and the mapping leaves six-token subjects alone.
    let js = async_nats::jetstream::new(h.nats_client().clone());
    js.publish(
        format!("herald.events.acme.finance.p1.{wrong}"),
        json!({"eventType": "astray"}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let good = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "good"}))
        .await;
    let (got, _) = h.collect(0, &token, "services=finance", start, 1).await;
    assert_eq!(herald_testkit::seqs_of(&got), [good]);
    assert_eq!(got[0]["eventType"], "good");
    // The astray event sits in another partition's stream: this org's
    // feed never reads it, so it is neither delivered nor counted here.
    let m = h.metrics(0).await;
    assert_eq!(m["events"]["rejected"], 0, "{m}");

    // With one partition the stream stores every herald.events subject, so
    // a six-token one reaches the org's feed: it is rejected, not delivered.
    let one = Herald::start(EDGE, 1).await;
    let token = one.token("acme");
    let start = one.poll(0, &token, "timeout=0").await.last_seq();
    let js = async_nats::jetstream::new(one.nats_client().clone());
    js.publish(
        "herald.events.acme.finance.p1.0",
        json!({"eventType": "astray"}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let good = one
        .publish("acme", "finance", Some("p1"), json!({"eventType": "good"}))
        .await;
    let (got, _) = one.collect(0, &token, "services=finance", start, 1).await;
    assert_eq!(herald_testkit::seqs_of(&got), [good]);
    let m = one.metrics(0).await;
    assert_eq!(m["events"]["rejectedByReason"]["bad_subject"], 1, "{m}");
}

/// Runs a node with `partitions` against `nats_url` until it exits (45 s at
/// most); returns its exit code and its output.
async fn run_until_exit(nats_url: &str, partitions: &str) -> (Option<i32>, String) {
    let mut child = tokio::process::Command::new(EDGE)
        .env("HERALD_NATS_URL", nats_url)
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_PARTITIONS", partitions)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = tokio::time::timeout(Duration::from_secs(45), async {
        let status = child.wait().await.unwrap();
        let mut log = String::new();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let mut pipe = pipe;
            tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut log)
                .await
                .unwrap();
        }
        (status.code(), log)
    })
    .await;
    out.unwrap_or_else(|_| panic!("edge {pid:?} still running after 45 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_partitions_disagree_with_the_mapping_exits_78() {
    // Servers mapping to 4 partitions, a node configured for 2.
    let nats = NatsServer::start_partitioned(K).await;
    let (code, log) = run_until_exit(&nats.url(), "2").await;
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains("HERALD_PARTITIONS=2"),
        "the log names the cause: {log}"
    );

    // Servers without the mapping, a node configured for 4: no stream
    // stores the probes.
    let plain = NatsServer::start().await;
    let (code, log) = run_until_exit(&plain.url(), "4").await;
    assert_eq!(code, Some(78), "{log}");

    // The same servers and a node of one partition: it serves.
    let (code, _) = tokio::time::timeout(Duration::from_secs(3), run_until_exit(&plain.url(), "1"))
        .await
        .map_or((None, String::new()), |r| r);
    assert_eq!(code, None, "a matching node keeps running");
}
