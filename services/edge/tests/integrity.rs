//! The delivery promise under stress: a burst that overflows the node's live
//! subscription, a lost NATS connection under load, purged history and a
//! recreated stream. Every test checks the exact sequence list a client got
//! against what the stream holds: nothing lost, nothing twice, and a `reset`
//! whenever something cannot be delivered.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::time::Duration;

use herald_testkit::{eventually, eventually_mut, wait, Herald};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

/// Publishes `n` events round-robin over two orgs and five services each,
/// `per_ms` events a millisecond, without waiting for each ack; returns the
/// sequences per org.
async fn burst(
    client: async_nats::Client,
    orgs: [&str; 2],
    n: usize,
    per_ms: usize,
) -> [Vec<u64>; 2] {
    let js = async_nats::jetstream::new(client);
    let services = ["finance", "guest", "tasks", "staff", "rooms"];
    let mut acks = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..n {
        if i % per_ms == 0 {
            tick.tick().await;
        }
        let org = i % 2;
        let subject = format!(
            "herald.events.{}.{}.p{}",
            orgs[org],
            services[(i / 2) % services.len()],
            i % 3
        );
        let body = json!({"eventType": "burst", "payload": {"i": i}}).to_string();
        let ack = js
            .publish(subject, body.into())
            .await
            .expect("publish in burst");
        // Awaited in their own tasks: the client limits unacknowledged publishes.
        acks.push((org, tokio::spawn(ack.into_future())));
    }
    let mut seqs = [Vec::new(), Vec::new()];
    for (org, ack) in acks {
        let ack = ack.await.expect("ack task").expect("ack in burst");
        seqs[org].push(ack.sequence);
    }
    seqs
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Reads org `token`'s events through a poll chain from `from` until `want`
/// events arrived (60 s at most); fails on a reset or a repeated sequence.
async fn read_all(h: &Herald, node: usize, token: &str, from: u64, want: usize) -> Vec<u64> {
    let mut got = Vec::new();
    let mut cursor = from;
    eventually_mut(
        Duration::from_secs(60),
        &format!("{want} events read from {from}"),
        async || {
            let r = h
                .poll(node, token, &format!("lastSeq={cursor}&timeout=2"))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.body["reset"].is_null(), "unexpected reset: {}", r.body);
            for s in r.seqs() {
                assert!(s > cursor, "seq {s} not after cursor {cursor}");
                got.push(s);
                cursor = s;
            }
            cursor = cursor.max(r.last_seq());
            if got.len() >= want {
                Ok(())
            } else {
                Err(format!("{} events, cursor {cursor}", got.len()))
            }
        },
    )
    .await;
    got
}

fn missing(want: &[u64], got: &[u64]) -> Vec<u64> {
    let got: BTreeSet<_> = got.iter().collect();
    want.iter().filter(|s| !got.contains(s)).copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_overflows_the_live_subscription_loses_nothing() {
    // Small live queues (the defaults are 16 Ki messages) make the node
    // drop live messages at a burst this size.
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("HERALD_NATS_SUBSCRIPTION_CAPACITY", "1024"),
            ("HERALD_LIVE_QUEUE_MESSAGES", "256"),
        ],
    )
    .await;
    let orgs = ["acme", "globex"];
    let tokens = [h.token(orgs[0]), h.token(orgs[1])];
    let mut starts = [0; 2];
    for i in 0..2 {
        starts[i] = h.poll(0, &tokens[i], "timeout=0").await.last_seq();
    }
    // Held polls keep both orgs active (and their live feeds busy) during the burst.
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let base = h.edges[0].base_url();
            let token = tokens[i].clone();
            let from = starts[i];
            tokio::spawn(async move {
                let mut cursor = from;
                let mut seqs = Vec::new();
                let until = tokio::time::Instant::now() + Duration::from_secs(90);
                while tokio::time::Instant::now() < until && seqs.len() < 6_000 {
                    let url = format!("{base}/v1/realtime/poll?lastSeq={cursor}&timeout=1");
                    let (s, b, _) = herald_testkit::get_json(&url, Some(&token)).await;
                    if s != 200 || !b["reset"].is_null() {
                        break;
                    }
                    for e in b["events"].as_array().into_iter().flatten() {
                        seqs.push(e["seq"].as_u64().unwrap_or(0));
                    }
                    cursor = b["lastSeq"].as_u64().unwrap_or(cursor);
                }
                (seqs, cursor)
            })
        })
        .collect();
    let t0 = std::time::Instant::now();
    let publisher = tokio::spawn(burst(h.nats_client().clone(), orgs, 12_000, 4));
    // Frozen mid-burst, the node then reads its backlog from the socket far
    // faster than the org tasks can take it: the subscription overflows
    // while each org task is still behind the dropped messages, and live
    // traffic goes on afterwards. Mid-burst: the node has taken in a
    // thousand of the 12,000 events.
    h.wait_metric_at_least(0, "/events/ingested", 1_000, Duration::from_secs(30))
        .await;
    assert!(
        !publisher.is_finished(),
        "the burst ended before the freeze"
    );
    signal(h.edges[0].pid(), "-STOP");
    // Time passing is the point: the backlog piles up while it is frozen.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    signal(h.edges[0].pid(), "-CONT");
    let published = publisher.await.expect("publisher");
    eprintln!("burst published in {:?}", t0.elapsed());
    for (i, reader) in readers.into_iter().enumerate() {
        let (live, cursor) = reader.await.expect("reader task");
        eprintln!(
            "reader {i} done at {:?}: {} events",
            t0.elapsed(),
            live.len()
        );
        // Events below the chain's cursor that it never got are lost for good.
        let lost: Vec<u64> = missing(&published[i], &live)
            .into_iter()
            .filter(|s| *s <= cursor)
            .collect();
        assert!(
            lost.is_empty(),
            "org {}: the live chain's cursor {cursor} passed {} of {} events it never got (first {:?})",
            orgs[i],
            lost.len(),
            published[i].len(),
            &lost[..lost.len().min(10)]
        );
        assert_eq!(
            live, published[i],
            "org {}: the live chain got everything",
            orgs[i]
        );
    }
    // Read again from the start: the node's buffer and history agree.
    for i in 0..2 {
        let again = read_all(&h, 0, &tokens[i], starts[i], published[i].len()).await;
        assert_eq!(
            again, published[i],
            "org {} read back from the start",
            orgs[i]
        );
    }
    let m = h.metrics(0).await;
    assert!(
        m["events"]["liveLosses"].as_u64() > Some(0),
        "the burst must have overflowed a live feed for this test to mean anything: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cursor_after_a_purge_is_reset_at_once_on_a_node_new_to_the_org() {
    let h = Herald::start(EDGE, 1).await;
    // Another org keeps the node's head sample fresh and the stream busy.
    let other = h.token("globex");
    h.poll(0, &other, "timeout=0").await;
    let mut acme = Vec::new();
    for i in 0..5 {
        acme.push(
            h.publish(
                "acme",
                "finance",
                None,
                json!({"eventType": "x", "eventId": format!("e{i}")}),
            )
            .await,
        );
    }
    let stale = acme[0] - 1;
    // Let the node sample the head with these events in it: two more
    // samples, since one may have begun before the last publish.
    let samples = h.metrics(0).await["stream"]["headSamples"]
        .as_u64()
        .expect("headSamples");
    h.wait_metric_at_least(
        0,
        "/stream/headSamples",
        samples + 2,
        Duration::from_secs(10),
    )
    .await;
    let js = async_nats::jetstream::new(h.nats_client().clone());
    js.get_stream("HERALD_EVENTS")
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    // At once, before the next periodic head sample: the node has never
    // served acme, so its first answer rests on what the stream says now.
    let r = h
        .poll(0, &h.token("acme"), &format!("lastSeq={stale}&timeout=0"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["reset"]["reason"], "history_gone",
        "the purged events cannot be delivered, so the answer must say so: {}",
        r.body
    );
    assert!(r.seqs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_resets_clients_to_its_head_not_its_start() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let first = h.poll(0, &token, "timeout=0").await;
    let old_epoch = first.body["epoch"].as_str().expect("epoch").to_owned();
    let mut cursor = first.last_seq();
    for i in 0..8 {
        cursor = h
            .publish(
                "acme",
                "finance",
                None,
                json!({"eventType": "old", "eventId": format!("o{i}")}),
            )
            .await;
    }
    // An operator deletes the stream and creates it again, and publishers
    // go on at once, before the node's next head sample: the new stream
    // holds events 1..4 by the time the node notices.
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let config = js
        .get_stream("HERALD_EVENTS")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    js.delete_stream("HERALD_EVENTS").await.expect("delete");
    js.create_stream(config).await.expect("create");
    let mut new = Vec::new();
    for i in 0..4 {
        new.push(
            h.publish(
                "acme",
                "finance",
                None,
                json!({"eventType": "new", "eventId": format!("n{i}")}),
            )
            .await,
        );
    }
    assert_eq!(new, vec![1, 2, 3, 4]);
    // A client of the old incarnation is reset to the new head, and is
    // not sent the new stream from its start.
    let query = format!("lastSeq={cursor}&epoch={old_epoch}&timeout=1");
    let reset = eventually(
        Duration::from_secs(15),
        "a reset under the old epoch",
        || async {
            let r = h.poll(0, &token, &query).await;
            if !r.body["reset"].is_null() {
                return Ok(r);
            }
            assert!(
                r.seqs().is_empty(),
                "no event of the new stream under the old epoch: {}",
                r.body
            );
            Err(r.body)
        },
    )
    .await;
    assert_eq!(
        reset.body["reset"]["reason"], "epoch_changed",
        "{}",
        reset.body
    );
    assert_eq!(
        reset.last_seq(),
        4,
        "the reset cursor must be at the new head (4), never the start: {}",
        reset.body
    );
    let new_epoch = reset.body["epoch"].as_str().unwrap_or_default().to_owned();
    assert_ne!(new_epoch, old_epoch);
    let r = h
        .poll(
            0,
            &token,
            &format!("lastSeq={}&epoch={new_epoch}&timeout=1", reset.last_seq()),
        )
        .await;
    assert!(
        r.seqs().is_empty(),
        "no replay of the new stream: {}",
        r.body
    );

    // An EventSource-style resume (a cursor, no epoch) beyond the new head
    // is answered with a reset at once, not held.
    let started = tokio::time::Instant::now();
    let r = h
        .poll(0, &token, &format!("lastSeq={cursor}&timeout=20"))
        .await;
    assert_eq!(r.body["reset"]["reason"], "epoch_changed", "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a cursor beyond the head must not be held for the whole timeout"
    );
    assert_eq!(r.last_seq(), 4, "{}", r.body);
    let next = h
        .publish("acme", "finance", None, json!({"eventType": "after"}))
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq=4&epoch={new_epoch}&timeout=5"))
        .await;
    assert_eq!(r.seqs(), vec![next], "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_far_behind_on_a_sparse_filter_catches_up_without_waiting() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // 20,000 events of other services, with two rare ones among them.
    let published = burst(h.nats_client().clone(), ["acme", "globex"], 20_000, 20).await;
    let rare_a = h
        .publish("acme", "audit", None, json!({"eventType": "rare"}))
        .await;
    burst(h.nats_client().clone(), ["acme", "globex"], 4_000, 20).await;
    let rare_b = h
        .publish("acme", "audit", None, json!({"eventType": "rare"}))
        .await;
    assert!(published[0].len() > 9_000);
    let mut ws =
        herald_testkit::WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    let started = tokio::time::Instant::now();
    ws.hello(&["audit"], None, Some(start), None).await;
    // The default ping interval is 30 s: a catch-up that waited for pings
    // between scans would need minutes. (A loaded machine may need more
    // than the client's usual wait for the first frame, but less than a ping.)
    let mut got = Vec::new();
    let caught_up = tokio::time::timeout(Duration::from_secs(60), async {
        while got.len() < 2 {
            match ws.recv(Duration::from_secs(25)).await {
                herald_testkit::Received::Frame(f) if f["type"] == "events" => {
                    got.extend(herald_testkit::seqs_of(
                        f["events"].as_array().expect("events"),
                    ));
                }
                herald_testkit::Received::Frame(f) if f["type"] == "ping" => {}
                other => panic!("expected events, got {other:?}"),
            }
        }
    })
    .await;
    assert!(caught_up.is_ok(), "not caught up within 60 s: {got:?}");
    assert_eq!(got, vec![rare_a, rare_b]);
    let live = h
        .publish("acme", "audit", None, json!({"eventType": "live"}))
        .await;
    assert_eq!(herald_testkit::seqs_of(&ws.events(1).await), vec![live]);
    eprintln!("caught up over 24,000 events in {:?}", started.elapsed());
    let m = h.metrics(0).await;
    let requests = m["stream"]["readRequests"].as_u64();
    assert!(
        requests.is_some_and(|r| r < 1_000),
        "24,000 stored events are read in batches, not message by message: {requests:?} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_dropped_while_the_org_is_behind_are_read_back_before_later_live_events() {
    // Audits far apart, so only the feed's own loss handling can save the
    // dropped messages. Small queues, so that the burst overflows one of
    // them however fast this machine drains it.
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("HERALD_NATS_SUBSCRIPTION_CAPACITY", "128"),
            ("HERALD_LIVE_QUEUE_MESSAGES", "128"),
            ("HERALD_AUDIT_INTERVAL", "120s"),
        ],
    )
    .await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // Past the start-up checks: the feed is trusted. The three start-up
    // audits come at about 0.1, 0.5 and 2 s (each ±20 %).
    h.wait_metric(0, "/orgs/untrusted", 0, Duration::from_secs(10))
        .await;
    // While the node is frozen, 10,000 events pile up for it; when it wakes
    // the NATS client receives them far faster than the org can take them,
    // and the newest ones are dropped.
    signal(h.edges[0].pid(), "-STOP");
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let mut published = Vec::new();
    let mut acks = Vec::new();
    for i in 0..10_000 {
        let body = json!({"eventType": "pile", "payload": {"i": i}}).to_string();
        acks.push(tokio::spawn(
            js.publish("herald.events.acme.finance.p1", body.into())
                .await
                .expect("publish")
                .into_future(),
        ));
    }
    for a in acks {
        published.push(a.await.expect("ack task").expect("ack").sequence);
    }
    signal(h.edges[0].pid(), "-CONT");
    // Once the node has dropped some of the pile (a live loss is marked), a
    // later event on another subject arrives live: it must not carry the
    // org's settled point past the dropped ones.
    wait::wait_metric_until(
        &h.edges[0].base_url(),
        "/events/liveLosses",
        "> 0 (the pile overflowed the live feed)",
        Duration::from_secs(30),
        |v| v.as_u64() > Some(0),
    )
    .await;
    published.push(
        h.publish("acme", "tasks", Some("p2"), json!({"eventType": "later"}))
            .await,
    );
    let got = read_all(&h, 0, &token, start, published.len()).await;
    let lost = missing(&published, &got);
    assert!(
        lost.is_empty(),
        "{} of {} events lost for good (first {:?})",
        lost.len(),
        published.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(got, published);
    let m = h.metrics(0).await;
    assert!(
        m["events"]["liveLosses"].as_u64() > Some(0),
        "messages must have been dropped for this test to mean anything: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_events_cost_their_bytes_not_a_parsed_tree() {
    let h = Herald::start(EDGE, 1).await;
    let orgs = ["acme", "globex", "initech"];
    for org in orgs {
        h.poll(0, &h.token(org), "timeout=0").await;
    }
    let before = h.edges[0].rss_kib();
    // 256 KiB of MessagePack small integers: about 520 KiB as JSON text,
    // but over 8 MiB as a parsed `serde_json::Value` tree.
    let body = rmp_serde::to_vec_named(&json!({
        "eventType": "big",
        "payload": vec![1u8; 260_000],
    }))
    .expect("msgpack body");
    assert!(body.len() <= 262_144);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    for i in 0..90 {
        h.publish_raw(
            &format!("herald.events.{}.finance.p1", orgs[i % 3]),
            headers.clone(),
            body.clone(),
        )
        .await;
    }
    h.wait_metric_at_least(0, "/events/ingested", 90, Duration::from_secs(60))
        .await;
    let grown_mib = h.edges[0].rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 150,
        "90 such events grew the node by {grown_mib} MiB: buffers must hold bytes, not trees"
    );
    // The events still arrive whole, as JSON and as MessagePack.
    let token = h.token("acme");
    let r = h.poll(0, &token, "lastSeq=0&timeout=0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.events();
    assert!(!events.is_empty());
    assert_eq!(
        events[events.len() - 1]["payload"].as_array().map(Vec::len),
        Some(260_000)
    );
    let mut ws = herald_testkit::WsClient::connect(
        &h.edges[0].base_url(),
        "",
        Some(&token),
        Some("herald.v1.msgpack"),
    )
    .await;
    let seq = events[events.len() - 1]["seq"].as_u64().expect("seq");
    ws.hello(&["finance"], None, Some(seq - 1), None).await;
    let got = ws.events(1).await;
    assert_eq!(got[0]["seq"].as_u64(), Some(seq));
    assert_eq!(got[0]["payload"].as_array().map(Vec::len), Some(260_000));
    assert_eq!(got[0]["orgId"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_live_sequences_are_refused_and_later_events_still_flow() {
    // Without NATS permissions (the fixture's server has none), anyone can
    // publish on the live subjects the node trusts.
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // Past the start-up audits (see above): the feed is trusted, so live
    // messages are taken as they come, forged ones included, unless the
    // node checks them.
    h.wait_metric(0, "/orgs/untrusted", 0, Duration::from_secs(10))
        .await;
    let forge = |seq: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Stream", "HERALD_EVENTS");
        headers.insert("Nats-Subject", "herald.events.acme.finance.p1");
        headers.insert("Nats-Sequence", seq);
        headers.insert("Nats-Last-Sequence", "0");
        headers
    };
    let body = json!({"eventType": "forged"}).to_string();
    for seq in [
        "18446744073709551615",
        "9223372036854775808",
        "0",
        "-1",
        "4000000",
    ] {
        h.nats_client()
            .publish_with_headers(
                "herald.live.acme.finance.p1",
                forge(seq),
                body.clone().into(),
            )
            .await
            .expect("forge");
    }
    h.nats_client().flush().await.expect("flush");
    let real = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "real"}))
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq={start}&timeout=10"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seqs(), vec![real], "only the real event: {}", r.body);
    assert!(
        r.last_seq() < 1_000,
        "the cursor is not carried off: {}",
        r.body
    );
    let next = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "next"}))
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq={}&timeout=10", r.last_seq()))
        .await;
    assert_eq!(r.seqs(), vec![next], "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_bodies_are_logged_briefly_and_sparingly() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // 100 invalid bodies, each echoing a quarter megabyte of publisher text.
    // (serde's "invalid type" error quotes the string it got.)
    let junk = format!(
        "{{\"eventType\": \"x\", \"timestamp\": \"{}\"}}",
        "z".repeat(250_000)
    );
    for _ in 0..100 {
        h.publish_raw(
            "herald.events.acme.finance.p1",
            async_nats::HeaderMap::new(),
            junk.clone().into_bytes(),
        )
        .await;
    }
    let good = h
        .publish("acme", "finance", None, json!({"eventType": "ok"}))
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq={start}&timeout=10"))
        .await;
    assert_eq!(r.seqs(), vec![good], "{}", r.body);
    let log = h.edges[0].log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rejected stored event"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 25,
        "{} rejection lines for 100 rejections",
        lines.len()
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 4_096,
        "a log line of {longest} bytes echoes publisher text"
    );
}
