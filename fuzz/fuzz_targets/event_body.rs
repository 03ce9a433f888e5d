//! Published event bodies: `EventBody::decode` on arbitrary bytes, as JSON
//! and as MessagePack, against a property subject and an org-wide one.
//!
//! Invariants beyond "no panic": a decoded body passed its subject checks
//! (non-empty `eventType`, matching `orgId`/`service`/`propertyId`); it
//! re-encodes and decodes to itself in both encodings; the size limit is
//! enforced before parsing; the delivered event keeps the subject's fields.
#![no_main]

use herald_proto::envelope::{Encoding, EnvelopeError, EventBody};
use herald_proto::EventSubject;
use libfuzzer_sys::fuzz_target;

/// The node's default `HERALD_MAX_EVENT_BYTES`.
const MAX_BYTES: usize = 262_144;

fuzz_target!(|data: &[u8]| {
    let subjects = [
        EventSubject::new("acme", "finance", Some("p1")).expect("valid subject"),
        EventSubject::new("acme", "tasks", None).expect("valid subject"),
    ];
    for subject in &subjects {
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            check(data, encoding, subject);
        }
    }
});

fn check(data: &[u8], encoding: Encoding, subject: &EventSubject) {
    // One byte under the input's size must be refused before any parsing.
    if !data.is_empty() {
        let small = EventBody::decode(data, encoding, subject, data.len() - 1);
        assert!(
            matches!(small, Err(EnvelopeError::TooLarge { size, .. }) if size == data.len()),
            "size limit not enforced: {small:?}"
        );
    }
    let Ok(body) = EventBody::decode(data, encoding, subject, MAX_BYTES) else {
        return;
    };
    assert!(body.event_type.as_deref().is_some_and(|t| !t.is_empty()));
    assert!(body.org_id.as_deref().is_none_or(|o| o == subject.org));
    assert!(body.service.as_deref().is_none_or(|s| s == subject.service));
    if let Some(p) = body.property_id.as_deref() {
        assert_eq!(
            (p != "_").then_some(p),
            subject.property.as_deref(),
            "propertyId disagrees with the subject"
        );
    }
    // What Herald accepted it can write back, and read again unchanged.
    for enc in [Encoding::Json, Encoding::MessagePack] {
        let bytes = body.encode(enc);
        let back = EventBody::decode(&bytes, enc, subject, usize::MAX)
            .unwrap_or_else(|e| panic!("re-encoded body ({enc:?}) rejected: {e}"));
        assert_eq!(back, body, "{enc:?} round trip changed the body");
    }
    // The delivered event belongs to the subject, whatever the body said.
    let event = body
        .clone()
        .into_event(7, subject.clone(), Some("finance:m-1"), 5);
    assert_eq!(event.org_id, subject.org);
    assert_eq!(event.service, subject.service);
    assert_eq!(event.property_id, subject.property);
    assert_eq!(event.seq, 7);
    let json = serde_json::to_string(&event).expect("a delivered event serialises");
    let again: herald_proto::DeliveredEvent =
        serde_json::from_str(&json).expect("a delivered event parses back");
    assert_eq!(again, event);
}
