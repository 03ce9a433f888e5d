//! The [`Publisher`]: sends one event to JetStream, waits for the ack, and
//! retries transient failures with the same `Nats-Msg-Id`.

use async_nats::jetstream;
use herald_proto::Partitions;
use rand::Rng;
use tracing::Instrument;

use crate::error::{classify, Failure, PublishError};
use crate::event::{OutgoingEvent, PreparedEvent};
use crate::retry::RetryPolicy;
use crate::trace;

/// Stream Herald stores events in unless configured otherwise.
pub const DEFAULT_STREAM: &str = "HERALD_EVENTS";

/// Where JetStream stored an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// Stream sequence of the stored event.
    pub seq: u64,
    /// True when JetStream already held this `Nats-Msg-Id` within its
    /// duplicate window; `seq` is then the sequence of the stored copy.
    ///
    /// This is what JetStream reports for the attempt that got the ack. When
    /// an earlier attempt of the same call was stored but its ack was lost
    /// (a timeout around a reconnect), the later attempt is acked as a
    /// duplicate although the event was stored only once, by this call.
    pub duplicate: bool,
    /// Stream that stored it.
    pub stream: String,
}

/// Publishes Herald events to JetStream. Cheap to clone; clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct Publisher {
    jetstream: jetstream::Context,
    retry: RetryPolicy,
    stream: String,
    partitions: Partitions,
}

impl Publisher {
    /// A publisher on `client` with the default [`RetryPolicy`], expecting
    /// events to land in [`DEFAULT_STREAM`].
    pub fn new(client: async_nats::Client) -> Self {
        let retry = RetryPolicy::default();
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(retry.ack_timeout);
        Self {
            jetstream,
            retry,
            stream: DEFAULT_STREAM.to_owned(),
            partitions: Partitions::single(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.jetstream.set_timeout(policy.ack_timeout);
        self.retry = policy;
        self
    }

    /// Names the stream events must land in. Every publish carries
    /// `Nats-Expected-Stream`, so a subject stored by some other stream is
    /// [`PublishError::Rejected`] instead of silently going astray.
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }

    /// Spreads events over `partitions` streams named after the stream
    /// (`<stream>_<k>`, see [`Partitions`]): each publish expects the
    /// stream of its org's partition.
    pub fn with_partitions(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    /// The stream events are expected to land in (the base name when
    /// partitioned).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The stream an event of `org` must land in.
    pub fn stream_for(&self, org: &str) -> String {
        self.partitions
            .stream_name(&self.stream, self.partitions.of(org))
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Publishes `event` and waits for JetStream to store it.
    ///
    /// Transient failures (no responders while a stream is recovered or its
    /// leader elected, ack timeouts, lost connections) are retried with
    /// backoff; every attempt sends the same `Nats-Msg-Id`, so JetStream
    /// stores the event at most once within its duplicate window. Permanent
    /// errors are returned at once. When every attempt met "no responders",
    /// the error is [`PublishError::Rejected`] with `code: None`: no stream
    /// stores the subject.
    ///
    /// The publish runs in a `herald.publish` producer span; when that span
    /// is exported (an OpenTelemetry layer is installed) and the event names
    /// no `traceparent` of its own, the message carries the span's.
    pub async fn publish(&self, event: OutgoingEvent) -> Result<PublishAck, PublishError> {
        let span = trace::publish_span(&event.subject.to_subject());
        let event = match (&event.traceparent, trace::traceparent_of(&span)) {
            (None, Some(tp)) => event.with_traceparent(tp),
            _ => event,
        };
        self.publish_traced(event).instrument(span).await
    }

    async fn publish_traced(&self, event: OutgoingEvent) -> Result<PublishAck, PublishError> {
        let stream = self.stream_for(&event.subject.org);
        let prepared = event.prepare(&stream)?;
        let attempts = self.retry.max_attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (reason, no_stream) = match self.attempt(&prepared).await {
                Ok(ack) => {
                    return Ok(PublishAck {
                        seq: ack.sequence,
                        duplicate: ack.duplicate,
                        stream: ack.stream,
                    })
                }
                Err(err) => match classify(&err) {
                    Failure::Permanent(e) => return Err(e),
                    Failure::Transient { reason, no_stream } => (reason, no_stream),
                },
            };
            if attempt >= attempts {
                return Err(if no_stream {
                    PublishError::Rejected {
                        code: None,
                        message: format!(
                            "no stream stores {} (no responders after {attempt} attempt(s))",
                            prepared.subject
                        ),
                    }
                } else {
                    PublishError::Unavailable {
                        attempts: attempt,
                        last: reason,
                    }
                });
            }
            let delay = self.retry.backoff(attempt, rand::rng().random::<f64>());
            tracing::debug!(
                subject = %prepared.subject,
                msg_id = %prepared.msg_id,
                attempt,
                ?delay,
                %reason,
                "publish failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One send and ack wait, both bounded by the policy's ack timeout.
    async fn attempt(
        &self,
        prepared: &PreparedEvent,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        self.jetstream
            .publish_with_headers(
                prepared.subject.clone(),
                prepared.headers.clone(),
                prepared.payload.clone(),
            )
            .await?
            .await
    }
}
