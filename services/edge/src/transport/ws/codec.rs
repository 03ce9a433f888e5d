//! Frames both ways: the subprotocol's encoding (`herald.v1.json` text
//! frames, `herald.v1.msgpack` binary frames) of server messages, the
//! `events` frame written around the org buffer's shared event bytes, and
//! client frames decoded in either encoding.
//!
//! Invariant: a frame is the complete encoding of one message, or there is
//! no frame: a message that cannot be encoded is an [`EncodeError`], never
//! an empty frame. An `events` frame takes [`FRAME_OVERHEAD`] bytes plus its
//! service name plus, per event, [`event_len`] and one byte at most, so a
//! frame cut by that sum stays under its cap.

use std::sync::Arc;

use axum::extract::ws::Message;
use herald_proto::stream::{ClientMessage, ServerMessage, SUBPROTOCOL_MSGPACK};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::org::decode::StoredEvent;

/// More than an `events` frame's own fields take besides the service name
/// (69 bytes in JSON, 48 in MessagePack), so a frame cut by the sum of its
/// events stays under the cap.
pub(super) const FRAME_OVERHEAD: usize = 96;

/// Frame encoding chosen by subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// JSON text frames (`herald.v1.json`, the default).
    Json,
    /// MessagePack binary frames (`herald.v1.msgpack`).
    MessagePack,
}

impl Codec {
    /// The codec of the negotiated subprotocol (JSON when none was).
    pub(super) fn for_protocol(protocol: Option<&http::HeaderValue>) -> Self {
        match protocol {
            Some(p) if p == SUBPROTOCOL_MSGPACK => Self::MessagePack,
            _ => Self::Json,
        }
    }

    /// `msg` as one frame.
    pub(super) fn encode(self, msg: &ServerMessage) -> Result<Message, EncodeError> {
        encode(self, msg)
    }

    /// An `events` frame of one service's run of events, in `seq` order.
    pub(super) fn events(
        self,
        service: &str,
        run: &[Arc<StoredEvent>],
    ) -> Result<Message, EncodeError> {
        let seq = run.last().map_or(0, |e| e.seq());
        match self {
            Self::Json => encode(
                self,
                &JsonEvents {
                    kind: "events",
                    service,
                    events: run.iter().map(|e| &*e.json).collect(),
                    seq,
                },
            ),
            Self::MessagePack => Ok(Message::Binary(packed_events(service, run, seq)?.into())),
        }
    }

    /// Bytes `e` takes in an `events` frame of this codec.
    pub(super) fn event_len(self, e: &StoredEvent) -> usize {
        match self {
            Self::Json => e.json.get().len(),
            Self::MessagePack => e.msgpack().len(),
        }
    }
}

/// A message that could not be encoded (a bug: every message type encodes).
#[derive(Debug, thiserror::Error)]
pub(super) enum EncodeError {
    /// JSON encoding failed.
    #[error("JSON frame: {0}")]
    Json(#[from] serde_json::Error),
    /// MessagePack encoding failed.
    #[error("MessagePack frame: {0}")]
    MessagePack(#[from] rmp_serde::encode::Error),
    /// A batch too long for a MessagePack array.
    #[error("MessagePack frame: {0} events do not fit an array")]
    TooManyEvents(usize),
}

fn encode(codec: Codec, msg: &impl Serialize) -> Result<Message, EncodeError> {
    Ok(match codec {
        Codec::Json => Message::Text(serde_json::to_string(msg)?.into()),
        Codec::MessagePack => Message::Binary(rmp_serde::to_vec_named(msg)?.into()),
    })
}

/// Payload bytes of a data frame.
pub(super) fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

/// An `events` frame borrowing the buffered events (JSON).
#[derive(Serialize)]
struct JsonEvents<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    service: &'a str,
    events: Vec<&'a RawValue>,
    seq: u64,
}

/// A MessagePack `events` frame: the map `{type, service, events, seq}`
/// written around each event's shared MessagePack bytes.
fn packed_events(
    service: &str,
    run: &[Arc<StoredEvent>],
    seq: u64,
) -> Result<Vec<u8>, EncodeError> {
    use rmp::encode;
    let len = u32::try_from(run.len()).map_err(|_| EncodeError::TooManyEvents(run.len()))?;
    let size: usize = run.iter().map(|e| e.msgpack().len()).sum();
    let mut out = Vec::with_capacity(size + FRAME_OVERHEAD + service.len());
    // Writes into a Vec cannot fail.
    let _ = encode::write_map_len(&mut out, 4);
    let _ = encode::write_str(&mut out, "type");
    let _ = encode::write_str(&mut out, "events");
    let _ = encode::write_str(&mut out, "service");
    let _ = encode::write_str(&mut out, service);
    let _ = encode::write_str(&mut out, "events");
    let _ = encode::write_array_len(&mut out, len);
    for e in run {
        out.extend_from_slice(e.msgpack());
    }
    let _ = encode::write_str(&mut out, "seq");
    let _ = encode::write_uint(&mut out, seq);
    Ok(out)
}

/// What a client frame turned out to be.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A client message, in either encoding.
    Message(ClientMessage),
    /// The client closes.
    Close,
    /// A WebSocket ping or pong: nothing to do.
    Ignore,
    /// A room request that does not read as one (bad fields): answered
    /// with an error frame, not a close. The room, when it could be read.
    BadRoom {
        /// The room it names, if a string.
        room: Option<String>,
        /// Why.
        why: String,
    },
    /// Not a client message: why.
    Bad(String),
}

/// Enough of a client frame to tell a room request.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room: Option<serde_json::Value>,
}

/// Decodes a client frame; text frames are JSON, binary frames MessagePack,
/// whatever the subprotocol.
pub(super) fn decode(msg: Message) -> Incoming {
    let (parsed, probe) = match msg {
        Message::Text(t) => match serde_json::from_str::<ClientMessage>(t.as_str()) {
            Ok(m) => (Ok(m), None),
            Err(e) => (
                Err(e.to_string()),
                serde_json::from_str::<Probe>(t.as_str()).ok(),
            ),
        },
        Message::Binary(b) => match herald_proto::msgpack::from_slice::<ClientMessage>(&b) {
            Ok(m) => (Ok(m), None),
            Err(e) => (
                Err(e.to_string()),
                herald_proto::msgpack::from_slice::<Probe>(&b).ok(),
            ),
        },
        Message::Close(_) => return Incoming::Close,
        Message::Ping(_) | Message::Pong(_) => return Incoming::Ignore,
    };
    match (parsed, probe) {
        (Ok(m), _) => Incoming::Message(m),
        (Err(e), Some(p)) if ClientMessage::ROOM_TYPES.contains(&p.kind.as_str()) => {
            Incoming::BadRoom {
                room: p.room.and_then(|r| r.as_str().map(str::to_owned)),
                why: format!("invalid {} request: {e}", p.kind),
            }
        }
        (Err(e), _) => Incoming::Bad(format!("invalid message: {e}")),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use herald_proto::DeliveredEvent;

    pub(in crate::transport::ws) fn event(
        seq: u64,
        service: &str,
        payload_bytes: usize,
    ) -> Arc<StoredEvent> {
        StoredEvent::for_test(
            seq,
            service,
            None,
            serde_json::Value::String("p".repeat(payload_bytes)),
        )
    }

    /// A server frame read back as the client reads it.
    pub(in crate::transport::ws) fn read(frame: &Message) -> ServerMessage {
        match frame {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("json frame"),
            Message::Binary(b) => rmp_serde::from_slice(b).expect("msgpack frame"),
            other => panic!("not a data frame: {other:?}"),
        }
    }

    #[test]
    fn events_frames_read_back_as_the_proto_message_in_both_encodings() {
        let run = [event(4, "files", 10), event(7, "files", 20)];
        for codec in [Codec::Json, Codec::MessagePack] {
            let frame = codec.events("files", &run).unwrap();
            let ServerMessage::Events {
                service,
                events,
                seq,
            } = read(&frame)
            else {
                panic!("{codec:?}: not events");
            };
            assert_eq!((service.as_str(), seq), ("files", 7), "{codec:?}");
            // The stored event keeps its payload only in its JSON text.
            let expected: Vec<DeliveredEvent> = run
                .iter()
                .map(|e| serde_json::from_str(e.json.get()).unwrap())
                .collect();
            assert_eq!(expected[1].payload, "p".repeat(20));
            assert_eq!(events, expected, "{codec:?}");
            let own: usize = run.iter().map(|e| codec.event_len(e) + 1).sum();
            assert!(
                frame_len(&frame) <= FRAME_OVERHEAD + "files".len() + own,
                "{codec:?}: {} bytes",
                frame_len(&frame)
            );
        }
    }

    #[test]
    fn control_messages_match_the_proto_encoding() {
        let ping = ServerMessage::Ping { seq: 3 };
        let Message::Text(json) = Codec::Json.encode(&ping).unwrap() else {
            panic!("JSON is text");
        };
        assert_eq!(json.as_str(), r#"{"type":"ping","seq":3}"#);
        assert_eq!(read(&Codec::MessagePack.encode(&ping).unwrap()), ping);
        assert_eq!(
            Codec::for_protocol(Some(&http::HeaderValue::from_static(SUBPROTOCOL_MSGPACK))),
            Codec::MessagePack
        );
        assert_eq!(Codec::for_protocol(None), Codec::Json);
    }

    #[test]
    fn client_frames_decode_in_either_encoding() {
        let pong = ClientMessage::Pong;
        let text = Message::Text(serde_json::to_string(&pong).unwrap().into());
        let binary = Message::Binary(rmp_serde::to_vec_named(&pong).unwrap().into());
        for frame in [text, binary] {
            assert!(matches!(
                decode(frame),
                Incoming::Message(ClientMessage::Pong)
            ));
        }
        assert!(matches!(
            decode(Message::Text("{".into())),
            Incoming::Bad(_)
        ));
        assert!(matches!(
            decode(Message::Ping(Default::default())),
            Incoming::Ignore
        ));
        assert!(matches!(decode(Message::Close(None)), Incoming::Close));
    }

    #[test]
    fn a_malformed_room_request_is_told_apart_from_a_bad_frame() {
        let bad_join = Message::Text(r#"{"type":"join","room":"r1","history":"x"}"#.into());
        assert!(matches!(
            decode(bad_join),
            Incoming::BadRoom { room: Some(r), .. } if r == "r1"
        ));
        let no_room = Message::Text(r#"{"type":"say","room":7,"text":"t"}"#.into());
        assert!(matches!(
            decode(no_room),
            Incoming::BadRoom { room: None, .. }
        ));
        let packed =
            rmp_serde::to_vec_named(&serde_json::json!({"type": "read", "room": "r"})).unwrap();
        assert!(matches!(
            decode(Message::Binary(packed.into())),
            Incoming::BadRoom { .. }
        ));
        assert!(matches!(
            decode(Message::Text(r#"{"type":"nope"}"#.into())),
            Incoming::Bad(_)
        ));
    }
}
