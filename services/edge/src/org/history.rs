//! Reads of an org's stored events for a client whose cursor is behind the
//! org's buffer.
//!
//! Invariant: one read scans at most [`HISTORY_SCAN_LIMIT`] stored
//! messages, so a client far behind (or a filter matching nothing) cannot
//! keep the node busy; the returned cursor says how far the scan got.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::nats::stream::StreamError;
use crate::org::decode::{self, Decoded, StoredEvent};
use crate::org::hub::OrgHub;
use crate::org::hub::FILL_BYTES;
use crate::org::EventFilter;

/// Most stored messages one history read scans, so one poll cannot keep the node busy.
pub const HISTORY_SCAN_LIMIT: usize = 5_000;

/// Events of the org after `after` up to `until`, read from the stream for a
/// client behind the buffer. Returns the matching events (at most `limit`,
/// and about `max_bytes` of JSON) and the sequence up to which the client
/// then has every matching event.
pub async fn read(
    hub: &OrgHub,
    after: u64,
    until: u64,
    filter: &impl EventFilter,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<Arc<StoredEvent>>, u64), StreamError> {
    let up = &hub.upstream;
    up.metrics.history_reads.fetch_add(1, Relaxed);
    let started = tokio::time::Instant::now();
    let read = scan(hub, after, until, filter, limit, max_bytes).await;
    up.metrics.record_history_read(started.elapsed());
    read
}

async fn scan(
    hub: &OrgHub,
    after: u64,
    until: u64,
    filter: &impl EventFilter,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<Arc<StoredEvent>>, u64), StreamError> {
    let (up, org) = (&hub.upstream, &*hub.org);
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
        let got = hub
            .heads
            .stream()
            .org_messages(org, from, until, HISTORY_SCAN_LIMIT - scanned, FILL_BYTES)
            .await?;
        scanned += got.messages.len().max(1);
        for msg in &got.messages {
            cursor = msg.sequence;
            if let Decoded::Event(e) =
                decode::decode_stored(msg, org, up.max_event_bytes, up.streams.partitions())
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
