//! The event stream in JetStream: makes sure it exists (never rewriting a
//! stream that differs, only reporting it), samples its head and epoch, and
//! reads an org's stored events by sequence.

use std::time::Duration;

use async_nats::jetstream::{self, context::Context, message::StreamMessage, stream, ErrorCode};

use herald_proto::subject::{org_events_filter, EVENTS_PREFIX, LIVE_PREFIX};

/// Where the stream stands: its first and last sequence and its incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// Oldest sequence still stored (`last + 1` when empty).
    pub first_seq: u64,
    /// Newest sequence stored.
    pub last_seq: u64,
    /// Names this incarnation of the stream (its creation time).
    pub epoch: String,
    /// The stream RePublishes to the live subjects the node subscribes to.
    pub republishes: bool,
}

/// Failure talking to JetStream.
#[derive(Debug, thiserror::Error)]
#[error("jetstream: {0}")]
pub struct StreamError(pub String);

/// Handle on the event stream.
#[derive(Clone)]
pub struct EventStream {
    js: Context,
    name: String,
    replicas: usize,
    max_age: Duration,
}

impl EventStream {
    /// A handle; nothing is sent until a method is called.
    pub fn new(client: async_nats::Client, name: &str, replicas: usize, max_age: Duration) -> Self {
        Self {
            js: jetstream::new(client),
            name: name.to_owned(),
            replicas,
            max_age,
        }
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config this node creates the stream with.
    pub fn wanted_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![format!("{EVENTS_PREFIX}.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.max_age,
            duplicate_window: Duration::from_secs(120),
            num_replicas: self.replicas,
            allow_direct: true,
            republish: Some(stream::Republish {
                source: format!("{EVENTS_PREFIX}.>"),
                destination: format!("{LIVE_PREFIX}.>"),
                headers_only: false,
            }),
            ..Default::default()
        }
    }

    /// Creates the stream when missing; when it exists with another config,
    /// logs every difference and leaves it alone. Returns its head.
    pub async fn ensure(&self) -> Result<StreamHead, StreamError> {
        match self.js.get_stream(&self.name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| StreamError(e.to_string()))?;
                for diff in differences(&self.wanted_config(), &info.config) {
                    tracing::warn!(stream = %self.name, %diff, "existing stream differs from the wanted config; leaving it as it is");
                }
                Ok(head_of(info))
            }
            Err(e) if is_not_found(&e) => {
                tracing::info!(stream = %self.name, replicas = self.replicas, "creating stream");
                let mut s = self
                    .js
                    .get_or_create_stream(self.wanted_config())
                    .await
                    .map_err(|e| StreamError(e.to_string()))?;
                let info = s.info().await.map_err(|e| StreamError(e.to_string()))?;
                Ok(head_of(info))
            }
            Err(e) => Err(StreamError(e.to_string())),
        }
    }

    /// Samples the stream's head; recreates the stream if it was deleted.
    pub async fn head(&self) -> Result<StreamHead, StreamError> {
        match self.js.get_stream(&self.name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| StreamError(e.to_string()))?;
                Ok(head_of(info))
            }
            Err(e) if is_not_found(&e) => {
                tracing::warn!(stream = %self.name, "stream is gone");
                self.ensure().await
            }
            Err(e) => Err(StreamError(e.to_string())),
        }
    }

    /// The first stored event of `org` with sequence `>= from`, read from the
    /// stream leader (so it is never behind what the leader acknowledged).
    pub async fn next_for_org(
        &self,
        org: &str,
        from: u64,
    ) -> Result<Option<StreamMessage>, StreamError> {
        let handle = self
            .js
            .get_stream_no_info(&self.name)
            .await
            .map_err(|e| StreamError(e.to_string()))?;
        match handle
            .raw_message_builder()
            .sequence(from.max(1))
            .next_by_subject(org_events_filter(org))
            .send()
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(StreamError(e.to_string())),
        }
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn head_of(info: &stream::Info) -> StreamHead {
    let republishes = info.config.republish.as_ref().is_some_and(|r| {
        (r.source == format!("{EVENTS_PREFIX}.>") || r.source == ">")
            && r.destination == format!("{LIVE_PREFIX}.>")
            && !r.headers_only
    });
    StreamHead {
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
        epoch: info.created.unix_timestamp_nanos().to_string(),
        republishes,
    }
}

/// Human-readable differences between the wanted and the actual config.
pub fn differences(want: &stream::Config, have: &stream::Config) -> Vec<String> {
    let fields = [
        (
            "subjects",
            format!("{:?}", want.subjects),
            format!("{:?}", have.subjects),
        ),
        (
            "retention",
            format!("{:?}", want.retention),
            format!("{:?}", have.retention),
        ),
        (
            "storage",
            format!("{:?}", want.storage),
            format!("{:?}", have.storage),
        ),
        (
            "max_age",
            format!("{:?}", want.max_age),
            format!("{:?}", have.max_age),
        ),
        (
            "duplicate_window",
            format!("{:?}", want.duplicate_window),
            format!("{:?}", have.duplicate_window),
        ),
        (
            "num_replicas",
            want.num_replicas.to_string(),
            have.num_replicas.to_string(),
        ),
        (
            "republish",
            format!("{:?}", want.republish),
            format!("{:?}", have.republish),
        ),
    ];
    let out = fields
        .into_iter()
        .filter(|(_, w, h)| w != h)
        .map(|(field, w, h)| format!("{field}: wanted {w}, found {h}"))
        .collect();
    out
}
