//! One org's rooms on one node: the members connected here, and the three
//! tasks that feed them from NATS — the org's stored messages (an ordered
//! consumer), its room state (receipts and every node's presence entries,
//! an ordered consumer of the bucket) and its typing notices (core NATS) —
//! plus the task that keeps this node's presence entries written.
//!
//! Invariant: a joining member is registered at the message feed's
//! position `P` and gets the stored history up to `P`, then every message
//! the feed delivers after `P`, in order: frames that arrive while its
//! history is being read wait in the member's pending list and go out
//! right after `joined`. So history and live meet with no gap and no
//! duplicate. Presence frames come only from the merged view of the
//! bucket, the same on every node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use herald_proto::room::{Member, PresenceState, Receipts, RoomMessage, TYPING_INTERVAL_MS};
use herald_proto::stream::ServerMessage;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nats::rooms::{node_token, state_change, RoomStore, RoomStoreError, StateChange};
use crate::ops::metrics::Metrics;
use crate::room::outbox::Outbox;
use crate::room::presence::{local_entry, PresenceView};

/// How long a node's presence entry lives unless written again.
pub const PRESENCE_TTL: Duration = Duration::from_secs(6);
/// How often a node writes its presence entries again.
const PRESENCE_REFRESH: Duration = Duration::from_secs(2);
/// A node's entry not written again for this long is taken as gone, also
/// when its expiry marker does not arrive.
const PRESENCE_STALE: Duration = Duration::from_secs(8);
/// Pause before a feed that failed starts again.
const FEED_RETRY: Duration = Duration::from_millis(500);
/// How long an org with no member here keeps its tasks.
pub const IDLE_GRACE: Duration = Duration::from_secs(30);

/// One member connection in one room.
struct MemberConn {
    user: Arc<str>,
    outbox: Arc<Outbox>,
    /// Frames held back while the member's `joined` is being prepared.
    pending: Option<Vec<Arc<ServerMessage>>>,
}

#[derive(Default)]
struct Room {
    members: HashMap<u64, MemberConn>,
    /// When each user's last typing notice went out from this node.
    typing: HashMap<Arc<str>, Instant>,
    /// This node's entry needs writing.
    dirty: bool,
    /// This node has an entry in NATS for the room.
    written: bool,
}

#[derive(Default)]
struct State {
    /// The last stored sequence the message feed delivered (or started after).
    position: u64,
    rooms: HashMap<String, Room>,
    /// Every node's presence entries, merged.
    presence: PresenceView,
    /// When each (room, node) entry was last seen written.
    seen: HashMap<(String, String), Instant>,
    receipts: HashMap<String, Receipts>,
    /// Connections here that said `away`.
    away: HashSet<u64>,
    /// When the last member here left.
    empty_since: Option<Instant>,
}

/// One org's rooms on this node.
pub struct RoomOrg {
    /// The org.
    pub org: Arc<str>,
    node: String,
    store: RoomStore,
    client: async_nats::Client,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    write_presence: Notify,
    /// Stops the org's tasks.
    pub cancel: CancellationToken,
}

impl RoomOrg {
    /// Starts the org's tasks; returns once they run and the room state
    /// is read (or after 5 s, the watch going on).
    pub(crate) async fn start(
        org: &str,
        node: &str,
        store: RoomStore,
        client: async_nats::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, RoomStoreError> {
        let position = store.stream_last_seq().await?;
        let hub = Arc::new(Self {
            org: org.into(),
            node: node_token(node),
            store,
            client,
            metrics,
            state: Mutex::new(State {
                position,
                empty_since: Some(Instant::now()),
                ..Default::default()
            }),
            write_presence: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let messages = hub.store.watch_messages(org, position).await?;
        let (state, pending) = hub.store.watch_state(org).await?;
        let typing = hub
            .client
            .subscribe(herald_proto::room::org_typing_filter(org))
            .await
            .map_err(|e| RoomStoreError::new("subscribe typing", e))?;
        tokio::spawn(Arc::clone(&hub).feed_messages(messages));
        let (caught_up_tx, mut caught_up) = watch::channel(pending == 0);
        tokio::spawn(Arc::clone(&hub).feed_state(state, pending, caught_up_tx));
        tokio::spawn(Arc::clone(&hub).feed_typing(typing));
        tokio::spawn(Arc::clone(&hub).keep_presence());
        // The joined frames need the current state: wait for it (bounded,
        // the watch keeps going either way).
        let _ = tokio::time::timeout(Duration::from_secs(5), caught_up.wait_for(|c| *c)).await;
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Members connected here, in every room.
    pub fn members_here(&self) -> usize {
        self.lock().rooms.values().map(|r| r.members.len()).sum()
    }

    /// Rooms with a member here.
    pub fn rooms_here(&self) -> usize {
        self.lock()
            .rooms
            .values()
            .filter(|r| !r.members.is_empty())
            .count()
    }

    /// Marks the hub in use now (a join is about to register): an idle
    /// hub's grace starts again.
    pub fn touch(&self) {
        let mut s = self.lock();
        if s.rooms.values().all(|r| r.members.is_empty()) {
            s.empty_since = Some(Instant::now());
        }
    }

    /// Since when the org has had no member here, if it has none.
    pub fn idle_since(&self) -> Option<Instant> {
        let s = self.lock();
        if s.rooms.values().any(|r| !r.members.is_empty()) {
            None
        } else {
            s.empty_since
        }
    }

    /// Registers connection `conn` of `user` in `room`: from now on it gets
    /// every message the feed delivers, held back until [`joined`](Self::joined).
    /// Returns the feed's position, up to which its history is read.
    pub fn join(&self, room: &str, conn: u64, user: &str, outbox: &Arc<Outbox>) -> u64 {
        let mut s = self.lock();
        let position = s.position;
        s.empty_since = None;
        let r = s.rooms.entry(room.to_owned()).or_default();
        r.members.insert(
            conn,
            MemberConn {
                user: user.into(),
                outbox: Arc::clone(outbox),
                pending: Some(Vec::new()),
            },
        );
        r.dirty = true;
        drop(s);
        self.write_presence.notify_one();
        position
    }

    /// Sends `joined` with `history` to `conn`, then what was held back.
    pub fn joined(&self, room: &str, conn: u64, user: &str, history: Vec<RoomMessage>) {
        let mut s = self.lock();
        let away = s.away.contains(&conn);
        let mut members = s.presence.members(room);
        let mine = if away {
            PresenceState::Away
        } else {
            PresenceState::Online
        };
        match members.iter_mut().find(|m| m.user_id == user) {
            // Online anywhere beats away here.
            Some(m) if m.state == PresenceState::Online => {}
            Some(m) => m.state = mine,
            None => members.push(Member {
                user_id: user.to_owned(),
                state: mine,
            }),
        }
        let receipts = s.receipts.get(room).cloned().unwrap_or_default();
        let Some(member) = s.rooms.get_mut(room).and_then(|r| r.members.get_mut(&conn)) else {
            return;
        };
        let msg = Arc::new(ServerMessage::Joined {
            room: room.to_owned(),
            members,
            history,
            receipts,
        });
        member.outbox.message(msg);
        for held in member.pending.take().unwrap_or_default() {
            member.outbox.message(held);
        }
    }

    /// Takes `conn` out of `room`.
    pub fn leave(&self, room: &str, conn: u64) {
        let mut s = self.lock();
        if let Some(r) = s.rooms.get_mut(room) {
            if r.members.remove(&conn).is_some() {
                r.dirty = true;
            }
        }
        Self::note_empty(&mut s);
        drop(s);
        self.write_presence.notify_one();
    }

    /// Takes `conn` out of every room (its connection closed).
    pub fn leave_all(&self, conn: u64) {
        let mut s = self.lock();
        s.away.remove(&conn);
        for r in s.rooms.values_mut() {
            if r.members.remove(&conn).is_some() {
                r.dirty = true;
            }
        }
        Self::note_empty(&mut s);
        drop(s);
        self.write_presence.notify_one();
    }

    fn note_empty(s: &mut State) {
        if s.empty_since.is_none() && s.rooms.values().all(|r| r.members.is_empty()) {
            s.empty_since = Some(Instant::now());
        }
    }

    /// Sets `conn` away or back online in every room it is in.
    pub fn set_away(&self, conn: u64, away: bool) {
        let mut s = self.lock();
        let changed = if away {
            s.away.insert(conn)
        } else {
            s.away.remove(&conn)
        };
        if changed {
            for r in s.rooms.values_mut() {
                if r.members.contains_key(&conn) {
                    r.dirty = true;
                }
            }
        }
        drop(s);
        self.write_presence.notify_one();
    }

    /// Takes a typing notice of `user` in `room`: true when it goes out
    /// (at most one per user and room every 2 s from this node).
    pub fn typing_allowed(&self, room: &str, user: &str) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        let Some(r) = s.rooms.get_mut(room) else {
            return false;
        };
        let interval = Duration::from_millis(TYPING_INTERVAL_MS);
        match r.typing.get(user) {
            Some(last) if now.duration_since(*last) < interval => false,
            _ => {
                r.typing.insert(user.into(), now);
                true
            }
        }
    }

    /// Sends `msg` to every member connection of `room` that `to` picks;
    /// a member still joining gets it after its `joined`.
    fn broadcast(
        s: &mut State,
        room: &str,
        msg: &Arc<ServerMessage>,
        to: impl Fn(&str) -> bool,
    ) -> u64 {
        let Some(r) = s.rooms.get_mut(room) else {
            return 0;
        };
        let mut sent = 0;
        for m in r.members.values_mut() {
            if !to(&m.user) {
                continue;
            }
            match &mut m.pending {
                Some(held) => held.push(Arc::clone(msg)),
                None => {
                    m.outbox.message(Arc::clone(msg));
                }
            }
            sent += 1;
        }
        sent
    }

    /// Delivers the org's stored messages as the feed reads them; a feed
    /// that fails starts again after its position.
    async fn feed_messages(
        self: Arc<Self>,
        mut messages: async_nats::jetstream::consumer::push::Ordered,
    ) {
        loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => return,
                m = messages.next() => m,
            };
            match next {
                Some(Ok(m)) => {
                    let seq = match m.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => {
                            tracing::warn!(org = %self.org, error = %e, "room message without its stream info");
                            continue;
                        }
                    };
                    let decoded =
                        crate::nats::rooms::decode_stored(&self.org, &m.subject, seq, &m.payload);
                    let mut s = self.lock();
                    if seq <= s.position {
                        continue;
                    }
                    s.position = seq;
                    if let Some(msg) = decoded {
                        let room = msg.room.clone();
                        let frame = Arc::new(ServerMessage::Message(msg));
                        let sent = Self::broadcast(&mut s, &room, &frame, |_| true);
                        self.metrics
                            .room_messages_delivered
                            .fetch_add(sent, Relaxed);
                    }
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(org = %self.org, error = %e, "room message feed failed; restarting");
                    }
                    loop {
                        tokio::select! {
                            () = self.cancel.cancelled() => return,
                            () = tokio::time::sleep(FEED_RETRY) => {}
                        }
                        let after = self.lock().position;
                        match self.store.watch_messages(&self.org, after).await {
                            Ok(m) => {
                                messages = m;
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(org = %self.org, error = %e, "room message feed restart failed")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies the org's room state as the bucket changes; marks caught up
    /// once the current values are read.
    async fn feed_state(
        self: Arc<Self>,
        mut changes: async_nats::jetstream::consumer::push::Ordered,
        mut pending: u64,
        caught_up: watch::Sender<bool>,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => return,
                _ = sweep.tick() => {
                    self.sweep_stale();
                    continue;
                }
                m = changes.next() => m,
            };
            match next {
                Some(Ok(m)) => {
                    if pending > 0 {
                        pending = m.info().map_or(0, |i| i.pending);
                        if pending == 0 {
                            caught_up.send_replace(true);
                        }
                    }
                    let headers = m.headers.clone().unwrap_or_default();
                    if let Some(change) = state_change(&self.org, &m.subject, &headers, &m.payload)
                    {
                        self.apply(change);
                    }
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(org = %self.org, error = %e, "room state watch failed; restarting");
                    }
                    loop {
                        tokio::select! {
                            () = self.cancel.cancelled() => return,
                            () = tokio::time::sleep(FEED_RETRY) => {}
                        }
                        // Reading every current value again: receipts only
                        // move forward and presence entries replace each
                        // other, so applying one twice changes nothing.
                        match self.store.watch_state(&self.org).await {
                            Ok((c, _)) => {
                                changes = c;
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(org = %self.org, error = %e, "room state watch restart failed")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies one change of the bucket and tells the room's members.
    fn apply(&self, change: StateChange) {
        let mut s = self.lock();
        match change {
            StateChange::Presence { room, node, entry } => {
                if entry.users.is_empty() {
                    s.seen.remove(&(room.clone(), node.clone()));
                } else {
                    s.seen.insert((room.clone(), node.clone()), Instant::now());
                }
                let moved = s.presence.apply(&room, &node, entry);
                self.tell_presence(&mut s, &room, moved);
            }
            StateChange::Receipt { room, user, seq } => {
                let receipts = s.receipts.entry(room.clone()).or_default();
                if receipts.get(&user).is_some_and(|old| *old >= seq) {
                    return;
                }
                receipts.insert(user.clone(), seq);
                let frame = Arc::new(ServerMessage::Receipt {
                    room: room.clone(),
                    user_id: user,
                    seq,
                });
                Self::broadcast(&mut s, &room, &frame, |_| true);
            }
        }
    }

    fn tell_presence(&self, s: &mut State, room: &str, moved: Vec<(String, PresenceState)>) {
        for (user, state) in moved {
            self.metrics.room_presence_changes.fetch_add(1, Relaxed);
            let frame = Arc::new(ServerMessage::Presence {
                room: room.to_owned(),
                user_id: user,
                state,
            });
            Self::broadcast(s, room, &frame, |_| true);
        }
    }

    /// Drops the entries of nodes that stopped writing them (a node that
    /// died), in case their expiry marker does not come.
    fn sweep_stale(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        let stale: Vec<(String, String)> = s
            .seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > PRESENCE_STALE)
            .map(|(k, _)| k.clone())
            .collect();
        for (room, node) in stale {
            s.seen.remove(&(room.clone(), node.clone()));
            let moved = s.presence.apply(&room, &node, Default::default());
            self.tell_presence(&mut s, &room, moved);
        }
    }

    /// Forwards typing notices to the room's other users.
    async fn feed_typing(self: Arc<Self>, mut typing: async_nats::Subscriber) {
        let prefix = herald_proto::room::TYPING_PREFIX;
        loop {
            let m = tokio::select! {
                () = self.cancel.cancelled() => return,
                m = typing.next() => m,
            };
            let Some(m) = m else { return };
            let Some(room) = herald_proto::room::room_of_subject(&m.subject, prefix, &self.org)
            else {
                continue;
            };
            let Ok(user) = std::str::from_utf8(&m.payload) else {
                continue;
            };
            let frame = Arc::new(ServerMessage::Typing {
                room: room.to_owned(),
                user_id: user.to_owned(),
            });
            let mut s = self.lock();
            let sent = Self::broadcast(&mut s, room, &frame, |u| u != user);
            self.metrics.room_typing_delivered.fetch_add(sent, Relaxed);
        }
    }

    /// Publishes a typing notice of `user` in `room` to every node.
    pub async fn publish_typing(&self, room: &str, user: &str) -> Result<(), RoomStoreError> {
        self.client
            .publish(
                herald_proto::room::typing_subject(&self.org, room),
                user.to_owned().into(),
            )
            .await
            .map_err(|e| RoomStoreError::new("publish typing", e))
    }

    /// Keeps this node's presence entries in NATS: written when they
    /// change, and again before they expire.
    async fn keep_presence(self: Arc<Self>) {
        let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
        loop {
            let all = tokio::select! {
                () = self.cancel.cancelled() => break,
                () = self.write_presence.notified() => false,
                _ = refresh.tick() => true,
            };
            let writes: Vec<(String, crate::nats::rooms::PresenceEntry)> = {
                let mut s = self.lock();
                let away = s.away.clone();
                let mut out = Vec::new();
                for (name, r) in &mut s.rooms {
                    if !(r.dirty || (all && r.written)) {
                        continue;
                    }
                    r.dirty = false;
                    let entry = local_entry(
                        r.members
                            .iter()
                            .map(|(conn, m)| (&*m.user, away.contains(conn))),
                    );
                    r.written = !entry.users.is_empty();
                    out.push((name.clone(), entry));
                }
                s.rooms
                    .retain(|_, r| r.written || r.dirty || !r.members.is_empty());
                out
            };
            for (room, entry) in writes {
                if let Err(e) = self
                    .store
                    .put_presence(&self.org, &room, &self.node, &entry, PRESENCE_TTL)
                    .await
                {
                    tracing::warn!(org = %self.org, room, error = %e, "writing presence failed; retrying");
                    if let Some(r) = self.lock().rooms.get_mut(&room) {
                        r.dirty = true;
                    }
                }
            }
        }
        // Leaving: the members here are gone.
        let rooms: Vec<String> = {
            let s = self.lock();
            s.rooms
                .iter()
                .filter(|(_, r)| r.written)
                .map(|(n, _)| n.clone())
                .collect()
        };
        for room in rooms {
            let _ = self
                .store
                .put_presence(
                    &self.org,
                    &room,
                    &self.node,
                    &Default::default(),
                    PRESENCE_TTL,
                )
                .await;
        }
    }

    /// The room's last `limit` messages up to `until`, oldest first.
    pub async fn history(
        &self,
        room: &str,
        until: u64,
        limit: usize,
    ) -> Result<Vec<RoomMessage>, RoomStoreError> {
        self.store.history(&self.org, room, until, limit).await
    }
}
