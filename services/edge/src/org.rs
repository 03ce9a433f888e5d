//! One org on one node: its buffer, the waiters on it, and the task that
//! feeds it from NATS.
//!
//! The task subscribes to the org's RePublished live subject and appends
//! events in sequence order. A live message is only appended when nothing of
//! the org can be missing before it; otherwise the gap is first read from the
//! stream. "Missing" is suspected after a subscribe (the server may not have
//! registered the subscription yet), after a reconnect or slow-consumer
//! event, and when a message's `Nats-Last-Sequence` names an event on its
//! subject the node never saw. Audits (a read of the stream from the
//! settled point up to a sampled head) fill what a quiet org might miss and
//! advance quiet cursors.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferRead, OrgBuffer};
use crate::filter::Filter;
use crate::ingest::{self, Decoded, StoredEvent};
use crate::jetstream::StreamError;
use crate::node::Node;

/// Live messages handled per wake-up before waiters are notified.
const LIVE_BATCH: usize = 256;
/// Audit delays after a subscription or a possible loss, before the org is
/// trusted to receive every live message.
const UNPROVEN_AUDITS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1500),
];
/// Wait before retrying a failed audit.
const AUDIT_RETRY: Duration = Duration::from_secs(1);
/// Most stored messages one history read scans, so one poll cannot keep the node busy.
const HISTORY_SCAN_LIMIT: usize = 5_000;

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
    /// When it was last used, node uptime in ms.
    pub last_used_ms: AtomicU64,
    loss: Notify,
    subscribed: watch::Sender<bool>,
    /// Stops the ingestion task.
    pub cancel: CancellationToken,
}

impl OrgHub {
    /// A hub whose buffer is complete up to `start` in `epoch`.
    pub fn new(org: &str, capacity: usize, start: u64, epoch: String) -> Arc<Self> {
        Arc::new(Self {
            org: org.into(),
            state: Mutex::new(State {
                buffer: OrgBuffer::new(capacity, start),
                epoch,
            }),
            settled: watch::channel(start).0,
            waiters: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(0),
            loss: Notify::new(),
            subscribed: watch::channel(false).0,
            cancel: CancellationToken::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads by cursor; also returns the epoch the answer belongs to.
    pub fn read(&self, after: u64, filter: &Filter, limit: usize) -> (BufferRead, String) {
        let s = self.state();
        (s.buffer.read(after, filter, limit), s.epoch.clone())
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

    /// Live messages may have been lost: distrust the feed until proven again.
    pub fn signal_loss(&self) {
        self.loss.notify_one();
    }

    fn notify(&self) {
        let settled = self.state().buffer.settled();
        self.settled.send_if_modified(|v| {
            let changed = *v != settled;
            *v = settled;
            changed
        });
    }

    /// Applies one decoded message (in sequence order).
    fn apply(&self, node: &Node, decoded: Decoded) {
        let mut s = self.state();
        if decoded.seq() <= s.buffer.settled() {
            return;
        }
        match decoded {
            Decoded::Event(e) => {
                s.buffer.push(e);
                node.metrics.ingested.fetch_add(1, Relaxed);
            }
            Decoded::Rejected {
                seq,
                reason,
                detail,
            } => {
                s.buffer.advance(seq);
                drop(s);
                node.metrics.reject(reason);
                tracing::warn!(org = %self.org, seq, reason, %detail, "rejected stored event; skipping it");
            }
        }
    }

    /// Reads the org's stored events after the settled point up to `until`
    /// and appends them; returns how many messages were read. With `settle`,
    /// the buffer is then complete up to `until`.
    async fn catch_up(&self, node: &Node, until: u64, settle: bool) -> Result<usize, StreamError> {
        let mut read = 0;
        loop {
            let from = self.state().buffer.settled() + 1;
            if from > until {
                break;
            }
            let Some(msg) = node.stream.next_for_org(&self.org, from).await? else {
                break;
            };
            if msg.sequence > until {
                break;
            }
            read += 1;
            self.apply(
                node,
                ingest::decode_stored(&msg, &self.org, node.config.max_event_bytes),
            );
        }
        if settle {
            self.state().buffer.advance(until);
        }
        self.notify();
        Ok(read)
    }

    /// Forgets the buffer when the stream was recreated.
    fn reset_epoch(&self, epoch: &str) -> bool {
        let mut s = self.state();
        if s.epoch == epoch {
            return false;
        }
        s.buffer.reset(0);
        s.epoch = epoch.to_owned();
        true
    }
}

/// Whether the live feed of an org can be trusted to be gap-free.
struct Trust {
    proven: bool,
    step: usize,
    next_audit: Instant,
}

impl Trust {
    fn unproven() -> Self {
        Self {
            proven: false,
            step: 0,
            next_audit: Instant::now() + UNPROVEN_AUDITS[0],
        }
    }

    fn audit_done(&mut self, interval: Duration) {
        if !self.proven {
            self.step += 1;
            if self.step >= UNPROVEN_AUDITS.len() {
                self.proven = true;
            } else {
                self.next_audit = Instant::now() + UNPROVEN_AUDITS[self.step];
                return;
            }
        }
        self.next_audit = Instant::now() + jittered(interval);
    }

    fn proven_by_live(&mut self, interval: Duration) {
        if !self.proven {
            self.proven = true;
            self.next_audit = Instant::now() + jittered(interval);
        }
    }
}

/// `interval` ±20 %, so orgs created together do not audit together.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.8..1.2))
}

/// Feeds one org's buffer until the hub is cancelled.
pub async fn ingest(hub: Arc<OrgHub>, node: Arc<Node>) {
    let subject = herald_proto::subject::org_live_filter(&hub.org);
    let mut sub = loop {
        tokio::select! {
            _ = hub.cancel.cancelled() => return,
            r = node.client.subscribe(subject.clone()) => match r {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(org = %hub.org, error = %e, "subscribe failed; retrying");
                    tokio::time::sleep(AUDIT_RETRY).await;
                }
            },
        }
    };
    // Best effort only: a flush does not prove the server registered the
    // subscription, which is why the feed starts unproven.
    let _ = node.client.flush().await;
    hub.subscribed.send_replace(true);
    tracing::debug!(org = %hub.org, "org subscribed");
    let mut trust = Trust::unproven();
    let mut head_rx = node.head.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = hub.cancel.cancelled() => break,
            _ = hub.loss.notified() => trust = Trust::unproven(),
            changed = head_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let epoch = head_rx.borrow_and_update().as_ref().map(|h| h.epoch.clone());
                if let Some(epoch) = epoch {
                    if hub.reset_epoch(&epoch) {
                        tracing::warn!(org = %hub.org, %epoch, "stream was recreated; org buffer reset");
                        hub.notify();
                        trust = Trust::unproven();
                    }
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                // Allocated per wake-up: a buffer kept per org would stay at its burst size.
                let mut batch = vec![msg];
                while batch.len() < LIVE_BATCH {
                    match sub.next().now_or_never() {
                        Some(Some(m)) => batch.push(m),
                        _ => break,
                    }
                }
                handle_live(&hub, &node, &mut trust, batch.into_iter()).await;
            }
            _ = tokio::time::sleep_until(trust.next_audit) => audit(&hub, &node, &mut trust).await,
        }
    }
    let _ = sub.unsubscribe().await;
    tracing::debug!(org = %hub.org, "org released");
}

async fn handle_live(
    hub: &OrgHub,
    node: &Node,
    trust: &mut Trust,
    msgs: impl Iterator<Item = async_nats::Message>,
) {
    let interval = node.config.audit_interval;
    for msg in msgs {
        let Some(meta) = ingest::live_meta(msg.headers.as_ref(), node.stream.name()) else {
            continue;
        };
        let settled = hub.settled_seq();
        if meta.seq <= settled {
            continue;
        }
        // The previous message on this subject is newer than what we hold: we missed it.
        let missed_on_subject = meta.last_subject_seq > settled;
        if !trust.proven || missed_on_subject {
            match hub.catch_up(node, meta.seq - 1, true).await {
                Ok(n) => {
                    if n > 0 {
                        node.metrics.gaps_filled.fetch_add(1, Relaxed);
                        node.metrics.gap_events.fetch_add(n as u64, Relaxed);
                        tracing::info!(org = %hub.org, events = n, up_to = meta.seq - 1, "filled a gap in the live feed from the stream");
                    }
                    trust.proven_by_live(interval);
                }
                Err(e) => {
                    // Without the gap filled this message cannot be appended;
                    // the next audit reads it from the stream instead.
                    tracing::warn!(org = %hub.org, error = %e, "gap fill failed; will retry");
                    *trust = Trust::unproven();
                    trust.next_audit = Instant::now() + AUDIT_RETRY;
                    break;
                }
            }
        }
        let span = crate::telemetry::ingest_span(&hub.org, meta.seq, msg.headers.as_ref());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let decoded = ingest::decode_live(&msg, meta, &hub.org, node.config.max_event_bytes);
        hub.apply(node, decoded);
    }
    hub.notify();
}

async fn audit(hub: &OrgHub, node: &Node, trust: &mut Trust) {
    // The head must be sampled before the read so the read covers every
    // event up to it. A feed not yet trusted needs a fresh sample (the events
    // it may have missed are recent); a trusted one uses a sample at least
    // one head interval old, whose events have long arrived live, so the
    // audit usually reads nothing at all instead of re-reading events still
    // on their way through the subscription.
    let head = if trust.proven {
        node.aged_head()
    } else {
        match node.fresh_head().await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::debug!(org = %hub.org, error = %e, "audit cannot sample the head; will retry");
                None
            }
        }
    };
    let Some(head) = head else {
        trust.next_audit = Instant::now() + AUDIT_RETRY;
        return;
    };
    if hub.settled().1 != head.epoch {
        // The epoch change is handled by the head watch first.
        trust.next_audit = Instant::now() + AUDIT_RETRY;
        return;
    }
    match hub.catch_up(node, head.last_seq, true).await {
        Ok(n) => {
            if n > 0 {
                node.metrics.gaps_filled.fetch_add(1, Relaxed);
                node.metrics.gap_events.fetch_add(n as u64, Relaxed);
                tracing::info!(org = %hub.org, events = n, "audit recovered events the live feed had not delivered");
            }
            trust.audit_done(node.config.audit_interval);
        }
        Err(e) => {
            tracing::warn!(org = %hub.org, error = %e, "audit failed; will retry");
            trust.next_audit = Instant::now() + AUDIT_RETRY;
        }
    }
}

/// Events of the org after `after` up to `until`, read from the stream for a
/// client behind the buffer. Returns the matching events (at most `limit`)
/// and the sequence up to which the client then has every matching event.
pub async fn read_history(
    node: &Node,
    org: &str,
    after: u64,
    until: u64,
    filter: &Filter,
    limit: usize,
) -> Result<(Vec<Arc<StoredEvent>>, u64), StreamError> {
    node.metrics.history_reads.fetch_add(1, Relaxed);
    let mut events = Vec::new();
    let mut cursor = after;
    for _ in 0..HISTORY_SCAN_LIMIT {
        let Some(msg) = node.stream.next_for_org(org, cursor + 1).await? else {
            return Ok((events, until));
        };
        if msg.sequence > until {
            return Ok((events, until));
        }
        cursor = msg.sequence;
        match ingest::decode_stored(&msg, org, node.config.max_event_bytes) {
            Decoded::Event(e) if filter.matches(&e) => {
                events.push(e);
                if events.len() == limit {
                    return Ok((events, cursor));
                }
            }
            _ => {}
        }
    }
    Ok((events, cursor))
}
