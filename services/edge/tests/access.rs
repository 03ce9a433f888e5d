//! Authentication, authorisation and parameter checks: every refusal is a
//! JSON error with the right status, and nothing leaks across orgs,
//! properties or services. The node runs inside the test process
//! (`herald_edge::run` on a loopback listener) against a real nats-server:
//! these tests look only at its HTTP and WebSocket answers.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use herald_testkit::token::now_secs;
use herald_testkit::{
    get_json, hs256_with, post_json, seqs_of, unsigned_alg_none, Herald, InProcessEdge,
    TokenBuilder,
};
use serde_json::{json, Value};

/// NATS and one in-process node with the fixture's settings and `env`.
async fn start(env: &[(&str, &str)]) -> Herald<InProcessEdge> {
    Herald::start_in_process(1, env, herald_edge::run).await
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_401_with_a_json_error() {
    let h = start(&[]).await;
    let url = format!("{}/v1/realtime/poll?timeout=0", h.edges[0].base_url());
    let client = herald_testkit::http::client();
    let claims = |extra: Value| {
        let mut c = json!({"sub": "u1", "org": "acme", "exp": now_secs() + 3600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("not bearer", Some("Basic dTpw".into())),
        ("garbage", Some("Bearer not-a-jwt".into())),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs256_with(
                    herald_testkit::SECRET,
                    claims(json!({"exp": now_secs() - 120}))
                )
            )),
        ),
        (
            "wrong key",
            Some(format!(
                "Bearer {}",
                TokenBuilder::new("another-secret-entirely-123")
                    .sub("u1")
                    .org("acme")
                    .build()
            )),
        ),
        (
            "missing org",
            Some(format!("Bearer {}", h.user("acme").without("org").build())),
        ),
        (
            "missing sub",
            Some(format!("Bearer {}", h.user("acme").without("sub").build())),
        ),
        (
            "missing exp",
            Some(format!("Bearer {}", h.user("acme").without("exp").build())),
        ),
        (
            "alg none",
            Some(format!("Bearer {}", unsigned_alg_none(claims(json!({}))))),
        ),
        (
            "bad org id",
            Some(format!("Bearer {}", h.user("ac.me").build())),
        ),
    ];
    for (name, header) in cases {
        let mut req = client.get(&url);
        if let Some(v) = &header {
            req = req.header("Authorization", v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
    }
    // A token within the 30 s leeway is still accepted.
    let leeway = hs256_with(
        herald_testkit::SECRET,
        claims(json!({"exp": now_secs() - 5})),
    );
    assert_eq!(h.poll(0, &leeway, "timeout=0").await.status, 200);
    // And the node is still fine.
    assert_eq!(h.poll(0, &h.token("acme"), "timeout=0").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400() {
    let h = start(&[]).await;
    let token = h.token("acme");
    for q in [
        "lastSeq=abc",
        "lastSeq=-3",
        "timeout=99",
        "timeout=soon",
        "services=fin%20ance",
        "services=",
        "propertyId=a.b",
        &format!("propertyId={}", "p".repeat(65)),
    ] {
        let r = h.poll(0, &token, q).await;
        assert_error(r.status.as_u16(), &r.body, 400, "bad_parameter");
    }
    let (status, body, _) =
        get_json(&format!("{}/v1/nope", h.edges[0].base_url()), Some(&token)).await;
    assert_error(status.as_u16(), &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_and_service_claims_are_enforced() {
    let h = start(&[]).await;
    let limited = h
        .user("acme")
        .props(&["p1"])
        .svcs(&["finance", "guest"])
        .build();
    for q in ["propertyId=p2", "services=tasks", "services=finance,tasks"] {
        let r = h.poll(0, &limited, q).await;
        assert_error(r.status.as_u16(), &r.body, 403, "forbidden");
    }
    let start = h.poll(0, &limited, "timeout=0").await.last_seq();
    let p1 = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "x"}))
        .await;
    let _p2 = h
        .publish("acme", "finance", Some("p2"), json!({"eventType": "x"}))
        .await;
    let wide = h
        .publish("acme", "guest", None, json!({"eventType": "x"}))
        .await;
    let _tasks = h
        .publish("acme", "tasks", Some("p1"), json!({"eventType": "x"}))
        .await;
    let _other_org = h
        .publish("evil", "finance", Some("p1"), json!({"eventType": "x"}))
        .await;
    let last = h
        .publish("acme", "guest", Some("p1"), json!({"eventType": "x"}))
        .await;

    // No filter: everything the token allows, org-wide events included.
    let (events, _) = h
        .collect(0, &limited, "services=finance,guest", start, 3)
        .await;
    assert_eq!(seqs_of(&events), vec![p1, wide, last]);
    // Asking for one allowed service and property.
    let (events, _) = h
        .collect(0, &limited, "services=finance&propertyId=p1", start, 1)
        .await;
    assert_eq!(seqs_of(&events), vec![p1]);
    // An unrestricted user of the org asking for property p1 gets p1 and org-wide events of every service.
    let all = h.token("acme");
    let (events, _) = h.collect(0, &all, "propertyId=p1", start, 4).await;
    assert_eq!(
        events.len(),
        4,
        "p1 finance, org-wide guest, p1 tasks, p1 guest: {events:?}"
    );
    assert!(events.iter().all(|e| e["orgId"] == "acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_endpoint_needs_the_publisher_role_and_dedups() {
    let h = start(&[]).await;
    let url = format!("{}/v2/realtime/publish", h.edges[0].base_url());
    let event = json!({"service": "finance", "propertyId": "p1", "eventType": "expense.created", "eventId": "e-1", "payload": {"amount": 3}});
    let (status, body, _) = post_json(&url, Some(&h.token("acme")), &event).await;
    assert_error(status.as_u16(), &body, 403, "forbidden");
    let (status, body, _) = post_json(&url, None, &event).await;
    assert_error(status.as_u16(), &body, 401, "unauthorized");

    let publisher = h.user("acme").role("publisher").build();
    let start = h.poll(0, &h.token("acme"), "timeout=0").await.last_seq();
    let (status, first, _) = post_json(&url, Some(&publisher), &event).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    let (_, again, _) = post_json(&url, Some(&publisher), &event).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], first["seq"]);
    let r = h
        .poll(0, &h.token("acme"), &format!("lastSeq={start}&timeout=5"))
        .await;
    assert_eq!(r.seqs(), vec![first["seq"].as_u64().unwrap()]);
    assert_eq!(r.events()[0]["payload"], json!({"amount": 3}));

    for (bad, code) in [
        (
            json!({"service": "finance", "eventType": ""}),
            "bad_parameter",
        ),
        (
            json!({"service": "fin.ance", "eventType": "x"}),
            "bad_parameter",
        ),
        (json!({"eventType": "x"}), "bad_parameter"),
        (
            json!({"service": "finance", "eventType": "x", "orgId": "other"}),
            "forbidden",
        ),
    ] {
        let (status, body, _) = post_json(&url, Some(&publisher), &bad).await;
        assert_eq!(body["error"]["code"], code, "{bad} -> {status} {body}");
    }
    let raw = herald_testkit::http::client()
        .post(&url)
        .header("Authorization", format!("Bearer {publisher}"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    // A cross-org publisher names the org in the body.
    let cross = h.user("*").role("publisher").build();
    let (status, body, _) = post_json(
        &url,
        Some(&cross),
        &json!({"service": "tasks", "eventType": "x", "orgId": "globex"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_an_admin_unless_public() {
    let h = start(&[("HERALD_METRICS_PUBLIC", "false")]).await;
    let base = h.edges[0].base_url();
    for path in ["/v2/realtime/metrics", "/metrics"] {
        let (status, _, _) = get_json(&format!("{base}{path}"), None).await;
        assert_eq!(status, 401, "{path}");
        let (status, _, _) = get_json(&format!("{base}{path}"), Some(&h.token("acme"))).await;
        assert_eq!(status, 403, "{path}");
    }
    // Node-wide figures are for cluster admins (org '*'); an org's admin
    // gets its org's view (tests/authz.rs).
    let admin = h.user("*").role("admin").build();
    let (status, m, _) = get_json(&format!("{base}/v2/realtime/metrics"), Some(&admin)).await;
    assert_eq!(status, 200);
    for key in [
        "nodeId",
        "connections",
        "orgs",
        "events",
        "buffers",
        "waiters",
        "quarantined",
        "latencyMs",
    ] {
        assert!(!m[key].is_null(), "metrics lack {key}: {m}");
    }
    let text = herald_testkit::http::client()
        .get(format!("{base}/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE herald_events_ingested_total counter"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_cursors_and_odd_queries_do_not_hurt_the_node() {
    let h = start(&[]).await;
    let token = h.token("acme");
    // All are answered 200: a cursor beyond the head (with or without an
    // epoch) is a reset to the head; a repeated parameter takes its last
    // value; undecodable, empty and unknown pairs are ignored.
    for (q, reset) in [
        (
            "lastSeq=18446744073709551615&timeout=0",
            json!({"reason": "epoch_changed"}),
        ),
        ("lastSeq=0&timeout=0", Value::Null),
        (
            "lastSeq=18446744073709551615&epoch=x&timeout=0",
            json!({"reason": "epoch_changed"}),
        ),
        ("services=finance&services=tasks&timeout=0", Value::Null),
        ("%zz=%&&&=&timeout=0", Value::Null),
        ("propertyId=&services=finance&timeout=0", Value::Null),
    ] {
        let r = h.poll(0, &token, q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert_eq!(r.body["reset"], reset, "{q}: {}", r.body);
        assert!(r.events().is_empty(), "{q}: {}", r.body);
    }
    let mut ws =
        herald_testkit::WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    ws.send(json!({"type": "hello", "version": 1, "services": ["finance"], "lastSeq": u64::MAX}))
        .await;
    assert_eq!(ws.frame().await["type"], "ack");
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    assert_eq!(
        h.poll(0, &token, &format!("lastSeq={}&timeout=5", seq - 1))
            .await
            .seqs(),
        vec![seq]
    );
    assert_eq!(
        get_json(&format!("{}/healthz", h.edges[0].base_url()), None)
            .await
            .0,
        200
    );
}
