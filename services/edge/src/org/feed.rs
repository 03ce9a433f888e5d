//! The task that feeds one org's buffer from NATS.
//!
//! It takes the org's RePublished live messages from its
//! [`LiveQueue`](crate::org::live::LiveQueue) and appends events in
//! sequence order, following the org's [`Feed`] (its trust):
//! - just after subscribing (the servers may not route the subject here
//!   yet) every live message is checked by reading the stream up to it;
//! - at a loss mark in the queue (overflow, reconnect, slow consumer)
//!   nothing live is appended until the stream was read up to a head sampled
//!   after the mark;
//! - a message whose `Nats-Last-Sequence` names an event on its subject the
//!   node never saw makes it read the gap first;
//! - a live sequence beyond the stream's head is refused (forged headers);
//! - when the stream may have changed leader, the old leader's last
//!   RePublished messages may never arrive: that counts as a loss mark.
//!
//! Audits (a read of the stream from the settled point up to a sampled head)
//! fill what a quiet org might miss and advance quiet cursors.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::nats::stream::StreamError;
use crate::org::decode;
use crate::org::hub::OrgHub;
use crate::org::live::{self, Live, LossSources};
use crate::org::trust::{AuditHead, Feed, LiveAction, Trust, RETRY};

/// Live messages handled per wake-up before waiters are notified.
const LIVE_BATCH: usize = 256;
/// A live sequence this far past the last head sample is checked against a
/// fresh one before it is believed.
const PLAUSIBLE_AHEAD: u64 = 100_000;
/// Longest wait for the subscription's flush before the feed starts anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Feeds one org's buffer until the hub is cancelled.
pub async fn run(hub: Arc<OrgHub>) {
    let up = Arc::clone(&hub.upstream);
    let subject = herald_proto::subject::org_live_filter(&hub.org);
    let sub = loop {
        tokio::select! {
            _ = hub.cancel.cancelled() => return,
            r = up.client.subscribe(subject.clone()) => match r {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(org = %hub.org, error = %e, "subscribe failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            },
        }
    };
    let sources = LossSources {
        events: up.losses.clone(),
        stats: up.client.statistics(),
    };
    tokio::spawn(live::pump(
        sub,
        Arc::clone(&hub.live),
        sources,
        hub.cancel.clone(),
    ));
    // Best effort only: a flush does not prove that every server routes the
    // subject here yet, which is why the feed starts unproven.
    let _ = tokio::time::timeout(FLUSH_WAIT, up.client.flush()).await;
    hub.subscribed.send_replace(true);
    tracing::debug!(org = %hub.org, "org subscribed");
    let mut feed = Feed::new();
    let mut head_rx = hub.heads.watch();
    let mut elections = hub.heads.elections();
    loop {
        hub.trusted.store(feed.trust() == Trust::Trusted, Relaxed);
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
            changed = elections.changed() => {
                if changed.is_err() {
                    break;
                }
                elections.borrow_and_update();
                // Recover (the audit is due now) before trusting live messages.
                feed.lost();
            }
            _ = tokio::time::sleep_until(feed.next_audit()) => audit(&hub, &mut feed).await,
            _ = hub.live.ready() => {
                // Allocated per wake-up: a buffer kept per org would stay at its burst size.
                loop {
                    let batch = hub.live.take(LIVE_BATCH);
                    if batch.is_empty() {
                        break;
                    }
                    handle_live(&hub, &mut feed, batch).await;
                }
            }
        }
    }
    tracing::debug!(org = %hub.org, "org released");
}

async fn handle_live(hub: &OrgHub, feed: &mut Feed, batch: Vec<Live>) {
    let up = &hub.upstream;
    // While unproven, one stream read covers the batch up to its newest
    // message (or up to the next loss mark).
    let mut verified_to = 0;
    for (i, item) in batch.iter().enumerate() {
        let msg = match item {
            Live::Lost => {
                up.metrics.live_losses.fetch_add(1, Relaxed);
                feed.lost();
                // Everything up to a head sampled from now on is read from
                // the stream; later live messages are trusted again.
                audit(hub, feed).await;
                continue;
            }
            Live::Message(m) => m,
        };
        let stream = hub.heads.stream().name();
        let Some(meta) = decode::live_meta(msg.headers.as_ref(), stream) else {
            continue;
        };
        let settled = hub.settled_seq();
        if meta.seq <= settled {
            continue;
        }
        if !plausible(hub, meta.seq).await {
            up.metrics.forged.fetch_add(1, Relaxed);
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
        match feed.on_live(missed_on_subject) {
            LiveAction::Skip => continue,
            LiveAction::ReadThrough => {
                // Read the stream up to and including these messages: nothing
                // of the org before them can be missing afterwards.
                if meta.seq > verified_to {
                    verified_to = newest_before_mark(&batch[i..], stream).max(meta.seq);
                    if let Err(e) = fill(hub, verified_to).await {
                        tracing::warn!(org = %hub.org, error = %e, "gap fill failed; will retry");
                        feed.failed();
                    }
                }
                continue;
            }
            LiveAction::FillThenAppend => {
                if let Err(e) = fill(hub, meta.seq - 1).await {
                    tracing::warn!(org = %hub.org, error = %e, "gap fill failed; will retry");
                    feed.failed();
                    continue;
                }
            }
            LiveAction::Append => {}
        }
        let (decoded, span) =
            decode::ingest_traced(&hub.org, meta.seq, msg.headers.as_ref(), || {
                decode::decode_live(
                    msg,
                    meta,
                    &hub.org,
                    up.max_event_bytes,
                    up.streams.partitions(),
                )
            });
        let _in_span = span.as_ref().map(tracing::Span::enter);
        hub.apply(decoded);
    }
    hub.notify();
}

/// The highest live sequence in `items` before the first loss mark.
fn newest_before_mark(items: &[Live], stream: &str) -> u64 {
    items
        .iter()
        .map_while(|item| match item {
            Live::Message(m) => Some(m),
            Live::Lost => None,
        })
        .filter_map(|m| decode::live_meta(m.headers.as_ref(), stream))
        .map(|meta| meta.seq)
        .max()
        .unwrap_or(0)
}

/// Reads the org's stored events up to `until` from the stream, counting
/// what the live feed had not delivered.
async fn fill(hub: &OrgHub, until: u64) -> Result<usize, StreamError> {
    let n = hub.catch_up(until, true).await?;
    if n > 0 {
        let metrics = &hub.upstream.metrics;
        metrics.gaps_filled.fetch_add(1, Relaxed);
        metrics.gap_events.fetch_add(n as u64, Relaxed);
        tracing::debug!(org = %hub.org, events = n, up_to = until, "read events from the stream");
    }
    Ok(n)
}

/// False for a live sequence beyond the stream's head (a forged or corrupt
/// header); a sequence far past the last sample is checked against a fresh one.
async fn plausible(hub: &OrgHub, seq: u64) -> bool {
    let heads = &hub.heads;
    let known = heads.current().map_or(0, |h| h.last_seq);
    if seq <= known.saturating_add(PLAUSIBLE_AHEAD) {
        return true;
    }
    match heads.fresh().await {
        Ok(h) => seq <= h.last_seq,
        // Cannot tell now: the message is not trusted; recovery reads the stream.
        Err(_) => false,
    }
}

async fn audit(hub: &OrgHub, feed: &mut Feed) {
    let heads = &hub.heads;
    // The head must be sampled before the read so the read covers every
    // event up to it.
    let head = match feed.audit_head() {
        AuditHead::Aged => heads.aged(),
        AuditHead::Fresh => match heads.fresh().await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::debug!(org = %hub.org, error = %e, "audit cannot sample the head; will retry");
                None
            }
        },
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
    match fill(hub, head.last_seq).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(org = %hub.org, events = n, "audit recovered events the live feed had not delivered");
            }
            feed.audited(hub.upstream.audit_interval);
        }
        Err(e) => {
            tracing::warn!(org = %hub.org, error = %e, "audit failed; will retry");
            feed.failed();
        }
    }
}
