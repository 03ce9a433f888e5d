//! Trust at the edge (contract section 3): cookie authentication only from
//! allowed origins, JSON-only bodies, tokens in the WebSocket `hello`, no
//! token in any log, publishers held to their claims, optional audience and
//! issuer, and node-wide views only for cluster admins. Every test runs real
//! nats-server and edge processes over real sockets.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{get_json, post_json, Herald, Received, SseClient, WsClient};
use serde_json::{json, Value};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";
/// Generous: the box running the tests may be loaded.
const WAIT: Duration = Duration::from_secs(15);

/// A request with exactly these headers (no bearer unless given).
async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = herald_testkit::http::client().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The first thing a stream sends after `hello`: a frame type or a close code.
async fn first_answer(ws: &mut WsClient, hello: Value) -> String {
    ws.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        hello.to_string().into(),
    ))
    .await;
    match ws.recv(WAIT).await {
        Received::Frame(f) => f["type"].as_str().unwrap_or("?").to_owned(),
        Received::Close(code, _) => format!("close {}", code.unwrap_or(0)),
        other => format!("{other:?}"),
    }
}

fn hello() -> Value {
    json!({"type": "hello", "version": 1, "services": ["finance"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_auth_needs_an_allowed_origin() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_CORS_ORIGINS", APP)]).await;
    let base = h.edges[0].base_url();
    let cookie = format!("herald_token={}", h.token("acme"));
    let cookie = cookie.as_str();

    // WebSocket upgrades: cross-site hijacking is refused with 4003.
    for (origin, want) in [
        (Some(EVIL), "close 4003"),
        (None, "close 4003"),
        (Some("null"), "close 4003"),
        (Some(APP), "ack"),
    ] {
        let mut headers = vec![("Cookie", cookie)];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let mut ws = WsClient::connect_with_headers(&base, "", &headers).await;
        assert_eq!(first_answer(&mut ws, hello()).await, want, "{origin:?}");
    }
    // A bearer header is not sent by browsers on their own: Origin does not matter.
    let bearer = format!("Bearer {}", h.token("acme"));
    let mut ws = WsClient::connect_with_headers(
        &base,
        "",
        &[
            ("Authorization", &bearer),
            ("Origin", EVIL),
            ("Cookie", cookie),
        ],
    )
    .await;
    assert_eq!(first_answer(&mut ws, hello()).await, "ack");

    // Reads: a foreign Origin is refused, none (same-origin GET) is fine.
    let poll = format!("{base}/v1/realtime/poll?timeout=0");
    let sse = format!("{base}/v2/realtime/sse?services=finance");
    for url in [&poll, &sse] {
        let (status, body) = send(
            reqwest::Method::GET,
            url,
            &[("Cookie", cookie), ("Origin", EVIL)],
            None,
        )
        .await;
        assert_eq!(status, 403, "{url}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = send(reqwest::Method::GET, &poll, &[("Cookie", cookie)], None).await;
    assert_eq!(status, 200);
    let (status, _) = send(
        reqwest::Method::GET,
        &poll,
        &[("Cookie", cookie), ("Origin", APP)],
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Writes: cookie POSTs need an allowed Origin.
    let update = format!("{base}/v2/realtime/update-services");
    let body = r#"{"services":["finance"]}"#;
    let json_ct = ("Content-Type", "application/json");
    for (origin, want) in [(Some(EVIL), 403), (None, 403), (Some(APP), 202)] {
        let mut headers = vec![("Cookie", cookie), json_ct];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let (status, resp) = send(reqwest::Method::POST, &update, &headers, Some(body)).await;
        assert_eq!(status, want, "{origin:?}: {resp}");
    }
    let publisher = format!("herald_token={}", h.user("acme").role("publisher").build());
    let (status, _) = send(
        reqwest::Method::POST,
        &format!("{base}/v2/realtime/publish"),
        &[("Cookie", &publisher), ("Origin", EVIL), json_ct],
        Some(r#"{"service":"finance","eventType":"x"}"#),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_refuse_other_content_types() {
    let h = Herald::start(EDGE, 1).await;
    let base = h.edges[0].base_url();
    let publisher = format!("Bearer {}", h.user("acme").role("publisher").build());
    let user = format!("Bearer {}", h.token("acme"));
    let admin = format!("Bearer {}", h.user("acme").role("admin").build());
    let root = format!("Bearer {}", h.user("*").role("admin").build());
    let cases = [
        (
            reqwest::Method::POST,
            "/v2/realtime/publish",
            &publisher,
            r#"{"service":"finance","eventType":"x"}"#,
            200,
        ),
        (
            reqwest::Method::POST,
            "/v2/realtime/update-services",
            &user,
            r#"{"services":["finance"]}"#,
            202,
        ),
        (
            reqwest::Method::POST,
            "/v2/realtime/disconnect",
            &admin,
            r#"{"userId":"u9"}"#,
            202,
        ),
        (
            reqwest::Method::PUT,
            "/v2/realtime/switches",
            &root,
            r#"{}"#,
            200,
        ),
    ];
    // Accepted: publish answers 200 with its ack, the switches their state;
    // update-services and disconnect 202 (applied across nodes).
    for (method, path, auth, body, accepted) in &cases {
        let url = format!("{base}{path}");
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut headers = vec![("Authorization", auth.as_str())];
            if let Some(ct) = ct {
                headers.push(("Content-Type", ct));
            }
            let (status, resp) = send(method.clone(), &url, &headers, Some(body)).await;
            assert_eq!(status, 415, "{path} {ct:?}: {resp}");
            assert_eq!(resp["error"]["code"], "unsupported_media_type", "{path}");
        }
        let (status, resp) = send(
            method.clone(),
            &url,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            Some(body),
        )
        .await;
        assert_eq!(status, *accepted, "{path}: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_carries_the_token_when_the_upgrade_has_none() {
    let h = Herald::start(EDGE, 1).await;
    let base = h.edges[0].base_url();
    let with_token = |token: Value| {
        let mut m = hello();
        m["token"] = token;
        m
    };

    let mut ws = WsClient::connect_with_headers(&base, "", &[]).await;
    assert_eq!(
        first_answer(&mut ws, with_token(json!(h.token("acme")))).await,
        "ack"
    );
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    assert_eq!(ws.events(1).await[0]["seq"], seq);

    // No token anywhere, a bad one or an expired one: 4001 at hello.
    let expired = h
        .user("acme")
        .exp(herald_testkit::token::now_secs() - 600)
        .build();
    for hello in [
        hello(),
        with_token(json!("")),
        with_token(json!("not-a-jwt")),
        with_token(json!(expired)),
    ] {
        let mut ws = WsClient::connect_with_headers(&base, "", &[]).await;
        assert_eq!(
            first_answer(&mut ws, hello.clone()).await,
            "close 4001",
            "{hello}"
        );
    }
    // A cross-org token cannot subscribe; claims are enforced as with a header.
    let mut ws = WsClient::connect_with_headers(&base, "", &[]).await;
    assert_eq!(
        first_answer(&mut ws, with_token(json!(h.token("*")))).await,
        "close 4003"
    );
    let limited = h.user("acme").svcs(&["tasks"]).build();
    let mut ws = WsClient::connect_with_headers(&base, "", &[]).await;
    assert_eq!(
        first_answer(&mut ws, with_token(json!(limited))).await,
        "close 4003"
    );
    // The upgrade's token wins: a hello token cannot switch users.
    let mut ws = WsClient::connect(&base, "", Some(&h.token("acme")), None).await;
    assert_eq!(
        first_answer(&mut ws, with_token(json!("not-a-jwt"))).await,
        "ack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    let h = Herald::start_with(EDGE, 1, &[("RUST_LOG", "trace")]).await;
    let base = h.edges[0].base_url();
    let marker = "SECRETMARKER";
    let (status, _) = send(
        reqwest::Method::GET,
        &format!("{base}/v1/realtime/poll?timeout=0&token={marker}1"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(
        reqwest::Method::GET,
        &format!("{base}/v2/realtime/sse?services=finance&token={marker}2"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let query_token = h.user("acme").sub(&format!("{marker}3")).build();
    let (status, sse) = SseClient::connect(
        &format!("{base}/v2/realtime/sse?services=finance&token={query_token}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let _ = sse.expect("sse stream").next(WAIT).await;

    // Stream: a query token and a renewal in an `auth` frame.
    let mut ws = WsClient::connect_with_headers(&base, &format!("?token={query_token}"), &[]).await;
    ws.hello(&["finance"], None, None, None).await;
    let renewed = h
        .user("acme")
        .sub(&format!("{marker}3"))
        .claim("jti", json!(format!("{marker}4")))
        .build();
    ws.send(json!({"type": "auth", "token": renewed})).await;
    // Any later answer proves the auth frame was read.
    ws.send(json!({"type": "update", "services": ["tasks"]}))
        .await;
    assert_eq!(ws.frame().await["type"], "updated");
    let mut ws3 = WsClient::connect_with_headers(&base, &format!("?token={marker}6"), &[]).await;
    assert_eq!(first_answer(&mut ws3, hello()).await, "close 4001");
    assert_no_leak(&h.edges[0].log(), &[marker, &query_token, &renewed]);

    // A token sent in hello.
    let hello_token = h.user("acme").sub(&format!("{marker}5")).build();
    let mut ws2 = WsClient::connect_with_headers(&base, "", &[]).await;
    let mut m = hello();
    m["token"] = json!(hello_token);
    assert_eq!(first_answer(&mut ws2, m).await, "ack");
    ws.close().await;
    ws2.close().await;
    assert_no_leak(&h.edges[0].log(), &[marker, &hello_token]);
}

fn assert_no_leak(log: &str, secrets: &[&str]) {
    assert!(log.lines().count() > 20, "trace logging is on:\n{log}");
    for secret in secrets {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "a token reached the log: {leaks:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_stay_within_their_services_and_properties() {
    let h = Herald::start(EDGE, 1).await;
    let url = format!("{}/v2/realtime/publish", h.edges[0].base_url());
    let publisher = h
        .user("acme")
        .role("publisher")
        .svcs(&["finance"])
        .props(&["p1"])
        .build();
    let before = h.poll(0, &h.token("acme"), "timeout=0").await.last_seq();
    for (event, want) in [
        (
            json!({"service": "tasks", "propertyId": "p1", "eventType": "x"}),
            403,
        ),
        (
            json!({"service": "finance", "propertyId": "p2", "eventType": "x"}),
            403,
        ),
        (json!({"service": "finance", "eventType": "x"}), 403),
        (
            json!({"service": "finance", "propertyId": "p1", "eventType": "x"}),
            200,
        ),
    ] {
        let (status, body, _) = post_json(&url, Some(&publisher), &event).await;
        assert_eq!(status, want, "{event}: {body}");
        if want == 403 {
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    // Only the allowed event was stored.
    let r = h
        .poll(0, &h.token("acme"), &format!("lastSeq={before}&timeout=2"))
        .await;
    let events = r.events();
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["service"], "finance");
    assert_eq!(events[0]["propertyId"], "p1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_and_issuer_are_required_when_configured() {
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("HERALD_JWT_AUDIENCE", "herald"),
            ("HERALD_JWT_ISSUER", "https://auth.example"),
        ],
    )
    .await;
    let good = || {
        h.user("acme")
            .claim("aud", json!("herald"))
            .claim("iss", json!("https://auth.example"))
    };
    for (name, token) in [
        ("no aud", good().without("aud").build()),
        ("no iss", good().without("iss").build()),
        ("wrong aud", good().claim("aud", json!("other")).build()),
        (
            "wrong iss",
            good().claim("iss", json!("https://evil.example")).build(),
        ),
    ] {
        let r = h.poll(0, &token, "timeout=0").await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "unauthorized", "{name}");
        let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
        assert_eq!(first_answer(&mut ws, hello()).await, "close 4001", "{name}");
    }
    assert_eq!(h.poll(0, &good().build(), "timeout=0").await.status, 200);
    let listed = good().claim("aud", json!(["other", "herald"])).build();
    assert_eq!(h.poll(0, &listed, "timeout=0").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_wide_views_are_for_cluster_admins_only() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_METRICS_PUBLIC", "false")]).await;
    let base = h.edges[0].base_url();
    let org_admin = h.user("acme").sub("boss").role("admin").build();
    let root = h.user("*").sub("root").role("admin").build();

    // Some load: two acme streams (WebSocket and SSE), one of globex.
    let mut acme_ws = WsClient::connect(&base, "", Some(&h.token("acme")), None).await;
    acme_ws.hello(&["finance"], None, None, None).await;
    let (status, acme_sse) = SseClient::connect(
        &format!("{base}/v2/realtime/sse?services=finance"),
        Some(&h.user("acme").sub("u2").build()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut acme_sse = acme_sse.expect("sse stream");
    let _ = acme_sse.next(WAIT).await;
    let mut globex_ws = WsClient::connect(&base, "", Some(&h.token("globex")), None).await;
    globex_ws.hello(&["finance"], None, None, None).await;

    let metrics = format!("{base}/v2/realtime/metrics");
    let (status, full, _) = get_json(&metrics, Some(&root)).await;
    assert_eq!(status, 200);
    assert!(full["events"].is_object(), "{full}");
    assert_eq!(full["connections"]["websocket"], 2, "{full}");

    let (status, mine, _) = get_json(&metrics, Some(&org_admin)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["orgId"], "acme", "{mine}");
    assert_eq!(mine["connections"]["websocket"], 1, "{mine}");
    assert_eq!(mine["connections"]["sse"], 1, "{mine}");
    for node_wide in ["events", "orgs", "latencyMs", "quarantined"] {
        assert!(
            mine.get(node_wide).is_none(),
            "org view leaks {node_wide}: {mine}"
        );
    }
    let (status, _, _) = get_json(&format!("{base}/metrics"), Some(&org_admin)).await;
    assert_eq!(status, 403);
    let (status, _, _) = get_json(&format!("{base}/metrics"), Some(&root)).await;
    assert_eq!(status, 200);
    let (status, _, _) = get_json(&metrics, Some(&h.token("acme"))).await;
    assert_eq!(status, 403);

    // Switches are node-wide: cluster admins only.
    let switches = format!("{base}/v2/realtime/switches");
    let (status, _, _) = get_json(&switches, Some(&org_admin)).await;
    assert_eq!(status, 403);
    let (status, _, _) = get_json(&switches, Some(&root)).await;
    assert_eq!(status, 200);

    // Disconnect: an org admin reaches its own org only.
    let disconnect = format!("{base}/v2/realtime/disconnect");
    let (status, _, _) =
        post_json(&disconnect, Some(&org_admin), &json!({"orgId": "globex"})).await;
    assert_eq!(status, 403);
    let (status, _, _) = post_json(&disconnect, Some(&org_admin), &json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(acme_ws.close_code().await, Some(4001));
    assert!(matches!(
        globex_ws.recv(Duration::from_secs(1)).await,
        Received::Timeout
    ));

    // HERALD_METRICS_PUBLIC=true keeps the open behaviour.
    let open = Herald::start_with(EDGE, 1, &[("HERALD_METRICS_PUBLIC", "true")]).await;
    let (status, m, _) = get_json(
        &format!("{}/v2/realtime/metrics", open.edges[0].base_url()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(m["events"].is_object());
}
