//! Client frames of both WebSocket subprotocols: `ClientMessage` parsed from
//! a JSON text frame (`herald.v1.json`) and from a MessagePack binary frame
//! (`herald.v1.msgpack`), the way `ws.rs` parses them.
//!
//! Invariants: a parsed frame serialises and parses back to itself in both
//! encodings (so what one subprotocol accepts, the other can carry).
#![no_main]

use herald_proto::stream::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(msg) = serde_json::from_str::<ClientMessage>(text) {
            round_trip(&msg);
        }
    }
    if let Ok(msg) = rmp_serde::from_slice::<ClientMessage>(data) {
        round_trip(&msg);
    }
});

fn round_trip(msg: &ClientMessage) {
    let json = serde_json::to_string(msg).expect("a client message serialises to JSON");
    let back: ClientMessage = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("JSON of {msg:?} does not parse back: {e}"));
    assert_eq!(&back, msg, "JSON round trip changed the frame");
    let mp = rmp_serde::to_vec_named(msg).expect("a client message serialises to MessagePack");
    let back: ClientMessage = rmp_serde::from_slice(&mp)
        .unwrap_or_else(|e| panic!("MessagePack of {msg:?} does not parse back: {e}"));
    assert_eq!(&back, msg, "MessagePack round trip changed the frame");
}
