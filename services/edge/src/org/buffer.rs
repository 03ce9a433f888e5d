//! An org's ring of recent events, read by cursor and never drained.
//!
//! The ring guarantees completeness over a range: it holds every event of its
//! org with `floor < seq <= settled`. Readers behind `floor` must read the
//! stream; readers at or past `settled` wait. Events leave only when the ring
//! is full (by count, by its own bytes, or because the node's [`ByteBudget`]
//! for all rings is spent), which raises `floor`; the newest event always
//! stays.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::org::decode::StoredEvent;
use crate::org::EventFilter;

/// What a read by cursor found.
#[derive(Debug)]
pub enum BufferRead {
    /// The cursor is older than the ring: events in `(after, floor]` must come from the stream.
    Behind {
        /// Oldest sequence the ring no longer covers.
        floor: u64,
    },
    /// Matching events, oldest first; `cursor` is the next poll's `lastSeq`.
    Events {
        /// The events.
        events: Vec<Arc<StoredEvent>>,
        /// Resume point.
        cursor: u64,
    },
    /// Nothing matching after the cursor; the client has everything up to `cursor`.
    Nothing {
        /// Quiet cursor.
        cursor: u64,
    },
}

/// Bytes held by every ring of a node, against one limit.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }
}

/// How much one ring may hold.
#[derive(Debug, Clone)]
pub struct BufferLimits {
    /// Events.
    pub events: usize,
    /// Bytes of this ring.
    pub bytes: usize,
    /// The node's budget shared by all rings.
    pub budget: Arc<ByteBudget>,
}

/// Recent events of one org.
#[derive(Debug)]
pub struct OrgBuffer {
    events: VecDeque<Arc<StoredEvent>>,
    limits: BufferLimits,
    bytes: usize,
    floor: u64,
    settled: u64,
}

impl Drop for OrgBuffer {
    fn drop(&mut self) {
        self.limits.budget.used.fetch_sub(self.bytes, Relaxed);
    }
}

impl OrgBuffer {
    /// An empty ring that is complete up to `start`.
    pub fn new(limits: BufferLimits, start: u64) -> Self {
        Self {
            events: VecDeque::with_capacity(limits.events.min(16)),
            limits,
            bytes: 0,
            floor: start,
            settled: start,
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every event of the org up to this sequence is known.
    pub fn settled(&self) -> u64 {
        self.settled
    }

    /// The ring holds every event of the org above this sequence.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no events are held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends the next event. The caller proves there is nothing of this
    /// org between `settled` and `event.seq()`. Older events are ignored.
    pub fn push(&mut self, event: Arc<StoredEvent>) {
        if event.seq() <= self.settled {
            return;
        }
        let size = event.size();
        self.bytes += size;
        self.limits.budget.used.fetch_add(size, Relaxed);
        self.settled = event.seq();
        self.events.push_back(event);
        while self.events.len() > 1
            && (self.events.len() > self.limits.events
                || self.bytes > self.limits.bytes
                || self.limits.budget.over())
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.floor = old.seq();
            self.bytes -= old.size();
            self.limits.budget.used.fetch_sub(old.size(), Relaxed);
        }
    }

    /// Marks everything up to `seq` as known (a rejected message, or a stream
    /// audit that found nothing more).
    pub fn advance(&mut self, seq: u64) {
        self.settled = self.settled.max(seq);
    }

    /// Forgets everything: the stream was recreated and sequences restart.
    pub fn reset(&mut self, start: u64) {
        self.events.clear();
        self.limits.budget.used.fetch_sub(self.bytes, Relaxed);
        self.bytes = 0;
        self.floor = start;
        self.settled = start;
    }

    /// Up to `limit` events matching `filter` with `seq > after`, stopping
    /// once they reach `max_bytes` of JSON (the first event always fits).
    pub fn read(
        &self,
        after: u64,
        filter: &impl EventFilter,
        limit: usize,
        max_bytes: usize,
    ) -> BufferRead {
        if after < self.floor {
            return BufferRead::Behind { floor: self.floor };
        }
        let start = self.events.partition_point(|e| e.seq() <= after);
        let mut events = Vec::new();
        let mut bytes = 0;
        for e in self.events.range(start..) {
            if filter.matches(e) {
                bytes += e.json.get().len();
                events.push(Arc::clone(e));
                if events.len() == limit || bytes >= max_bytes {
                    let cursor = e.seq();
                    return BufferRead::Events { events, cursor };
                }
            }
        }
        let cursor = after.max(self.settled);
        if events.is_empty() {
            BufferRead::Nothing { cursor }
        } else {
            BufferRead::Events { events, cursor }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, service: &str) -> Arc<StoredEvent> {
        StoredEvent::for_test(seq, service, None, serde_json::Value::Null)
    }

    fn limits(events: usize) -> BufferLimits {
        BufferLimits {
            events,
            bytes: usize::MAX,
            budget: ByteBudget::new(usize::MAX),
        }
    }

    /// Events of the named services, or all.
    struct Services(Option<Vec<String>>);

    impl EventFilter for Services {
        fn matches(&self, event: &StoredEvent) -> bool {
            self.0
                .as_ref()
                .is_none_or(|s| s.contains(&event.event.service))
        }
    }

    fn filter(services: Option<&[&str]>) -> Services {
        Services(services.map(|s| s.iter().map(|x| x.to_string()).collect()))
    }

    fn seqs(r: &BufferRead) -> (Vec<u64>, u64) {
        match r {
            BufferRead::Events { events, cursor } => {
                (events.iter().map(|e| e.seq()).collect(), *cursor)
            }
            BufferRead::Nothing { cursor } => (vec![], *cursor),
            BufferRead::Behind { floor } => panic!("behind {floor}"),
        }
    }

    #[test]
    fn reads_by_cursor_without_draining() {
        let mut b = OrgBuffer::new(limits(10), 100);
        for s in [101, 105, 107] {
            b.push(ev(s, "finance"));
        }
        let all = filter(None);
        assert_eq!(
            seqs(&b.read(100, &all, 500, usize::MAX)),
            (vec![101, 105, 107], 107)
        );
        // A second reader sees the same events: reading never removes.
        assert_eq!(
            seqs(&b.read(100, &all, 500, usize::MAX)),
            (vec![101, 105, 107], 107)
        );
        assert_eq!(seqs(&b.read(105, &all, 500, usize::MAX)), (vec![107], 107));
        assert_eq!(seqs(&b.read(107, &all, 500, usize::MAX)), (vec![], 107));
        b.advance(120);
        assert_eq!(seqs(&b.read(107, &all, 500, usize::MAX)), (vec![], 120));
        // A cursor from a node that is further ahead is kept.
        assert_eq!(seqs(&b.read(130, &all, 500, usize::MAX)), (vec![], 130));
    }

    #[test]
    fn limit_sets_cursor_to_last_returned_and_filters_apply() {
        let mut b = OrgBuffer::new(limits(10), 0);
        for s in 1..=6 {
            b.push(ev(s, if s % 2 == 0 { "tasks" } else { "finance" }));
        }
        assert_eq!(
            seqs(&b.read(0, &filter(None), 2, usize::MAX)),
            (vec![1, 2], 2)
        );
        assert_eq!(
            seqs(&b.read(0, &filter(Some(&["tasks"])), 500, usize::MAX)),
            (vec![2, 4, 6], 6)
        );
        assert_eq!(
            seqs(&b.read(4, &filter(Some(&["finance"])), 500, usize::MAX)),
            (vec![5], 6)
        );
    }

    #[test]
    fn full_ring_raises_floor_and_sends_old_cursors_to_the_stream() {
        let mut b = OrgBuffer::new(limits(3), 0);
        for s in 1..=5 {
            b.push(ev(s, "finance"));
        }
        assert_eq!(b.len(), 3);
        assert!(matches!(
            b.read(1, &filter(None), 500, usize::MAX),
            BufferRead::Behind { floor: 2 }
        ));
        assert_eq!(
            seqs(&b.read(2, &filter(None), 500, usize::MAX)),
            (vec![3, 4, 5], 5)
        );
        b.push(ev(4, "finance"));
        assert_eq!(b.len(), 3, "old sequences are ignored");
        b.reset(0);
        assert!(b.is_empty() && b.settled() == 0);
    }

    #[test]
    fn bytes_bound_the_ring_and_the_node_and_reads() {
        let budget = ByteBudget::new(3 * ev(1, "finance").size());
        let per_org = BufferLimits {
            events: 100,
            bytes: 2 * ev(1, "finance").size(),
            budget: Arc::clone(&budget),
        };
        let mut a = OrgBuffer::new(per_org.clone(), 0);
        for s in 1..=4 {
            a.push(ev(s, "finance"));
        }
        assert_eq!(a.len(), 2, "the ring's own byte limit");
        assert_eq!(a.floor(), 2);
        let mut b = OrgBuffer::new(per_org, 0);
        b.push(ev(1, "finance"));
        b.push(ev(2, "finance"));
        assert!(budget.used() <= 3 * ev(1, "finance").size() + ev(1, "finance").size());
        assert_eq!(
            b.len(),
            1,
            "the node's budget is spent: only the newest stays"
        );
        drop(a);
        assert_eq!(
            budget.used(),
            b.bytes(),
            "a dropped ring gives its bytes back"
        );
        // Reads stop at a byte limit, but always return one event.
        let one = ev(1, "finance").json.get().len();
        let mut c = OrgBuffer::new(limits(10), 0);
        for s in 1..=3 {
            c.push(ev(s, "finance"));
        }
        assert_eq!(seqs(&c.read(0, &filter(None), 500, 1)), (vec![1], 1));
        assert_eq!(
            seqs(&c.read(0, &filter(None), 500, 2 * one)),
            (vec![1, 2], 2)
        );
    }
}
