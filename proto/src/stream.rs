//! Messages of the WebSocket stream (`/v2/realtime/stream`); the SSE endpoint
//! carries the same events. JSON text frames with `herald.v1.json`,
//! MessagePack binary frames with `herald.v1.msgpack`.

use serde::{Deserialize, Serialize};

use crate::cursor::{Epoch, ResetReason};
use crate::event::DeliveredEvent;
use crate::room::{Member, PresenceState, Receipts, RoomErrorCode, RoomMessage, Status};

/// Subprotocol for JSON text frames.
pub const SUBPROTOCOL_JSON: &str = "herald.v1.json";
/// Subprotocol for MessagePack binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "herald.v1.msgpack";

/// Subscription filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// Only events of this property (plus org-wide events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<String>,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMessage {
    /// First frame: what to subscribe to and where to resume.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// Protocol version, 1.
        version: u32,
        /// Services to receive.
        services: Vec<String>,
        /// Optional filters.
        #[serde(default)]
        filters: Option<Filters>,
        /// Resume after this sequence.
        #[serde(default)]
        last_seq: Option<u64>,
        /// Epoch the sequence belongs to.
        #[serde(default)]
        epoch: Option<Epoch>,
        /// The token, when the upgrade request carried none (browsers cannot
        /// set headers on a WebSocket and should not put tokens in URLs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Answer to a ping.
    Pong,
    /// Token renewal.
    Auth {
        /// The new token.
        token: String,
    },
    /// Change the subscription in place.
    Update {
        /// New services.
        services: Vec<String>,
        /// New filters.
        #[serde(default)]
        filters: Option<Filters>,
    },
    /// Join a room, with the last `history` messages (default 50, at most 100).
    Join {
        /// The room.
        room: String,
        /// How many past messages to get.
        #[serde(default)]
        history: Option<u64>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Send a message to a room.
    #[serde(rename_all = "camelCase")]
    Say {
        /// The room.
        room: String,
        /// The text, 1–4096 bytes.
        text: String,
        /// The sender's id for it: a repeat within 2 min is stored once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
    /// The user is typing in a room.
    Typing {
        /// The room.
        room: String,
    },
    /// The user read a room up to `seq`.
    Read {
        /// The room.
        room: String,
        /// The last seq read.
        seq: u64,
    },
    /// The user's tabs are all hidden (`away`) or one is visible (`online`).
    Status {
        /// The new state.
        state: Status,
    },
}

impl ClientMessage {
    /// The `type` values of the room requests: a malformed one is answered
    /// with an error frame, never a close.
    pub const ROOM_TYPES: [&'static str; 6] = ["join", "leave", "say", "typing", "read", "status"];
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Handshake accepted.
    #[serde(rename_all = "camelCase")]
    Ack {
        /// Connection id.
        connection_id: String,
        /// Serving node.
        node_id: String,
        /// Stream incarnation.
        epoch: Epoch,
        /// Cursor at the time of the ack.
        seq: u64,
        /// Token expiry, ms since the Unix epoch.
        expires_at: i64,
    },
    /// A batch of events of one service, in `seq` order.
    Events {
        /// The service.
        service: String,
        /// The events.
        events: Vec<DeliveredEvent>,
        /// Seq of the batch's last event.
        seq: u64,
    },
    /// The client must refetch its state.
    Reset {
        /// Why.
        reason: ResetReason,
        /// Current head.
        seq: u64,
    },
    /// Keep-alive; `seq` is the cursor the client may resume from.
    Ping {
        /// Quiet cursor.
        seq: u64,
    },
    /// The token expires soon; send `auth`.
    #[serde(rename_all = "camelCase")]
    Refresh {
        /// Expiry, ms since the Unix epoch.
        expires_at: i64,
    },
    /// Events of these services with `from_seq <= seq <= to_seq` were not
    /// delivered (a slow connection's quarantine dropped them): refetch
    /// those services' state, like a `reset` scoped to them. Sent in `seq`
    /// order: before any frame or ping whose `seq` reaches `from_seq`.
    #[serde(rename_all = "camelCase")]
    Dropped {
        /// The services whose events were dropped.
        services: Vec<String>,
        /// First dropped seq.
        from_seq: u64,
        /// Last dropped seq.
        to_seq: u64,
    },
    /// Subscription changed.
    Updated {
        /// Services now subscribed.
        services: Vec<String>,
        /// Filters now applied.
        filters: Filters,
    },
    /// In the room: who is there, the last messages, the receipts.
    Joined {
        /// The room.
        room: String,
        /// Users present (the joiner too).
        members: Vec<Member>,
        /// The last messages, oldest first.
        history: Vec<RoomMessage>,
        /// The stored receipts.
        receipts: Receipts,
    },
    /// Out of the room.
    Left {
        /// The room.
        room: String,
    },
    /// A message of a room.
    Message(RoomMessage),
    /// Another user is typing.
    #[serde(rename_all = "camelCase")]
    Typing {
        /// The room.
        room: String,
        /// The user typing.
        user_id: String,
    },
    /// A user's read receipt moved forward.
    #[serde(rename_all = "camelCase")]
    Receipt {
        /// The room.
        room: String,
        /// The reader.
        user_id: String,
        /// The last seq read.
        seq: u64,
    },
    /// A user's presence in a room changed.
    #[serde(rename_all = "camelCase")]
    Presence {
        /// The room.
        room: String,
        /// The user.
        user_id: String,
        /// The new state.
        state: PresenceState,
    },
    /// A room request was refused; the connection stays open.
    Error {
        /// The room, when the request named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Why.
        code: RoomErrorCode,
        /// Why, for people.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hello_with_and_without_options() {
        let full: ClientMessage = serde_json::from_str(
            r#"{"type":"hello","version":1,"services":["finance","tasks"],"filters":{"propertyId":"p1"},"lastSeq":41,"epoch":"E"}"#,
        )
        .unwrap();
        let ClientMessage::Hello {
            last_seq, filters, ..
        } = full
        else {
            panic!("not hello")
        };
        assert_eq!(last_seq, Some(41));
        assert_eq!(filters.unwrap().property_id.as_deref(), Some("p1"));
        let bare: ClientMessage =
            serde_json::from_str(r#"{"type":"hello","version":1,"services":[]}"#).unwrap();
        assert!(matches!(
            bare,
            ClientMessage::Hello {
                last_seq: None,
                token: None,
                ..
            }
        ));
        let with_token: ClientMessage =
            serde_json::from_str(r#"{"type":"hello","version":1,"services":[],"token":"t"}"#)
                .unwrap();
        assert!(matches!(with_token, ClientMessage::Hello { token: Some(t), .. } if t == "t"));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_messages_round_trip_in_both_encodings() {
        let msgs = [
            ServerMessage::Ping { seq: 3 },
            ServerMessage::Reset {
                reason: ResetReason::EpochChanged,
                seq: 10,
            },
            ServerMessage::Ack {
                connection_id: "c".into(),
                node_id: "n".into(),
                epoch: "E".into(),
                seq: 1,
                expires_at: 2,
            },
            ServerMessage::Dropped {
                services: vec!["analytics".into()],
                from_seq: 5,
                to_seq: 9,
            },
            ServerMessage::Message(RoomMessage {
                room: "r1".into(),
                seq: 4,
                user_id: "u1".into(),
                text: "hi".into(),
                ts: 7,
                client_msg_id: Some("c-1".into()),
            }),
            ServerMessage::Error {
                room: None,
                code: RoomErrorCode::BadRequest,
                message: "m".into(),
            },
        ];
        for m in msgs {
            let j = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ServerMessage>(&j).unwrap(), m);
            let b = rmp_serde::to_vec_named(&m).unwrap();
            assert_eq!(rmp_serde::from_slice::<ServerMessage>(&b).unwrap(), m);
        }
        assert_eq!(
            serde_json::to_string(&ServerMessage::Ping { seq: 3 }).unwrap(),
            r#"{"type":"ping","seq":3}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::Presence {
                room: "r1".into(),
                user_id: "u1".into(),
                state: PresenceState::Away,
            })
            .unwrap(),
            r#"{"type":"presence","room":"r1","userId":"u1","state":"away"}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::Dropped {
                services: vec!["analytics".into()],
                from_seq: 5,
                to_seq: 9
            })
            .unwrap(),
            r#"{"type":"dropped","services":["analytics"],"fromSeq":5,"toSeq":9}"#
        );
    }
}
