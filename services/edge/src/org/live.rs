//! An org's live feed: a pump task moves the org's RePublished messages from
//! its NATS subscription into a bounded queue, and writes into that queue, in
//! order, a [`Live::Lost`] marker at every point where messages may have been
//! lost before the next one.
//!
//! Invariant: every message the node may have missed lies after the last
//! [`Live::Message`] taken before the marker that covers it. A marker is
//! written when the queue is full (the message is dropped here, so the
//! marker is exact), when the NATS connection was re-established (the
//! client's connect counter moves before the first message of the new
//! connection is handed out, so this is exact too), and when the NATS client
//! reports a slow consumer or a reconnect (its own channel overflowed; the
//! event arrives shortly after the drop). The org task answers a marker by
//! reading the stream up to a head sampled after it, so a loss is repaired
//! before any later live message is trusted.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// One entry of the queue.
#[derive(Debug)]
pub enum Live {
    /// A RePublished message, in the order NATS delivered it.
    Message(async_nats::Message),
    /// Messages may have been lost here.
    Lost,
}

/// How much one org's queue may hold before it drops (and marks a loss).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Messages.
    pub messages: usize,
    /// Payload bytes.
    pub bytes: usize,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Live>,
    bytes: usize,
}

/// The bounded queue between an org's pump and its org task.
pub struct LiveQueue {
    inner: Mutex<Inner>,
    limits: QueueLimits,
    ready: Notify,
}

impl LiveQueue {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            limits,
            ready: Notify::new(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a message; when the queue is full the message is dropped and
    /// a loss is marked in its place. Returns false when it was dropped.
    pub fn push(&self, msg: async_nats::Message) -> bool {
        let size = msg.payload.len();
        let mut q = self.inner();
        let full = q.items.len() >= self.limits.messages
            || (q.bytes + size > self.limits.bytes && !q.items.is_empty());
        let kept = if full {
            if !matches!(q.items.back(), Some(Live::Lost)) {
                q.items.push_back(Live::Lost);
            }
            false
        } else {
            q.bytes += size;
            q.items.push_back(Live::Message(msg));
            true
        };
        drop(q);
        self.ready.notify_one();
        kept
    }

    /// Marks a possible loss at the current end of the queue.
    pub fn mark_lost(&self) {
        let mut q = self.inner();
        if !matches!(q.items.back(), Some(Live::Lost)) {
            q.items.push_back(Live::Lost);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Takes up to `max` entries, oldest first.
    pub fn take(&self, max: usize) -> Vec<Live> {
        let mut q = self.inner();
        let n = q.items.len().min(max);
        let taken: Vec<Live> = q.items.drain(..n).collect();
        for item in &taken {
            if let Live::Message(m) = item {
                q.bytes -= m.payload.len();
            }
        }
        taken
    }

    /// Entries queued.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner().items.len()
    }

    /// True when nothing is queued.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until something was queued since the last wake-up.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }
}

/// What the pump watches to learn of losses the NATS client reports.
pub struct LossSources {
    /// Counts slow-consumer and (re)connect events of the NATS client.
    pub events: watch::Receiver<u64>,
    /// The NATS client's statistics (its connect counter).
    pub stats: std::sync::Arc<async_nats::Statistics>,
}

/// Moves messages from `sub` into `queue` until `cancel`, marking losses.
pub async fn pump(
    mut sub: async_nats::Subscriber,
    queue: std::sync::Arc<LiveQueue>,
    mut losses: LossSources,
    cancel: CancellationToken,
) {
    let mut connects = losses.stats.connects.load(Relaxed);
    losses.events.borrow_and_update();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            changed = losses.events.changed() => {
                if changed.is_err() {
                    break;
                }
                losses.events.borrow_and_update();
                queue.mark_lost();
            }
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                // The client counts a new connection before it hands out the
                // first message received on it.
                let now = losses.stats.connects.load(Relaxed);
                if now != connects {
                    connects = now;
                    queue.mark_lost();
                }
                if losses.events.has_changed().unwrap_or(false) {
                    losses.events.borrow_and_update();
                    queue.mark_lost();
                }
                queue.push(msg);
            }
        }
    }
    let _ = sub.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &'static [u8]) -> async_nats::Message {
        async_nats::Message {
            subject: "herald.live.acme.finance.p1".into(),
            reply: None,
            payload: bytes::Bytes::from_static(payload),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    fn shape(items: &[Live]) -> String {
        items
            .iter()
            .map(|i| match i {
                Live::Message(m) => String::from_utf8_lossy(&m.payload).into_owned(),
                Live::Lost => "LOST".into(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn a_full_queue_drops_and_marks_the_loss_in_order() {
        let q = LiveQueue::new(QueueLimits {
            messages: 2,
            bytes: 1 << 20,
        });
        assert!(q.push(msg(b"a")));
        assert!(q.push(msg(b"b")));
        assert!(!q.push(msg(b"c")), "over the message limit");
        assert!(!q.push(msg(b"d")), "still full");
        // One marker for the run of drops, after everything kept before it.
        assert_eq!(shape(&q.take(10)), "a,b,LOST");
        assert!(q.push(msg(b"e")));
        assert_eq!(shape(&q.take(10)), "e");
    }

    #[test]
    fn bytes_bound_the_queue_but_one_message_always_fits() {
        let q = LiveQueue::new(QueueLimits {
            messages: 100,
            bytes: 4,
        });
        assert!(
            q.push(msg(b"12345")),
            "a lone message fits whatever its size"
        );
        assert!(!q.push(msg(b"x")));
        assert_eq!(shape(&q.take(1)), "12345");
        assert_eq!(shape(&q.take(10)), "LOST");
        assert!(q.push(msg(b"abcd")));
        assert!(!q.is_empty() && q.len() == 1);
    }

    #[test]
    fn marks_are_not_repeated() {
        let q = LiveQueue::new(QueueLimits {
            messages: 10,
            bytes: 100,
        });
        q.mark_lost();
        q.mark_lost();
        assert!(q.push(msg(b"a")));
        q.mark_lost();
        assert_eq!(shape(&q.take(10)), "LOST,a,LOST");
    }
}
