//! One org on one node: its buffer, the waiters on it, and the live queue
//! its feed task drains.
//!
//! Invariant: events are appended in sequence order, and the buffer's
//! `settled` point never passes a sequence the node has not either received
//! or read past in the stream; every change of it wakes the waiters. How
//! the feed keeps that promise is in [`feed`](crate::org::feed).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::nats::head::Heads;
use crate::nats::stream::{StreamError, StreamHead};
use crate::org::buffer::{BufferRead, OrgBuffer};
use crate::org::decode::{self, Decoded};
use crate::org::live::LiveQueue;
use crate::org::{EventFilter, OrgLimits, Upstream};

/// Messages and payload bytes one step of a catch-up reads.
const FILL_BATCH: usize = 1024;
pub(crate) const FILL_BYTES: usize = 8 * 1024 * 1024;

struct State {
    buffer: OrgBuffer,
    /// Stream incarnation the buffer's sequences belong to.
    epoch: String,
}

/// The state of one org on this node.
pub struct OrgHub {
    /// The org id.
    pub org: Arc<str>,
    state: Mutex<State>,
    settled: watch::Sender<u64>,
    /// Polls holding on this org.
    pub waiters: AtomicUsize,
    /// Requests and connections using this org now.
    pub users: AtomicUsize,
    /// When it was last used, in ms of the registry's clock.
    pub last_used_ms: AtomicU64,
    /// The feed appends live messages as they come (its trust is `Trusted`).
    pub trusted: AtomicBool,
    /// Live messages on their way from NATS to the feed task.
    pub(crate) live: Arc<LiveQueue>,
    pub(crate) subscribed: watch::Sender<bool>,
    /// Where the org's events come from.
    pub(crate) upstream: Arc<Upstream>,
    /// The org's partition: its stream and sampled head.
    pub(crate) heads: Arc<Heads>,
    max_read_bytes: usize,
    /// Stops the ingestion task.
    pub cancel: CancellationToken,
}

impl OrgHub {
    /// A hub whose buffer is complete up to `start` in `epoch`.
    pub fn new(
        org: &str,
        upstream: Arc<Upstream>,
        heads: Arc<Heads>,
        limits: &OrgLimits,
        start: u64,
        epoch: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            org: org.into(),
            state: Mutex::new(State {
                buffer: OrgBuffer::new(limits.buffer.clone(), start),
                epoch,
            }),
            settled: watch::channel(start).0,
            waiters: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            live: Arc::new(LiveQueue::new(limits.live)),
            subscribed: watch::channel(false).0,
            upstream,
            heads,
            max_read_bytes: limits.max_read_bytes,
            cancel: CancellationToken::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads by cursor, at most `limit` events and about
    /// `HERALD_MAX_READ_BYTES`; also returns the epoch the answer belongs to.
    pub fn read(
        &self,
        after: u64,
        filter: &impl EventFilter,
        limit: usize,
    ) -> (BufferRead, String) {
        let s = self.state();
        (
            s.buffer.read(after, filter, limit, self.max_read_bytes),
            s.epoch.clone(),
        )
    }

    /// Most JSON bytes one read returns.
    pub fn max_read_bytes(&self) -> usize {
        self.max_read_bytes
    }

    /// Highest sequence up to which this node has every event of the org, and its epoch.
    pub fn settled(&self) -> (u64, String) {
        let s = self.state();
        (s.buffer.settled(), s.epoch.clone())
    }

    /// Sequence above which the buffer holds every event of the org.
    pub fn floor(&self) -> u64 {
        self.state().buffer.floor()
    }

    /// Highest sequence up to which this node has every event of the org.
    pub fn settled_seq(&self) -> u64 {
        self.state().buffer.settled()
    }

    /// Events buffered.
    pub fn buffered(&self) -> usize {
        self.state().buffer.len()
    }

    /// A receiver that changes whenever new events are settled.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.settled.subscribe()
    }

    /// Waits (at most `max`) until the org's live subscription was sent to
    /// NATS, so that a first client rarely depends on the start-up audits.
    pub async fn wait_subscribed(&self, max: Duration) {
        let mut rx = self.subscribed.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|s| *s)).await;
    }

    pub(crate) fn notify(&self) {
        let settled = self.state().buffer.settled();
        self.settled.send_if_modified(|v| {
            let changed = *v != settled;
            *v = settled;
            changed
        });
    }

    /// Applies one decoded message (in sequence order).
    pub(crate) fn apply(&self, decoded: Decoded) {
        let mut s = self.state();
        if decoded.seq() <= s.buffer.settled() {
            return;
        }
        match decoded {
            Decoded::Event(e) => {
                s.buffer.push(e);
                self.upstream.metrics.ingested.fetch_add(1, Relaxed);
            }
            Decoded::Rejected {
                seq,
                reason,
                detail,
            } => {
                s.buffer.advance(seq);
                drop(s);
                self.upstream.metrics.reject(reason);
                decode::log_rejected(&self.org, seq, reason, &detail);
            }
        }
    }

    /// Reads the org's stored events after the settled point up to `until`
    /// and appends them; returns how many messages were read. With `settle`,
    /// the buffer is then complete up to `until`.
    pub(crate) async fn catch_up(&self, until: u64, settle: bool) -> Result<usize, StreamError> {
        let mut read = 0;
        loop {
            let Some(from) = self.state().buffer.settled().checked_add(1) else {
                break;
            };
            if from > until {
                break;
            }
            let got = self
                .heads
                .stream()
                .org_messages(&self.org, from, until, FILL_BATCH, FILL_BYTES)
                .await?;
            read += got.messages.len();
            for msg in &got.messages {
                let (decoded, span) =
                    decode::ingest_traced(&self.org, msg.sequence, Some(&msg.headers), || {
                        decode::decode_stored(
                            msg,
                            &self.org,
                            self.upstream.max_event_bytes,
                            self.upstream.streams.partitions(),
                        )
                    });
                let _in_span = span.as_ref().map(tracing::Span::enter);
                self.apply(decoded);
            }
            if got.complete_to >= until {
                break;
            }
            // Read in steps so waiters see progress on a long fill.
            self.notify();
        }
        if settle {
            self.state().buffer.advance(until);
        }
        self.notify();
        Ok(read)
    }

    /// Forgets the buffer when the stream was recreated; it restarts at the
    /// new stream's head (clients get a reset to there, never a replay of
    /// the new stream from its start).
    pub(crate) fn reset_epoch(&self, head: &StreamHead) -> bool {
        let mut s = self.state();
        if s.epoch == head.epoch {
            return false;
        }
        s.buffer.reset(head.last_seq);
        s.epoch = head.epoch.clone();
        true
    }
}
