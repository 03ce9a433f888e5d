//! A stream connection's side of rooms: the room requests it sends
//! (`join`, `leave`, `say`, `typing`, `read`, `status`), checked here, and
//! the room frames it gets back through its [`Outbox`].
//!
//! Invariant: a refused request answers one `error` frame and changes
//! nothing; none closes the connection. Requests that need NATS (a join's
//! history, storing a message or a receipt) run as tasks and answer through
//! the outbox, so the connection's loop never waits on NATS. Closing the
//! connection takes it out of every room.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use herald_proto::room::{
    is_client_msg_id, is_room_id, RoomErrorCode, StoredRoomMessage, DEFAULT_HISTORY, MAX_HISTORY,
    MAX_ROOMS_PER_CONNECTION, MAX_TEXT_BYTES,
};
use herald_proto::stream::{ClientMessage, ServerMessage};
use tokio::sync::mpsc;

use crate::auth::Principal;
use crate::node::Node;
use crate::org::decode::now_ms;
use crate::room::outbox::{Inbox, Outbox, RoomFrame};

/// A refused room request: the `error` frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: RoomErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: RoomErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `error` frame, counted.
    pub(crate) fn frame(self, node: &Node, room: Option<&str>) -> ServerMessage {
        node.metrics.count_room_error(self.code);
        ServerMessage::Error {
            room: room.map(str::to_owned),
            code: self.code,
            message: self.message,
        }
    }
}

/// Checks a room id and the token's `rooms` claim.
pub(crate) fn check_room(principal: &Principal, room: &str) -> Result<(), Refusal> {
    if !is_room_id(room) {
        return Err(Refusal::new(
            RoomErrorCode::BadRequest,
            "a room id is 1-64 characters of [A-Za-z0-9_-]",
        ));
    }
    if !principal.may_join_room(room) {
        return Err(Refusal::new(
            RoomErrorCode::Forbidden,
            format!("room '{room}' is outside the token's rooms"),
        ));
    }
    Ok(())
}

/// Checks a message's text and `clientMsgId`.
pub(crate) fn check_message(text: &str, client_msg_id: Option<&str>) -> Result<(), Refusal> {
    if text.is_empty() {
        return Err(Refusal::new(RoomErrorCode::BadRequest, "text is empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Refusal::new(
            RoomErrorCode::TooLarge,
            format!("text is {} bytes; at most {MAX_TEXT_BYTES}", text.len()),
        ));
    }
    if client_msg_id.is_some_and(|id| !is_client_msg_id(id)) {
        return Err(Refusal::new(
            RoomErrorCode::BadRequest,
            "clientMsgId is 1-128 bytes without control characters",
        ));
    }
    Ok(())
}

/// Stores a message of `principal` in `room` (checked beforehand) and
/// counts it; the repeat of a `clientMsgId` answers the original.
pub(crate) async fn store_message(
    node: &Node,
    org: &str,
    room: &str,
    user: &str,
    text: String,
    client_msg_id: Option<String>,
) -> Result<crate::nats::rooms::Stored, Refusal> {
    let store = node.rooms.store().await.map_err(unavailable)?;
    let stored = store
        .publish(
            org,
            room,
            &StoredRoomMessage {
                user_id: user.to_owned(),
                text,
                ts: now_ms(),
                client_msg_id,
            },
        )
        .await
        .map_err(unavailable)?;
    if stored.duplicate {
        node.metrics.room_messages_duplicate.fetch_add(1, Relaxed);
    } else {
        node.metrics.room_messages_stored.fetch_add(1, Relaxed);
    }
    Ok(stored)
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %e, "room request failed in NATS");
    Refusal::new(
        RoomErrorCode::Unavailable,
        "rooms are unavailable right now; try again",
    )
}

/// A `say` taken, waiting for its turn to be stored.
struct Say {
    org: String,
    user: String,
    room: String,
    text: String,
    client_msg_id: Option<String>,
}

/// The rooms of one connection.
pub(super) struct ConnRooms {
    member: u64,
    /// The connection's room queue, made at its first room request: most
    /// connections never use rooms, and a queue costs about 1.5 KiB.
    inbox: Option<Inbox>,
    away: bool,
    /// The connection's messages, stored one at a time so they keep the
    /// order the client sent them in (started on the first `say`).
    says: Option<mpsc::UnboundedSender<Say>>,
}

impl ConnRooms {
    pub(super) fn new(node: &Node) -> Self {
        Self {
            member: node.rooms.member_id(),
            inbox: None,
            away: false,
            says: None,
        }
    }

    /// The next room frame for the connection (none before its first
    /// room request).
    pub(super) async fn recv(&mut self) -> Option<RoomFrame> {
        match &mut self.inbox {
            Some(inbox) => inbox.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The queue, made now if the connection had none.
    fn outbox(&mut self) -> Arc<Outbox> {
        let inbox = self.inbox.get_or_insert_with(|| Outbox::new().1);
        Arc::clone(inbox.outbox())
    }

    /// Is the connection in `room`?
    fn is_in(&self, room: &str) -> bool {
        self.inbox.as_ref().is_some_and(|i| i.outbox().is_in(room))
    }

    /// Should `msg` still go out (its room not left meanwhile)?
    pub(super) fn still_wanted(&self, msg: &ServerMessage) -> bool {
        match room_of(msg) {
            Some(room) => self.is_in(room),
            None => true,
        }
    }

    /// A join failed after it was taken: the connection is not in the room.
    pub(super) fn join_failed(&self, room: &str) {
        if let Some(inbox) = &self.inbox {
            inbox.outbox().exit(room);
        }
    }

    /// Handles a room request; `Some` is the frame to answer at once.
    pub(super) fn handle(
        &mut self,
        node: &Arc<Node>,
        principal: &Principal,
        msg: ClientMessage,
    ) -> Option<ServerMessage> {
        let (room, result) = match msg {
            ClientMessage::Join { room, history } => {
                let r = self.join(node, principal, &room, history);
                (Some(room), r)
            }
            ClientMessage::Leave { room } => {
                let r = self.leave(node, principal, &room);
                (Some(room), r)
            }
            ClientMessage::Say {
                room,
                text,
                client_msg_id,
            } => {
                let r = self.say(node, principal, &room, text, client_msg_id);
                (Some(room), r)
            }
            ClientMessage::Typing { room } => {
                let r = self.typing(node, principal, &room);
                (Some(room), r)
            }
            ClientMessage::Read { room, seq } => {
                let r = self.read(node, principal, &room, seq);
                (Some(room), r)
            }
            ClientMessage::Status { state } => {
                self.away = state == herald_proto::room::Status::Away;
                if let Some(hub) = node.rooms.running(&principal.org) {
                    hub.set_away(self.member, self.away);
                }
                (None, Ok(None))
            }
            _ => (None, Ok(None)),
        };
        match result {
            Ok(answer) => answer,
            Err(refusal) => Some(refusal.frame(node, room.as_deref())),
        }
    }

    fn joined(&self, room: &str) -> Result<(), Refusal> {
        if self.is_in(room) {
            Ok(())
        } else {
            Err(Refusal::new(
                RoomErrorCode::NotJoined,
                format!("not in room '{room}'; join it first"),
            ))
        }
    }

    fn join(
        &mut self,
        node: &Arc<Node>,
        principal: &Principal,
        room: &str,
        history: Option<u64>,
    ) -> Result<Option<ServerMessage>, Refusal> {
        check_room(principal, room)?;
        let outbox = self.outbox();
        if !outbox.enter(room, MAX_ROOMS_PER_CONNECTION) {
            return Err(Refusal::new(
                RoomErrorCode::BadRequest,
                format!("at most {MAX_ROOMS_PER_CONNECTION} rooms per connection"),
            ));
        }
        let limit = history.map_or(DEFAULT_HISTORY, |h| {
            usize::try_from(h).unwrap_or(MAX_HISTORY).min(MAX_HISTORY)
        });
        let (node, org, user, room) = (
            Arc::clone(node),
            principal.org.clone(),
            principal.user.clone(),
            room.to_owned(),
        );
        let (member, away) = (self.member, self.away);
        tokio::spawn(async move {
            let hub = match node.rooms.hub(&org).await {
                Ok(hub) => hub,
                Err(e) => {
                    let error = Arc::new(unavailable(e).frame(&node, Some(&room)));
                    outbox.send(RoomFrame::JoinFailed { room, error });
                    return;
                }
            };
            hub.set_away(member, away);
            let position = hub.join(&room, member, &user, &outbox);
            // Left (or closed) while the join was on its way: undo it.
            if !outbox.is_in(&room) {
                hub.leave(&room, member);
                return;
            }
            let started = Instant::now();
            let history = if limit == 0 || position == 0 {
                Ok(Vec::new())
            } else {
                hub.history(&room, position, limit).await
            };
            match history {
                Ok(history) => {
                    node.metrics.record_room_history(started.elapsed());
                    node.metrics.room_joins.fetch_add(1, Relaxed);
                    hub.joined(&room, member, &user, history);
                }
                Err(e) => {
                    hub.leave(&room, member);
                    let error = Arc::new(unavailable(e).frame(&node, Some(&room)));
                    outbox.send(RoomFrame::JoinFailed { room, error });
                }
            }
        });
        Ok(None)
    }

    fn leave(
        &mut self,
        node: &Node,
        principal: &Principal,
        room: &str,
    ) -> Result<Option<ServerMessage>, Refusal> {
        if !is_room_id(room) {
            check_room(principal, room)?;
        }
        if !self.inbox.as_ref().is_some_and(|i| i.outbox().exit(room)) {
            return Err(Refusal::new(
                RoomErrorCode::NotJoined,
                format!("not in room '{room}'"),
            ));
        }
        if let Some(hub) = node.rooms.running(&principal.org) {
            hub.leave(room, self.member);
        }
        Ok(Some(ServerMessage::Left {
            room: room.to_owned(),
        }))
    }

    fn say(
        &mut self,
        node: &Arc<Node>,
        principal: &Principal,
        room: &str,
        text: String,
        client_msg_id: Option<String>,
    ) -> Result<Option<ServerMessage>, Refusal> {
        check_room(principal, room)?;
        self.joined(room)?;
        check_message(&text, client_msg_id.as_deref())?;
        if node
            .room_limiter
            .check(&principal.org, &principal.user)
            .is_err()
        {
            return Err(Refusal::new(
                RoomErrorCode::RateLimited,
                format!(
                    "at most {} messages a second",
                    herald_proto::room::MESSAGES_PER_SECOND
                ),
            ));
        }
        let outbox = self.outbox();
        let says = self.says.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(store_says(Arc::clone(node), outbox, rx));
            tx
        });
        let _ = says.send(Say {
            org: principal.org.clone(),
            user: principal.user.clone(),
            room: room.to_owned(),
            text,
            client_msg_id,
        });
        Ok(None)
    }

    fn typing(
        &mut self,
        node: &Arc<Node>,
        principal: &Principal,
        room: &str,
    ) -> Result<Option<ServerMessage>, Refusal> {
        check_room(principal, room)?;
        self.joined(room)?;
        let Some(hub) = node.rooms.running(&principal.org) else {
            return Ok(None);
        };
        if !hub.typing_allowed(room, &principal.user) {
            node.metrics.room_typing_dropped.fetch_add(1, Relaxed);
            return Ok(None);
        }
        node.metrics.room_typing_sent.fetch_add(1, Relaxed);
        let (room, user) = (room.to_owned(), principal.user.clone());
        tokio::spawn(async move {
            if let Err(e) = hub.publish_typing(&room, &user).await {
                tracing::debug!(error = %e, "typing notice not sent");
            }
        });
        Ok(None)
    }

    fn read(
        &mut self,
        node: &Arc<Node>,
        principal: &Principal,
        room: &str,
        seq: u64,
    ) -> Result<Option<ServerMessage>, Refusal> {
        check_room(principal, room)?;
        self.joined(room)?;
        if seq == 0 {
            return Err(Refusal::new(RoomErrorCode::BadRequest, "seq is 1 or more"));
        }
        let (node, org, user, room) = (
            Arc::clone(node),
            principal.org.clone(),
            principal.user.clone(),
            room.to_owned(),
        );
        let outbox = self.outbox();
        tokio::spawn(async move {
            let result = match node.rooms.store().await {
                Ok(store) => store.advance_receipt(&org, &room, &user, seq).await,
                Err(e) => Err(e),
            };
            match result {
                // Every member hears of it from the state watch.
                Ok(true) => {
                    node.metrics.room_receipts.fetch_add(1, Relaxed);
                }
                Ok(false) => {}
                Err(e) => {
                    outbox.message(Arc::new(unavailable(e).frame(&node, Some(&room))));
                }
            }
        });
        Ok(None)
    }

    /// The connection closed: out of every room.
    pub(super) fn close(&self, node: &Node, org: &str) {
        if let Some(inbox) = &self.inbox {
            inbox.outbox().close();
        }
        if let Some(hub) = node.rooms.running(org) {
            hub.leave_all(self.member);
        }
    }
}

/// Stores a connection's messages in the order it sent them (at most 10 a
/// second are taken, so the queue stays short).
async fn store_says(node: Arc<Node>, outbox: Arc<Outbox>, mut says: mpsc::UnboundedReceiver<Say>) {
    while let Some(Say {
        org,
        user,
        room,
        text,
        client_msg_id,
    }) = says.recv().await
    {
        let answer = match store_message(&node, &org, &room, &user, text, client_msg_id).await {
            // Stored: the feed delivers it to every member, this one too.
            Ok(s) if !s.duplicate => continue,
            // A repeat: its sender gets the original again.
            Ok(s) => match node.rooms.store().await {
                Ok(store) => match store.message(&org, s.seq).await {
                    Ok(Some(original)) => ServerMessage::Message(original),
                    Ok(None) => continue,
                    Err(e) => unavailable(e).frame(&node, Some(&room)),
                },
                Err(e) => unavailable(e).frame(&node, Some(&room)),
            },
            Err(refusal) => refusal.frame(&node, Some(&room)),
        };
        outbox.message(Arc::new(answer));
    }
}

/// The room a room frame is about.
fn room_of(msg: &ServerMessage) -> Option<&str> {
    match msg {
        ServerMessage::Message(m) => Some(&m.room),
        ServerMessage::Typing { room, .. }
        | ServerMessage::Receipt { room, .. }
        | ServerMessage::Presence { room, .. } => Some(room),
        _ => None,
    }
}
