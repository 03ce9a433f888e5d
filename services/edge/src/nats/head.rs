//! Where the event stream stands (first and last sequence, epoch), as this
//! node last saw it.
//!
//! [`Heads`] holds three views of the head, each with its own promise:
//! - [`Heads::fresh`]: sampled after the call began, so it covers every
//!   event stored before the call; concurrent callers share one request.
//! - [`Heads::current`]: the latest sample, of any age; watched by every org
//!   to notice a recreated stream (new epoch).
//! - [`Heads::aged`]: the periodic sample before the latest, one to two
//!   sample intervals old; audits of trusted orgs read up to it, since its
//!   events have long arrived live.
//!
//! [`Heads::sample`] refreshes them every interval until stopped; the node is
//! ready while the last good sample is recent.
//!
//! [`Heads::elections`] counts the times the stream may have changed leader:
//! a sample naming another leader than the one before, the first failed
//! sample of a streak (no leader answers), or an election advisory
//! ([`elections`](crate::nats::elections)). A dying leader takes with it the
//! RePublished messages the servers had not yet routed here, with no sign on
//! this node's own connection, so every org of the stream reads the stream
//! before it trusts live messages again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nats::stream::{EventStream, StreamError, StreamHead};

/// The sampled head of one event stream.
pub struct Heads {
    stream: EventStream,
    current: watch::Sender<Option<StreamHead>>,
    aged: Mutex<Option<StreamHead>>,
    /// When the last good sample was taken.
    ok_at: Mutex<Option<Instant>>,
    /// When the last head request started, and what it found (single-flight).
    last_request: tokio::sync::Mutex<Option<(Instant, StreamHead)>>,
    /// Head requests that succeeded.
    samples: AtomicU64,
    /// Possible leader changes seen so far.
    elections: watch::Sender<u64>,
}

impl Heads {
    /// No sample yet: [`Heads::current`] is `None` until one succeeds.
    pub fn new(stream: EventStream) -> Self {
        Self {
            stream,
            current: watch::channel(None).0,
            aged: Mutex::new(None),
            ok_at: Mutex::new(None),
            last_request: tokio::sync::Mutex::new(None),
            samples: AtomicU64::new(0),
            elections: watch::channel(0).0,
        }
    }

    /// The stream sampled.
    pub fn stream(&self) -> &EventStream {
        &self.stream
    }

    /// Records a head found by other means (the stream's creation).
    pub fn set(&self, head: StreamHead) {
        *lock(&self.ok_at) = Some(Instant::now());
        let mut new_leader = false;
        self.current.send_if_modified(|h| {
            new_leader = matches!(
                (h.as_ref().and_then(|h| h.leader.as_ref()), &head.leader),
                (Some(was), Some(is)) if was != is
            );
            if h.as_ref() == Some(&head) {
                false
            } else {
                *h = Some(head);
                true
            }
        });
        if new_leader {
            self.leader_may_have_changed();
        }
    }

    /// The stream may have a new leader: what the old one RePublished last
    /// may never arrive.
    pub fn leader_may_have_changed(&self) {
        self.elections.send_modify(|n| *n += 1);
    }

    /// A receiver that sees every possible leader change; the value counts them.
    pub fn elections(&self) -> watch::Receiver<u64> {
        self.elections.subscribe()
    }

    /// A head sampled after this call began: covers every event stored
    /// before it. Concurrent callers share one request.
    pub async fn fresh(&self) -> Result<StreamHead, StreamError> {
        let asked = Instant::now();
        let mut last = self.last_request.lock().await;
        if let Some((started, head)) = &*last {
            if *started >= asked {
                return Ok(head.clone());
            }
        }
        let started = Instant::now();
        let head = self.stream.head().await?;
        self.samples.fetch_add(1, Relaxed);
        *last = Some((started, head.clone()));
        self.set(head.clone());
        Ok(head)
    }

    /// Head requests that succeeded so far (each covers every event stored
    /// before it started).
    pub fn samples(&self) -> u64 {
        self.samples.load(Relaxed)
    }

    /// The latest sample (`None` until the first succeeds).
    pub fn current(&self) -> Option<StreamHead> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new sample.
    pub fn watch(&self) -> watch::Receiver<Option<StreamHead>> {
        self.current.subscribe()
    }

    /// The periodic sample before the latest one (at least one interval old).
    pub fn aged(&self) -> Option<StreamHead> {
        lock(&self.aged).clone()
    }

    /// Time since the last good sample (`None` before the first).
    pub fn sample_age(&self) -> Option<Duration> {
        lock(&self.ok_at).map(|at| at.elapsed())
    }

    /// A sample succeeded within `max_age`.
    pub fn is_recent(&self, max_age: Duration) -> bool {
        lock(&self.ok_at).is_some_and(|at| at.elapsed() <= max_age)
    }

    /// Samples every `interval` until `stop`; logs when the stream becomes
    /// unreachable and reachable again, and once when it does not RePublish.
    pub async fn sample(&self, interval: Duration, stop: CancellationToken) {
        let mut failing = false;
        let mut warned_republish = false;
        loop {
            let previous = self.current();
            match self.fresh().await {
                Ok(head) => {
                    *lock(&self.aged) = previous;
                    if failing {
                        tracing::info!(stream = %self.stream.name(), "stream reachable again");
                        failing = false;
                    }
                    if !head.republishes && !warned_republish {
                        tracing::error!(
                            stream = %self.stream.name(),
                            "stream does not RePublish herald.events.> to herald.live.>; events will only arrive through audits (slow)"
                        );
                        warned_republish = true;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot sample the stream head");
                        failing = true;
                        // Perhaps no leader answers: an election is under way.
                        self.leader_may_have_changed();
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
