//! Herald's publishing API for domain services (Rust).
//!
//! A [`Publisher`] sends [`OutgoingEvent`]s to NATS JetStream on
//! `herald.events.<org>.<service>.<property>` and waits for the stream's ack.
//! Every event carries `Nats-Msg-Id: <org>:<service>:<eventId>`, so the
//! retries the publisher makes on transient failures never store an event
//! twice, and one org's event ids never suppress another org's events.
//!
//! - [`publisher`]: the [`Publisher`] and the [`PublishAck`] it returns.
//! - [`event`]: [`OutgoingEvent`], and how it becomes subject, headers and bytes.
//! - [`retry`]: [`RetryPolicy`], exponential backoff with jitter.
//! - [`error`]: [`PublishError`], and which JetStream failures are worth a retry.
//! - [`connect`]: NATS credentials (URL, user/password, token, creds file)
//!   turned into connect options, never logged.
//! - [`stream`]: the events stream's JetStream config, the one every
//!   Herald component creates it with.
//! - [`probe`]: proving that an org's events land in the expected stream
//!   (the partition mapping) without storing anything.
//! - `trace`: each publish runs in a `herald.publish` producer span whose
//!   W3C `traceparent` the message carries (unless the event names its own),
//!   when the application exports traces with OpenTelemetry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_proto::{EventBody, EventSubject};
//! use herald_publisher::{OutgoingEvent, Publisher};
//!
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let publisher = Publisher::new(client);
//! let subject = EventSubject::new("acme", "finance", Some("p1"))?;
//! let body = EventBody {
//!     event_type: Some("expense.created".into()),
//!     payload: serde_json::json!({"amount": 10}),
//!     ..EventBody::default()
//! };
//! let ack = publisher.publish(OutgoingEvent::new(subject, body)).await?;
//! println!("stored as {} in {}", ack.seq, ack.stream);
//! # Ok(())
//! # }
//! ```

pub mod connect;
pub mod error;
pub mod event;
pub mod probe;
pub mod publisher;
pub mod retry;
pub mod stream;
mod trace;

pub use connect::{redact_urls, CredentialsError, NatsAuth, NatsServers};
pub use error::PublishError;
pub use event::OutgoingEvent;
pub use publisher::{PublishAck, Publisher, DEFAULT_STREAM};
pub use retry::RetryPolicy;
