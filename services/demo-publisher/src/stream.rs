//! The events stream: created with the contract's settings when missing,
//! left exactly as it is when it exists.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, Republish, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use herald_proto::subject::{EVENTS_PREFIX, LIVE_PREFIX};

use crate::error::DemoError;

/// How long the stream keeps events.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The window in which JetStream drops a repeated `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);

/// What [`ensure_stream`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// The stream was missing and has been created.
    Created,
    /// The stream existed (or another process created it at the same time).
    Existing,
}

/// The configuration of a new events stream: `herald.events.>`, limits
/// retention, file storage, 24 h, 2 min dedup window, direct get, and every
/// stored event RePublished to `herald.live.>` for the edge nodes.
pub fn stream_config(name: &str) -> Config {
    Config {
        name: name.to_owned(),
        subjects: vec![format!("{EVENTS_PREFIX}.>")],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        num_replicas: 1,
        republish: Some(Republish {
            source: format!("{EVENTS_PREFIX}.>"),
            destination: format!("{LIVE_PREFIX}.>"),
            headers_only: false,
        }),
        ..Config::default()
    }
}

/// Creates stream `name` when it is missing. An existing stream is never
/// changed, only checked for covering the event subjects.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<StreamStatus, DemoError> {
    let err = match jetstream.get_stream(name).await {
        Ok(stream) => {
            let subjects = &stream.cached_info().config.subjects;
            let wanted = format!("{EVENTS_PREFIX}.>");
            if !subjects.contains(&wanted) {
                tracing::warn!(
                    stream = name,
                    ?subjects,
                    "existing stream does not list {wanted}; publishes may be rejected"
                );
            }
            tracing::info!(stream = name, "stream exists, leaving its config alone");
            return Ok(StreamStatus::Existing);
        }
        Err(err) => err,
    };
    match err.kind() {
        GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
        _ => return Err(DemoError::Nats(format!("looking up stream {name}: {err}"))),
    }
    match jetstream.create_stream(stream_config(name)).await {
        Ok(_) => {
            tracing::info!(stream = name, "created stream");
            Ok(StreamStatus::Created)
        }
        Err(err) => match err.kind() {
            // Someone else (an edge node) created it in the meantime.
            CreateStreamErrorKind::JetStream(js)
                if js.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                Ok(StreamStatus::Existing)
            }
            _ => Err(DemoError::Nats(format!("creating stream {name}: {err}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_streams_follow_the_contract() {
        let c = stream_config("HERALD_EVENTS");
        assert_eq!(c.name, "HERALD_EVENTS");
        assert_eq!(c.subjects, ["herald.events.>"]);
        assert_eq!(c.retention, RetentionPolicy::Limits);
        assert_eq!(c.storage, StorageType::File);
        assert_eq!(c.max_age, Duration::from_secs(86_400));
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert!(c.allow_direct);
        let republish = c.republish.expect("republish");
        assert_eq!(
            (republish.source.as_str(), republish.destination.as_str()),
            ("herald.events.>", "herald.live.>")
        );
    }
}
