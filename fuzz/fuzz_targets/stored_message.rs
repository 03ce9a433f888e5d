//! A stored or RePublished message turned into a delivered event:
//! `herald_edge::org::decode::decode` with an arbitrary subject, headers and payload,
//! without NATS.
//!
//! Invariants: the result carries the message's sequence; an event is of the
//! node's org and of the subject's service and property, has a non-empty
//! type, and its shared JSON is exactly the event serialised; a message of
//! another org is never an event.
#![no_main]

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use herald_edge::org::decode::{decode, Decoded};
use herald_proto::{DeliveredEvent, EventSubject};
use libfuzzer_sys::fuzz_target;

const ORG: &str = "acme";
const SEQ: u64 = 42;
const STORED_MS: i64 = 1_700_000_000_000;
const MAX_BYTES: usize = 4096;

// Input: `<subject>\n<Content-Type>\n<Nats-Msg-Id>\n<payload>`.
fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let subject = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let content_type = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let msg_id = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let payload = parts.next().unwrap_or_default();

    let mut headers = HeaderMap::new();
    for (name, value) in [("Content-Type", &content_type), ("Nats-Msg-Id", &msg_id)] {
        if let (Ok(n), Ok(v)) = (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            if !value.is_empty() {
                headers.insert(n, v);
            }
        }
    }
    let decoded = decode(
        SEQ,
        &subject,
        Some(&headers),
        payload,
        STORED_MS,
        ORG,
        MAX_BYTES,
    );
    assert_eq!(decoded.seq(), SEQ);
    let parsed = EventSubject::parse(&subject);
    match decoded {
        Decoded::Event(stored) => {
            let parsed = parsed.expect("an event came from a valid subject");
            let ev = &stored.event;
            assert!(payload.len() <= MAX_BYTES);
            assert_eq!(ev.seq, SEQ);
            assert_eq!(ev.org_id, ORG, "event of another org delivered");
            assert_eq!(ev.service, parsed.service);
            assert_eq!(ev.property_id, parsed.property);
            assert!(!ev.event_type.is_empty());
            assert_eq!(stored.stored_ms, STORED_MS);
            let mut back: DeliveredEvent = serde_json::from_str(stored.json.get())
                .unwrap_or_else(|e| panic!("shared JSON of the event does not parse: {e}"));
            // The payload lives only in the JSON text; the routing fields agree.
            assert!(ev.payload.is_null(), "no parsed payload is kept");
            back.payload = serde_json::Value::Null;
            assert_eq!(&back, ev, "shared JSON differs from the event");
            // MessagePack clients get the same event.
            let packed: serde_json::Value = rmp_serde::from_slice(stored.msgpack())
                .unwrap_or_else(|e| panic!("MessagePack copy does not decode: {e}"));
            let text: serde_json::Value = serde_json::from_str(stored.json.get()).expect("json");
            assert_eq!(packed, text, "MessagePack copy differs from the JSON");
        }
        Decoded::Rejected { reason, .. } => {
            if parsed.as_ref().map_or(true, |s| s.org != ORG) {
                assert_eq!(reason, herald_proto::RejectReason::BadSubject);
            }
        }
    }
});
