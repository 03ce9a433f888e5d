//! Request guards and node limits, against real processes over real
//! sockets: tokens before bodies, stalled bodies and headers cut off, the
//! HTTP connection cap, per-user caps for polls, the control rate limit,
//! kill switches that survive garbage, a truthful publish 503, the service
//! allow-list, and SIGTERM while NATS is away.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::{eventually, eventually_mut, get_json, post_json, Herald, WsClient};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

/// Generous bound for an answer that should come "at once" on a loaded box.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Opens a raw connection and writes `head` (and nothing else).
async fn raw(h: &Herald, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(h.edges[0].addr())
        .await
        .expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

/// Reads until the response head is complete or the peer closes; `None`
/// when nothing complete came within `wait`. Returns the head text.
async fn read_head(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&got[..end]).into_owned());
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// True when the peer closes the connection within `wait` (reading and
/// discarding whatever comes first).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn post_head(path: &str, token: Option<&str>, content_length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: edge\r\n{auth}Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_not_read_before_the_token_is_checked() {
    let h = Herald::start(EDGE, 1).await;
    let user = h.token("acme");
    let publisher = h.user("acme").role("publisher").build();
    for (path, token, want) in [
        ("/v2/realtime/publish", None, "401"),
        ("/v2/realtime/update-services", None, "401"),
        ("/v2/realtime/disconnect", None, "401"),
        ("/v2/realtime/switches", None, "401"),
        ("/v2/realtime/publish", Some(user.as_str()), "403"),
        ("/v2/realtime/disconnect", Some(user.as_str()), "403"),
        // Authorized, but announced over the cap: refused from the header alone.
        ("/v2/realtime/publish", Some(publisher.as_str()), "413"),
    ] {
        let length = if want == "413" { 10_000_000 } else { 327_000 };
        let method_path = if path.ends_with("switches") {
            post_head(path, token, length).replacen("POST", "PUT", 1)
        } else {
            post_head(path, token, length)
        };
        let mut s = raw(&h, &method_path).await;
        let head = read_head(&mut s, AT_ONCE).await.unwrap_or_else(|| {
            panic!("{path} {token:?}: no answer within {AT_ONCE:?} without a body")
        });
        assert!(
            head.starts_with(&format!("HTTP/1.1 {want}")),
            "{path} {token:?}: {head}"
        );
        assert!(
            closed_within(&mut s, AT_ONCE).await,
            "{path}: the unread body's connection stays open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_off_with_408() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_BODY_TIMEOUT", "1s")]).await;
    let publisher = h.user("acme").role("publisher").build();
    let body = json!({"service": "finance", "eventType": "x", "eventId": "stalled"}).to_string();
    let mut s = raw(
        &h,
        &post_head("/v2/realtime/publish", Some(&publisher), body.len()),
    )
    .await;
    s.write_all(&body.as_bytes()[..10]).await.expect("write");
    let t0 = Instant::now();
    let head = read_head(&mut s, Duration::from_secs(15))
        .await
        .expect("no answer to a stalled body within 15 s");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        closed_within(&mut s, AT_ONCE).await,
        "connection not closed"
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    // Nothing was published.
    let r = h.poll(0, &h.token("acme"), "lastSeq=0&timeout=0").await;
    assert!(r.events().is_empty(), "{}", r.body);
    assert_eq!(
        h.metrics(0).await["guards"]["bodyTimeouts"],
        1,
        "counted in metrics"
    );
}

/// Open file descriptors of process `pid` (Linux).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_beyond_the_cap_are_refused_and_the_node_recovers() {
    const CAP: usize = 16;
    const STALLED: usize = 120;
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("HERALD_MAX_HTTP_CONNECTIONS", "16"),
            ("HERALD_HEADER_TIMEOUT", "6s"),
        ],
    )
    .await;
    let pid = h.edges[0].pid();
    let baseline = open_fds(pid);
    // Slow headers: the blank line that ends them never comes.
    let mut conns = Vec::new();
    for _ in 0..STALLED {
        conns.push(raw(&h, "GET /healthz HTTP/1.1\r\nHost: edge\r\n").await);
    }
    // Those beyond the cap are closed at once (or answered 503 and closed).
    let mut open: Vec<TcpStream> = conns;
    let mut refused = 0;
    eventually_mut(
        Duration::from_secs(10),
        &format!(
            "{} of {STALLED} stalled connections refused or closed (cap {CAP})",
            STALLED - CAP
        ),
        async || {
            let mut still = Vec::new();
            for mut s in open.drain(..) {
                if closed_within(&mut s, Duration::from_millis(20)).await {
                    refused += 1;
                } else {
                    still.push(s);
                }
            }
            open = still;
            if refused >= STALLED - CAP {
                Ok(())
            } else {
                Err(format!("{refused} refused or closed"))
            }
        },
    )
    .await;
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + CAP + 8,
        "node holds {fds} descriptors, {baseline} before the flood"
    );
    // Slow headers are bounded too: the rest are closed by the header timeout.
    for mut s in open {
        assert!(
            closed_within(&mut s, Duration::from_secs(20)).await,
            "a stalled header was never cut off"
        );
    }
    let healthz = format!("{}/healthz", h.edges[0].base_url());
    eventually(
        Duration::from_secs(20),
        "healthz to answer 200 again",
        || async {
            match herald_testkit::http::client()
                .get(&healthz)
                .timeout(AT_ONCE)
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("healthz {}", r.status())),
                Err(e) => Err(format!("healthz: {e}")),
            }
        },
    )
    .await;
    let refusals = h.metrics(0).await["guards"]["httpRefused"]
        .as_u64()
        .unwrap_or(0);
    // Some in-cap slots may have been freed by the header timeout before
    // the accept loop reached the last connections on a slow machine.
    assert!(refusals >= (STALLED - 2 * CAP) as u64, "{refusals}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_10s_while_nats_is_unreachable() {
    let mut h = Herald::start(EDGE, 1).await;
    // Some state that shutdown has to release: an org with a client.
    assert_eq!(h.poll(0, &h.token("acme"), "timeout=0").await.status, 200);
    h.nats.stop();
    let ready = format!("{}/readyz", h.edges[0].base_url());
    eventually(
        Duration::from_secs(20),
        "readyz 503 without NATS",
        || async {
            match get_json(&ready, None).await.0.as_u16() {
                503 => Ok(()),
                other => Err(format!("readyz {other}")),
            }
        },
    )
    .await;
    // Time passing is the point here: the reported hang needed NATS gone
    // for a few seconds (the client's reconnect attempts piling up).
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.edges[0].sigterm();
    let exit = h.edges[0].wait_exit(Duration::from_secs(12)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "edge did not exit within 12 s of SIGTERM: {exit:?}\n{}",
        h.edges[0].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_count_toward_the_per_user_cap() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let token = h.token("acme");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(h.held_poll(0, &token, "timeout=20").await);
    }
    let r = h.poll(0, &token, "timeout=5").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "too_many_connections");
    assert!(r.headers.get("retry-after").is_some());
    // Streams share the cap with polls.
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    assert_eq!(ws.close_code().await, Some(4029));
    // Other users are not affected.
    let other = h.user("acme").sub("u2").build();
    assert_eq!(h.poll(0, &other, "timeout=0").await.status, 200);
    h.publish("acme", "finance", None, json!({"eventType": "wake"}))
        .await;
    for p in held {
        assert_eq!(p.await.expect("poll task").status, 200);
    }
    // The slots are free again.
    assert_eq!(h.poll(0, &token, "timeout=0").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_services_is_rate_limited_per_user() {
    let h = Herald::start_with(
        EDGE,
        1,
        &[("HERALD_CONTROL_RATE", "1"), ("HERALD_CONTROL_BURST", "3")],
    )
    .await;
    let url = format!("{}/v2/realtime/update-services", h.edges[0].base_url());
    let token = h.token("acme");
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                post_json(&url, Some(&token), &json!({"services": ["finance"]})).await
            })
        })
        .collect();
    let mut limited = 0;
    for c in calls {
        let (status, body, headers) = c.await.expect("call task");
        match status.as_u16() {
            202 => {}
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(headers.get("retry-after").is_some());
                limited += 1;
            }
            other => panic!("unexpected {other} {body}"),
        }
    }
    assert!(limited >= 4, "only {limited} of 12 calls were limited");
    // Another user of the same org has their own budget.
    let (status, body, _) = post_json(
        &url,
        Some(&h.user("acme").sub("u2").build()),
        &json!({"services": ["finance"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_switches_value_keeps_the_last_good_one() {
    let h = Herald::start(EDGE, 1).await;
    let admin = h.user("*").role("admin").build();
    let url = format!("{}/v2/realtime/switches", h.edges[0].base_url());
    let put = herald_testkit::http::client()
        .put(&url)
        .bearer_auth(&admin)
        .json(&json!({"disabledServices": ["analytics"]}))
        .send()
        .await
        .expect("PUT switches");
    assert_eq!(put.status(), 200);
    let disabled = |v: &Value| v["disabledServices"] == json!(["analytics"]);
    eventually(Duration::from_secs(10), "the switch applied", || async {
        let (_, now, _) = get_json(&url, Some(&admin)).await;
        if disabled(&now) {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    // Garbage written straight into the bucket, as a broken tool might.
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let kv = js
        .get_key_value("HERALD_SWITCHES")
        .await
        .expect("switches bucket");
    kv.put("switches", "{not json".into())
        .await
        .expect("put garbage");
    // Wait until the node has read it (counted at every read while it stays).
    h.wait_metric_at_least(0, "/guards/switchErrors", 1, Duration::from_secs(10))
        .await;
    let (_, now, _) = get_json(&url, Some(&admin)).await;
    assert!(disabled(&now), "switch lost after a malformed value: {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_503_says_when_a_retry_is_safe() {
    let mut h = Herald::start(EDGE, 1).await;
    let url = format!("{}/v2/realtime/publish", h.edges[0].base_url());
    let publisher = h.user("acme").role("publisher").build();
    h.nats.stop();
    let (status, body, _) = post_json(
        &url,
        Some(&publisher),
        &json!({"service": "finance", "eventType": "x"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("eventId") && message.contains("twice"),
        "the 503 must say a retry without an eventId may store the event twice: {message}"
    );
    // The message names the id this attempt used, so the retry can carry it.
    let id = message
        .split("\"eventId\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no eventId in {message}"));
    h.nats.restart().await;
    let retry = json!({"service": "finance", "eventType": "x", "eventId": id});
    eventually(
        Duration::from_secs(20),
        "the publish retry to succeed",
        || async {
            let (status, body, _) = post_json(&url, Some(&publisher), &retry).await;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_are_refused_when_a_list_is_set() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_SERVICES", "finance,tasks")]).await;
    let base = h.edges[0].base_url();
    let token = h.token("acme");
    let r = h.poll(0, &token, "services=finanse&timeout=0").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "bad_parameter");
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("finanse")));
    assert_eq!(
        h.poll(0, &token, "services=finance,tasks&timeout=0")
            .await
            .status,
        200
    );
    let alias = get_json(
        &format!("{base}/v1/finanse/realtime/subscribe?timeout=0"),
        Some(&token),
    )
    .await;
    assert_eq!(alias.0, 400);
    let sse = get_json(
        &format!("{base}/v2/realtime/sse?services=finanse"),
        Some(&token),
    )
    .await;
    assert_eq!(sse.0, 400, "{}", sse.1);

    let mut ws = WsClient::connect(&base, "", Some(&token), None).await;
    ws.send(json!({"type": "hello", "version": 1, "services": ["finanse"]}))
        .await;
    assert_eq!(ws.close_code().await, Some(4000));

    let update = format!("{base}/v2/realtime/update-services");
    let (status, body, _) =
        post_json(&update, Some(&token), &json!({"services": ["finanse"]})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = post_json(&update, Some(&token), &json!({"services": ["tasks"]})).await;
    assert_eq!(status, 202, "{body}");

    let publish = format!("{base}/v2/realtime/publish");
    let publisher = h.user("acme").role("publisher").build();
    let (status, body, _) = post_json(
        &publish,
        Some(&publisher),
        &json!({"service": "finanse", "eventType": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = post_json(
        &publish,
        Some(&publisher),
        &json!({"service": "finance", "eventType": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
