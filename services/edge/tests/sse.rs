//! Server-Sent Events end to end: framing, resume from `Last-Event-ID`,
//! resets, keep-alives with the quiet cursor, updates from another node,
//! refusals.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{eventually_mut, post_json, seqs_of, Herald, SseClient};
use serde_json::json;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

fn url(h: &Herald, node: usize, query: &str) -> String {
    format!("{}/v2/realtime/sse?{query}", h.edges[node].base_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_and_resumes_from_last_event_id_on_another_node() {
    let h = Herald::start(EDGE, 2).await;
    let token = h.token("acme");
    let (status, sse) =
        SseClient::connect(&url(&h, 0, "services=finance"), Some(&token), None).await;
    assert_eq!(status, 200);
    let mut sse = sse.unwrap();
    let ack = sse.message().await;
    assert_eq!(ack.event.as_deref(), Some("ack"));
    assert!(ack.json()["epoch"].as_str().is_some());
    let first = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "x"}))
        .await;
    let got = sse.events(1).await;
    assert_eq!(seqs_of(&got), vec![first]);
    drop(sse);

    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(
            h.publish("acme", "finance", None, json!({"eventType": "y"}))
                .await,
        );
    }
    // The browser reconnects with Last-Event-ID, here to the other node.
    let (_, sse) = SseClient::connect(
        &url(&h, 1, "services=finance"),
        Some(&token),
        Some(&first.to_string()),
    )
    .await;
    let mut sse = sse.unwrap();
    let live = h
        .publish("acme", "finance", None, json!({"eventType": "z"}))
        .await;
    let got = sse.events(4).await;
    missed.push(live);
    assert_eq!(seqs_of(&got), missed);
    // lastSeq works too, and the query token.
    let (_, sse) = SseClient::connect(
        &url(
            &h,
            1,
            &format!("services=finance&lastSeq={first}&token={token}"),
        ),
        None,
        None,
    )
    .await;
    assert_eq!(seqs_of(&sse.unwrap().events(4).await), missed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resets_keeps_alive_with_the_cursor_and_follows_updates() {
    let h = Herald::start_with(
        EDGE,
        2,
        &[
            ("HERALD_SSE_KEEPALIVE", "500ms"),
            ("HERALD_AUDIT_INTERVAL", "300ms"),
        ],
    )
    .await;
    let token = h.token("acme");
    let (_, sse) = SseClient::connect(
        &url(&h, 0, "services=finance&epoch=old&lastSeq=3"),
        Some(&token),
        None,
    )
    .await;
    let mut sse = sse.unwrap();
    assert_eq!(sse.message().await.event.as_deref(), Some("ack"));
    let reset = sse.message().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json()["reason"], "epoch_changed");

    // Other orgs' traffic moves the quiet cursor, carried by keep-alive ids.
    let mut last = 0;
    for _ in 0..5 {
        last = h
            .publish("busy", "finance", None, json!({"eventType": "x"}))
            .await;
    }
    let mut seen_id = 0;
    for _ in 0..20 {
        let m = sse.next(Duration::from_secs(2)).await.expect("keep-alive");
        assert!(m.event.is_none() && m.comment, "only keep-alives: {m:?}");
        if let Some(id) = m.id {
            seen_id = id.parse().unwrap();
        }
        if seen_id >= last {
            break;
        }
    }
    assert!(
        seen_id >= last,
        "quiet cursor {seen_id} never reached {last}"
    );

    // An update posted to node 1 changes this stream on node 0.
    let (status, _, _) = post_json(
        &format!("{}/v2/realtime/update-services", h.edges[1].base_url()),
        Some(&token),
        &json!({"services": ["tasks"]}),
    )
    .await;
    assert_eq!(status, 202);
    let updated = eventually_mut(Duration::from_secs(10), "the updated message", async || {
        let m = sse.message().await;
        if m.event.as_deref() == Some("updated") {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;
    assert_eq!(updated.json()["services"], json!(["tasks"]));
    let _finance = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    let task = h
        .publish("acme", "tasks", None, json!({"eventType": "x"}))
        .await;
    assert_eq!(seqs_of(&sse.events(1).await), vec![task]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_refusals_are_json_errors() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let (status, _) = SseClient::connect(&url(&h, 0, "services=finance"), None, None).await;
    assert_eq!(status, 401);
    let limited = h.user("acme").svcs(&["guest"]).build();
    let (status, _) =
        SseClient::connect(&url(&h, 0, "services=finance"), Some(&limited), None).await;
    assert_eq!(status, 403);
    let (status, _) = SseClient::connect(
        &url(&h, 0, "services=finance"),
        Some(&h.token("acme")),
        Some("not-a-number"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, first) = SseClient::connect(
        &url(&h, 0, "services=finance"),
        Some(&h.token("acme")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = SseClient::connect(
        &url(&h, 0, "services=finance"),
        Some(&h.token("acme")),
        None,
    )
    .await;
    assert_eq!(status, 429, "per-user cap");
    drop(first);
}
