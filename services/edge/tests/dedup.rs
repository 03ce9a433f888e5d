//! JetStream dedup ids (`Nats-Msg-Id: <org>:<service>:<eventId>`, contract
//! section 1) against a real nats-server and edge: one org's event ids never
//! suppress another org's events, and the id's prefix is stripped when it
//! becomes a delivered event's default `eventId`. The node runs inside the
//! test process (`herald_edge::run` on a loopback listener).

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use herald_testkit::{post_json, Herald, InProcessEdge};
use serde_json::{json, Value};

/// NATS and one in-process node.
async fn start() -> Herald<InProcessEdge> {
    Herald::start_in_process(1, &[], herald_edge::run).await
}

/// `POST /v2/realtime/publish` on node 0 with a publisher token of `org`.
async fn publish_http(h: &Herald<InProcessEdge>, org: &str, body: &Value) -> Value {
    let token = h.user(org).sub("svc").role("publisher").build();
    let url = format!("{}/v2/realtime/publish", h.edges[0].base_url());
    let (status, answer, _) = post_json(&url, Some(&token), body).await;
    assert_eq!(status, 200, "publish for {org}: {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_in_two_orgs_is_stored_twice_over_http() {
    let h = start().await;
    let token_a = h.token("acme");
    let start = h.poll(0, &token_a, "timeout=0").await.last_seq();
    let body = json!({
        "service": "finance",
        "propertyId": "p1",
        "eventType": "invoice.paid",
        "eventId": "inv-1001",
        "payload": {"amount": 10},
    });

    let b = publish_http(&h, "globex", &body).await;
    assert_eq!(b["duplicate"], false, "{b}");
    let a = publish_http(&h, "acme", &body).await;
    assert_eq!(
        a["duplicate"], false,
        "org B's event id must not suppress org A's event: {a}"
    );
    assert_ne!(a["seq"], b["seq"], "{a} {b}");

    let (events, _) = h.collect(0, &token_a, "services=finance", start, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["orgId"], "acme");
    assert_eq!(events[0]["eventId"], "inv-1001");
    assert_eq!(events[0]["seq"], a["seq"]);

    // Within the duplicate window the same pair for the same org is a repeat.
    let again = publish_http(&h, "acme", &body).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["seq"], a["seq"], "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_event_id_is_the_msg_id_without_org_and_service() {
    let h = start().await;
    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "acme:finance:x-1");
    let seq = h
        .publish_raw(
            "herald.events.acme.finance.p1",
            headers,
            br#"{"eventType":"expense.created"}"#.to_vec(),
        )
        .await;
    let (events, _) = h.collect(0, &token, "services=finance", start, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["seq"], seq);
    assert_eq!(events[0]["eventId"], "x-1", "{}", events[0]);
}
