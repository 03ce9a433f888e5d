//! Per-org state on one node: the registry that creates it on a first
//! client, the hub (buffer and waiters), the feed task that keeps the buffer
//! gap-free from NATS, its trust state machine, the bounded live queue,
//! history reads for clients behind the buffer, and message decoding.
//!
//! The layer sees NATS only through [`Upstream`] and knows nothing of
//! clients' transports.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::nats::streams::Streams;
use crate::ops::metrics::Metrics;
use crate::org::decode::StoredEvent;

pub(crate) mod buffer;
pub mod decode;
pub(crate) mod feed;
pub(crate) mod history;
pub(crate) mod hub;
pub(crate) mod live;
pub(crate) mod registry;
pub(crate) mod trust;

/// What every org's feed reads from and reports to.
pub struct Upstream {
    /// NATS connection (live subscriptions).
    pub client: async_nats::Client,
    /// Moves on every NATS event that can have cost live messages.
    pub losses: watch::Receiver<u64>,
    /// The event streams and their heads, by partition (history reads,
    /// gap fills, audits).
    pub streams: Arc<Streams>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Largest event accepted (`HERALD_MAX_EVENT_BYTES`).
    pub max_event_bytes: usize,
    /// Time between audits of a trusted org (`HERALD_AUDIT_INTERVAL`).
    pub audit_interval: Duration,
}

/// Limits of each org's state.
#[derive(Clone)]
pub struct OrgLimits {
    /// The buffer's ring and the node's byte budget.
    pub buffer: buffer::BufferLimits,
    /// The live queue between NATS and the feed task.
    pub live: live::QueueLimits,
    /// Most JSON bytes one read returns (`HERALD_MAX_READ_BYTES`).
    pub max_read_bytes: usize,
}

/// Which events a read returns: a client's filter implements it.
pub trait EventFilter {
    /// True when `event` is returned.
    fn matches(&self, event: &StoredEvent) -> bool;
}
