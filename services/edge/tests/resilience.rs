//! What happens when things go wrong: invalid stored events, purged history,
//! a recreated stream, the waiter cap, NATS going away under held polls, and
//! SIGTERM.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use herald_testkit::{eventually, get_json, Herald, InProcessEdge};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

/// Waits (15 s at most) until the node's `/readyz` answers `want`.
async fn wait_readyz(h: &Herald, node: usize, want: u16) {
    let ready = format!("{}/readyz", h.edges[node].base_url());
    eventually(
        Duration::from_secs(15),
        &format!("readyz {want}"),
        || async {
            let status = get_json(&ready, None).await.0;
            if status == want {
                Ok(())
            } else {
                Err(format!("readyz {status}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_bodies_are_counted_skipped_and_do_not_block() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_MAX_EVENT_BYTES", "2048")]).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let raw = |s: &str| s.as_bytes().to_vec();
    let subject = "herald.events.acme.finance.p1";
    let bad = [
        raw("{not json"),
        raw(r#"{"payload":1}"#),
        raw(r#"{"eventType":"x","orgId":"evil"}"#),
        raw(r#"{"eventType":"x","service":"tasks"}"#),
        format!(r#"{{"eventType":"x","payload":"{}"}}"#, "a".repeat(4096)).into_bytes(),
        vec![0xc1, 0xff, 0x00],
    ];
    let mut bad_seqs = Vec::new();
    for b in bad {
        bad_seqs.push(
            h.publish_raw(subject, async_nats::HeaderMap::new(), b)
                .await,
        );
    }
    let good = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "ok"}))
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq={start}&timeout=5"))
        .await;
    assert_eq!(
        r.seqs(),
        vec![good],
        "only the valid event, not blocked by the invalid ones before it"
    );
    let m = h.metrics(0).await;
    assert_eq!(m["events"]["rejected"], 6, "{m}");
    assert_eq!(m["events"]["rejectedByReason"]["too_large"], 1);
    assert_eq!(m["events"]["rejectedByReason"]["mismatch"], 2);
    assert_eq!(m["events"]["rejectedByReason"]["missing_event_type"], 1);
    let log = h.edges[0].log();
    for seq in bad_seqs {
        assert!(
            log.contains(&format!("seq={seq}")),
            "rejection of seq {seq} not logged"
        );
    }
    // The same holds for a client reading them back from the stream on a fresh node.
    let mut h = h;
    let fresh = h.add_edge(&[("HERALD_MAX_EVENT_BYTES", "2048")]).await;
    let r = h
        .poll(fresh, &token, &format!("lastSeq={start}&timeout=5"))
        .await;
    assert_eq!(r.seqs(), vec![good]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_history_and_a_recreated_stream_give_reset() {
    let mut h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    for i in 0..5 {
        h.publish(
            "acme",
            "finance",
            None,
            json!({"eventType": "x", "eventId": i.to_string()}),
        )
        .await;
    }
    let js = async_nats::jetstream::new(h.nats_client().clone());
    js.get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();

    // A node that never saw these events can only answer reset.
    let fresh = h.add_edge(&[]).await;
    let r = h
        .poll(fresh, &token, &format!("lastSeq={start}&timeout=5"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["reset"]["reason"], "history_gone", "{}", r.body);
    assert!(r.seqs().is_empty());
    let head = r.last_seq();
    assert_eq!(head, start + 5, "reset carries the current head");
    // Resuming from the reset's cursor works normally.
    let next = h
        .publish("acme", "finance", None, json!({"eventType": "after-purge"}))
        .await;
    let r = h
        .poll(fresh, &token, &format!("lastSeq={head}&timeout=5"))
        .await;
    assert_eq!(r.seqs(), vec![next]);
    // One resume reset, one continued (the fresh node saw no other cursor).
    let resumes = &h.metrics(fresh).await["events"]["resumes"];
    assert_eq!(resumes["reset"], 1, "{resumes}");
    assert_eq!(resumes["continued"], 1, "{resumes}");
    let events = &h.metrics(fresh).await["events"];
    assert_eq!(events["resetsByReason"]["history_gone"], 1, "{events}");
    assert_eq!(events["resets"], 1, "{events}");

    // A cursor from another stream incarnation.
    let r = h
        .poll(
            0,
            &token,
            &format!("lastSeq={head}&epoch=not-this-one&timeout=5"),
        )
        .await;
    assert_eq!(r.body["reset"]["reason"], "epoch_changed", "{}", r.body);
    let old_epoch = r.body["epoch"].as_str().unwrap().to_owned();

    // The stream is deleted and created again: the node notices and resets clients.
    js.delete_stream("HERALD_EVENTS").await.unwrap();
    let query = format!("lastSeq={head}&epoch={old_epoch}&timeout=1");
    let r = eventually(
        Duration::from_secs(15),
        "a reset for the recreated stream",
        || async {
            let r = h.poll(0, &token, &query).await;
            if r.body["reset"]["reason"] == "epoch_changed" {
                Ok(r)
            } else {
                Err(r.body)
            }
        },
    )
    .await;
    assert_ne!(r.body["epoch"], old_epoch.as_str());
    // Events of the new incarnation flow.
    let r0 = h.poll(0, &token, "timeout=0").await;
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "new-world"}))
        .await;
    let r = h
        .poll(
            0,
            &token,
            &format!(
                "lastSeq={}&epoch={}&timeout=5",
                r0.last_seq(),
                r0.body["epoch"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(r.seqs(), vec![seq], "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiter_cap_answers_503_with_retry_after() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_MAX_WAITERS_PER_ORG", "2")]).await;
    let token = h.token("acme");
    let a = h.held_poll(0, &token, "timeout=10").await;
    let b = h.held_poll(0, &token, "timeout=10").await;
    let r = h.poll(0, &token, "timeout=10").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "overloaded");
    assert!(r.headers.get("retry-after").is_some());
    // Other orgs are not affected, and an answerable poll never counts as a waiter.
    assert_eq!(h.poll(0, &h.token("other"), "timeout=0").await.status, 200);
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "wake"}))
        .await;
    for held in [a, b] {
        let r = held.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.seqs(), vec![seq], "{}", r.body);
    }
    assert_eq!(h.metrics(0).await["waiterCapHits"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_held_polls_loses_nothing() {
    let mut h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let held = h
        .held_poll(0, &token, &format!("lastSeq={start}&timeout=40"))
        .await;

    h.nats.stop();
    wait_readyz(&h, 0, 503).await;
    // Polls are still answered (from memory) while NATS is down.
    assert_eq!(
        h.poll(0, &token, &format!("lastSeq={start}&timeout=0"))
            .await
            .status,
        200
    );
    // The node says why it cannot reconnect, naming the server.
    let server = format!("127.0.0.1:{}", h.nats.port());
    herald_testkit::eventually(Duration::from_secs(10), "an unreachable line", || async {
        let log = h.edges[0].log();
        log.lines()
            .any(|l| l.contains("nats unreachable") && l.contains(&server) && l.contains("refused"))
            .then_some(())
            .ok_or(log)
    })
    .await;

    h.nats.restart().await;
    // Publish straight away, before the node has necessarily reconnected:
    // these arrive while its subscription is gone and must be filled from the stream.
    let publisher = h.nats.connect().await;
    let js = async_nats::jetstream::new(publisher);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let ack = js
            .publish(
                format!("herald.events.acme.finance.p{i}"),
                json!({"eventType": "x"}).to_string().into(),
            )
            .await;
        seqs.push(ack.unwrap().await.unwrap().sequence);
    }
    let r = tokio::time::timeout(Duration::from_secs(45), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    let first = r.seqs();
    assert!(!first.is_empty(), "held poll got nothing: {}", r.body);
    wait_readyz(&h, 0, 200).await;
    let mut got = first;
    let mut cursor = r.last_seq();
    while got.len() < seqs.len() {
        let r = h
            .poll(0, &token, &format!("lastSeq={cursor}&timeout=10"))
            .await;
        assert!(
            !r.seqs().is_empty(),
            "stalled after NATS restart with {got:?} of {seqs:?}"
        );
        got.extend(r.seqs());
        cursor = r.last_seq();
    }
    assert_eq!(got, seqs);

    // The outage was told once per change of state, naming the server and
    // the reason, and never with the NATS client's vague per-attempt lines.
    let log = h.edges[0].log();
    let server = format!("127.0.0.1:{}", h.nats.port());
    let says = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(says("nats disconnected; reconnecting to"), 1, "{log}");
    assert!(
        log.lines().any(|l| l.contains("nats unreachable")
            && l.contains(&server)
            && l.contains("refused")),
        "{log}"
    );
    assert_eq!(says("nats connected again after"), 1, "{log}");
    assert_eq!(says("connected successfully"), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_held_polls_and_exits_within_10s() {
    let mut h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let mut polls = Vec::new();
    for _ in 0..3 {
        polls.push(
            h.held_poll(0, &token, &format!("lastSeq={start}&timeout=50"))
                .await,
        );
    }
    let t0 = Instant::now();
    h.edges[0].sigterm();
    for p in polls {
        let r = tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["lastSeq"], start, "answered with the cursor");
        assert!(r.seqs().is_empty(), "{}", r.body);
    }
    let exit = h.edges[0].wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "exit status {exit:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// The same drain as on SIGTERM, for a node inside the test process: its
/// shutdown future resolves, held polls are answered with their cursor and
/// `herald_edge::run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_node_drains_when_its_shutdown_future_resolves() {
    let mut h: Herald<InProcessEdge> = Herald::start_in_process(1, &[], herald_edge::run).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let held = h
        .held_poll(0, &token, &format!("lastSeq={start}&timeout=50"))
        .await;
    let node = h.edges.pop().unwrap();
    let returned = node.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        returned,
        Some(Ok(())),
        "run returned within 10 s, without error"
    );
    let r = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["lastSeq"], start, "answered with the cursor");
    assert!(r.seqs().is_empty(), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_polls_clean_up_and_idle_orgs_are_released() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_ORG_IDLE_EVICT", "1s")]).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // A client that gives up on its held poll: the request is dropped,
    // which closes its connection.
    let abandoned = h
        .held_poll(0, &token, &format!("lastSeq={start}&timeout=30"))
        .await;
    abandoned.abort();
    assert!(abandoned.await.is_err_and(|e| e.is_cancelled()));
    let released = Duration::from_secs(10);
    h.wait_metric(0, "/waiters", 0, released).await;
    h.wait_metric(0, "/connections/longpoll", 0, released).await;
    // Idle for HERALD_ORG_IDLE_EVICT (1 s): the org is released.
    h.wait_metric(0, "/orgs/total", 0, released).await;
    // The org comes back on demand, with nothing lost in between.
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq={start}&timeout=5"))
        .await;
    assert_eq!(r.seqs(), vec![seq]);
}

/// Stores an event without RePublishing it, so the nodes miss it live.
async fn publish_unseen(h: &Herald, subject: &str) -> u64 {
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let mut stream = js.get_stream("HERALD_EVENTS").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    let republish = config.republish.take();
    js.update_stream(config.clone()).await.unwrap();
    let seq = h
        .publish_raw(
            subject,
            async_nats::HeaderMap::new(),
            br#"{"eventType":"unseen"}"#.to_vec(),
        )
        .await;
    config.republish = republish;
    js.update_stream(config).await.unwrap();
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_the_node_never_saw_are_filled_from_the_stream() {
    // Audits are rare here, so only gap detection can find the missed event in time.
    let mut h = Herald::start_with(EDGE, 1, &[("HERALD_AUDIT_INTERVAL", "120s")]).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    // Past the start-up audits (at about 0.1, 0.5 and 2 s, each ±20 %),
    // after which the org's live feed is trusted and a missed message can
    // only be found by gap detection.
    h.wait_metric(0, "/orgs/untrusted", 0, Duration::from_secs(10))
        .await;

    let unseen = publish_unseen(&h, "herald.events.acme.finance.p1").await;
    let next = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "seen"}))
        .await;
    let (events, _) = h.collect(0, &token, "services=finance", start, 2).await;
    assert_eq!(
        herald_testkit::seqs_of(&events),
        vec![unseen, next],
        "the missed event first, then the live one"
    );
    assert!(h.metrics(0).await["events"]["gapsFilled"].as_u64().unwrap() >= 1);

    // On a quiet org nothing follows the missed event: the audit finds it.
    let quick = h.add_edge(&[("HERALD_AUDIT_INTERVAL", "500ms")]).await;
    let quiet = h.token("quiet");
    let start = h.poll(quick, &quiet, "timeout=0").await.last_seq();
    // Past the start-up audits again (see above).
    h.wait_metric(quick, "/orgs/untrusted", 0, Duration::from_secs(10))
        .await;
    let lone = publish_unseen(&h, "herald.events.quiet.tasks._").await;
    let r = h
        .poll(quick, &quiet, &format!("lastSeq={start}&timeout=10"))
        .await;
    assert_eq!(r.seqs(), vec![lone]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_with_another_config_is_left_alone() {
    let nats = herald_testkit::NatsServer::start().await;
    let js = async_nats::jetstream::new(nats.connect().await);
    let theirs = async_nats::jetstream::stream::Config {
        name: "HERALD_EVENTS".into(),
        subjects: vec!["herald.events.>".into()],
        max_age: Duration::from_secs(3600),
        republish: Some(async_nats::jetstream::stream::Republish {
            source: "herald.events.>".into(),
            destination: "herald.live.>".into(),
            headers_only: false,
        }),
        ..Default::default()
    };
    js.create_stream(theirs).await.unwrap();
    let edge = herald_testkit::EdgeProcess::spawn(
        EDGE,
        herald_testkit::EdgeOptions::new(nats.url(), herald_testkit::SECRET),
    )
    .await;
    let info = js
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(
        info.config.max_age,
        Duration::from_secs(3600),
        "the node did not rewrite the stream"
    );
    assert!(
        edge.log().contains("max_age: wanted 86400s, found 3600s"),
        "{}",
        edge.log()
    );
}
