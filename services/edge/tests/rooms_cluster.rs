//! Rooms on a three-server JetStream cluster (contract section 6): edge
//! nodes attached to different NATS servers share one room, so a message
//! said on one node reaches members on another, and the users of a node
//! that dies go offline for the members on the others within 10 s.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_testkit::room::FRAME_WAIT;
use herald_testkit::{
    get_json, EdgeOptions, EdgeProcess, NatsCluster, RoomClient, TokenBuilder, SECRET,
};
use serde_json::{json, Value};
use tokio::time::Instant;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

/// Contract: users of a dead node go offline within 10 s (measured from the
/// kill); plus 1 s of slack for a loaded test machine.
const NODE_DEATH_BOUND: Duration = Duration::from_secs(11);
/// A message reaches every member within 1 s (the brief's bound); plus 1 s
/// of slack.
const DELIVERY_BOUND: Duration = Duration::from_secs(2);
/// How long to watch for a frame that must not come.
const QUIET: Duration = Duration::from_millis(800);

/// An edge node on cluster server `server`, with R3 streams.
async fn edge_on(cluster: &NatsCluster, server: usize) -> EdgeProcess {
    let opts = EdgeOptions::new(cluster.servers()[server].url(), SECRET)
        .with_env("HERALD_STREAM_REPLICAS", "3")
        .with_env("HERALD_METRICS_PUBLIC", "true");
    EdgeProcess::spawn(EDGE, opts).await
}

fn token(user: &str) -> String {
    TokenBuilder::new(SECRET).org("acme").sub(user).build()
}

async fn member(edge: &EdgeProcess, user: &str, label: &str) -> RoomClient {
    RoomClient::connect(&edge.base_url(), &token(user), user, None, label).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_member_on_edge_a_reaches_a_member_on_edge_b() {
    let cluster = NatsCluster::start(3).await;
    let a = edge_on(&cluster, 0).await;
    let b = edge_on(&cluster, 1).await;
    let mut alice = member(&a, "alice", "alice@A").await;
    let mut bob = member(&b, "bob", "bob@B").await;
    alice.join("lobby", None).await;
    let first = alice.say_ok("lobby", "before bob", Some("c-0")).await;

    let joined = bob.join("lobby", None).await;
    assert_eq!(joined["history"].as_array().unwrap().len(), 1, "{joined}");
    assert_eq!(joined["history"][0]["seq"], first["seq"]);
    assert_eq!(joined["history"][0]["text"], "before bob");
    let users: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"alice") && users.contains(&"bob"),
        "{joined}"
    );
    alice.presence("lobby", "bob", "online", FRAME_WAIT).await;

    let sent_at = Instant::now();
    let m = alice.say_ok("lobby", "hello from A", Some("c-1")).await;
    let seq = m["seq"].as_u64().unwrap();
    let got = bob.message("lobby", seq, DELIVERY_BOUND).await;
    assert!(
        sent_at.elapsed() <= DELIVERY_BOUND,
        "after {:?}",
        sent_at.elapsed()
    );
    assert_eq!(got["userId"], "alice");
    assert_eq!(got["text"], "hello from A");
    assert_eq!(got["clientMsgId"], "c-1");
    assert_eq!(got["ts"], m["ts"]);

    // And back, with typing and a receipt.
    let reply = bob.say_ok("lobby", "hello from B", None).await;
    let reply_seq = reply["seq"].as_u64().unwrap();
    assert!(reply_seq > seq);
    alice.message("lobby", reply_seq, DELIVERY_BOUND).await;
    bob.send(json!({"type": "typing", "room": "lobby"})).await;
    let typing = alice
        .wait_for("bob typing", FRAME_WAIT, |f| f["type"] == "typing")
        .await;
    assert_eq!(typing["userId"], "bob");
    alice
        .send(json!({"type": "read", "room": "lobby", "seq": reply_seq}))
        .await;
    let receipt = bob
        .wait_for("alice's receipt", FRAME_WAIT, |f| f["type"] == "receipt")
        .await;
    assert_eq!(
        receipt,
        json!({"type": "receipt", "room": "lobby", "userId": "alice", "seq": reply_seq})
    );
    // Each got each message once.
    for m in [&mut alice, &mut bob] {
        m.none_within("a second copy", QUIET, |f| f["type"] == "message")
            .await;
    }
    let (status, body, _) = get_json(
        &format!("{}/v2/rooms/lobby/stats", b.base_url()),
        Some(&token("bob")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"members": 2, "online": 2, "messages": 3, "lastSeq": reply_seq})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_killed_edge_go_offline_on_a_nats_cluster() {
    let cluster = NatsCluster::start(3).await;
    let mut a = edge_on(&cluster, 0).await;
    let b = edge_on(&cluster, 1).await;
    let mut bob = member(&b, "bob", "bob@B").await;
    bob.join("lobby", Some(0)).await;
    let mut carol = member(&a, "carol", "carol@A").await;
    carol.join("lobby", Some(0)).await;
    let mut alice_a = member(&a, "alice", "alice@A").await;
    alice_a.join("lobby", Some(0)).await;
    let mut alice_b = member(&b, "alice", "alice@B").await;
    alice_b.join("lobby", Some(0)).await;
    bob.presence("lobby", "carol", "online", FRAME_WAIT).await;
    bob.presence("lobby", "alice", "online", FRAME_WAIT).await;

    let killed_at = Instant::now();
    a.kill();
    bob.presence("lobby", "carol", "offline", Duration::from_secs(20))
        .await;
    let took = killed_at.elapsed();
    eprintln!("carol offline {took:?} after the kill");
    assert!(
        took <= NODE_DEATH_BOUND,
        "offline {took:?} after the node died"
    );
    // Alice still has a connection on B.
    bob.none_within("alice offline", QUIET, |f: &Value| {
        f["type"] == "presence" && f["userId"] == "alice" && f["state"] == "offline"
    })
    .await;
    let (status, body, _) = get_json(
        &format!("{}/v2/rooms/lobby/presence", b.base_url()),
        Some(&token("bob")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut users: Vec<(String, String)> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["userId"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    users.sort();
    assert_eq!(
        users,
        vec![
            ("alice".to_owned(), "online".to_owned()),
            ("bob".to_owned(), "online".to_owned())
        ]
    );
    let m = alice_b.say_ok("lobby", "still here", None).await;
    bob.message("lobby", m["seq"].as_u64().unwrap(), FRAME_WAIT)
        .await;
    drop((carol, alice_a));
}
