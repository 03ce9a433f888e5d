//! An event on its way out, and how it becomes a NATS message: subject,
//! headers (`Nats-Msg-Id`, `Content-Type`, `traceparent`) and encoded body.

use std::str::FromStr;

use async_nats::header::{self, HeaderMap, HeaderValue};
use bytes::Bytes;
use herald_proto::envelope::MSGPACK_CONTENT_TYPE;
use herald_proto::{Encoding, EventBody, EventSubject};

use crate::error::PublishError;

/// Header carrying W3C trace context.
const TRACEPARENT: &str = "traceparent";
/// Header naming the body encoding.
const CONTENT_TYPE: &str = "Content-Type";

/// One event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    /// Where it goes: org, service, property.
    pub subject: EventSubject,
    /// What it says. An `event_id` of `None` is filled with a random id
    /// before the first attempt.
    pub body: EventBody,
    /// Body encoding; MessagePack adds `Content-Type: application/msgpack`.
    pub encoding: Encoding,
    /// W3C `traceparent` of the publisher's span, sent as a header.
    pub traceparent: Option<String>,
}

impl OutgoingEvent {
    /// A JSON event without trace context.
    pub fn new(subject: EventSubject, body: EventBody) -> Self {
        Self {
            subject,
            body,
            encoding: Encoding::Json,
            traceparent: None,
        }
    }

    /// Sets the body encoding.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Sets the `traceparent` header.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Checks the event and builds the message every attempt sends unchanged.
    pub(crate) fn prepare(mut self, expected_stream: &str) -> Result<PreparedEvent, PublishError> {
        let invalid = |e: &dyn std::fmt::Display| PublishError::Invalid(e.to_string());
        // The fields are public, so re-check the tokens rather than trust them.
        let subject = EventSubject::new(
            &self.subject.org,
            &self.subject.service,
            self.subject.property.as_deref(),
        )
        .map_err(|e| invalid(&e))?;

        let event_id = match self.body.event_id.as_deref() {
            Some("") => return Err(PublishError::Invalid("eventId is empty".to_owned())),
            Some(id) => id.to_owned(),
            None => {
                // Generated once, before the first attempt, so every retry
                // carries the same Nats-Msg-Id and JetStream drops repeats.
                let id = new_event_id();
                self.body.event_id = Some(id.clone());
                id
            }
        };

        let payload = self.body.encode(self.encoding);
        // The edge decodes with exactly this check; refusing here saves
        // storing an event that would never be delivered.
        EventBody::decode(&payload, self.encoding, &subject, usize::MAX)
            .map_err(|e| invalid(&e))?;

        // The org is part of the id: the duplicate window is stream-wide, and
        // one org's event ids must never suppress another org's events.
        let msg_id = msg_id(&subject, &event_id);
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, header_value("eventId", &msg_id)?);
        headers.insert(
            header::NATS_EXPECTED_STREAM,
            header_value("stream", expected_stream)?,
        );
        if self.encoding == Encoding::MessagePack {
            headers.insert(CONTENT_TYPE, MSGPACK_CONTENT_TYPE);
        }
        if let Some(tp) = &self.traceparent {
            headers.insert(TRACEPARENT, header_value("traceparent", tp)?);
        }

        Ok(PreparedEvent {
            subject: subject.to_subject(),
            msg_id,
            headers,
            payload: Bytes::from(payload),
        })
    }
}

/// A checked event, ready to be sent as often as the retry policy allows.
#[derive(Debug, Clone)]
pub(crate) struct PreparedEvent {
    /// `herald.events.<org>.<service>.<property>`.
    pub subject: String,
    /// The `Nats-Msg-Id`, `<org>:<service>:<eventId>`.
    pub msg_id: String,
    /// Message headers.
    pub headers: HeaderMap,
    /// Encoded body.
    pub payload: Bytes,
}

/// The `Nats-Msg-Id` of an event: `<org>:<service>:<eventId>` (contract
/// section 1). The edge strips the `<org>:<service>:` prefix again when the
/// body carries no `eventId`.
pub fn msg_id(subject: &EventSubject, event_id: &str) -> String {
    format!("{}:{}:{event_id}", subject.org, subject.service)
}

/// A random event id: 16 hex digits.
pub(crate) fn new_event_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Header values may not hold line breaks; async-nats panics on them, so
/// check first.
fn header_value(what: &str, value: &str) -> Result<HeaderValue, PublishError> {
    HeaderValue::from_str(value)
        .map_err(|_| PublishError::Invalid(format!("{what} may not contain line breaks")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(property: Option<&str>) -> OutgoingEvent {
        OutgoingEvent::new(
            EventSubject::new("acme", "finance", property).expect("subject"),
            EventBody {
                event_type: Some("expense.created".into()),
                payload: json!({"amount": 10}),
                ..EventBody::default()
            },
        )
    }

    #[test]
    fn generates_one_event_id_and_uses_it_for_the_msg_id() {
        let p = event(Some("p1"))
            .prepare("HERALD_EVENTS")
            .expect("valid event");
        assert_eq!(p.subject, "herald.events.acme.finance.p1");
        let id = p
            .msg_id
            .strip_prefix("acme:finance:")
            .expect("org and service prefix");
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let body: EventBody = serde_json::from_slice(&p.payload).expect("JSON body");
        assert_eq!(body.event_id.as_deref(), Some(id));
        assert_eq!(
            p.headers
                .get(header::NATS_MESSAGE_ID)
                .expect("msg id")
                .as_str(),
            p.msg_id
        );
        assert!(p.headers.get(CONTENT_TYPE).is_none());
        assert_eq!(
            p.headers
                .get(header::NATS_EXPECTED_STREAM)
                .expect("expected stream")
                .as_str(),
            "HERALD_EVENTS"
        );
    }

    #[test]
    fn keeps_a_given_event_id_and_sets_optional_headers() {
        let mut ev = event(None)
            .with_encoding(Encoding::MessagePack)
            .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        ev.body.event_id = Some("e-1".into());
        let p = ev.prepare("S").expect("valid event");
        assert_eq!(p.subject, "herald.events.acme.finance._");
        assert_eq!(p.msg_id, "acme:finance:e-1");
        assert_eq!(
            p.headers.get(CONTENT_TYPE).expect("content type").as_str(),
            "application/msgpack"
        );
        assert!(p.headers.get("traceparent").is_some());
        let wide = EventSubject::new("acme", "finance", None).expect("subject");
        let body = EventBody::decode(&p.payload, Encoding::MessagePack, &wide, usize::MAX)
            .expect("msgpack body");
        assert_eq!(body.event_id.as_deref(), Some("e-1"));
    }

    #[test]
    fn refuses_invalid_events_before_sending() {
        let mut no_type = event(Some("p1"));
        no_type.body.event_type = None;
        let mut mismatch = event(Some("p1"));
        mismatch.body.org_id = Some("globex".into());
        let mut bad_token = event(Some("p1"));
        bad_token.subject.service = "fin.ance".into();
        let mut empty_id = event(Some("p1"));
        empty_id.body.event_id = Some(String::new());
        let mut newline_id = event(Some("p1"));
        newline_id.body.event_id = Some("a\r\nb".into());
        let newline_trace = event(Some("p1")).with_traceparent("x\ny");
        for ev in [
            no_type,
            mismatch,
            bad_token,
            empty_id,
            newline_id,
            newline_trace,
        ] {
            let err = ev.clone().prepare("S").expect_err("invalid event");
            assert!(matches!(err, PublishError::Invalid(_)), "{ev:?}: {err}");
        }
    }
}
