//! The WebSocket stream end to end: live delivery, resume on another node,
//! MessagePack, in-place updates (local and from another node), handshake
//! refusals and their close codes, org isolation, tokens that expire or are
//! renewed, pings, slow consumers, kill switches, drain and connection caps.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use herald_testkit::{eventually, post_json, seqs_of, wait_metric, Herald, Received, WsClient};
use serde_json::{json, Value};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

async fn publish_n(h: &Herald, org: &str, service: &str, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        seqs.push(
            h.publish(org, service, Some("p1"), json!({"eventType": "x"}))
                .await,
        );
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_arrive_after_the_ack() {
    let h = Herald::start(EDGE, 1).await;
    let mut ws = WsClient::connect(
        &h.edges[0].base_url(),
        "",
        Some(&h.token("acme")),
        Some("herald.v1.json"),
    )
    .await;
    assert_eq!(ws.protocol.as_deref(), Some("herald.v1.json"));
    let ack = ws.hello(&["finance"], None, None, None).await;
    assert!(ack["connectionId"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(ack["nodeId"].as_str(), Some(h.edges[0].node_id()));
    assert!(ack["epoch"].as_str().is_some() && ack["seq"].as_u64().is_some());
    assert!(ack["expiresAt"].as_i64().unwrap() > 1_700_000_000_000);
    let seq = h
        .publish(
            "acme",
            "finance",
            Some("p1"),
            json!({"eventType": "expense.created", "payload": {"amount": 5}}),
        )
        .await;
    let _other_service = h
        .publish("acme", "tasks", Some("p1"), json!({"eventType": "x"}))
        .await;
    let events = ws.events(1).await;
    assert_eq!(seqs_of(&events), vec![seq]);
    assert_eq!(events[0]["payload"], json!({"amount": 5}));
    // Nothing else (the tasks event is not subscribed).
    assert!(matches!(
        ws.recv(Duration::from_millis(500)).await,
        Received::Timeout
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_node_gets_the_missed_events_then_live_ones() {
    let h = Herald::start(EDGE, 2).await;
    let token = h.token("acme");
    let mut a = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    let ack = a.hello(&["finance", "tasks"], None, None, None).await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    let first = publish_n(&h, "acme", "finance", 3).await;
    let got = a.events(3).await;
    assert_eq!(seqs_of(&got), first);
    a.close().await;

    let missed = publish_n(&h, "acme", "tasks", 4).await;
    let mut b = WsClient::connect(&h.edges[1].base_url(), "", Some(&token), None).await;
    b.hello(
        &["finance", "tasks"],
        None,
        Some(*first.last().unwrap()),
        Some(&epoch),
    )
    .await;
    // Publish while the replay is under way: the switch-over must not lose or repeat anything.
    let live = publish_n(&h, "acme", "finance", 3).await;
    let got = b.events(7).await;
    let mut want = missed.clone();
    want.extend(&live);
    assert_eq!(
        seqs_of(&got),
        want,
        "missed events, then live ones, each once, in order"
    );
    assert!(
        matches!(b.recv(Duration::from_millis(500)).await, Received::Timeout),
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_end_to_end() {
    let h = Herald::start(EDGE, 1).await;
    let mut ws = WsClient::connect(
        &h.edges[0].base_url(),
        "",
        Some(&h.token("acme")),
        Some("herald.v1.msgpack"),
    )
    .await;
    assert_eq!(ws.protocol.as_deref(), Some("herald.v1.msgpack"));
    ws.hello(&["guest"], Some("p1"), None, None).await;
    let body = herald_proto::EventBody {
        event_type: Some("guest.checked_in".into()),
        payload: json!({"room": 12, "vip": true}),
        ..Default::default()
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    let seq = h
        .publish_raw(
            "herald.events.acme.guest.p1",
            headers,
            body.encode(herald_proto::Encoding::MessagePack),
        )
        .await;
    let events = ws.events(1).await;
    assert_eq!(seqs_of(&events), vec![seq]);
    assert_eq!(events[0]["payload"], json!({"room": 12, "vip": true}));
    assert_eq!(events[0]["eventType"], "guest.checked_in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_the_subscription_in_place_also_from_another_node() {
    let h = Herald::start(EDGE, 2).await;
    let token = h.token("acme");
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&token), None).await;
    ws.hello(&["finance"], None, None, None).await;

    ws.send(json!({"type": "update", "services": ["tasks"], "filters": {"propertyId": "p1"}}))
        .await;
    let updated = ws.frame().await;
    assert_eq!(
        updated,
        json!({"type": "updated", "services": ["tasks"], "filters": {"propertyId": "p1"}})
    );
    let _finance = h
        .publish("acme", "finance", Some("p1"), json!({"eventType": "x"}))
        .await;
    let _other_property = h
        .publish("acme", "tasks", Some("p2"), json!({"eventType": "x"}))
        .await;
    let task = h
        .publish("acme", "tasks", Some("p1"), json!({"eventType": "x"}))
        .await;
    assert_eq!(seqs_of(&ws.events(1).await), vec![task]);

    // The same user asks node B; node A's connection changes.
    let url = format!("{}/v2/realtime/update-services", h.edges[1].base_url());
    let (status, body, _) = post_json(
        &url,
        Some(&token),
        &json!({"services": ["guest"], "propertyId": null}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let updated = ws.frame().await;
    assert_eq!(updated["type"], "updated");
    assert_eq!(updated["services"], json!(["guest"]));
    let guest = h
        .publish("acme", "guest", Some("p9"), json!({"eventType": "x"}))
        .await;
    assert_eq!(seqs_of(&ws.events(1).await), vec![guest]);

    // Forbidden changes are refused up front.
    let limited = h.user("acme").svcs(&["guest"]).build();
    let (status, _, _) = post_json(&url, Some(&limited), &json!({"services": ["finance"]})).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_are_closed_with_their_codes() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_HANDSHAKE_TIMEOUT", "1s")]).await;
    let base = h.edges[0].base_url();
    let token = h.token("acme");

    let mut garbage = WsClient::connect(&base, "", Some(&token), None).await;
    garbage
        .send_raw(tokio_tungstenite::tungstenite::Message::Text(
            "{nope".into(),
        ))
        .await;
    assert_eq!(garbage.close_code().await, Some(4000));

    let mut wrong_first = WsClient::connect(&base, "", Some(&token), None).await;
    wrong_first.send(json!({"type": "pong"})).await;
    assert_eq!(wrong_first.close_code().await, Some(4000));

    let mut silent = WsClient::connect(&base, "", Some(&token), None).await;
    let t0 = Instant::now();
    assert_eq!(silent.close_code().await, Some(4000));
    assert!(t0.elapsed() < Duration::from_secs(5));

    let mut bad_version = WsClient::connect(&base, "", Some(&token), None).await;
    bad_version
        .send(json!({"type": "hello", "version": 9, "services": ["finance"]}))
        .await;
    assert_eq!(bad_version.close_code().await, Some(4000));

    let limited = h.user("acme").props(&["p1"]).build();
    let mut forbidden = WsClient::connect(&base, "", Some(&limited), None).await;
    forbidden.send(json!({"type": "hello", "version": 1, "services": ["finance"], "filters": {"propertyId": "p2"}})).await;
    assert_eq!(forbidden.close_code().await, Some(4003));

    let mut bad_token = WsClient::connect(&base, "", Some("garbage"), None).await;
    assert_eq!(bad_token.close_code().await, Some(4001));
    // Without a token on the upgrade, authentication happens at hello.
    let mut no_token = WsClient::connect(&base, "", None, None).await;
    no_token
        .send(json!({"type": "hello", "version": 1, "services": ["finance"]}))
        .await;
    assert_eq!(no_token.close_code().await, Some(4001));

    // The query token works (the hello token is the browser's way).
    let mut by_query = WsClient::connect(&base, &format!("?token={token}"), None, None).await;
    by_query.hello(&["finance"], None, None, None).await;
    // A huge frame is refused without harm: a frame over
    // HERALD_MAX_FRAME_BYTES is a read error, and a read error ends the
    // connection (no close frame: the socket may be unusable).
    let mut huge = WsClient::connect(&base, "", Some(&token), None).await;
    huge.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        "x".repeat(200_000).into(),
    ))
    .await;
    assert_eq!(huge.recv(Duration::from_secs(5)).await, Received::Ended);
    assert_eq!(
        h.poll(0, &token, "timeout=0").await.status,
        200,
        "the node is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_can_be_switched_off() {
    let h = Herald::start_with(EDGE, 1, &[("HERALD_ALLOW_QUERY_TOKEN", "false")]).await;
    let mut ws = WsClient::connect(
        &h.edges[0].base_url(),
        &format!("?token={}", h.token("acme")),
        None,
        None,
    )
    .await;
    // The query token is ignored: the upgrade carried none, so hello must.
    ws.send(json!({"type": "hello", "version": 1, "services": ["finance"]}))
        .await;
    assert_eq!(ws.close_code().await, Some(4001));
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", None, None).await;
    ws.send(
        json!({"type": "hello", "version": 1, "services": ["finance"], "token": h.token("acme")}),
    )
    .await;
    assert_eq!(ws.frame().await["type"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_are_isolated_over_streams() {
    let h = Herald::start(EDGE, 1).await;
    let mut acme =
        WsClient::connect(&h.edges[0].base_url(), "", Some(&h.token("acme")), None).await;
    acme.hello(&["finance"], None, None, None).await;
    let mut globex =
        WsClient::connect(&h.edges[0].base_url(), "", Some(&h.token("globex")), None).await;
    globex.hello(&["finance"], None, None, None).await;
    let mut want_acme = Vec::new();
    let mut want_globex = Vec::new();
    for i in 0..30 {
        let org = if i % 3 == 0 { "globex" } else { "acme" };
        let seq = h
            .publish(
                org,
                "finance",
                Some("p1"),
                json!({"eventType": "x", "orgId": org}),
            )
            .await;
        if org == "acme" {
            want_acme.push(seq)
        } else {
            want_globex.push(seq)
        }
    }
    let got = acme.events(want_acme.len()).await;
    assert!(got.iter().all(|e| e["orgId"] == "acme"));
    assert_eq!(seqs_of(&got), want_acme);
    let got = globex.events(want_globex.len()).await;
    assert!(got.iter().all(|e| e["orgId"] == "globex"));
    assert_eq!(seqs_of(&got), want_globex);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_in_band_or_the_stream_closes_4001() {
    let h = Herald::start(EDGE, 1).await;
    let base = h.edges[0].base_url();
    // Renewed: the refresh comes at once (less than 60 s left), the client answers.
    let short = h.user("acme").expires_in(Duration::from_secs(3)).build();
    let mut ws = WsClient::connect(&base, "", Some(&short), None).await;
    ws.hello(&["finance"], None, None, None).await;
    let refresh = ws.frame().await;
    assert_eq!(refresh["type"], "refresh", "{refresh}");
    ws.send(json!({"type": "auth", "token": h.token("acme")}))
        .await;
    // Time passing is the point: past the first token's expiry (3 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    assert_eq!(
        seqs_of(&ws.events(1).await),
        vec![seq],
        "still open after the old token's expiry"
    );

    // Not renewed: closed with 4001 at expiry.
    let mut lapsing = WsClient::connect(
        &base,
        "",
        Some(&h.user("acme").expires_in(Duration::from_secs(2)).build()),
        None,
    )
    .await;
    lapsing.hello(&["finance"], None, None, None).await;
    assert_eq!(lapsing.close_code().await, Some(4001));

    // A token of another user is not a renewal.
    let mut hijack = WsClient::connect(&base, "", Some(&h.token("acme")), None).await;
    hijack.hello(&["finance"], None, None, None).await;
    hijack
        .send(json!({"type": "auth", "token": h.user("acme").sub("mallory").build()}))
        .await;
    assert_eq!(hijack.close_code().await, Some(4001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_carry_the_cursor_and_silent_clients_are_closed() {
    let h = Herald::start_with(
        EDGE,
        1,
        &[
            ("HERALD_PING_INTERVAL", "1s"),
            ("HERALD_AUDIT_INTERVAL", "300ms"),
        ],
    )
    .await;
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&h.token("quiet")), None).await;
    let ack = ws.hello(&["finance"], None, None, None).await;
    let last = publish_n(&h, "busy", "finance", 5).await;
    // Pings answered: the connection stays, and the quiet cursor moves to the head.
    let mut cursor = ack["seq"].as_u64().unwrap();
    for _ in 0..6 {
        let ping = ws.frame().await;
        assert_eq!(ping["type"], "ping", "{ping}");
        cursor = ping["seq"].as_u64().unwrap();
        ws.send(json!({"type": "pong"})).await;
        if cursor >= *last.last().unwrap() {
            break;
        }
    }
    assert!(
        cursor >= *last.last().unwrap(),
        "quiet cursor stuck at {cursor}"
    );
    // Silent: closed after two unanswered pings.
    let t0 = Instant::now();
    assert_eq!(ws.close_code().await, Some(4000));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_quarantined_then_closed_4008_while_others_get_everything() {
    let h = Herald::start_with(
        EDGE,
        1,
        // The buffer must be small next to the burst (so the stalled client
        // falls behind it) yet roomy for a client that reads (so a briefly
        // busy test runner does not get the healthy client quarantined).
        &[
            ("HERALD_ORG_BUFFER_EVENTS", "1000"),
            ("HERALD_SLOW_CLIENT_TIMEOUT", "2s"),
            ("HERALD_MAX_EVENT_BYTES", "65536"),
        ],
    )
    .await;
    let token = h.token("acme");
    let base = h.edges[0].base_url();
    let mut slow = WsClient::connect(&base, "", Some(&token), None).await;
    slow.hello(&["bulk", "finance", "analytics"], None, None, None)
        .await;
    // The node closes the stalled client as slow (after
    // HERALD_SLOW_CLIENT_TIMEOUT) while the burst goes on. Its close frame
    // waits behind the frame in flight, which gets 5 s (the close grace) to
    // be written: the client starts reading as soon as the node counts the
    // close, and then gets everything buffered, then the close frame.
    let slow_closed = {
        let base = base.clone();
        tokio::spawn(async move {
            wait_metric(&base, "/slowConsumerCloses", 1, Duration::from_secs(60)).await;
            slow.close_code().await
        })
    };
    let mut healthy =
        WsClient::connect(&base, "", Some(&h.user("acme").sub("u2").build()), None).await;
    healthy
        .hello(&["finance", "analytics"], None, None, None)
        .await;
    // The healthy client reads all along, from before the burst starts.
    let (expect_tx, expect_rx) = tokio::sync::oneshot::channel::<usize>();
    let healthy_reader = tokio::spawn(async move {
        let (mut got, mut expected, mut expect_rx) = (Vec::new(), None, expect_rx);
        while expected.is_none_or(|n| got.len() < n) {
            tokio::select! {
                n = &mut expect_rx, if expected.is_none() => expected = Some(n.unwrap_or(0)),
                batch = healthy.events(1) => got.extend(seqs_of(&batch)),
            }
        }
        got
    });

    // About 25 MB of `bulk` (only the slow client wants it), far more than
    // loopback socket buffers hold, between small finance and analytics events.
    let js = async_nats::jetstream::new(h.nats_client().clone());
    let blob = "y".repeat(8_000);
    let mut acks = Vec::new();
    for i in 0..4000 {
        let (svc, payload) = match i % 4 {
            0 => (
                if i % 8 == 0 { "analytics" } else { "finance" },
                json!({"i": i}),
            ),
            _ => ("bulk", json!(blob)),
        };
        let body = json!({"eventType": "x", "payload": payload}).to_string();
        acks.push((
            svc,
            js.publish(format!("herald.events.acme.{svc}.p1"), body.into())
                .await
                .unwrap(),
        ));
    }
    let mut published = Vec::new();
    for (svc, a) in acks {
        let seq = a.await.unwrap().sequence;
        if svc != "bulk" {
            published.push(seq);
        }
    }
    let _ = expect_tx.send(published.len());
    assert_eq!(
        healthy_reader.await.unwrap(),
        published,
        "the healthy client got everything, in order"
    );

    assert_eq!(
        slow_closed.await.unwrap(),
        Some(4008),
        "the slow client read what was buffered, then the close"
    );
    assert_eq!(
        h.metrics(0).await["slowConsumerCloses"],
        1,
        "only the slow client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switches_from_the_environment_and_at_runtime() {
    let mut h = Herald::start(EDGE, 2).await;
    let disabled = h.add_edge(&[("HERALD_DISABLED", "true")]).await;
    let token = h.token("acme");
    let mut refused =
        WsClient::connect(&h.edges[disabled].base_url(), "", Some(&token), None).await;
    assert_eq!(refused.close_code().await, Some(4503));
    let sse = herald_testkit::get_json(
        &format!(
            "{}/v2/realtime/sse?token={token}",
            h.edges[disabled].base_url()
        ),
        None,
    )
    .await;
    assert_eq!(sse.0, 503);
    // Long-poll still works: clients fall back to it.
    assert_eq!(h.poll(disabled, &token, "timeout=0").await.status, 200);

    // Runtime, cluster-wide: an admin of org '*' flips the switch on node 0; node 1's stream closes.
    let mut open = WsClient::connect(&h.edges[1].base_url(), "", Some(&token), None).await;
    open.hello(&["finance"], None, None, None).await;
    let admin = h.user("*").role("admin").build();
    let url = format!("{}/v2/realtime/switches", h.edges[0].base_url());
    let put = |body: Value| {
        let (url, admin) = (url.clone(), admin.clone());
        async move {
            herald_testkit::http::client()
                .put(&url)
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(put(json!({"disabled": true})).await, 200);
    assert_eq!(open.close_code().await, Some(4503));
    let (status, _, _) = herald_testkit::get_json(&url, Some(&admin)).await;
    assert_eq!(status, 200);
    // Switches are node-wide: an org's admin may not read them.
    let (status, _, _) =
        herald_testkit::get_json(&url, Some(&h.user("acme").role("admin").build())).await;
    assert_eq!(status, 403);
    // Services switched off are not delivered, by any transport.
    assert_eq!(
        put(json!({"disabled": false, "disabledServices": ["finance"]})).await,
        200
    );
    let base1 = h.edges[1].base_url();
    let mut ws = eventually(
        Duration::from_secs(10),
        "node 1 to accept streams again",
        || async {
            let mut c = WsClient::connect(&base1, "", Some(&token), None).await;
            c.send(json!({"type": "hello", "version": 1, "services": ["finance", "tasks"]}))
                .await;
            match c.recv(Duration::from_secs(5)).await {
                Received::Frame(f) if f["type"] == "ack" => Ok(c),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let _finance = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    let task = h
        .publish("acme", "tasks", None, json!({"eventType": "x"}))
        .await;
    assert_eq!(seqs_of(&ws.events(1).await), vec![task]);
    // Only a cluster admin may flip switches, and only with PUT: POST is
    // not routed (405 whoever asks).
    let (status, _, _) = post_json(
        &url,
        Some(&h.user("acme").role("admin").build()),
        &json!({}),
    )
    .await;
    assert_eq!(status, 405);
    let org_admin = herald_testkit::http::client()
        .put(&url)
        .bearer_auth(h.user("acme").role("admin").build())
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(org_admin.status(), 403);
    assert_eq!(put(json!({})).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_streams_with_1012() {
    let mut h = Herald::start(EDGE, 1).await;
    let mut ws = WsClient::connect(&h.edges[0].base_url(), "", Some(&h.token("acme")), None).await;
    ws.hello(&["finance"], None, None, None).await;
    h.edges[0].sigterm();
    assert_eq!(ws.close_code().await, Some(1012));
    let exit = h.edges[0].wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_with_4029_and_admins_disconnect_users_everywhere() {
    let h = Herald::start_with(
        EDGE,
        2,
        &[
            ("HERALD_MAX_CONNECTIONS_PER_USER", "2"),
            ("HERALD_MAX_CONNECTIONS", "3"),
        ],
    )
    .await;
    let base = h.edges[0].base_url();
    let token = h.token("acme");
    let mut a = WsClient::connect(&base, "", Some(&token), None).await;
    a.hello(&["finance"], None, None, None).await;
    let mut b = WsClient::connect(&base, "", Some(&token), None).await;
    b.hello(&["finance"], None, None, None).await;
    let mut third = WsClient::connect(&base, "", Some(&token), None).await;
    assert_eq!(third.close_code().await, Some(4029), "per-user cap");
    let mut other =
        WsClient::connect(&base, "", Some(&h.user("acme").sub("u2").build()), None).await;
    other.hello(&["finance"], None, None, None).await;
    let mut fourth =
        WsClient::connect(&base, "", Some(&h.user("acme").sub("u3").build()), None).await;
    assert_eq!(fourth.close_code().await, Some(4029), "node cap");

    // An admin on node 1 logs user u1 out everywhere.
    let url = format!("{}/v2/realtime/disconnect", h.edges[1].base_url());
    let (status, _, _) = post_json(&url, Some(&token), &json!({"userId": "u1"})).await;
    assert_eq!(status, 403, "only admins");
    let (status, body, _) = post_json(
        &url,
        Some(&h.user("acme").sub("boss").role("admin").build()),
        &json!({"userId": "u1"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(a.close_code().await, Some(4001));
    assert_eq!(b.close_code().await, Some(4001));
    let seq = h
        .publish("acme", "finance", None, json!({"eventType": "x"}))
        .await;
    assert_eq!(
        seqs_of(&other.events(1).await),
        vec![seq],
        "other users stay connected"
    );
}
