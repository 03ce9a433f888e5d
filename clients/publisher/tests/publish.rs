//! Publishing against a real nats-server (from `herald-testkit`): acks,
//! JetStream dedup by `Nats-Msg-Id`, headers, retries across a server
//! restart, and permanent errors.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use herald_proto::{Encoding, EventBody, EventSubject};
use herald_publisher::{OutgoingEvent, PublishError, Publisher, RetryPolicy, DEFAULT_STREAM};
use herald_testkit::NatsServer;
use serde_json::json;

/// Every test is bounded; a hung publish fails instead of blocking the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn create_stream(client: &async_nats::Client) -> stream::Stream {
    jetstream::new(client.clone())
        .create_stream(herald_publisher::stream::events_stream(
            DEFAULT_STREAM,
            herald_publisher::stream::StreamLimits::default(),
        ))
        .await
        .expect("create stream")
}

async fn stored(stream: &mut stream::Stream) -> u64 {
    stream.info().await.expect("stream info").state.messages
}

fn event(event_id: Option<&str>) -> OutgoingEvent {
    OutgoingEvent::new(
        EventSubject::new("acme", "finance", Some("p1")).expect("subject"),
        EventBody {
            event_type: Some("expense.created".into()),
            event_id: event_id.map(str::to_owned),
            entity_type: Some("expense".into()),
            entity_id: Some("exp-1".into()),
            payload: json!({"amount": 10, "currency": "EUR"}),
            ..EventBody::default()
        },
    )
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test took too long")
}

#[tokio::test]
async fn acks_carry_increasing_sequences() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let mut stream = create_stream(&client).await;
        let publisher = Publisher::new(client);

        let mut last = 0;
        for _ in 0..5 {
            let ack = publisher.publish(event(None)).await.expect("publish");
            assert!(ack.seq > last, "seq {} after {last}", ack.seq);
            assert!(!ack.duplicate);
            assert_eq!(ack.stream, DEFAULT_STREAM);
            last = ack.seq;
        }
        assert_eq!(stored(&mut stream).await, 5);

        // A generated id is in both the body and the Nats-Msg-Id.
        let msg = stream.get_raw_message(last).await.expect("get message");
        let subject = EventSubject::parse(&msg.subject).expect("subject");
        let body = EventBody::decode(&msg.payload, Encoding::Json, &subject, usize::MAX)
            .expect("valid body");
        let id = body.event_id.expect("generated event id");
        assert_eq!(
            msg.headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned()),
            Some(format!("acme:finance:{id}"))
        );
        assert!(msg.headers.get("Content-Type").is_none());
    })
    .await;
}

#[tokio::test]
async fn same_event_id_is_stored_once() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let mut stream = create_stream(&client).await;
        let publisher = Publisher::new(client);

        let first = publisher.publish(event(Some("e-1"))).await.expect("first");
        let second = publisher.publish(event(Some("e-1"))).await.expect("second");
        assert!(!first.duplicate);
        assert!(second.duplicate);
        assert_eq!(second.seq, first.seq);
        assert_eq!(stored(&mut stream).await, 1);

        // The msg id is per service: the same event id of another service is new.
        let mut other = event(Some("e-1"));
        other.subject.service = "tasks".into();
        let third = publisher.publish(other).await.expect("third");
        assert!(!third.duplicate);
        assert_eq!(stored(&mut stream).await, 2);
    })
    .await;
}

#[tokio::test]
async fn the_same_event_id_in_another_org_is_not_a_duplicate() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let mut stream = create_stream(&client).await;
        let publisher = Publisher::new(client);

        let mut other_org = event(Some("inv-1001"));
        other_org.subject.org = "globex".into();
        let b = publisher.publish(other_org).await.expect("org B");
        let a = publisher
            .publish(event(Some("inv-1001")))
            .await
            .expect("org A");
        assert!(!b.duplicate);
        assert!(!a.duplicate, "org B's event id suppressed org A's event");
        assert_ne!(a.seq, b.seq);
        assert_eq!(stored(&mut stream).await, 2);
        let msg = stream.get_raw_message(a.seq).await.expect("get message");
        assert_eq!(
            msg.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("acme:finance:inv-1001")
        );

        let again = publisher
            .publish(event(Some("inv-1001")))
            .await
            .expect("org A again");
        assert!(again.duplicate);
        assert_eq!(again.seq, a.seq);
        assert_eq!(stored(&mut stream).await, 2);
    })
    .await;
}

#[tokio::test]
async fn messagepack_and_traceparent_set_their_headers() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let stream = create_stream(&client).await;
        let publisher = Publisher::new(client);

        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ack = publisher
            .publish(
                event(Some("e-mp"))
                    .with_encoding(Encoding::MessagePack)
                    .with_traceparent(traceparent),
            )
            .await
            .expect("publish");
        let msg = stream.get_raw_message(ack.seq).await.expect("get message");
        let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            header("Content-Type").as_deref(),
            Some("application/msgpack")
        );
        assert_eq!(header("traceparent").as_deref(), Some(traceparent));
        assert_eq!(header("Nats-Msg-Id").as_deref(), Some("acme:finance:e-mp"));
        let subject = EventSubject::parse(&msg.subject).expect("subject");
        let encoding = Encoding::from_content_type(header("Content-Type").as_deref());
        let body =
            EventBody::decode(&msg.payload, encoding, &subject, usize::MAX).expect("msgpack body");
        assert_eq!(body.payload, json!({"amount": 10, "currency": "EUR"}));
        assert_eq!(body.event_id.as_deref(), Some("e-mp"));
    })
    .await;
}

#[tokio::test]
async fn publish_survives_a_server_restart_and_is_stored_once() {
    bounded(async {
        let mut server = NatsServer::start().await;
        let client = server.connect().await;
        let mut stream = create_stream(&client).await;
        let publisher = Publisher::new(client.clone()).with_retry(RetryPolicy {
            attempts: 20,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(2),
        });
        publisher
            .publish(event(Some("before")))
            .await
            .expect("before");

        server.stop();
        let pending = tokio::spawn({
            let publisher = publisher.clone();
            async move { publisher.publish(event(Some("during"))).await }
        });
        // Let a few attempts fail against the dead server.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !pending.is_finished(),
            "publish finished while the server was down"
        );
        server.restart().await;

        let ack = pending
            .await
            .expect("join")
            .expect("publish across restart");
        let msg = stream.get_raw_message(ack.seq).await.expect("get message");
        assert_eq!(
            msg.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("acme:finance:during")
        );
        // However many attempts reached the server, one copy is stored.
        assert_eq!(stored(&mut stream).await, 2);
        let again = publisher
            .publish(event(Some("during")))
            .await
            .expect("again");
        assert!(again.duplicate);
        assert_eq!(again.seq, ack.seq);
        assert_eq!(stored(&mut stream).await, 2);
    })
    .await;
}

#[tokio::test]
async fn no_stream_for_the_subject_is_rejected_after_retries() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let policy = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            ack_timeout: Duration::from_secs(2),
        };
        let publisher = Publisher::new(client).with_retry(policy);
        let err = publisher.publish(event(None)).await.expect_err("no stream");
        match err {
            PublishError::Rejected {
                code: None,
                ref message,
            } => {
                assert!(message.contains("after 3 attempt"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!err.is_transient());
    })
    .await;
}

#[tokio::test]
async fn permanent_jetstream_errors_are_not_retried() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let mut stream = create_stream(&client).await;
        // A backoff longer than the test timeout: a retry would hang the test.
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(600),
            max_backoff: Duration::from_secs(600),
            ..RetryPolicy::default()
        };
        let publisher = Publisher::new(client)
            .with_retry(policy)
            .with_stream("SOME_OTHER_STREAM");
        let err = publisher
            .publish(event(None))
            .await
            .expect_err("wrong stream");
        // 10060: expected stream does not match.
        assert!(
            matches!(
                err,
                PublishError::Rejected {
                    code: Some(10060),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(stored(&mut stream).await, 0);
    })
    .await;
}

#[tokio::test]
async fn invalid_events_are_refused_without_sending() {
    bounded(async {
        let server = NatsServer::start().await;
        let client = server.connect().await;
        let mut stream = create_stream(&client).await;
        let publisher = Publisher::new(client);
        let mut mismatch = event(None);
        mismatch.body.property_id = Some("p2".into());
        let err = publisher.publish(mismatch).await.expect_err("mismatch");
        assert!(matches!(err, PublishError::Invalid(_)), "{err:?}");
        assert_eq!(stored(&mut stream).await, 0);
    })
    .await;
}
