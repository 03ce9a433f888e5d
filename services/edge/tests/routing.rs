//! Org-affine routing (protocol sections 4–6): poll, SSE and the WebSocket
//! stream take `org=<org>` in the query so that a load balancer can hash on
//! it. The token's own org is served as if the parameter were absent;
//! another org is 403 (close 4003 on the stream, at the upgrade when the
//! request carried the token, after `hello` when `hello` did); a malformed
//! org is 400 (close 4000). Every test runs real nats-server and edge
//! processes over real sockets.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{get_json, seqs_of, Herald, Received, SseClient, WsClient};
use serde_json::{json, Value};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// Generous: the box running the tests may be loaded.
const WAIT: Duration = Duration::from_secs(15);

fn sse_url(h: &Herald, query: &str) -> String {
    format!("{}/v2/realtime/sse?{query}", h.edges[0].base_url())
}

fn hello(token: Option<&str>) -> Value {
    let mut m = json!({"type": "hello", "version": 1, "services": ["finance"]});
    if let Some(t) = token {
        m["token"] = json!(t);
    }
    m
}

/// The first thing a stream opened with `query` (and `bearer` on the
/// upgrade) sends, after `hello` when one is given: a frame type or a close
/// code. A refusal at the upgrade closes without waiting for `hello`.
async fn first_answer(
    h: &Herald,
    query: &str,
    bearer: Option<&str>,
    hello: Option<Value>,
) -> String {
    let mut ws = WsClient::connect(&h.edges[0].base_url(), query, bearer, None).await;
    if let Some(m) = hello {
        // The refusal may already be on its way: a failed send shows below.
        let _ = ws
            .send_raw(tokio_tungstenite::tungstenite::Message::Text(
                m.to_string().into(),
            ))
            .await;
    }
    match ws.recv(WAIT).await {
        Received::Frame(f) => f["type"].as_str().unwrap_or("?").to_owned(),
        Received::Close(code, _) => format!("close {}", code.unwrap_or(0)),
        other => format!("{other:?}"),
    }
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, case: &str) {
    assert_eq!(status, want_status, "{case}: {body}");
    assert_eq!(body["error"]["code"], want_code, "{case}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_own_org_is_served_on_every_transport_as_without_it() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let base = h.edges[0].base_url();
    for org in ["org=acme&", ""] {
        let start = h
            .poll(0, &token, &format!("{org}services=finance&timeout=0"))
            .await;
        assert_eq!(start.status, 200, "{org}: {}", start.body);
        let (status, sse) = SseClient::connect(
            &sse_url(&h, &format!("{org}services=finance")),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{org}");
        let mut sse = sse.unwrap();
        assert_eq!(sse.message().await.event.as_deref(), Some("ack"), "{org}");
        // The browser's way: token in the query, as EventSource cannot set headers.
        let (status, sse_query) = SseClient::connect(
            &sse_url(&h, &format!("{org}services=finance&token={token}")),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{org}");
        let mut sse_query = sse_query.unwrap();
        assert_eq!(sse_query.message().await.event.as_deref(), Some("ack"));

        let query = format!("?{}", org.trim_end_matches('&'));
        let mut by_header = WsClient::connect(&base, &query, Some(&token), None).await;
        by_header.hello(&["finance"], None, None, None).await;
        // The browser SDK's way: the token in hello, org in the URL.
        let mut by_hello = WsClient::connect(&base, &query, None, None).await;
        by_hello.send(hello(Some(&token))).await;
        assert_eq!(by_hello.frame().await["type"], "ack", "{org}");

        // A held poll with the parameter is woken by the event like any other.
        let held = h
            .held_poll(
                0,
                &token,
                &format!(
                    "{org}services=finance&lastSeq={}&timeout=30",
                    start.last_seq()
                ),
            )
            .await;
        let seq = h
            .publish("acme", "finance", Some("p1"), json!({"eventType": "x"}))
            .await;
        let polled = held.await.unwrap();
        assert_eq!(polled.status, 200, "{org}: {}", polled.body);
        assert_eq!(polled.seqs(), vec![seq], "{org}");
        assert_eq!(seqs_of(&sse.events(1).await), vec![seq], "{org}");
        assert_eq!(seqs_of(&sse_query.events(1).await), vec![seq], "{org}");
        assert_eq!(seqs_of(&by_header.events(1).await), vec![seq], "{org}");
        assert_eq!(seqs_of(&by_hello.events(1).await), vec![seq], "{org}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_org_is_403_on_every_transport() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    // Org ids are case-sensitive, as in subjects.
    for other in ["globex", "ACME"] {
        let r = h.poll(0, &token, &format!("org={other}&timeout=0")).await;
        assert_error(r.status.as_u16(), &r.body, 403, "forbidden", other);
        let (status, body, _) = get_json(
            &sse_url(&h, &format!("org={other}&services=finance")),
            Some(&token),
        )
        .await;
        assert_error(status.as_u16(), &body, 403, "forbidden", other);
        let (status, body, _) = get_json(
            &sse_url(&h, &format!("org={other}&services=finance&token={token}")),
            None,
        )
        .await;
        assert_error(status.as_u16(), &body, 403, "forbidden", other);

        // The stream refuses after the upgrade, so that browsers see the
        // code: at once when the upgrade carried the token (header or query)...
        let query = format!("?org={other}");
        assert_eq!(
            first_answer(&h, &query, Some(&token), None).await,
            "close 4003"
        );
        assert_eq!(
            first_answer(&h, &format!("{query}&token={token}"), None, None).await,
            "close 4003"
        );
        // ... and after hello when hello carried it.
        assert_eq!(
            first_answer(&h, &query, None, Some(hello(Some(&token)))).await,
            "close 4003"
        );
    }
    // A token of the other org is served there: the check is the token's
    // org, not a list of orgs this node takes.
    let globex = h.token("globex");
    assert_eq!(h.poll(0, &globex, "org=globex&timeout=0").await.status, 200);

    // A cross-org token (org "*") cannot subscribe at all: 403 with or
    // without an org, the same refusal as before the parameter existed.
    let cross = h.user("*").role("admin").build();
    for q in ["org=acme&", ""] {
        let r = h.poll(0, &cross, &format!("{q}timeout=0")).await;
        assert_error(r.status.as_u16(), &r.body, 403, "forbidden", q);
        let (status, body, _) =
            get_json(&sse_url(&h, &format!("{q}services=finance")), Some(&cross)).await;
        assert_error(status.as_u16(), &body, 403, "forbidden", q);
        let query = format!("?{}", q.trim_end_matches('&'));
        assert_eq!(
            first_answer(&h, &query, Some(&cross), None).await,
            "close 4003"
        );
        assert_eq!(
            first_answer(&h, &query, None, Some(hello(Some(&cross)))).await,
            "close 4003"
        );
    }

    // Nothing refused holds a connection slot.
    let m = h.metrics(0).await;
    assert_eq!(m["connections"]["websocket"], 0, "{m}");
    assert_eq!(m["connections"]["sse"], 0, "{m}");
    assert_eq!(h.poll(0, &token, "org=acme&timeout=0").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_org_is_400_on_every_transport() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let long = format!("org={}", "o".repeat(65));
    for q in [
        "org=ac.me",
        "org=%2A",
        "org=ac%20me",
        "org=acm%C3%A9",
        "org=acme&org=globex",
        long.as_str(),
    ] {
        let r = h.poll(0, &token, &format!("{q}&timeout=0")).await;
        assert_error(r.status.as_u16(), &r.body, 400, "bad_parameter", q);
        // A parameter is read before the token, as a bad lastSeq is.
        let (status, body, _) = get_json(
            &format!("{}/v1/realtime/poll?{q}", h.edges[0].base_url()),
            None,
        )
        .await;
        assert_error(status.as_u16(), &body, 400, "bad_parameter", q);
        let (status, body, _) =
            get_json(&sse_url(&h, &format!("{q}&services=finance")), Some(&token)).await;
        assert_error(status.as_u16(), &body, 400, "bad_parameter", q);
        // The stream closes with 4000 (bad handshake) at once, whether a
        // token came with the upgrade or would have come in hello.
        let query = format!("?{q}");
        assert_eq!(
            first_answer(&h, &query, Some(&token), None).await,
            "close 4000",
            "{q}"
        );
        assert_eq!(
            first_answer(&h, &query, None, None).await,
            "close 4000",
            "{q}"
        );
    }
    // An empty org counts as absent, as every empty parameter does.
    assert_eq!(h.poll(0, &token, "org=&timeout=0").await.status, 200);
    assert_eq!(
        first_answer(&h, "?org=", None, Some(hello(Some(&token)))).await,
        "ack"
    );
}
