//! A connection's queue of room frames: what the room tasks (message feed,
//! state watch, typing, a join or a say in progress) hand to one
//! connection, which frames them in its own encoding.
//!
//! It also holds the rooms the connection is in, shared with the join
//! tasks, so a join that completes after its connection left the room (or
//! closed) takes its registration back.
//!
//! Invariant: the queue is bounded: a connection whose queue holds
//! [`MAX_QUEUED`] frames gets nothing more but one [`RoomFrame::Overflow`],
//! and its loop closes it as a slow consumer; senders never wait.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use herald_proto::stream::ServerMessage;
use tokio::sync::mpsc;

/// Room frames one connection may have waiting.
pub const MAX_QUEUED: usize = 4096;

/// What a connection gets from the rooms.
#[derive(Debug, Clone)]
pub enum RoomFrame {
    /// A frame to send.
    Send(Arc<ServerMessage>),
    /// A join failed after the request was taken: the room is not joined,
    /// and the connection sends this error.
    JoinFailed {
        /// The room.
        room: String,
        /// The error frame to send.
        error: Arc<ServerMessage>,
    },
    /// The queue filled: close the connection as a slow consumer.
    Overflow,
}

/// The sending side, shared by every room task that serves the connection.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<RoomFrame>,
    queued: AtomicUsize,
    overflowed: AtomicBool,
    rooms: Mutex<HashSet<String>>,
    closed: AtomicBool,
}

impl Outbox {
    /// A queue and its receiving side.
    pub fn new() -> (Arc<Self>, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Self {
            tx,
            queued: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            rooms: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
        });
        (Arc::clone(&outbox), Inbox { rx, outbox })
    }

    /// Queues `frame`; false when the connection is gone or overflowed.
    pub fn send(&self, frame: RoomFrame) -> bool {
        if self.overflowed.load(Relaxed) {
            return false;
        }
        if self.queued.fetch_add(1, Relaxed) >= MAX_QUEUED {
            self.overflowed.store(true, Relaxed);
            let _ = self.tx.send(RoomFrame::Overflow);
            return false;
        }
        self.tx.send(frame).is_ok()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection in `room`; false when it is in as many rooms as
    /// it may be (`max`) and not in this one.
    pub fn enter(&self, room: &str, max: usize) -> bool {
        let mut rooms = self.rooms();
        if rooms.contains(room) {
            return true;
        }
        if rooms.len() >= max {
            return false;
        }
        rooms.insert(room.to_owned());
        true
    }

    /// Marks the connection out of `room`; false when it was not in.
    pub fn exit(&self, room: &str) -> bool {
        self.rooms().remove(room)
    }

    /// Is the connection (still) in `room`?
    pub fn is_in(&self, room: &str) -> bool {
        !self.closed.load(Relaxed) && self.rooms().contains(room)
    }

    /// The connection is gone: it is in no room any more.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
        self.rooms().clear();
    }

    /// Queues a message.
    pub fn message(&self, msg: Arc<ServerMessage>) -> bool {
        self.send(RoomFrame::Send(msg))
    }
}

/// The receiving side, owned by the connection.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<RoomFrame>,
    outbox: Arc<Outbox>,
}

impl Inbox {
    /// The next frame (never ends while the connection holds its outbox).
    pub async fn recv(&mut self) -> Option<RoomFrame> {
        let f = self.rx.recv().await;
        if f.is_some() {
            self.outbox.queued.fetch_sub(1, Relaxed);
        }
        f
    }

    /// The sending side.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_takes_nothing_more_and_says_so_once() {
        let (out, mut inbox) = Outbox::new();
        let ping = Arc::new(ServerMessage::Ping { seq: 1 });
        for _ in 0..MAX_QUEUED {
            assert!(out.message(Arc::clone(&ping)));
        }
        assert!(!out.message(Arc::clone(&ping)));
        assert!(!out.message(ping));
        let mut overflows = 0;
        for _ in 0..=MAX_QUEUED {
            if matches!(inbox.recv().await, Some(RoomFrame::Overflow)) {
                overflows += 1;
            }
        }
        assert_eq!(overflows, 1);
    }
}
