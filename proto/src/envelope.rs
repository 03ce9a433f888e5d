//! The body a domain service publishes to `herald.events.…`: a JSON object, or
//! a MessagePack map when the message carries `Content-Type: application/msgpack`.
//!
//! [`EventBody::decode`] parses and checks a body against its subject;
//! [`EventBody::into_event`] fills the defaults the contract gives
//! (`eventId` from `Nats-Msg-Id` or the sequence, `timestamp` from the store).

use serde::{Deserialize, Serialize};

use crate::event::DeliveredEvent;
use crate::reject::RejectReason;
use crate::subject::EventSubject;

/// Content type that marks a MessagePack body.
pub const MSGPACK_CONTENT_TYPE: &str = "application/msgpack";

/// Body encodings Herald understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON object (the default).
    Json,
    /// A MessagePack map (`Content-Type: application/msgpack`).
    MessagePack,
}

impl Encoding {
    /// Picks the encoding from a `Content-Type` header value, if any.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct) if ct.trim().eq_ignore_ascii_case(MSGPACK_CONTENT_TYPE) => Self::MessagePack,
            _ => Self::Json,
        }
    }
}

/// Why a published body was rejected. Each variant counts under one
/// [`RejectReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than the configured maximum.
    #[error("body of {size} bytes is over the {max} byte limit")]
    TooLarge {
        /// Body size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// Not a JSON object / MessagePack map of the right shape.
    #[error("invalid body: {0}")]
    Invalid(String),
    /// `eventType` missing or empty.
    #[error("eventType is required")]
    MissingEventType,
    /// `orgId`, `service` or `propertyId` disagrees with the subject.
    #[error("{field} in the body does not match the subject")]
    Mismatch {
        /// The disagreeing field.
        field: &'static str,
    },
}

impl EnvelopeError {
    /// The reject reason it counts under.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::TooLarge { .. } => RejectReason::TooLarge,
            Self::Invalid(_) => RejectReason::Invalid,
            Self::MissingEventType => RejectReason::MissingEventType,
            Self::Mismatch { .. } => RejectReason::Mismatch,
        }
    }

    /// Short stable label for metrics and logs: its [`reason`](Self::reason)'s.
    pub fn label(&self) -> &'static str {
        self.reason().as_str()
    }
}

/// A published event body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// Event type, e.g. `expense.created`. Required.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Publisher's event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Kind of entity the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    /// Id of that entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// Free-form payload.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Must equal the subject's org when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// Must equal the subject's service when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Must equal the subject's property when present (`null` or `_` for org-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<String>,
}

impl EventBody {
    /// Decodes `bytes` and checks the body against `subject`.
    pub fn decode(
        bytes: &[u8],
        encoding: Encoding,
        subject: &EventSubject,
        max_bytes: usize,
    ) -> Result<Self, EnvelopeError> {
        if bytes.len() > max_bytes {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                max: max_bytes,
            });
        }
        let body: Self = match encoding {
            Encoding::Json => {
                serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Invalid(e.to_string()))?
            }
            Encoding::MessagePack => crate::msgpack::from_slice(bytes)
                .map_err(|e| EnvelopeError::Invalid(e.to_string()))?,
        };
        body.check(subject)?;
        Ok(body)
    }

    /// Encodes the body for publishing.
    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            // Serialising plain data with string keys cannot fail.
            Encoding::Json => serde_json::to_vec(self).unwrap_or_default(),
            Encoding::MessagePack => rmp_serde::to_vec_named(self).unwrap_or_default(),
        }
    }

    fn check(&self, subject: &EventSubject) -> Result<(), EnvelopeError> {
        if self.event_type.as_deref().is_none_or(str::is_empty) {
            return Err(EnvelopeError::MissingEventType);
        }
        if self.org_id.as_deref().is_some_and(|o| o != subject.org) {
            return Err(EnvelopeError::Mismatch { field: "orgId" });
        }
        if self
            .service
            .as_deref()
            .is_some_and(|s| s != subject.service)
        {
            return Err(EnvelopeError::Mismatch { field: "service" });
        }
        if let Some(p) = self.property_id.as_deref() {
            let body_prop = (p != crate::subject::ORG_WIDE).then_some(p);
            if body_prop != subject.property.as_deref() {
                return Err(EnvelopeError::Mismatch {
                    field: "propertyId",
                });
            }
        }
        Ok(())
    }

    /// Turns a checked body into the delivered event.
    ///
    /// `msg_id` is the `Nats-Msg-Id` header; a leading `<org>:<service>:` is
    /// stripped, since publishers set `Nats-Msg-Id: <org>:<service>:<eventId>`.
    pub fn into_event(
        self,
        seq: u64,
        subject: EventSubject,
        msg_id: Option<&str>,
        stored_ms: i64,
    ) -> DeliveredEvent {
        let event_id = self.event_id.unwrap_or_else(|| match msg_id {
            Some(id) => id
                .strip_prefix(subject.org.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|rest| rest.strip_prefix(subject.service.as_str()))
                .and_then(|rest| rest.strip_prefix(':'))
                .unwrap_or(id)
                .to_owned(),
            None => seq.to_string(),
        });
        DeliveredEvent {
            seq,
            org_id: subject.org,
            service: subject.service,
            property_id: subject.property,
            event_id,
            event_type: self.event_type.unwrap_or_default(),
            timestamp: self.timestamp.unwrap_or(stored_ms),
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            payload: self.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject() -> EventSubject {
        EventSubject::new("acme", "finance", Some("p1")).unwrap()
    }

    #[test]
    fn decodes_json_and_fills_defaults() {
        let raw = br#"{"eventType":"expense.created","payload":{"amount":10}}"#;
        let body = EventBody::decode(raw, Encoding::Json, &subject(), 1024).unwrap();
        let ev = body.into_event(42, subject(), Some("acme:finance:e-1"), 1_700_000_000_000);
        assert_eq!(ev.event_id, "e-1");
        // Only this event's own `<org>:<service>:` is stripped.
        for other in ["globex:finance:e-1", "finance:e-1"] {
            let body =
                EventBody::decode(raw, Encoding::Json, &subject(), 1024).expect("valid body");
            assert_eq!(
                body.into_event(1, subject(), Some(other), 0).event_id,
                other
            );
        }
        assert_eq!(ev.timestamp, 1_700_000_000_000);
        assert_eq!(ev.payload, json!({"amount":10}));

        let body = EventBody::decode(raw, Encoding::Json, &subject(), 1024).unwrap();
        assert_eq!(body.into_event(7, subject(), None, 0).event_id, "7");
    }

    #[test]
    fn round_trips_messagepack() {
        let body = EventBody {
            event_type: Some("task.updated".into()),
            event_id: Some("t-9".into()),
            timestamp: Some(5),
            entity_type: Some("task".into()),
            entity_id: Some("9".into()),
            payload: json!({"done": true, "tags": ["a", "b"], "n": 1.5}),
            org_id: Some("acme".into()),
            service: Some("finance".into()),
            property_id: Some("p1".into()),
        };
        let bytes = body.encode(Encoding::MessagePack);
        let back = EventBody::decode(&bytes, Encoding::MessagePack, &subject(), 1024).unwrap();
        assert_eq!(back, body);
        let json = body.encode(Encoding::Json);
        assert_eq!(
            EventBody::decode(&json, Encoding::Json, &subject(), 1024).unwrap(),
            body
        );
    }

    #[test]
    fn rejects_bad_bodies() {
        let s = subject();
        let cases: [(&[u8], Encoding, &str); 7] = [
            (b"not json", Encoding::Json, "invalid"),
            (b"[1,2]", Encoding::Json, "invalid"),
            (br#"{"payload":1}"#, Encoding::Json, "missing_event_type"),
            (br#"{"eventType":""}"#, Encoding::Json, "missing_event_type"),
            (
                br#"{"eventType":"x","orgId":"other"}"#,
                Encoding::Json,
                "mismatch",
            ),
            (
                br#"{"eventType":"x","propertyId":"p2"}"#,
                Encoding::Json,
                "mismatch",
            ),
            (b"\xc1\xc1", Encoding::MessagePack, "invalid"),
        ];
        for (raw, enc, label) in cases {
            let err = EventBody::decode(raw, enc, &s, 1024).unwrap_err();
            assert_eq!(err.label(), label, "{}", String::from_utf8_lossy(raw));
        }
        let big = vec![b' '; 2000];
        assert_eq!(
            EventBody::decode(&big, Encoding::Json, &s, 1024)
                .unwrap_err()
                .label(),
            "too_large"
        );
    }

    #[test]
    fn org_wide_property_matches_underscore_or_absent() {
        let wide = EventSubject::new("acme", "tasks", None).unwrap();
        let raw = br#"{"eventType":"x","propertyId":"_"}"#;
        assert!(EventBody::decode(raw, Encoding::Json, &wide, 1024).is_ok());
        let raw = br#"{"eventType":"x","propertyId":"p1"}"#;
        assert!(EventBody::decode(raw, Encoding::Json, &wide, 1024).is_err());
    }

    #[test]
    fn picks_encoding_from_content_type() {
        assert_eq!(
            Encoding::from_content_type(Some("application/msgpack")),
            Encoding::MessagePack
        );
        assert_eq!(
            Encoding::from_content_type(Some("application/json")),
            Encoding::Json
        );
        assert_eq!(Encoding::from_content_type(None), Encoding::Json);
    }
}
