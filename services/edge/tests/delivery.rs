//! End-to-end delivery over long-poll: real nats-server, real edge nodes on
//! ephemeral ports, events published the way domain services (or `nats pub`)
//! publish them.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use herald_testkit::{seqs_of, Herald};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

async fn start(edges: usize) -> Herald {
    Herald::start(EDGE, edges).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_nats_publish_reaches_a_held_poll() {
    let h = start(1).await;
    let token = h.token("acme");
    let first = h.poll(0, &token, "services=finance&timeout=0").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let cursor = first.last_seq();

    let held = h
        .held_poll(
            0,
            &token,
            &format!("services=finance&propertyId=p1&lastSeq={cursor}&timeout=20"),
        )
        .await;
    // Exactly what `nats pub` sends: a core NATS publish, no headers.
    h.nats_client()
        .publish(
            "herald.events.acme.finance.p1",
            r#"{"eventType":"expense.created","payload":{"amount":10}}"#.into(),
        )
        .await
        .unwrap();
    h.nats_client().flush().await.unwrap();

    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    let body = r.body;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    let e = &events[0];
    assert_eq!(e["orgId"], "acme");
    assert_eq!(e["service"], "finance");
    assert_eq!(e["propertyId"], "p1");
    assert_eq!(e["eventType"], "expense.created");
    assert_eq!(e["payload"], json!({"amount": 10}));
    let seq = e["seq"].as_u64().unwrap();
    assert_eq!(
        e["eventId"],
        seq.to_string(),
        "eventId defaults to the sequence"
    );
    assert!(e["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(body["lastSeq"], seq);
    assert!(body["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(body["reset"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_between_nodes_gets_exactly_the_missed_events() {
    let h = start(2).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let mut published = Vec::new();
    for i in 0..3 {
        published.push(
            h.publish(
                "acme",
                "tasks",
                Some("p1"),
                json!({"eventType": "task.created", "eventId": format!("a{i}")}),
            )
            .await,
        );
    }
    let (on_a, cursor) = h
        .collect(0, &token, "services=tasks,finance", start, 3)
        .await;
    assert_eq!(seqs_of(&on_a), published);
    let epoch = h.poll(0, &token, "timeout=0").await.body["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // The client goes away; events keep coming; it returns on the other node.
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            h.publish(
                "acme",
                "finance",
                None,
                json!({"eventType": "expense.created", "eventId": format!("b{i}")}),
            )
            .await,
        );
    }
    let (on_b, cursor) = h
        .collect(1, &token, &format!("epoch={epoch}"), cursor, 5)
        .await;
    assert_eq!(
        seqs_of(&on_b),
        missed,
        "exactly the missed events, in order"
    );
    assert_eq!(
        h.poll(1, &token, "timeout=0").await.body["epoch"],
        epoch.as_str(),
        "both nodes name the same stream incarnation"
    );
    // And nothing twice afterwards.
    let again = h
        .poll(1, &token, &format!("lastSeq={cursor}&timeout=1"))
        .await;
    assert!(again.seqs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_org_both_get_every_event() {
    let h = start(1).await;
    let (alice, bob) = (
        h.user("acme").sub("alice").build(),
        h.user("acme").sub("bob").build(),
    );
    let start = h.poll(0, &alice, "timeout=0").await.last_seq();
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(
            h.publish(
                "acme",
                "guest",
                Some("p1"),
                json!({"eventType": "guest.checked_in", "eventId": i.to_string()}),
            )
            .await,
        );
    }
    for token in [&alice, &bob, &alice] {
        let (events, _) = h.collect(0, token, "services=guest", start, 10).await;
        assert_eq!(
            seqs_of(&events),
            seqs,
            "reading never steals events from other clients"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_are_isolated_under_mixed_traffic() {
    let h = start(2).await;
    let orgs: Vec<String> = (0..12).map(|i| format!("org-{i}")).collect();
    let tokens: HashMap<&str, String> = orgs.iter().map(|o| (o.as_str(), h.token(o))).collect();
    let mut cursors = HashMap::new();
    for (i, org) in orgs.iter().enumerate() {
        cursors.insert(
            org.as_str(),
            h.poll(i % 2, &tokens[org.as_str()], "timeout=0")
                .await
                .last_seq(),
        );
    }
    let mut expected: HashMap<&str, Vec<u64>> = HashMap::new();
    for n in 0..240u64 {
        let org = orgs[(n * 7 % 12) as usize].as_str();
        let seq = h
            .publish(
                org,
                ["finance", "tasks", "guest"][n as usize % 3],
                Some("p1"),
                json!({"eventType": "x", "eventId": n.to_string(), "orgId": org}),
            )
            .await;
        expected.entry(org).or_default().push(seq);
    }
    for (i, org) in orgs.iter().enumerate() {
        let mut got = Vec::new();
        let mut cursor = cursors[org.as_str()];
        while got.len() < expected[org.as_str()].len() {
            let r = h
                .poll(
                    i % 2,
                    &tokens[org.as_str()],
                    &format!("lastSeq={cursor}&timeout=5"),
                )
                .await;
            assert_eq!(r.status, 200);
            assert!(
                !r.seqs().is_empty(),
                "{org} stalled with {} of {}",
                got.len(),
                expected[org.as_str()].len()
            );
            for e in r.events() {
                assert_eq!(
                    e["orgId"],
                    org.as_str(),
                    "{org} received another org's event"
                );
            }
            got.extend(r.seqs());
            cursor = r.last_seq();
        }
        assert_eq!(got, expected[org.as_str()], "{org}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_read_back_in_order_through_polls_alternating_nodes() {
    let h = start(2).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let services = ["finance", "guest", "tasks", "staff"];
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let mut acks = Vec::new();
    for i in 0..1200 {
        let svc = services[i % 4];
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("acme:{svc}:e{i}").as_str());
        let body =
            json!({"eventType": "t", "eventId": format!("e{i}"), "payload": {"i": i}}).to_string();
        acks.push(
            js.publish_with_headers(
                format!("herald.events.acme.{svc}.p{}", i % 3),
                headers,
                body.into(),
            )
            .await
            .unwrap(),
        );
    }
    let mut published = Vec::new();
    for ack in acks {
        published.push(ack.await.unwrap().sequence);
    }
    let mut got = Vec::new();
    let mut cursor = start;
    let mut polls = 0;
    while got.len() < published.len() {
        let r = h
            .poll(
                polls % 2,
                &token,
                &format!("services=finance,guest,tasks,staff&lastSeq={cursor}&timeout=5"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.events().len() <= 500, "at most 500 events per answer");
        assert!(!r.seqs().is_empty() || polls < 50, "stalled at {cursor}");
        got.extend(r.seqs());
        cursor = r.last_seq();
        polls += 1;
    }
    assert_eq!(got, published, "every event once, in order");
    assert!(polls >= 3, "1200 events need at least three answers");
    let payloads_in_order = got.len() == 1200;
    assert!(payloads_in_order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_msg_id_is_delivered_once() {
    let h = start(1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let body = json!({"eventType": "expense.created", "eventId": "same"});
    let first = h.publish("acme", "finance", Some("p1"), body.clone()).await;
    let second = h.publish("acme", "finance", Some("p1"), body).await;
    assert_eq!(
        first, second,
        "JetStream answers the duplicate with the original sequence"
    );
    let marker = h
        .publish(
            "acme",
            "finance",
            Some("p1"),
            json!({"eventType": "marker"}),
        )
        .await;
    let (events, _) = h.collect(0, &token, "services=finance", start, 2).await;
    assert_eq!(seqs_of(&events), vec![first, marker]);
    assert_eq!(events[0]["eventId"], "same");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_bodies_are_delivered_as_json() {
    let h = start(1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let body = herald_proto::EventBody {
        event_type: Some("task.completed".into()),
        event_id: Some("mp-1".into()),
        entity_type: Some("task".into()),
        entity_id: Some("42".into()),
        payload: json!({"done": true, "tags": ["a", "b"]}),
        ..Default::default()
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    let seq = h
        .publish_raw(
            "herald.events.acme.tasks.p2",
            headers,
            body.encode(herald_proto::Encoding::MessagePack),
        )
        .await;
    let r = h
        .poll(0, &token, &format!("lastSeq={start}&timeout=5"))
        .await;
    assert_eq!(r.seqs(), vec![seq]);
    let e = &r.events()[0];
    assert_eq!(e["eventType"], "task.completed");
    assert_eq!(e["eventId"], "mp-1");
    assert_eq!(
        (e["entityType"].as_str(), e["entityId"].as_str()),
        (Some("task"), Some("42"))
    );
    assert_eq!(e["payload"], json!({"done": true, "tags": ["a", "b"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_cursors_advance_past_other_orgs_traffic() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_AUDIT_INTERVAL", "300ms")]).await;
    let quiet = h.token("quiet");
    let start = h.poll(0, &quiet, "timeout=0").await.last_seq();
    let mut last = 0;
    for i in 0..20 {
        last = h
            .publish(
                "busy",
                "finance",
                None,
                json!({"eventType": "x", "eventId": i.to_string()}),
            )
            .await;
    }
    // The quiet org's cursor moves up to the stream head without any of its own events.
    let mut cursor = start;
    for _ in 0..20 {
        let r = h
            .poll(0, &quiet, &format!("lastSeq={cursor}&timeout=1"))
            .await;
        assert!(r.seqs().is_empty(), "no events of another org: {}", r.body);
        cursor = r.last_seq();
        if cursor >= last {
            break;
        }
    }
    assert!(
        cursor >= last,
        "quiet cursor stuck at {cursor}, head is {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_is_measured_apart_from_live_delivery_latency() {
    let h = start(1).await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    for i in 0..3 {
        h.publish(
            "acme",
            "finance",
            Some("p1"),
            json!({"eventType": format!("e{i}")}),
        )
        .await;
    }
    // A client that comes once the node holds the events reads what waited
    // for it: catch-up, not latency.
    h.wait_metric(0, "/events/ingested", 3, Duration::from_secs(10))
        .await;
    let (events, cursor) = h.collect(0, &token, "", start, 3).await;
    assert_eq!(events.len(), 3);
    let m = h.metrics(0).await;
    assert_eq!(m["catchUpAgeMs"]["count"], 3, "{m}");
    assert!(m["latencyMs"]["finance"].is_null(), "{m}");

    // A held poll woken by a new event: live delivery.
    let held = h
        .held_poll(0, &token, &format!("lastSeq={cursor}&timeout=20"))
        .await;
    h.publish("acme", "finance", Some("p1"), json!({"eventType": "live"}))
        .await;
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.events().len(), 1, "{}", r.body);
    let m = h.metrics(0).await;
    assert_eq!(m["latencyMs"]["finance"]["count"], 1, "{m}");
    assert_eq!(m["catchUpAgeMs"]["count"], 3, "{m}");
    assert_eq!(m["events"]["delivered"], 4, "{m}");
}
