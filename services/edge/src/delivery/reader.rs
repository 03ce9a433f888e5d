//! A client's position in its org's events, shared by long-poll, WebSocket
//! and SSE: reads after the cursor from the org buffer, or from the stream
//! when the buffer no longer reaches back that far, and says when the client
//! must reset.

use std::sync::Arc;

use herald_proto::ResetReason;
use tokio::sync::watch;

use crate::delivery::filter::{Filter, ServiceSet};
use crate::nats::stream::StreamError;
use crate::ops::metrics::{Delivery, Resume};
use crate::org::buffer::BufferRead;
use crate::org::decode::StoredEvent;
use crate::org::history;
use crate::org::registry::Lease;

/// What one read found.
#[derive(Debug)]
pub enum Step {
    /// Matching events in order; the cursor moved to the last one (or further).
    Events(Vec<Arc<StoredEvent>>),
    /// The client must refetch its state; the cursor moved to the current head.
    Reset(ResetReason),
    /// Nothing matching now; the cursor moved to the quiet cursor.
    Quiet,
    /// A history scan stopped at its limit without finding anything
    /// matching; the cursor moved forward and there is more to read at once.
    Progress,
}

/// A cursor into one org's events with a filter.
pub struct Reader {
    lease: Lease,
    filter: Filter,
    cursor: u64,
    epoch: String,
    changes: watch::Receiver<u64>,
    /// A step found nothing more to send: from then on, events are live.
    caught_up: bool,
    /// Started from a client's cursor, and not yet counted as a resume.
    resuming: bool,
}

impl Reader {
    /// Starts after `last_seq` (default: the node's settled point). With an
    /// `epoch` other than the current one, the first step is a reset.
    pub fn new(lease: Lease, filter: Filter, last_seq: Option<u64>) -> Self {
        let changes = lease.watch();
        let (settled, epoch) = lease.settled();
        Self {
            cursor: last_seq.unwrap_or(settled),
            epoch,
            filter,
            lease,
            changes,
            caught_up: false,
            resuming: last_seq.is_some(),
        }
    }

    /// True when `epoch` (from the client) names another stream incarnation;
    /// the cursor then moves to the current head.
    pub fn check_epoch(&mut self, epoch: Option<&str>) -> bool {
        match epoch {
            Some(e) if e != self.epoch => {
                self.cursor = self.lease.settled().0;
                self.resumed(Resume::Reset);
                true
            }
            _ => false,
        }
    }

    /// Resume point: the client has every matching event up to here.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// How the events of the next step reach the client: live once a step
    /// has found nothing more to send (they were stored while the client
    /// waited), catch-up before (they were waiting for the client).
    pub fn delivery(&self) -> Delivery {
        if self.caught_up {
            Delivery::Live
        } else {
            Delivery::CatchUp
        }
    }

    /// The stream incarnation the cursor belongs to.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The org's hub.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The current filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Changes what is delivered from now on.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    /// Counts the outcome of a read from a client's cursor, once.
    fn resumed(&mut self, outcome: Resume) {
        if std::mem::take(&mut self.resuming) {
            self.lease.upstream.metrics.count_resume(outcome);
        }
    }

    /// Reads what is there now, at most `limit` events, leaving out the
    /// services `disabled` names; never waits for new ones.
    pub async fn step(
        &mut self,
        disabled: Arc<ServiceSet>,
        limit: usize,
    ) -> Result<Step, StreamError> {
        let step = self.read_step(disabled, limit).await;
        match &step {
            Ok(Step::Reset(_)) => self.resumed(Resume::Reset),
            Ok(_) => self.resumed(Resume::Continued),
            Err(_) => {}
        }
        step
    }

    async fn read_step(
        &mut self,
        disabled: Arc<ServiceSet>,
        limit: usize,
    ) -> Result<Step, StreamError> {
        self.filter.set_disabled(disabled);
        let heads = Arc::clone(&self.lease.heads);
        loop {
            self.changes.borrow_and_update();
            let (read, epoch) = self.lease.read(self.cursor, &self.filter, limit);
            if epoch != self.epoch {
                self.epoch = epoch;
                self.cursor = self.lease.settled().0;
                return Ok(Step::Reset(ResetReason::EpochChanged));
            }
            match read {
                BufferRead::Events { events, cursor } => {
                    self.cursor = cursor;
                    return Ok(Step::Events(events));
                }
                BufferRead::Nothing { cursor } => {
                    // Boxed, as every rare path here: a JetStream request
                    // inline would make the future of every held connection
                    // larger (it did: 11.9 → 20.5 KiB per idle WebSocket).
                    if cursor > self.lease.settled_seq() && Box::pin(self.beyond_head()).await? {
                        self.cursor = self.lease.settled().0;
                        return Ok(Step::Reset(ResetReason::EpochChanged));
                    }
                    self.cursor = cursor;
                    self.caught_up = true;
                    return Ok(Step::Quiet);
                }
                BufferRead::Behind { floor } => {
                    let from = self.cursor;
                    // Boxed: a rare path that would otherwise make every held
                    // request's future (and its memory) larger.
                    let (events, scanned) = Box::pin(history::read(
                        &self.lease,
                        from,
                        floor,
                        &self.filter,
                        limit,
                        self.lease.max_read_bytes(),
                    ))
                    .await?;
                    // Whether anything after the cursor is gone is decided by
                    // the stream as it stands after the scan: a sample taken
                    // before it could predate a purge or an expiry.
                    let head = Box::pin(heads.fresh()).await?;
                    if head.epoch != self.epoch {
                        continue;
                    }
                    if from.saturating_add(1) < head.first_seq {
                        self.cursor = self.lease.settled().0;
                        return Ok(Step::Reset(ResetReason::HistoryGone));
                    }
                    self.cursor = scanned;
                    if !events.is_empty() {
                        return Ok(Step::Events(events));
                    }
                    if scanned < floor {
                        return Ok(Step::Progress);
                    }
                }
            }
        }
    }

    /// True when the cursor is past the stream's head as it stands now: it
    /// belongs to another incarnation of the stream (a resume without its
    /// epoch, such as an EventSource reconnect after a recreate).
    async fn beyond_head(&mut self) -> Result<bool, StreamError> {
        let head = self.lease.heads.fresh().await?;
        Ok(head.epoch == self.epoch && self.cursor > head.last_seq)
    }

    /// Waits until the org has new settled events; false when the org's state
    /// was released.
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}
