//! One org on one node: its buffer, the waiters on it, and the task that
//! feeds it from NATS.
//!
//! The task takes the org's RePublished live messages from its
//! [`LiveQueue`](crate::org::live::LiveQueue) and appends events in sequence
//! order. The buffer's `settled` point never passes a sequence the node has
//! not either received or read past in the stream:
//! - just after subscribing (the servers may not route the subject here
//!   yet) every live message is checked by reading the stream up to it;
//! - at a loss mark in the queue (overflow, reconnect, slow consumer)
//!   nothing live is appended until the stream was read up to a head sampled
//!   after the mark;
//! - a message whose `Nats-Last-Sequence` names an event on its subject the
//!   node never saw makes it read the gap first;
//! - a live sequence beyond the stream's head is refused (forged headers).
//!
//! Audits (a read of the stream from the settled point up to a sampled head)
//! fill what a quiet org might miss and advance quiet cursors.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::org::buffer::{BufferLimits, BufferRead, OrgBuffer};
use crate::delivery::filter::Filter;
use crate::org::decode::{self, Decoded, StoredEvent};
use crate::nats::stream::{StreamError, StreamHead};
use crate::org::live::{self, Live, LiveQueue, LossSources, QueueLimits};
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
/// A live sequence this far past the last head sample is checked against a
/// fresh one before it is believed.
const PLAUSIBLE_AHEAD: u64 = 100_000;
/// Longest wait for the subscription's flush before the feed starts anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Wait before retrying a failed audit.
const AUDIT_RETRY: Duration = Duration::from_secs(1);
/// Messages and payload bytes one step of a gap fill reads.
const FILL_BATCH: usize = 1024;
const FILL_BYTES: usize = 8 * 1024 * 1024;
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
    /// Live messages on their way from NATS to the task.
    live: Arc<LiveQueue>,
    subscribed: watch::Sender<bool>,
    /// Stops the ingestion task.
    pub cancel: CancellationToken,
}

impl OrgHub {
    /// A hub whose buffer is complete up to `start` in `epoch`.
    pub fn new(
        org: &str,
        buffer: BufferLimits,
        live: QueueLimits,
        start: u64,
        epoch: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            org: org.into(),
            state: Mutex::new(State {
                buffer: OrgBuffer::new(buffer, start),
                epoch,
            }),
            settled: watch::channel(start).0,
            waiters: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(0),
            live: Arc::new(LiveQueue::new(live)),
            subscribed: watch::channel(false).0,
            cancel: CancellationToken::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads by cursor; also returns the epoch the answer belongs to.
    pub fn read(
        &self,
        after: u64,
        filter: &Filter,
        limit: usize,
        max_bytes: usize,
    ) -> (BufferRead, String) {
        let s = self.state();
        (
            s.buffer.read(after, filter, limit, max_bytes),
            s.epoch.clone(),
        )
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
                decode::log_rejected(&self.org, seq, reason, &detail);
            }
        }
    }

    /// Reads the org's stored events after the settled point up to `until`
    /// and appends them; returns how many messages were read. With `settle`,
    /// the buffer is then complete up to `until`.
    async fn catch_up(&self, node: &Node, until: u64, settle: bool) -> Result<usize, StreamError> {
        let mut read = 0;
        loop {
            let Some(from) = self.state().buffer.settled().checked_add(1) else {
                break;
            };
            if from > until {
                break;
            }
            let got = node
                .stream
                .org_messages(&self.org, from, until, FILL_BATCH, FILL_BYTES)
                .await?;
            read += got.messages.len();
            for msg in &got.messages {
                self.apply(
                    node,
                    decode::decode_stored(msg, &self.org, node.config.max_event_bytes),
                );
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
    fn reset_epoch(&self, head: &StreamHead) -> bool {
        let mut s = self.state();
        if s.epoch == head.epoch {
            return false;
        }
        s.buffer.reset(head.last_seq);
        s.epoch = head.epoch.clone();
        true
    }
}

/// How far an org's live feed is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Just subscribed: the server may not route the live subject to this
    /// node yet, so every live message is checked against the stream (read
    /// up to it) before it is appended.
    Unproven {
        /// Start-up audits done so far.
        step: usize,
    },
    /// A loss was marked: nothing live is appended until the stream was
    /// read up to a head sampled after the mark.
    Recovering,
    /// Every live message is appended as it comes: nothing was lost since
    /// the last proof.
    Trusted,
}

/// `interval` ±20 %, so orgs created together do not audit together.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.8..1.2))
}

/// The state of one org's feed in its task.
struct Feed {
    trust: Trust,
    next_audit: Instant,
}

impl Feed {
    fn new() -> Self {
        Self {
            trust: Trust::Unproven { step: 0 },
            next_audit: Instant::now() + jittered(UNPROVEN_AUDITS[0]),
        }
    }

    /// A loss was marked: recover at once (a feed still unproven stays so).
    fn lost(&mut self) {
        if self.trust == Trust::Trusted {
            self.trust = Trust::Recovering;
        }
        self.next_audit = Instant::now();
    }

    /// A read of the stream up to a head sampled after the last mark succeeded.
    fn audited(&mut self, interval: Duration) {
        if let Trust::Unproven { step } = self.trust {
            if step + 1 < UNPROVEN_AUDITS.len() {
                self.trust = Trust::Unproven { step: step + 1 };
                self.next_audit = Instant::now() + jittered(UNPROVEN_AUDITS[step + 1]);
                return;
            }
        }
        self.trust = Trust::Trusted;
        self.next_audit = Instant::now() + jittered(interval);
    }

    /// A read of the stream failed: try again soon, trusting nothing new.
    fn failed(&mut self) {
        if self.trust == Trust::Trusted {
            self.trust = Trust::Recovering;
        }
        self.next_audit = Instant::now() + AUDIT_RETRY;
    }
}

/// Feeds one org's buffer until the hub is cancelled.
pub async fn ingest(hub: Arc<OrgHub>, node: Arc<Node>) {
    let subject = herald_proto::subject::org_live_filter(&hub.org);
    let sub = loop {
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
    let sources = LossSources {
        events: node.losses.clone(),
        stats: node.client.statistics(),
    };
    tokio::spawn(live::pump(
        sub,
        Arc::clone(&hub.live),
        sources,
        hub.cancel.clone(),
    ));
    // Best effort only: a flush does not prove that every server routes the
    // subject here yet, which is why the feed starts unproven.
    let _ = tokio::time::timeout(FLUSH_WAIT, node.client.flush()).await;
    hub.subscribed.send_replace(true);
    tracing::debug!(org = %hub.org, "org subscribed");
    let mut feed = Feed::new();
    let mut head_rx = node.head.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = hub.cancel.cancelled() => break,
            changed = head_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let head = head_rx.borrow_and_update().clone();
                if let Some(head) = head {
                    if hub.reset_epoch(&head) {
                        tracing::warn!(org = %hub.org, epoch = %head.epoch, "stream was recreated; org buffer restarts at its head");
                        hub.notify();
                        feed = Feed::new();
                    }
                }
            }
            _ = tokio::time::sleep_until(feed.next_audit) => audit(&hub, &node, &mut feed).await,
            _ = hub.live.ready() => {
                // Allocated per wake-up: a buffer kept per org would stay at its burst size.
                loop {
                    let batch = hub.live.take(LIVE_BATCH);
                    if batch.is_empty() {
                        break;
                    }
                    handle_live(&hub, &node, &mut feed, batch).await;
                }
            }
        }
    }
    tracing::debug!(org = %hub.org, "org released");
}

async fn handle_live(hub: &OrgHub, node: &Node, feed: &mut Feed, batch: Vec<Live>) {
    // While unproven, one stream read covers the batch up to its newest
    // message (or up to the next loss mark).
    let mut verified_to = 0;
    for (i, item) in batch.iter().enumerate() {
        let msg = match item {
            Live::Lost => {
                node.metrics.live_losses.fetch_add(1, Relaxed);
                feed.lost();
                // Everything up to a head sampled from now on is read from
                // the stream; later live messages are trusted again.
                audit(hub, node, feed).await;
                continue;
            }
            Live::Message(m) => m,
        };
        let Some(meta) = decode::live_meta(msg.headers.as_ref(), node.stream.name()) else {
            continue;
        };
        let settled = hub.settled_seq();
        if meta.seq <= settled {
            continue;
        }
        if !plausible(node, meta.seq).await {
            node.metrics.forged.fetch_add(1, Relaxed);
            decode::log_rejected(
                &hub.org,
                meta.seq,
                "forged",
                "live sequence beyond the stream head",
            );
            continue;
        }
        // The previous message on this subject is newer than what we hold: we missed it.
        let missed_on_subject = meta.last_subject_seq > settled;
        match feed.trust {
            // The stream read that ends recovery covers this message.
            Trust::Recovering => continue,
            Trust::Unproven { .. } => {
                // Read the stream up to and including these messages: nothing
                // of the org before them can be missing afterwards.
                if meta.seq > verified_to {
                    verified_to = newest_before_mark(&batch[i..], node).max(meta.seq);
                    if let Err(e) = fill(hub, node, verified_to).await {
                        tracing::warn!(org = %hub.org, error = %e, "gap fill failed; will retry");
                        feed.failed();
                    }
                }
                continue;
            }
            Trust::Trusted if missed_on_subject => {
                if let Err(e) = fill(hub, node, meta.seq - 1).await {
                    tracing::warn!(org = %hub.org, error = %e, "gap fill failed; will retry");
                    feed.failed();
                    continue;
                }
            }
            Trust::Trusted => {}
        }
        let span = crate::ops::telemetry::ingest_span(&hub.org, meta.seq, msg.headers.as_ref());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let decoded = decode::decode_live(msg, meta, &hub.org, node.config.max_event_bytes);
        hub.apply(node, decoded);
    }
    hub.notify();
}

/// The highest live sequence in `items` before the first loss mark.
fn newest_before_mark(items: &[Live], node: &Node) -> u64 {
    items
        .iter()
        .map_while(|item| match item {
            Live::Message(m) => Some(m),
            Live::Lost => None,
        })
        .filter_map(|m| decode::live_meta(m.headers.as_ref(), node.stream.name()))
        .map(|meta| meta.seq)
        .max()
        .unwrap_or(0)
}

/// Reads the org's stored events up to `until` from the stream, counting
/// what the live feed had not delivered.
async fn fill(hub: &OrgHub, node: &Node, until: u64) -> Result<(), StreamError> {
    let n = hub.catch_up(node, until, true).await?;
    if n > 0 {
        node.metrics.gaps_filled.fetch_add(1, Relaxed);
        node.metrics.gap_events.fetch_add(n as u64, Relaxed);
        tracing::debug!(org = %hub.org, events = n, up_to = until, "read events from the stream");
    }
    Ok(())
}

/// False for a live sequence beyond the stream's head (a forged or corrupt
/// header); a sequence far past the last sample is checked against a fresh one.
async fn plausible(node: &Node, seq: u64) -> bool {
    let known = node.current_head().map_or(0, |h| h.last_seq);
    if seq <= known.saturating_add(PLAUSIBLE_AHEAD) {
        return true;
    }
    match node.fresh_head().await {
        Ok(h) => seq <= h.last_seq,
        // Cannot tell now: the message is not trusted; recovery reads the stream.
        Err(_) => false,
    }
}

async fn audit(hub: &OrgHub, node: &Node, feed: &mut Feed) {
    // The head must be sampled before the read so the read covers every
    // event up to it. A feed not trusted needs a sample taken now (the
    // events it may have missed are recent); a trusted one uses a sample at
    // least one head interval old, whose events have long arrived live, so
    // the audit usually reads nothing at all instead of re-reading events
    // still on their way through the subscription.
    let head = if feed.trust == Trust::Trusted {
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
        feed.failed();
        return;
    };
    if hub.settled().1 != head.epoch {
        // The epoch change is handled by the head watch first.
        feed.failed();
        return;
    }
    match hub.catch_up(node, head.last_seq, true).await {
        Ok(n) => {
            if n > 0 {
                node.metrics.gaps_filled.fetch_add(1, Relaxed);
                node.metrics.gap_events.fetch_add(n as u64, Relaxed);
                tracing::info!(org = %hub.org, events = n, "audit recovered events the live feed had not delivered");
            }
            feed.audited(node.config.audit_interval);
        }
        Err(e) => {
            tracing::warn!(org = %hub.org, error = %e, "audit failed; will retry");
            feed.failed();
        }
    }
}

/// Events of the org after `after` up to `until`, read from the stream for a
/// client behind the buffer. Returns the matching events (at most `limit`,
/// and about `max_bytes` of JSON) and the sequence up to which the client
/// then has every matching event.
pub async fn read_history(
    node: &Node,
    org: &str,
    after: u64,
    until: u64,
    filter: &Filter,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<Arc<StoredEvent>>, u64), StreamError> {
    node.metrics.history_reads.fetch_add(1, Relaxed);
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut cursor = after;
    let mut scanned = 0;
    while scanned < HISTORY_SCAN_LIMIT {
        let Some(from) = cursor.checked_add(1) else {
            return Ok((events, until));
        };
        if from > until {
            return Ok((events, until));
        }
        let got = node
            .stream
            .org_messages(org, from, until, HISTORY_SCAN_LIMIT - scanned, FILL_BYTES)
            .await?;
        scanned += got.messages.len().max(1);
        for msg in &got.messages {
            cursor = msg.sequence;
            if let Decoded::Event(e) = decode::decode_stored(msg, org, node.config.max_event_bytes)
            {
                if filter.matches(&e) {
                    bytes += e.json.get().len();
                    events.push(e);
                    if events.len() == limit || bytes >= max_bytes {
                        return Ok((events, cursor));
                    }
                }
            }
        }
        cursor = cursor.max(got.complete_to);
        if got.complete_to >= until {
            return Ok((events, until));
        }
    }
    Ok((events, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_in(f: &Feed) -> Duration {
        f.next_audit.saturating_duration_since(Instant::now())
    }

    #[test]
    fn a_feed_is_proven_by_three_start_up_audits_then_trusted() {
        let interval = Duration::from_secs(10);
        let mut f = Feed::new();
        assert_eq!(f.trust, Trust::Unproven { step: 0 });
        assert!(due_in(&f) <= UNPROVEN_AUDITS[0].mul_f64(1.2));
        f.audited(interval);
        f.audited(interval);
        assert_eq!(f.trust, Trust::Unproven { step: 2 });
        f.audited(interval);
        assert_eq!(f.trust, Trust::Trusted);
        let due = due_in(&f);
        assert!(
            due > interval.mul_f64(0.75) && due <= interval.mul_f64(1.2),
            "{due:?}"
        );
    }

    #[test]
    fn a_loss_mark_distrusts_the_feed_until_a_read_succeeds() {
        let interval = Duration::from_secs(10);
        let mut f = Feed::new();
        for _ in 0..UNPROVEN_AUDITS.len() {
            f.audited(interval);
        }
        f.lost();
        assert_eq!(f.trust, Trust::Recovering);
        assert!(
            due_in(&f) < Duration::from_millis(50),
            "recovery starts at once"
        );
        f.failed();
        assert_eq!(
            f.trust,
            Trust::Recovering,
            "a failed read trusts nothing new"
        );
        assert!(due_in(&f) > Duration::from_millis(500));
        f.audited(interval);
        assert_eq!(f.trust, Trust::Trusted);
        // A mark during start-up keeps the stricter start-up checks.
        let mut young = Feed::new();
        young.lost();
        assert_eq!(young.trust, Trust::Unproven { step: 0 });
        // A trusted feed whose read fails stops trusting live messages.
        f.failed();
        assert_eq!(f.trust, Trust::Recovering);
    }

    #[test]
    fn start_up_audits_are_jittered() {
        let firsts: std::collections::BTreeSet<u128> =
            (0..20).map(|_| due_in(&Feed::new()).as_micros()).collect();
        assert!(
            firsts.len() > 1,
            "orgs created together must not audit together"
        );
        assert!(firsts.iter().all(|us| *us <= 120_000));
    }
}
