//! A message read back from an events stream, decoded into the event an
//! edge delivers: the stored subject (with its partition token when
//! partitioned) checked against the org and the deployment's partitions,
//! the body decoded by its `Content-Type` and checked against the subject,
//! and the contract's defaults filled in (see [`EventBody::into_event`]).
//!
//! Invariant: a stored message becomes an event here exactly when an edge
//! would deliver it, and otherwise a [`Rejected`] with the one
//! [`RejectReason`] the edge counts it under.

use crate::envelope::{Encoding, EventBody};
use crate::event::DeliveredEvent;
use crate::partition::{self, Partitions};
use crate::reject::RejectReason;
use crate::subject::EventSubject;

/// The parts of a stored message that decoding reads.
#[derive(Debug, Clone, Copy)]
pub struct StoredMessage<'a> {
    /// Stream sequence.
    pub seq: u64,
    /// The subject as stored (a sixth, partition token when partitioned).
    pub subject: &'a str,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The `Nats-Msg-Id` header, if any.
    pub msg_id: Option<&'a str>,
    /// The body.
    pub payload: &'a [u8],
    /// When JetStream stored it, ms since the Unix epoch.
    pub stored_ms: i64,
}

/// Why a stored message is not delivered, and the details to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq} rejected ({reason}): {detail}")]
pub struct Rejected {
    /// Stream sequence of the message.
    pub seq: u64,
    /// The reason it counts under.
    pub reason: RejectReason,
    /// What was wrong, for the log.
    pub detail: String,
}

impl StoredMessage<'_> {
    /// Decodes the message as an event of `org`, in a deployment of
    /// `partitions`, refusing bodies over `max_bytes`.
    pub fn decode(
        &self,
        org: &str,
        partitions: Partitions,
        max_bytes: usize,
    ) -> Result<DeliveredEvent, Rejected> {
        let (base, token) = partition::split(self.subject);
        if partitions.check(org, token).is_err() {
            return Err(self.rejected(
                RejectReason::BadSubject,
                format!(
                    "{}: partition token does not fit this deployment's partitions",
                    self.subject
                ),
            ));
        }
        self.decode_base(base, org, max_bytes)
    }

    /// Decodes the message whose subject, without any partition token, is
    /// `subject`: the part of [`decode`](Self::decode) after the partition
    /// check, for messages whose partition was checked elsewhere.
    pub fn decode_base(
        &self,
        subject: &str,
        org: &str,
        max_bytes: usize,
    ) -> Result<DeliveredEvent, Rejected> {
        let subject = match EventSubject::parse(subject) {
            Ok(s) if s.org == org => s,
            Ok(_) => {
                return Err(self.rejected(
                    RejectReason::BadSubject,
                    format!("subject {subject} is not of org {org}"),
                ))
            }
            Err(e) => {
                return Err(self.rejected(RejectReason::BadSubject, format!("{subject}: {e}")))
            }
        };
        let encoding = Encoding::from_content_type(self.content_type);
        match EventBody::decode(self.payload, encoding, &subject, max_bytes) {
            Ok(body) => Ok(body.into_event(self.seq, subject, self.msg_id, self.stored_ms)),
            Err(e) => Err(self.rejected(e.reason(), e.to_string())),
        }
    }

    fn rejected(&self, reason: RejectReason, detail: String) -> Rejected {
        Rejected {
            seq: self.seq,
            reason,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message<'a>(subject: &'a str, payload: &'a [u8]) -> StoredMessage<'a> {
        StoredMessage {
            seq: 7,
            subject,
            content_type: None,
            msg_id: Some("acme:finance:e-1"),
            payload,
            stored_ms: 1_000,
        }
    }

    #[test]
    fn decodes_as_the_edge_delivers() {
        let body = br#"{"eventType":"expense.created","payload":{"amount":10}}"#;
        let ev = message("herald.events.acme.finance.p1", body)
            .decode("acme", Partitions::single(), 1024)
            .expect("event");
        assert_eq!(
            serde_json::to_value(&ev).expect("json"),
            json!({"seq":7,"orgId":"acme","service":"finance","propertyId":"p1","eventId":"e-1",
                   "eventType":"expense.created","timestamp":1000,"payload":{"amount":10}})
        );
    }

    #[test]
    fn checks_the_partition_token_and_the_org() {
        let p = Partitions::new(4).expect("4");
        let k = p.of("acme");
        let body = br#"{"eventType":"x"}"#;
        let right = format!("herald.events.acme.finance._.{k}");
        let wrong = format!("herald.events.acme.finance._.{}", (k + 1) % 4);
        assert!(message(&right, body).decode("acme", p, 1024).is_ok());
        for (subject, org, partitions) in [
            (wrong.as_str(), "acme", p),
            ("herald.events.acme.finance._", "acme", p),
            (right.as_str(), "acme", Partitions::single()),
            (
                "herald.events.globex.finance._",
                "acme",
                Partitions::single(),
            ),
        ] {
            let err = message(subject, body)
                .decode(org, partitions, 1024)
                .expect_err(subject);
            assert_eq!((err.seq, err.reason), (7, RejectReason::BadSubject));
        }
        let err = message("herald.events.acme.finance._", b"{}")
            .decode("acme", Partitions::single(), 1024)
            .expect_err("no eventType");
        assert_eq!(err.reason, RejectReason::MissingEventType);
    }
}
