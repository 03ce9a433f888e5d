//! The events stream: created with the contract's settings when missing,
//! left exactly as it is when it exists.

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::Config;
use async_nats::jetstream::{self, ErrorCode};
use herald_publisher::stream::{events_stream, events_subjects, StreamLimits};
pub use herald_publisher::stream::{DUPLICATE_WINDOW, MAX_AGE};

use crate::error::DemoError;

/// What [`ensure_stream`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// The stream was missing and has been created.
    Created,
    /// The stream existed (or another process created it at the same time).
    Existing,
}

/// The configuration of a new events stream: the shared contract
/// ([`events_stream`]) with one replica, 24 h and no message size limit.
pub fn stream_config(name: &str) -> Config {
    events_stream(name, StreamLimits::default())
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
            let wanted = events_subjects();
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
        assert_eq!(c, events_stream("HERALD_EVENTS", StreamLimits::default()));
        assert_eq!((c.name.as_str(), c.num_replicas), ("HERALD_EVENTS", 1));
    }
}
