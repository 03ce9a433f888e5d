//! Rooms in NATS (contract section 6): the `HERALD_ROOMS` stream that
//! stores chat messages, and the `HERALD_ROOM_STATE` key-value bucket that
//! holds read receipts and each node's presence entries. Every node reads
//! and writes the same room through these, so no node owns a room.
//!
//! Keys of the bucket (org and room ids are NATS tokens, user ids and node
//! ids are base64url-encoded to become one):
//! - `org.<org>.receipt.<room>.<user>`: the user's last read seq, kept.
//! - `org.<org>.presence.<room>.<node>`: the users a node has in the room
//!   and their state, written with a TTL and refreshed while they stay, so
//!   the entry of a node that died expires on its own.
//!
//! Invariant: nothing here trusts a caller for a room or org id: every
//! subject and key is built from ids checked by [`is_room_id`] and the
//! token rules, so a request can never reach another org's subjects.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::Context, kv, stream};
use async_nats::{HeaderMap, StatusCode};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use herald_proto::room::{
    is_room_id, message_subject, PresenceState, RoomMessage, StoredRoomMessage, DEDUP_WINDOW_SECS,
    MAX_TEXT_BYTES,
};

/// Name of the key-value bucket of receipts and presence.
pub const STATE_BUCKET: &str = "HERALD_ROOM_STATE";
/// How long a delete marker left by an expired presence entry stays.
const MARKER_TTL: Duration = Duration::from_secs(60);
/// Longest wait for the next message of a batch read.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages one batch read asks for.
const BATCH: usize = 256;
/// Stream sequences the backward history search looks at first.
const FIRST_WINDOW: u64 = 512;
/// Attempts of a receipt's compare-and-set before it gives up.
const RECEIPT_ATTEMPTS: usize = 8;

/// Failure talking to NATS about a room.
#[derive(Debug, thiserror::Error)]
#[error("rooms in nats: {op}: {why}")]
pub struct RoomStoreError {
    op: &'static str,
    why: String,
}

impl RoomStoreError {
    pub(crate) fn new(op: &'static str, why: impl std::fmt::Display) -> Self {
        Self {
            op,
            why: why.to_string(),
        }
    }
}

/// A message stored, or found stored before under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence (the original's for a repeat).
    pub seq: u64,
    /// A repeat within the dedup window.
    pub duplicate: bool,
}

/// One node's entry for one room: its users there and their state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// User id → online or away.
    pub users: BTreeMap<String, PresenceState>,
}

/// A change read from the state bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// A node's users in a room (empty when its entry went away).
    Presence {
        /// The room.
        room: String,
        /// The node (its key token).
        node: String,
        /// Its users there.
        entry: PresenceEntry,
    },
    /// A user's receipt.
    Receipt {
        /// The room.
        room: String,
        /// The reader.
        user: String,
        /// The last seq read.
        seq: u64,
    },
}

/// Settings of the rooms stream and bucket a node creates.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// Stream name (`HERALD_ROOMS`).
    pub stream: String,
    /// Replicas of the stream and the bucket.
    pub replicas: usize,
    /// Retention of messages (`HERALD_ROOM_MAX_AGE`).
    pub max_age: Duration,
    /// Messages kept per room (`HERALD_ROOM_HISTORY`).
    pub per_room: i64,
}

/// The rooms stream and state bucket.
#[derive(Clone)]
pub struct RoomStore {
    client: async_nats::Client,
    js: Context,
    settings: RoomSettings,
}

impl RoomStore {
    /// A handle; nothing is sent until a method is called.
    pub fn new(client: async_nats::Client, settings: RoomSettings) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            settings,
        }
    }

    /// The stream config this node creates.
    pub fn wanted_stream(&self) -> stream::Config {
        stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![format!("{}.>", herald_proto::room::ROOMS_PREFIX)],
            max_age: self.settings.max_age,
            max_messages_per_subject: self.settings.per_room,
            duplicate_window: Duration::from_secs(DEDUP_WINDOW_SECS),
            num_replicas: self.settings.replicas.max(1),
            allow_direct: true,
            // A message body: the text plus its id, user id and time.
            max_message_size: i32::try_from(MAX_TEXT_BYTES * 8).unwrap_or(i32::MAX),
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Creates the stream and the bucket when missing (an existing one is
    /// left as it is).
    pub async fn ensure(&self) -> Result<(), RoomStoreError> {
        self.js
            .get_or_create_stream(self.wanted_stream())
            .await
            .map_err(|e| RoomStoreError::new("create rooms stream", e))?;
        self.state().await?;
        Ok(())
    }

    async fn state(&self) -> Result<kv::Store, RoomStoreError> {
        match self.js.get_key_value(STATE_BUCKET).await {
            Ok(kv) => Ok(kv),
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: STATE_BUCKET.to_owned(),
                    description: "Herald rooms: read receipts and presence".to_owned(),
                    history: 1,
                    num_replicas: self.settings.replicas.max(1),
                    limit_markers: Some(MARKER_TTL),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| RoomStoreError::new("create room state bucket", e)),
        }
    }

    /// Stores a message; a repeat of `(org, room, user, client_msg_id)`
    /// within the dedup window is not stored again and answers the
    /// original's seq.
    pub async fn publish(
        &self,
        org: &str,
        room: &str,
        body: &StoredRoomMessage,
    ) -> Result<Stored, RoomStoreError> {
        let payload =
            serde_json::to_vec(body).map_err(|e| RoomStoreError::new("encode message", e))?;
        let mut headers = HeaderMap::new();
        if let Some(id) = &body.client_msg_id {
            headers.insert(
                "Nats-Msg-Id",
                dedup_id(org, room, &body.user_id, id).as_str(),
            );
        }
        let ack = self
            .js
            .publish_with_headers(message_subject(org, room), headers, payload.into())
            .await
            .map_err(|e| RoomStoreError::new("publish message", e))?
            .await
            .map_err(|e| RoomStoreError::new("message ack", e))?;
        Ok(Stored {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// The message stored at `seq`, if it is one of `org`'s.
    pub async fn message(
        &self,
        org: &str,
        seq: u64,
    ) -> Result<Option<RoomMessage>, RoomStoreError> {
        let msgs = self
            .direct_batch(&DirectRequest {
                seq: Some(seq),
                batch: Some(1),
                ..Default::default()
            })
            .await?;
        Ok(msgs
            .into_iter()
            .find(|m| m.seq == seq)
            .and_then(|m| decode_message(org, &m)))
    }

    /// Seq of the room's newest message (0 when it has none).
    pub async fn last_seq(&self, org: &str, room: &str) -> Result<u64, RoomStoreError> {
        let msgs = self
            .direct_batch(&DirectRequest {
                multi_last: Some(vec![message_subject(org, room)]),
                ..Default::default()
            })
            .await?;
        Ok(msgs.iter().map(|m| m.seq).max().unwrap_or(0))
    }

    /// The stream's last sequence (where a feed of new messages starts).
    pub async fn stream_last_seq(&self) -> Result<u64, RoomStoreError> {
        let mut s = self
            .js
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| RoomStoreError::new("get rooms stream", e))?;
        let info = s
            .info()
            .await
            .map_err(|e| RoomStoreError::new("rooms stream info", e))?;
        Ok(info.state.last_sequence)
    }

    /// Messages stored in the room.
    pub async fn count(&self, org: &str, room: &str) -> Result<u64, RoomStoreError> {
        let subject = message_subject(org, room);
        let s = self
            .js
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(|e| RoomStoreError::new("get rooms stream", e))?;
        let mut subjects = s
            .info_with_subjects(subject.clone())
            .await
            .map_err(|e| RoomStoreError::new("rooms stream subjects", e))?;
        let mut count = 0;
        while let Some(entry) = subjects.next().await {
            let (name, n) = entry.map_err(|e| RoomStoreError::new("rooms stream subjects", e))?;
            if name == subject {
                count += n as u64;
            }
        }
        Ok(count)
    }

    /// The room's last `limit` messages with `seq <= until`, oldest first.
    /// JetStream reads only forward, so this reads windows of stream
    /// sequences backwards from `until`, each four times the last, until
    /// `limit` messages are found or the stream's start is reached.
    pub async fn history(
        &self,
        org: &str,
        room: &str,
        until: u64,
        limit: usize,
    ) -> Result<Vec<RoomMessage>, RoomStoreError> {
        let subject = message_subject(org, room);
        let mut found: Vec<RoomMessage> = Vec::new();
        let mut hi = until;
        let mut window = FIRST_WINDOW;
        while limit > 0 && hi >= 1 && found.len() < limit {
            let lo = hi.saturating_sub(window - 1).max(1);
            let mut chunk = self.window(org, &subject, lo, hi).await?;
            // Keep only what is still needed: the newest of this window.
            let need = limit - found.len();
            if chunk.len() > need {
                chunk.drain(..chunk.len() - need);
            }
            chunk.append(&mut found);
            found = chunk;
            if lo == 1 {
                break;
            }
            hi = lo - 1;
            window = window.saturating_mul(4);
        }
        Ok(found)
    }

    /// Every message of `subject` with `lo <= seq <= hi`, oldest first.
    async fn window(
        &self,
        org: &str,
        subject: &str,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<RoomMessage>, RoomStoreError> {
        let mut out = Vec::new();
        let mut from = lo;
        loop {
            let msgs = self
                .direct_batch(&DirectRequest {
                    seq: Some(from),
                    next_by_subj: Some(subject.to_owned()),
                    batch: Some(BATCH),
                    up_to_seq: Some(hi),
                    ..Default::default()
                })
                .await?;
            let got = msgs.len();
            let mut last = from;
            for m in msgs {
                if m.seq > hi {
                    return Ok(out);
                }
                last = m.seq;
                out.extend(decode_message(org, &m));
            }
            if got < BATCH || last >= hi {
                return Ok(out);
            }
            from = last + 1;
        }
    }

    /// Stores `seq` as the user's receipt unless it holds one as high or
    /// higher; true when it moved.
    pub async fn advance_receipt(
        &self,
        org: &str,
        room: &str,
        user: &str,
        seq: u64,
    ) -> Result<bool, RoomStoreError> {
        let kv = self.state().await?;
        let key = receipt_key(org, room, user);
        let value = Bytes::from(seq.to_string());
        for _ in 0..RECEIPT_ATTEMPTS {
            let current = kv
                .entry(key.clone())
                .await
                .map_err(|e| RoomStoreError::new("read receipt", e))?;
            let result = match current {
                Some(e) if e.operation == kv::Operation::Put => {
                    if parse_seq(&e.value).is_some_and(|old| old >= seq) {
                        return Ok(false);
                    }
                    kv.update(&key, value.clone(), e.revision)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                Some(e) => kv
                    .update(&key, value.clone(), e.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => kv
                    .create(&key, value.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => return Ok(true),
                // Another writer won the race: read again.
                Err(e) => tracing::debug!(error = %e, "receipt compare-and-set lost; retrying"),
            }
        }
        Err(RoomStoreError::new(
            "store receipt",
            "too many concurrent writers",
        ))
    }

    /// Writes this node's users of a room, expiring after `ttl` unless
    /// written again; an empty entry is deleted.
    pub async fn put_presence(
        &self,
        org: &str,
        room: &str,
        node: &str,
        entry: &PresenceEntry,
        ttl: Duration,
    ) -> Result<(), RoomStoreError> {
        let subject = format!(
            "$KV.{STATE_BUCKET}.{}",
            presence_key(org, room, &node_token(node))
        );
        let mut headers = HeaderMap::new();
        let payload = if entry.users.is_empty() {
            headers.insert("KV-Operation", "DEL");
            Bytes::new()
        } else {
            headers.insert("Nats-TTL", ttl.as_secs().max(1).to_string().as_str());
            serde_json::to_vec(entry)
                .map_err(|e| RoomStoreError::new("encode presence", e))?
                .into()
        };
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| RoomStoreError::new("publish presence", e))?
            .await
            .map_err(|e| RoomStoreError::new("presence ack", e))?;
        Ok(())
    }

    /// The room's presence entries and receipts as stored now.
    pub async fn room_state(
        &self,
        org: &str,
        room: &str,
    ) -> Result<Vec<StateChange>, RoomStoreError> {
        let prefix = format!("$KV.{STATE_BUCKET}.");
        let msgs = self
            .direct_batch_on(
                &format!("KV_{STATE_BUCKET}"),
                &DirectRequest {
                    multi_last: Some(vec![
                        format!("{prefix}org.{org}.receipt.{room}.*"),
                        format!("{prefix}org.{org}.presence.{room}.*"),
                    ]),
                    ..Default::default()
                },
            )
            .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| state_change(org, &m.subject, &m.headers, &m.payload))
            .collect())
    }

    /// An ordered consumer of every change to `org`'s room state, from
    /// the current value of each key on. Returns it with the number of
    /// current values it delivers first.
    pub async fn watch_state(
        &self,
        org: &str,
    ) -> Result<(jetstream::consumer::push::Ordered, u64), RoomStoreError> {
        self.state().await?;
        let s = self
            .js
            .get_stream_no_info(format!("KV_{STATE_BUCKET}"))
            .await
            .map_err(|e| RoomStoreError::new("get room state stream", e))?;
        let consumer = s
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("$KV.{STATE_BUCKET}.org.{org}.>"),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| RoomStoreError::new("watch room state", e))?;
        let pending = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| RoomStoreError::new("watch room state", e))?;
        Ok((messages, pending))
    }

    /// An ordered consumer of `org`'s room messages stored after `after`.
    pub async fn watch_messages(
        &self,
        org: &str,
        after: u64,
    ) -> Result<jetstream::consumer::push::Ordered, RoomStoreError> {
        let s = self
            .js
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(|e| RoomStoreError::new("get rooms stream", e))?;
        let consumer = s
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: herald_proto::room::org_messages_filter(org),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| RoomStoreError::new("watch room messages", e))?;
        consumer
            .messages()
            .await
            .map_err(|e| RoomStoreError::new("watch room messages", e))
    }

    async fn direct_batch(&self, req: &DirectRequest) -> Result<Vec<DirectMsg>, RoomStoreError> {
        self.direct_batch_on(&self.settings.stream, req).await
    }

    /// A batch direct get (nats-server 2.11+; every request here asks for
    /// a batch or `multi_last`): the answers to `req`, up to the server's
    /// end-of-batch marker.
    async fn direct_batch_on(
        &self,
        stream: &str,
        req: &DirectRequest,
    ) -> Result<Vec<DirectMsg>, RoomStoreError> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| RoomStoreError::new("direct get", e))?;
        let body = serde_json::to_vec(req).map_err(|e| RoomStoreError::new("direct get", e))?;
        self.client
            .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body.into())
            .await
            .map_err(|e| RoomStoreError::new("direct get", e))?;
        let mut out = Vec::new();
        loop {
            let msg = tokio::time::timeout(BATCH_TIMEOUT, sub.next())
                .await
                .map_err(|_| RoomStoreError::new("direct get", "timed out"))?
                .ok_or_else(|| RoomStoreError::new("direct get", "subscription ended"))?;
            match msg.status {
                // 204: the end of the batch; 404: nothing (more) matches.
                Some(s) if s.as_u16() == 204 => break,
                Some(StatusCode::NOT_FOUND) => break,
                Some(s) if s != StatusCode::OK => {
                    return Err(RoomStoreError::new(
                        "direct get",
                        format!("status {s} {}", msg.description.unwrap_or_default()),
                    ))
                }
                _ => {}
            }
            let headers = msg.headers.unwrap_or_default();
            let Some(seq) = headers
                .get("Nats-Sequence")
                .and_then(|v| v.as_str().parse().ok())
            else {
                return Err(RoomStoreError::new(
                    "direct get",
                    "an answer without a sequence",
                ));
            };
            let subject = headers
                .get("Nats-Subject")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push(DirectMsg {
                seq,
                subject,
                headers,
                payload: msg.payload,
            });
        }
        let _ = sub.unsubscribe().await;
        Ok(out)
    }
}

/// A batch direct get request (ADR-31).
#[derive(Debug, Default, Serialize)]
struct DirectRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_to_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_last: Option<Vec<String>>,
}

/// One message of a direct get answer.
struct DirectMsg {
    seq: u64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// The chat message a stored one is, if it is `org`'s.
fn decode_message(org: &str, m: &DirectMsg) -> Option<RoomMessage> {
    decode_stored(org, &m.subject, m.seq, &m.payload)
}

/// The chat message stored under `subject` at `seq`, if it is `org`'s and
/// reads as one (anything else on the subjects is skipped).
pub fn decode_stored(org: &str, subject: &str, seq: u64, payload: &[u8]) -> Option<RoomMessage> {
    let room = herald_proto::room::room_of_subject(subject, herald_proto::room::ROOMS_PREFIX, org)?;
    let stored: StoredRoomMessage = serde_json::from_slice(payload).ok()?;
    Some(stored.into_message(room, seq))
}

/// What a state bucket message of `org` says, if it is one it understands.
pub fn state_change(
    org: &str,
    subject: &str,
    headers: &HeaderMap,
    payload: &[u8],
) -> Option<StateChange> {
    let key = subject.strip_prefix(&format!("$KV.{STATE_BUCKET}.org.{org}."))?;
    let mut parts = key.splitn(3, '.');
    let (kind, room, id) = (parts.next()?, parts.next()?, parts.next()?);
    if !is_room_id(room) {
        return None;
    }
    let removed = headers.get("KV-Operation").is_some()
        || headers.get("Nats-Marker-Reason").is_some()
        || payload.is_empty();
    match kind {
        "presence" => Some(StateChange::Presence {
            room: room.to_owned(),
            node: id.to_owned(),
            entry: if removed {
                PresenceEntry::default()
            } else {
                serde_json::from_slice(payload).ok()?
            },
        }),
        "receipt" if !removed => Some(StateChange::Receipt {
            room: room.to_owned(),
            user: String::from_utf8(BASE64.decode(id).ok()?).ok()?,
            seq: parse_seq(payload)?,
        }),
        _ => None,
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A node id as one key token.
pub fn node_token(node: &str) -> String {
    BASE64.encode(node)
}

fn receipt_key(org: &str, room: &str, user: &str) -> String {
    format!("org.{org}.receipt.{room}.{}", BASE64.encode(user))
}

fn presence_key(org: &str, room: &str, node_token: &str) -> String {
    format!("org.{org}.presence.{room}.{node_token}")
}

/// The dedup id of a message: org, room and user are part of it, so two
/// users (or orgs, or rooms) never share one.
fn dedup_id(org: &str, room: &str, user: &str, client_msg_id: &str) -> String {
    format!(
        "room:{org}:{room}:{}:{}",
        BASE64.encode(user),
        BASE64.encode(client_msg_id)
    )
}

fn parse_seq(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_never_meet_across_users_rooms_or_orgs() {
        let a = dedup_id("o1", "r", "u:1", "c");
        assert_ne!(a, dedup_id("o1", "r", "u", ":1:c"));
        assert_ne!(a, dedup_id("o2", "r", "u:1", "c"));
        assert_ne!(a, dedup_id("o1", "s", "u:1", "c"));
        assert!(!a.contains(['\r', '\n', ' ']));
    }

    #[test]
    fn state_messages_read_back_as_changes_of_their_org_only() {
        let headers = HeaderMap::new();
        let subject = format!("$KV.{STATE_BUCKET}.{}", receipt_key("acme", "r1", "u.1"));
        assert_eq!(
            state_change("acme", &subject, &headers, b"17"),
            Some(StateChange::Receipt {
                room: "r1".into(),
                user: "u.1".into(),
                seq: 17
            })
        );
        assert_eq!(state_change("acm", &subject, &headers, b"17"), None);
        let entry = PresenceEntry {
            users: [("u1".to_owned(), PresenceState::Away)].into(),
        };
        let subject = format!(
            "$KV.{STATE_BUCKET}.{}",
            presence_key("acme", "r1", &node_token("n-1"))
        );
        let payload = serde_json::to_vec(&entry).unwrap();
        let Some(StateChange::Presence { entry: read, .. }) =
            state_change("acme", &subject, &headers, &payload)
        else {
            panic!("not presence");
        };
        assert_eq!(read, entry);
        let mut deleted = HeaderMap::new();
        deleted.insert("KV-Operation", "DEL");
        let Some(StateChange::Presence { entry: gone, .. }) =
            state_change("acme", &subject, &deleted, b"")
        else {
            panic!("not presence");
        };
        assert!(gone.users.is_empty());
    }
}
