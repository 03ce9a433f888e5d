//! Rooms (contract section 6): room ids, the stored and delivered chat
//! message, presence states, receipts, the room frames' error codes, the
//! limits every node applies, and the bodies of the `/v2/rooms` endpoints.
//!
//! Invariant: a [`RoomMessage`] is what every client sees of a stored
//! message, whichever node, transport or encoding delivers it: its `seq` is
//! the message's `HERALD_ROOMS` stream sequence, and it is rebuilt from the
//! stored [`StoredRoomMessage`] plus the subject's room and that sequence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest text of a message, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest `clientMsgId`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 128;
/// Most history messages a join or a page returns.
pub const MAX_HISTORY: usize = 100;
/// History messages a join returns unless it asks otherwise.
pub const DEFAULT_HISTORY: usize = 50;
/// Most rooms one connection may be in.
pub const MAX_ROOMS_PER_CONNECTION: usize = 50;
/// Messages a user may send a second (sustained and burst).
pub const MESSAGES_PER_SECOND: u32 = 10;
/// Typing frames closer together than this (per user and room) are dropped.
pub const TYPING_INTERVAL_MS: u64 = 2000;
/// Members show a user as typing until this long after the last frame.
pub const TYPING_EXPIRY_MS: u64 = 5000;
/// The window within which a repeated `clientMsgId` is stored once.
pub const DEDUP_WINDOW_SECS: u64 = 120;

/// Subject prefix of stored room messages.
pub const ROOMS_PREFIX: &str = "herald.rooms";
/// Subject prefix of typing notices (core NATS, not stored).
pub const TYPING_PREFIX: &str = "herald.typing";

/// Is `room` a room id: 1–64 characters of `[A-Za-z0-9_-]`?
pub fn is_room_id(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The subject a room's messages are stored under.
pub fn message_subject(org: &str, room: &str) -> String {
    format!("{ROOMS_PREFIX}.{org}.{room}")
}

/// The subject filter of every room message of `org`.
pub fn org_messages_filter(org: &str) -> String {
    format!("{ROOMS_PREFIX}.{org}.>")
}

/// The subject a room's typing notices go to.
pub fn typing_subject(org: &str, room: &str) -> String {
    format!("{TYPING_PREFIX}.{org}.{room}")
}

/// The subject filter of every typing notice of `org`.
pub fn org_typing_filter(org: &str) -> String {
    format!("{TYPING_PREFIX}.{org}.>")
}

/// The room named by a message or typing subject of `org`, if it is one.
pub fn room_of_subject<'a>(subject: &'a str, prefix: &str, org: &str) -> Option<&'a str> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let room = rest.strip_prefix(org)?.strip_prefix('.')?;
    is_room_id(room).then_some(room)
}

/// Is `id` an acceptable `clientMsgId`: 1–128 bytes, no control characters
/// (it becomes part of a NATS header)?
pub fn is_client_msg_id(id: &str) -> bool {
    (1..=MAX_CLIENT_MSG_ID_BYTES).contains(&id.len()) && !id.chars().any(char::is_control)
}

/// A chat message as members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMessage {
    /// The room.
    pub room: String,
    /// Its `HERALD_ROOMS` stream sequence: increasing within a room.
    pub seq: u64,
    /// The sender (`sub` of its token).
    pub user_id: String,
    /// The text, 1–4096 bytes.
    pub text: String,
    /// When it was stored, ms since the Unix epoch.
    pub ts: i64,
    /// The sender's id for it, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

/// The body a message is stored with in `HERALD_ROOMS` (room and sequence
/// come from the subject and the stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRoomMessage {
    /// The sender.
    pub user_id: String,
    /// The text.
    pub text: String,
    /// When the sending node stored it, ms since the Unix epoch.
    pub ts: i64,
    /// The sender's id for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

impl StoredRoomMessage {
    /// The message as members see it, stored in `room` at `seq`.
    pub fn into_message(self, room: &str, seq: u64) -> RoomMessage {
        RoomMessage {
            room: room.to_owned(),
            seq,
            user_id: self.user_id,
            text: self.text,
            ts: self.ts,
            client_msg_id: self.client_msg_id,
        }
    }
}

/// A member's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// In the room, and some tab of theirs is visible.
    Online,
    /// In the room, every tab hidden.
    Away,
    /// No connection of theirs is in the room.
    Offline,
}

impl PresenceState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Offline => "offline",
        }
    }
}

/// What a client may set with `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Some tab is visible.
    Online,
    /// Every tab is hidden.
    Away,
}

/// A user present in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The user.
    pub user_id: String,
    /// Online or away.
    pub state: PresenceState,
}

/// Why a room request was refused (the connection stays open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomErrorCode {
    /// The room is outside the token's `rooms` claim.
    Forbidden,
    /// The connection is not in the room.
    NotJoined,
    /// More than 10 messages a second.
    RateLimited,
    /// Text over 4096 bytes.
    TooLarge,
    /// A malformed request.
    BadRequest,
    /// NATS could not store or read it; try again later.
    Unavailable,
}

impl RoomErrorCode {
    /// Every code, in metrics label order.
    pub const ALL: [RoomErrorCode; 6] = [
        Self::Forbidden,
        Self::NotJoined,
        Self::RateLimited,
        Self::TooLarge,
        Self::BadRequest,
        Self::Unavailable,
    ];

    /// The wire name (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::BadRequest => "bad_request",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Receipts of a room: user id → the last seq they read.
pub type Receipts = BTreeMap<String, u64>;

/// `GET /v2/rooms/<room>/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesPage {
    /// Oldest first.
    pub messages: Vec<RoomMessage>,
}

/// `GET /v2/rooms/<room>/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceList {
    /// Users present, online or away.
    pub members: Vec<Member>,
}

/// `GET /v2/rooms/<room>/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomStats {
    /// Users present.
    pub members: u64,
    /// Users online.
    pub online: u64,
    /// Messages stored.
    pub messages: u64,
    /// Seq of the newest message, 0 when none.
    pub last_seq: u64,
}

/// `POST /v2/rooms/<room>/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostMessage {
    /// The text.
    pub text: String,
    /// The sender's id for it (dedup within 2 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// The org, with a cross-org (`org: "*"`) publisher token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
}

/// The answer to a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    /// The message's seq (the original's, for a repeat).
    pub seq: u64,
    /// A repeat of a message stored before.
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_follow_the_token_rules() {
        assert!(is_room_id("r1"));
        assert!(is_room_id(&"a".repeat(64)));
        for bad in ["", "a.b", "a b", "*", ">", &"a".repeat(65), "é"] {
            assert!(!is_room_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn subjects_name_their_org_and_room() {
        let s = message_subject("acme", "lobby");
        assert_eq!(s, "herald.rooms.acme.lobby");
        assert_eq!(room_of_subject(&s, ROOMS_PREFIX, "acme"), Some("lobby"));
        assert_eq!(room_of_subject(&s, ROOMS_PREFIX, "acm"), None);
        assert_eq!(room_of_subject(&s, TYPING_PREFIX, "acme"), None);
        assert_eq!(
            room_of_subject("herald.rooms.acme.a.b", ROOMS_PREFIX, "acme"),
            None
        );
        assert_eq!(
            room_of_subject(&typing_subject("o", "r"), TYPING_PREFIX, "o"),
            Some("r")
        );
    }

    #[test]
    fn client_msg_ids_are_bounded_and_printable() {
        assert!(is_client_msg_id("c-1"));
        assert!(!is_client_msg_id(""));
        assert!(!is_client_msg_id("a\r\nb"));
        assert!(!is_client_msg_id(&"x".repeat(129)));
    }

    #[test]
    fn messages_leave_out_an_absent_client_msg_id() {
        let m = StoredRoomMessage {
            user_id: "u1".into(),
            text: "hi".into(),
            ts: 5,
            client_msg_id: None,
        }
        .into_message("r1", 9);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"room":"r1","seq":9,"userId":"u1","text":"hi","ts":5}"#
        );
    }
}
