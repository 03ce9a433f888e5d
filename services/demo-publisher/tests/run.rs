//! `herald-demo run` against a real nats-server (from `herald-testkit`):
//! it creates the stream, publishes valid events at the asked rate, leaves
//! an existing stream alone, and stops on its shutdown signal.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use herald_demo::{run, RunConfig};
use herald_proto::{Encoding, EventBody, EventSubject};
use herald_testkit::NatsServer;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test took too long")
}

/// Reads every stored message and checks it is an event the edge accepts.
async fn check_stored_events(stream: &stream::Stream, count: u64) {
    for seq in 1..=count {
        let msg = stream.get_raw_message(seq).await.expect("stored message");
        let subject = EventSubject::parse(&msg.subject).expect("event subject");
        let encoding =
            Encoding::from_content_type(msg.headers.get("Content-Type").map(|v| v.as_str()));
        let body =
            EventBody::decode(&msg.payload, encoding, &subject, 262_144).expect("valid body");
        let event_id = body.event_id.as_deref().expect("event id");
        assert_eq!(
            msg.headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned()),
            Some(format!("{}:{}:{event_id}", subject.org, subject.service))
        );
        assert!(body.timestamp.is_some() && body.entity_id.is_some());
    }
}

#[tokio::test]
async fn publishes_valid_events_into_a_new_stream() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        // Edge nodes listen on the RePublished subjects.
        let mut live = client.subscribe("herald.live.>").await.expect("subscribe");
        client.flush().await.expect("flush");

        let config = RunConfig {
            nats_url: server.url(),
            rate: 40.0,
            duration: Some(Duration::from_secs(1)),
            ..RunConfig::default()
        };
        config.validate().expect("valid config");
        let summary = run(config, std::future::pending()).await.expect("run");
        assert!(
            (20..=41).contains(&summary.published),
            "published {}",
            summary.published
        );
        assert_eq!((summary.failed, summary.duplicates), (0, 0));

        let js = jetstream::new(client.clone());
        let mut stream = js
            .get_stream("HERALD_EVENTS")
            .await
            .expect("stream created");
        let info = stream.info().await.expect("info").clone();
        assert_eq!(info.config.subjects, ["herald.events.>"]);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        assert_eq!(info.config.max_age, Duration::from_secs(86_400));
        assert!(info.config.allow_direct);
        assert_eq!(
            info.config
                .republish
                .as_ref()
                .map(|r| r.destination.as_str()),
            Some("herald.live.>")
        );
        assert_eq!(info.state.messages, summary.published);
        check_stored_events(&stream, info.state.messages).await;

        for _ in 0..summary.published {
            let msg = tokio::time::timeout(Duration::from_secs(5), live.next())
                .await
                .expect("live copy in time")
                .expect("subscription open");
            assert!(msg.subject.starts_with("herald.live."), "{}", msg.subject);
        }
    })
    .await;
}

#[tokio::test]
async fn leaves_an_existing_stream_alone_and_stops_on_shutdown() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let js = jetstream::new(client);
        let mut stream = js
            .create_stream(stream::Config {
                name: "DEMO_EVENTS".into(),
                subjects: vec!["herald.events.>".into()],
                max_age: Duration::from_secs(3600),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("create stream");

        let config = RunConfig {
            nats_url: server.url(),
            rate: 20.0,
            stream: "DEMO_EVENTS".into(),
            orgs: vec!["solo-stays".into()],
            properties_per_org: 1,
            duration: None,
            ..RunConfig::default()
        };
        let shutdown = tokio::time::sleep(Duration::from_millis(700));
        let summary = run(config, shutdown).await.expect("run");
        assert!(summary.published > 0 && summary.failed == 0, "{summary:?}");

        let info = stream.info().await.expect("info").clone();
        assert_eq!(info.config.max_age, Duration::from_secs(3600));
        assert!(info.config.republish.is_none());
        assert_eq!(info.state.messages, summary.published);
        check_stored_events(&stream, info.state.messages).await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_nats_is_an_error_not_a_hang() {
    bounded(async {
        // Bound but not listening: connections are refused, and no other
        // process can start listening there meanwhile.
        let port = herald_testkit::refused_port();
        let config = RunConfig {
            nats_url: format!("nats://127.0.0.1:{}", port.port()),
            duration: Some(Duration::from_secs(1)),
            ..RunConfig::default()
        };
        let err = run(config, std::future::pending())
            .await
            .expect_err("nothing listens");
        assert_eq!(err.exit_code(), 69, "{err}");
    })
    .await;
}

#[tokio::test]
async fn publishes_into_each_orgs_partition_stream() {
    bounded(async {
        // Servers with the mapping for 4 partitions and the partition
        // streams in place (the edges create them in a deployment).
        let server = NatsServer::start_partitioned(4).await;
        let client = server.connect().await;
        let js = jetstream::new(client.clone());
        let partitions = herald_proto::Partitions::new(4).unwrap();
        for k in 0..4 {
            let config = herald_publisher::stream::partition_stream(
                "HERALD_EVENTS",
                partitions,
                k,
                herald_publisher::stream::StreamLimits::default(),
            );
            js.create_stream(config).await.expect("partition stream");
        }
        let config = RunConfig {
            nats_url: server.url(),
            rate: 40.0,
            partitions: 4,
            duration: Some(Duration::from_secs(1)),
            ..RunConfig::default()
        };
        config.validate().expect("valid config");
        let summary = run(config.clone(), std::future::pending())
            .await
            .expect("run");
        assert!(summary.published >= 20, "published {}", summary.published);
        assert_eq!((summary.failed, summary.duplicates), (0, 0));
        // Every event sits in its org's partition stream, with the sixth token.
        let mut stored = 0;
        for k in 0..4 {
            let mut stream = js.get_stream(format!("HERALD_EVENTS_{k}")).await.unwrap();
            let n = stream.info().await.unwrap().state.messages;
            for seq in 1..=n {
                let msg = stream.get_raw_message(seq).await.unwrap();
                let (base, token) = herald_proto::partition::split(&msg.subject);
                let subject = EventSubject::parse(base).unwrap();
                assert_eq!(token, Some(k.to_string().as_str()), "{}", msg.subject);
                assert_eq!(partitions.of(&subject.org), k, "{}", msg.subject);
            }
            stored += n;
        }
        assert_eq!(stored, summary.published);
        // The demo created no stream of its own.
        assert!(js.get_stream("HERALD_EVENTS").await.is_err());
    })
    .await;
}
