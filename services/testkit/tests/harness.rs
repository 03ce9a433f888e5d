//! Checks the harness against real nats-server processes: JetStream round
//! trip, restart on the same port with the store kept, and a 3-node cluster
//! that places an R3 stream, answers on its monitoring ports and survives a
//! member restart; with the shipped users (`nats/herald.conf`) too.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use async_nats::jetstream::{self, stream};
use herald_testkit::{NatsCluster, NatsServer, NatsUser};

fn events_stream(replicas: usize) -> stream::Config {
    herald_publisher::stream::events_stream(
        "HERALD_EVENTS",
        herald_publisher::stream::StreamLimits {
            replicas,
            ..Default::default()
        },
    )
}

async fn publish(js: &jetstream::Context, body: &'static str) -> u64 {
    js.publish("herald.events.acme.finance.p1", body.into())
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence
}

#[tokio::test]
async fn standalone_server_round_trips_through_jetstream() {
    let mut server = NatsServer::start().await;
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    let js = jetstream::new(server.connect().await);
    let stream = js
        .create_stream(events_stream(1))
        .await
        .expect("create stream");

    let seq = publish(&js, r#"{"eventType":"expense.created"}"#).await;
    let message = stream.get_raw_message(seq).await.expect("get message");
    assert_eq!(message.subject.as_str(), "herald.events.acme.finance.p1");
    assert_eq!(&message.payload[..], br#"{"eventType":"expense.created"}"#);

    assert!(server.is_running());
    server.terminate().await;
    assert!(!server.is_running());
    assert!(server.log().contains("Server is ready"), "{}", server.log());
}

#[tokio::test]
async fn restart_keeps_port_and_store() {
    let mut server = NatsServer::start().await;
    let port = server.port();
    {
        let js = jetstream::new(server.connect().await);
        js.create_stream(events_stream(1))
            .await
            .expect("create stream");
        publish(&js, r#"{"eventType":"a"}"#).await;
        publish(&js, r#"{"eventType":"b"}"#).await;
    }

    server.stop();
    assert!(!server.is_running());
    server.restart().await;
    assert!(server.is_running());
    assert_eq!(server.port(), port);

    let js = jetstream::new(server.connect().await);
    let mut stream = js.get_stream("HERALD_EVENTS").await.expect("stream kept");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 2);
    assert_eq!(info.state.last_sequence, 2);
    let message = stream.get_raw_message(2).await.expect("message kept");
    assert_eq!(&message.payload[..], br#"{"eventType":"b"}"#);
    assert_eq!(publish(&js, r#"{"eventType":"c"}"#).await, 3);
}

#[tokio::test]
async fn cluster_places_r3_stream_and_survives_member_restart() {
    let mut cluster = NatsCluster::start(3).await;
    assert_eq!(cluster.urls().split(',').count(), 3);

    let js = jetstream::new(cluster.connect().await);
    let mut stream = js
        .create_stream(events_stream(3))
        .await
        .expect("create R3 stream");
    let info = stream.info().await.expect("stream info");
    let placement = info.cluster.as_ref().expect("clustered stream info");
    assert!(placement.leader.is_some());
    assert_eq!(placement.replicas.len(), 2, "{placement:?}");
    assert_eq!(publish(&js, r#"{"eventType":"a"}"#).await, 1);

    // Every server answers on its monitoring port, with its own name.
    for server in cluster.servers() {
        let varz: serde_json::Value = reqwest::get(format!("{}/varz", server.monitor_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(varz["server_name"], server.name());
    }

    cluster.stop(2);
    assert!(!cluster.server(2).is_running());
    cluster.restart(2).await;
    cluster.wait_ready().await;
    cluster.wait_stream_current("HERALD_EVENTS").await;
    assert_eq!(publish(&js, r#"{"eventType":"b"}"#).await, 2);
    let message = stream.get_raw_message(2).await.expect("get message");
    assert_eq!(&message.payload[..], br#"{"eventType":"b"}"#);
}

#[tokio::test]
async fn cluster_with_accounts_serves_the_shipped_users() {
    let cluster = NatsCluster::start_with_accounts(3).await;
    assert!(
        async_nats::connect(cluster.servers()[0].url())
            .await
            .is_err(),
        "anonymous clients are refused"
    );
    // The edge user manages streams; the publisher user publishes through
    // any member and gets its acks.
    let admin = jetstream::new(cluster.connect().await);
    admin
        .create_stream(events_stream(3))
        .await
        .expect("create R3 stream as edge");
    let publisher = cluster.servers()[2]
        .connect_as(&NatsUser::publisher())
        .await;
    let js = jetstream::new(publisher);
    assert_eq!(publish(&js, r#"{"eventType":"a"}"#).await, 1);
    assert!(
        js.get_stream("HERALD_EVENTS").await.is_err(),
        "the publisher user may not use the JetStream API"
    );
}
