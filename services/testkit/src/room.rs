//! A room member for rooms tests (contract section 6): one stream
//! connection, past its `hello`, that joins and leaves rooms, says, types,
//! reads and sets its status, and waits for room frames by what they are.
//!
//! Frames arrive interleaved (a presence notice between a `say` and its
//! `message`, a typing notice while waiting for a receipt), so the client
//! keeps every frame it has not been asked for yet and each wait looks at
//! those first: a test names the frame it expects, never the order of
//! unrelated ones. Pings are answered by nobody and dropped (tests are far
//! shorter than two ping intervals).

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::ws::{Received, WsClient};

/// How long a wait for a frame lasts unless the caller says otherwise.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// One stream connection of a user, used for rooms.
pub struct RoomClient {
    ws: WsClient,
    /// Frames received and not yet taken by a wait, oldest first.
    pending: VecDeque<Value>,
    /// The user (`sub`) the connection's token names.
    pub user: String,
    /// A name for panic messages, e.g. `"alice@A"`.
    pub label: String,
    /// Text frames received so far.
    pub text_frames: usize,
    /// Binary (MessagePack) frames received so far.
    pub binary_frames: usize,
}

impl RoomClient {
    /// Connects to `<base>/v2/realtime/stream` with `token` (of user `user`)
    /// and `protocol` (`None`: the default JSON), sends `hello` for the
    /// service `finance` and waits for the `ack`.
    pub async fn connect(
        base: &str,
        token: &str,
        user: &str,
        protocol: Option<&str>,
        label: &str,
    ) -> RoomClient {
        let mut ws = WsClient::connect(base, "", Some(token), protocol).await;
        ws.send(json!({"type": "hello", "version": 1, "services": ["finance"]}))
            .await;
        let mut client = RoomClient {
            ws,
            pending: VecDeque::new(),
            user: user.to_owned(),
            label: label.to_owned(),
            text_frames: 0,
            binary_frames: 0,
        };
        client
            .wait_for("the ack of hello", FRAME_WAIT, |f| f["type"] == "ack")
            .await;
        client
    }

    /// Sends one frame in the connection's encoding.
    pub async fn send(&mut self, frame: Value) {
        self.ws.send(frame).await;
    }

    /// Takes the first frame, pending or arriving within `timeout`, for
    /// which `matches` holds; `None` when none came. Panics when the
    /// connection closes or ends first.
    pub async fn try_wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(&matches) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.ws.recv(left).await {
                Received::Frame(f) => {
                    if self.ws.last_frame_binary {
                        self.binary_frames += 1;
                    } else {
                        self.text_frames += 1;
                    }
                    if f["type"] == "ping" {
                        continue;
                    }
                    if matches(&f) {
                        return Some(f);
                    }
                    self.pending.push_back(f);
                }
                Received::Timeout => return None,
                other => panic!(
                    "{}: the connection ended ({other:?}); frames not taken: {:?}",
                    self.label, self.pending
                ),
            }
        }
    }

    /// Like [`try_wait_for`](Self::try_wait_for); panics, naming `what`
    /// and the frames seen instead, when nothing matched within `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        match self.try_wait_for(timeout, matches).await {
            Some(f) => f,
            None => panic!(
                "{}: no {what} within {timeout:?}; frames not taken: {:?}",
                self.label, self.pending
            ),
        }
    }

    /// Every frame, pending or arriving within `window`, for which
    /// `matches` holds (the window is always waited out).
    pub async fn collect_within(
        &mut self,
        window: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_wait_for(left, &matches).await {
                Some(f) => out.push(f),
                None => return out,
            }
        }
    }

    /// Panics if a frame for which `matches` holds is pending or arrives
    /// within `window`; `what` names it.
    pub async fn none_within(
        &mut self,
        what: &str,
        window: Duration,
        matches: impl Fn(&Value) -> bool,
    ) {
        if let Some(f) = self.try_wait_for(window, matches).await {
            panic!("{}: unexpected {what}: {f}", self.label);
        }
    }

    /// The frames received and not taken yet.
    pub fn pending(&self) -> &VecDeque<Value> {
        &self.pending
    }

    /// Sends `join` (with `history` when given) and returns `Ok(joined)` or
    /// `Err(error frame)` for the room.
    pub async fn try_join(&mut self, room: &str, history: Option<Value>) -> Result<Value, Value> {
        let mut frame = json!({"type": "join", "room": room});
        if let Some(h) = history {
            frame["history"] = h;
        }
        self.send(frame).await;
        let what = format!("joined or error for room {room}");
        let reply = self
            .wait_for(&what, FRAME_WAIT, |f| {
                f["room"] == room && (f["type"] == "joined" || f["type"] == "error")
            })
            .await;
        if reply["type"] == "joined" {
            Ok(reply)
        } else {
            Err(reply)
        }
    }

    /// Joins `room` (with `history` messages when given); panics on an
    /// error frame. Returns the `joined` frame.
    pub async fn join(&mut self, room: &str, history: Option<u64>) -> Value {
        let label = self.label.clone();
        self.try_join(room, history.map(Value::from))
            .await
            .unwrap_or_else(|e| panic!("{label}: join {room} refused: {e}"))
    }

    /// Sends `leave` and returns `Ok(left)` or `Err(error frame)`.
    pub async fn leave(&mut self, room: &str) -> Result<Value, Value> {
        self.send(json!({"type": "leave", "room": room})).await;
        let what = format!("left or error for room {room}");
        let reply = self
            .wait_for(&what, FRAME_WAIT, |f| {
                f["room"] == room && (f["type"] == "left" || f["type"] == "error")
            })
            .await;
        if reply["type"] == "left" {
            Ok(reply)
        } else {
            Err(reply)
        }
    }

    /// Sends `say` and returns `Ok(message)`, the connection's own copy of
    /// its message (matched on `clientMsgId` when given, else on text and
    /// sender), or `Err(error frame)` for the room.
    pub async fn say(
        &mut self,
        room: &str,
        text: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Value, Value> {
        let mut frame = json!({"type": "say", "room": room, "text": text});
        if let Some(id) = client_msg_id {
            frame["clientMsgId"] = json!(id);
        }
        self.send(frame).await;
        let user = self.user.clone();
        let what = format!("the own message or an error for a say in {room}");
        let reply = self
            .wait_for(&what, FRAME_WAIT, |f| {
                if f["room"] != room {
                    return false;
                }
                if f["type"] == "error" {
                    return true;
                }
                f["type"] == "message"
                    && f["userId"] == user.as_str()
                    && match client_msg_id {
                        Some(id) => f["clientMsgId"] == id,
                        None => f["text"] == text && f.get("clientMsgId").is_none(),
                    }
            })
            .await;
        if reply["type"] == "message" {
            Ok(reply)
        } else {
            Err(reply)
        }
    }

    /// Says `text` and returns the message; panics on an error frame.
    pub async fn say_ok(&mut self, room: &str, text: &str, client_msg_id: Option<&str>) -> Value {
        let label = self.label.clone();
        self.say(room, text, client_msg_id)
            .await
            .unwrap_or_else(|e| panic!("{label}: say in {room} refused: {e}"))
    }

    /// Waits for the error frame of `room` (any room when `None`) and returns it.
    pub async fn error(&mut self, room: Option<&str>) -> Value {
        let what = format!("an error frame for room {room:?}");
        self.wait_for(&what, FRAME_WAIT, |f| {
            f["type"] == "error" && room.is_none_or(|r| f["room"] == r)
        })
        .await
    }

    /// Waits (at most `timeout`) for the message of `room` with `seq`.
    pub async fn message(&mut self, room: &str, seq: u64, timeout: Duration) -> Value {
        let what = format!("message {seq} of room {room}");
        self.wait_for(&what, timeout, |f| {
            f["type"] == "message" && f["room"] == room && f["seq"] == seq
        })
        .await
    }

    /// Waits (at most `timeout`) for a presence frame of `room` saying
    /// `user` is `state`.
    pub async fn presence(
        &mut self,
        room: &str,
        user: &str,
        state: &str,
        timeout: Duration,
    ) -> Value {
        let what = format!("presence {user} {state} in {room}");
        self.wait_for(&what, timeout, |f| {
            f["type"] == "presence"
                && f["room"] == room
                && f["userId"] == user
                && f["state"] == state
        })
        .await
    }

    /// Closes the connection from the client side (a close frame).
    pub async fn close(self) {
        self.ws.close().await;
    }
}
