//! NATS users and permissions (`nats/herald.conf`, docs/deploy.md) against a
//! real nats-server and real edges: edges log in as `edge` (by options or by
//! `user:password@` in the URL, never logging the password) and deliver what
//! the `publisher` user publishes; the publisher cannot forge the live feed,
//! control messages or switches, nor touch the JetStream API.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream;
use herald_testkit::{EdgeOptions, EdgeProcess, Herald, NatsUser, WsClient, SECRET};
use serde_json::json;
use tokio::sync::mpsc;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// Generous bound on waiting for the server's answer to a refused publish.
const WAIT: Duration = Duration::from_secs(10);

/// A client logged in as `user`, and the server errors it is sent (a
/// refused publish comes back as `-ERR 'Permissions Violation …'`).
async fn client_with_errors(
    h: &Herald,
    user: &NatsUser,
) -> (async_nats::Client, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel(64);
    let client = user
        .options()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.try_send(e.to_string());
                }
            }
        })
        .connect(h.nats.url())
        .await
        .expect("connect");
    (client, rx)
}

/// Waits for the permissions violation naming `subject`.
async fn refused(errors: &mut mpsc::Receiver<String>, subject: &str) {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains("permissions violation") && e.contains(subject) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no permissions violation for {subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_logged_in_as_edge_deliver_what_the_publisher_user_publishes() {
    let mut h = Herald::start_with_accounts(EDGE, 1, &[]).await;
    // A second node with the credentials in its URL, and NATS debug logs on.
    let opts = EdgeOptions::new(h.nats.url_as(&NatsUser::edge()), SECRET)
        .with_env("HERALD_METRICS_PUBLIC", "true")
        .with_env("RUST_LOG", "info,async_nats=debug");
    h.edges.push(EdgeProcess::spawn(EDGE, opts).await);

    let token = h.token("acme");
    let start = h.poll(1, &token, "timeout=0").await.last_seq();
    let seq = h
        .publish(
            "acme",
            "finance",
            Some("p1"),
            json!({"eventType": "expense.created", "eventId": "e-1"}),
        )
        .await;
    for node in [0, 1] {
        let (events, _) = h.collect(node, &token, "services=finance", start, 1).await;
        assert_eq!(events.len(), 1, "node {node}: {events:?}");
        assert_eq!(events[0]["seq"], seq);
        assert_eq!(events[0]["eventId"], "e-1");
    }
    // HTTP publish goes out through the edge's own connection.
    let publisher = h.user("acme").sub("svc").role("publisher").build();
    let url = format!("{}/v2/realtime/publish", h.edges[1].base_url());
    let body = json!({"service": "finance", "eventType": "x", "eventId": "e-2"});
    let (status, answer, _) = herald_testkit::post_json(&url, Some(&publisher), &body).await;
    assert_eq!(status, 200, "{answer}");

    let password = NatsUser::edge().password;
    for edge in &h.edges {
        assert!(
            !edge.log().contains(&password),
            "the NATS password is in the log:\n{}",
            edge.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_user_cannot_forge_live_events_control_or_switches() {
    let h = Herald::start_with_accounts(EDGE, 1, &[]).await;
    let admin = h.nats.connect().await; // the edge user
    let js = jetstream::new(admin.clone());
    let (forger, mut errors) = client_with_errors(&h, &NatsUser::publisher()).await;

    let token = h.token("acme");
    let start = h.poll(0, &token, "timeout=0").await.last_seq();
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    ws.hello(&["finance"], None, None, None).await;

    // A forged live message, shaped like a RePublished one.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Stream", "HERALD_EVENTS");
    headers.insert("Nats-Sequence", (start + 1).to_string().as_str());
    headers.insert("Nats-Last-Sequence", start.to_string().as_str());
    headers.insert("Nats-Subject", "herald.events.acme.finance.p1");
    forger
        .publish_with_headers(
            "herald.live.acme.finance.p1",
            headers,
            r#"{"eventType":"forged","eventId":"forged"}"#.into(),
        )
        .await
        .expect("send");
    refused(&mut errors, "herald.live.acme.finance.p1").await;

    // A forged admin disconnect of the whole org.
    let disconnect = json!({"kind": "disconnect", "user": null, "code": 4001, "reason": "forged"});
    forger
        .publish("herald.control.acme", disconnect.to_string().into())
        .await
        .expect("send");
    refused(&mut errors, "herald.control.acme").await;

    // A forged kill switch, and an attempt to delete the stream.
    let kv_messages = |js: jetstream::Context| async move {
        match js.get_stream("KV_HERALD_SWITCHES").await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    };
    let kv_before = kv_messages(js.clone()).await;
    forger
        .publish(
            "$KV.HERALD_SWITCHES.switches",
            r#"{"disabled":true,"disabledServices":["finance"]}"#.into(),
        )
        .await
        .expect("send");
    refused(&mut errors, "$KV.HERALD_SWITCHES.switches").await;
    forger
        .publish("$JS.API.STREAM.DELETE.HERALD_EVENTS", "".into())
        .await
        .expect("send");
    refused(&mut errors, "$JS.API.STREAM.DELETE.HERALD_EVENTS").await;

    // Nothing changed: the stream and the switches are as they were, and the
    // client gets the next real event, not the forged one, still connected.
    js.get_stream("HERALD_EVENTS")
        .await
        .expect("the stream still exists");
    assert_eq!(kv_messages(js.clone()).await, kv_before);
    let real = h
        .publish(
            "acme",
            "finance",
            Some("p1"),
            json!({"eventType": "expense.created", "eventId": "real"}),
        )
        .await;
    let got = ws.events(1).await;
    assert_eq!(got[0]["seq"], real, "{got:?}");
    assert_eq!(got[0]["eventId"], "real", "{got:?}");
    let (events, _) = h.collect(0, &token, "services=finance", start, 2).await;
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["eventId"].as_str())
        .collect();
    assert_eq!(ids, ["real"], "{events:?}");
}
