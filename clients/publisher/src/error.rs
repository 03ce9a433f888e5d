//! Errors of [`Publisher::publish`](crate::Publisher::publish), and the
//! sorting of async-nats publish failures into "retry" and "give up".

use async_nats::jetstream::context::{PublishError as NatsPublishError, PublishErrorKind};
use async_nats::jetstream::ErrorCode;

/// Why an event was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// JetStream refused the event for good: no stream stores the subject,
    /// the stream named by the publisher is not the one that stores it, or
    /// another permanent JetStream error. Retrying the same event will not help.
    #[error("publish rejected: {message}")]
    Rejected {
        /// JetStream's `err_code` (e.g. 10060, stream does not match), `None`
        /// when no stream answered at all.
        code: Option<u64>,
        /// What JetStream said.
        message: String,
    },
    /// Transient failures (no connection, ack timeouts, a stream that is
    /// offline) lasted through every attempt of the retry budget. The event
    /// may or may not be stored; publishing it again with the same event id
    /// is safe.
    #[error("JetStream unavailable after {attempts} attempt(s): {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The event itself is wrong: a bad subject token, a body that does not
    /// match its subject or lacks `eventType`, a header value with a line
    /// break, or a message over the server's `max_payload`. Nothing was sent,
    /// or the server refused it before storing.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl PublishError {
    /// Whether publishing the same event later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// What one failed attempt means for the next.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt after a backoff. `no_stream` marks "no
    /// responders": nothing listens on the subject, either because the stream
    /// is being recovered or elected, or because there is none.
    Transient { reason: String, no_stream: bool },
    /// Give up now.
    Permanent(PublishError),
}

/// Sorts one failed attempt.
pub(crate) fn classify(err: &NatsPublishError) -> Failure {
    let transient = |reason: String| Failure::Transient {
        reason,
        no_stream: false,
    };
    match err.kind() {
        PublishErrorKind::StreamNotFound => Failure::Transient {
            reason: "no responders: no stream stores the subject".to_owned(),
            no_stream: true,
        },
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => transient(err.to_string()),
        PublishErrorKind::MaxPayloadExceeded => {
            Failure::Permanent(PublishError::Invalid(err.to_string()))
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            Failure::Permanent(PublishError::Rejected {
                code: jetstream_error(err).map(|e| e.error_code().0),
                message: err.to_string(),
            })
        }
        PublishErrorKind::Other => match jetstream_error(err) {
            Some(js) if is_transient_jetstream(js) => transient(js.to_string()),
            Some(js) => Failure::Permanent(PublishError::Rejected {
                code: Some(js.error_code().0),
                message: js.to_string(),
            }),
            // Not an answer from JetStream: the request never got through
            // (connection trouble) or the answer was garbled in transit.
            None => transient(err.to_string()),
        },
    }
}

/// JetStream errors that describe a passing state of the server or stream
/// rather than the event.
fn is_transient_jetstream(err: &async_nats::jetstream::Error) -> bool {
    // 503: JetStream or its cluster temporarily unavailable.
    err.code() == 503
        || [
            ErrorCode::STREAM_OFFLINE,
            ErrorCode::STREAM_OFFLINE_REASON,
            // The same msg id is being stored right now; the retry gets the
            // duplicate ack.
            ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT,
        ]
        .contains(&err.error_code())
}

fn jetstream_error(err: &NatsPublishError) -> Option<&async_nats::jetstream::Error> {
    std::error::Error::source(err)?.downcast_ref::<async_nats::jetstream::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js_error(code: usize, err_code: u64) -> NatsPublishError {
        let js: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": code, "err_code": err_code, "description": "test"
        }))
        .expect("jetstream error");
        NatsPublishError::with_source(PublishErrorKind::Other, js)
    }

    fn is_transient(f: &Failure) -> bool {
        matches!(f, Failure::Transient { .. })
    }

    #[test]
    fn retries_connection_trouble_and_missing_responders() {
        for kind in [
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            assert!(
                is_transient(&classify(&NatsPublishError::new(kind))),
                "{kind}"
            );
        }
        let Failure::Transient { no_stream, .. } =
            classify(&NatsPublishError::new(PublishErrorKind::StreamNotFound))
        else {
            panic!("not transient")
        };
        assert!(no_stream);
        let io = std::io::Error::other("connection reset");
        assert!(is_transient(&classify(&NatsPublishError::with_source(
            PublishErrorKind::Other,
            io
        ))));
    }

    #[test]
    fn retries_passing_jetstream_states() {
        assert!(is_transient(&classify(&js_error(503, 10008))));
        assert!(is_transient(&classify(&js_error(500, 10118))));
        assert!(is_transient(&classify(&js_error(400, 10158))));
    }

    #[test]
    fn gives_up_on_permanent_errors() {
        match classify(&js_error(400, 10060)) {
            Failure::Permanent(PublishError::Rejected { code, .. }) => {
                assert_eq!(code, Some(10060))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&NatsPublishError::new(PublishErrorKind::MaxPayloadExceeded)),
            Failure::Permanent(PublishError::Invalid(_))
        ));
        assert!(matches!(
            classify(&NatsPublishError::new(PublishErrorKind::WrongLastSequence)),
            Failure::Permanent(PublishError::Rejected { code: None, .. })
        ));
    }
}
