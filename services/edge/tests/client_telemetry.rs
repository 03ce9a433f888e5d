//! `POST /v2/telemetry/client` against a real edge: accepted reports are
//! counted in both metrics documents, refused ones count nothing, a token
//! is required (header or, for beacons, the body) and each user has a
//! budget.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use herald_testkit::{post_json, Herald};
use reqwest::StatusCode;
use serde_json::{json, Value};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

fn url(h: &Herald) -> String {
    format!("{}/v2/telemetry/client", h.edges[0].base_url())
}

/// The node's client counters, as the JSON metrics show them.
async fn client_metrics(h: &Herald) -> Value {
    h.metrics(0).await["client"].clone()
}

/// Posts `body` as-is with `content_type` and an optional bearer token.
async fn post_raw(
    url: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_a_report_in_json_and_prometheus() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let report = json!({"events": [
        {"name": "leader_acquired", "value": 1},
        {"name": "reconnect", "value": 1, "attrs": {"transport": "sse", "tab": "x"}},
        {"name": "reconnect", "value": 1, "attrs": {"transport": "pigeon"}},
        {"name": "delivery_latency_ms", "value": 250},
        {"name": "fast_empty", "value": 180, "attrs": {"transport": "longpoll"}},
    ]});
    let (status, body, _) = post_json(&url(&h), Some(&token), &report).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 5);

    let c = client_metrics(&h).await;
    assert_eq!(c["events"]["leader_acquired"], 1, "{c}");
    assert_eq!(c["events"]["reconnect"], 2, "{c}");
    assert_eq!(c["events"]["fast_empty"], 1, "{c}");
    assert_eq!(c["events"]["leader_takeover"], 0, "{c}");
    assert_eq!(c["reconnects"]["sse"], 1, "{c}");
    assert_eq!(c["reconnects"]["other"], 1, "{c}");
    assert_eq!(c["deliveryLatencyMs"]["count"], 1, "{c}");

    let prom = reqwest::get(format!("{}/metrics", h.edges[0].base_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let node = h.edges[0].node_id();
    assert!(
        prom.contains(&format!(
            "herald_client_events_total{{node=\"{node}\",name=\"reconnect\"}} 2"
        )),
        "{prom}"
    );
    assert!(prom.contains(&format!(
        "herald_client_reconnects_total{{node=\"{node}\",transport=\"sse\"}} 1"
    )));
    assert!(prom.contains(&format!(
        "herald_client_delivery_latency_seconds_count{{node=\"{node}\"}} 1"
    )));
    assert!(prom.contains(&format!(
        "herald_client_delivery_latency_seconds_bucket{{node=\"{node}\",le=\"0.3\"}} 1"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beacon_carries_its_token_in_the_body() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let report = json!({"token": token, "events": [{"name": "leader_takeover", "value": 1}]});
    let (status, body, _) = post_json(&url(&h), None, &report).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(client_metrics(&h).await["events"]["leader_takeover"], 1);

    // A forged body token is refused like a forged header.
    let forged = json!({"token": "not-a-jwt", "events": [{"name": "reconnect", "value": 1}]});
    let (status, body, _) = post_json(&url(&h), None, &forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(client_metrics(&h).await["events"]["reconnect"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_without_a_token() {
    let h = Herald::start(EDGE, 1).await;
    let report = json!({"events": [{"name": "reconnect", "value": 1}]});
    let (status, body, _) = post_json(&url(&h), None, &report).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _, _) = post_json(&url(&h), Some("garbage"), &report).await;
    assert_eq!(status, 401);
    assert_eq!(client_metrics(&h).await["events"]["reconnect"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_count_nothing() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let before = client_metrics(&h).await;
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"name": "reconnect", "value": 1}))
        .collect();
    for (report, why) in [
        (json!({"events": []}), "empty"),
        (
            json!({"events": [{"name": "reconnect", "value": 1}, {"name": "made_up", "value": 1}]}),
            "unknown name after a good one",
        ),
        (
            json!({"events": [{"name": "reconnect", "value": 1}, {"name": "delivery_latency_ms", "value": -5}]}),
            "negative value",
        ),
        (
            json!({"events": [{"name": "reconnect", "value": "1"}]}),
            "value not a number",
        ),
        (json!({"events": many}), "too many events"),
        (json!({"events": [{"name": "reconnect"}]}), "no value"),
        (json!({"event": []}), "no events"),
    ] {
        let (status, body, _) = post_json(&url(&h), Some(&token), &report).await;
        assert_eq!(status, 400, "{why}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{why}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{why}: {body}"
        );
    }
    let (status, _) = post_raw(&url(&h), Some(&token), "application/json", "{".into()).await;
    assert_eq!(status, 400, "not JSON");
    let (status, _) = post_raw(
        &url(&h),
        Some(&token),
        "text/plain",
        json!({"events": [{"name": "reconnect", "value": 1}]}).to_string(),
    )
    .await;
    assert_eq!(status, 415, "not declared JSON");
    let padding = "x".repeat(17 * 1024);
    let big = json!({"events": [{"name": "reconnect", "value": 1, "attrs": {"p": padding}}]});
    let (status, _) = post_raw(&url(&h), Some(&token), "application/json", big.to_string()).await;
    assert_eq!(status, 413, "over 16 KiB");
    assert_eq!(client_metrics(&h).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_has_a_budget() {
    let h = Herald::start(EDGE, 1).await;
    let token = h.token("acme");
    let report = json!({"events": [{"name": "fast_empty", "value": 1}]});
    let mut accepted = 0;
    let mut limited = None;
    // The budget is a burst of 10 refilled at one a second: 14 quick calls
    // must run into it.
    for _ in 0..14 {
        let (status, body, headers) = post_json(&url(&h), Some(&token), &report).await;
        match status.as_u16() {
            202 => accepted += 1,
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                limited = Some(headers);
            }
            other => panic!("unexpected {other} {body}"),
        }
    }
    let headers = limited.expect("some calls were limited");
    assert!(headers.get("retry-after").is_some());
    let c = client_metrics(&h).await;
    assert_eq!(
        c["events"]["fast_empty"], accepted,
        "refused calls count nothing"
    );
    // Another user of the org has a budget of their own.
    let other = h.user("acme").sub("u2").build();
    let (status, body, _) = post_json(&url(&h), Some(&other), &report).await;
    assert_eq!(status, 202, "{body}");
}
