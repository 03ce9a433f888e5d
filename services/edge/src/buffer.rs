//! An org's ring of recent events, read by cursor and never drained.
//!
//! The ring guarantees completeness over a range: it holds every event of its
//! org with `floor < seq <= settled`. Readers behind `floor` must read the
//! stream; readers at or past `settled` wait. Events leave only when the ring
//! is full, which raises `floor`.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::filter::Filter;
use crate::ingest::StoredEvent;

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

/// Recent events of one org.
#[derive(Debug)]
pub struct OrgBuffer {
    events: VecDeque<Arc<StoredEvent>>,
    capacity: usize,
    floor: u64,
    settled: u64,
}

impl OrgBuffer {
    /// An empty ring that is complete up to `start`.
    pub fn new(capacity: usize, start: u64) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(16)),
            capacity,
            floor: start,
            settled: start,
        }
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
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends the next event. The caller proves there is nothing of this
    /// org between `settled` and `event.seq()`. Older events are ignored.
    pub fn push(&mut self, event: Arc<StoredEvent>) {
        if event.seq() <= self.settled {
            return;
        }
        if self.events.len() == self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.floor = old.seq();
            }
        }
        self.settled = event.seq();
        self.events.push_back(event);
    }

    /// Marks everything up to `seq` as known (a rejected message, or a stream
    /// audit that found nothing more).
    pub fn advance(&mut self, seq: u64) {
        self.settled = self.settled.max(seq);
    }

    /// Forgets everything: the stream was recreated and sequences restart.
    pub fn reset(&mut self, start: u64) {
        self.events.clear();
        self.floor = start;
        self.settled = start;
    }

    /// Up to `limit` events matching `filter` with `seq > after`.
    pub fn read(&self, after: u64, filter: &Filter, limit: usize) -> BufferRead {
        if after < self.floor {
            return BufferRead::Behind { floor: self.floor };
        }
        let start = self.events.partition_point(|e| e.seq() <= after);
        let mut events = Vec::new();
        for e in self.events.range(start..) {
            if filter.matches(e) {
                events.push(Arc::clone(e));
                if events.len() == limit {
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
    use crate::auth::Principal;
    use herald_proto::DeliveredEvent;

    fn ev(seq: u64, service: &str) -> Arc<StoredEvent> {
        StoredEvent::new(
            DeliveredEvent {
                seq,
                org_id: "acme".into(),
                service: service.into(),
                property_id: None,
                event_id: seq.to_string(),
                event_type: "t".into(),
                timestamp: 0,
                entity_type: None,
                entity_id: None,
                payload: serde_json::Value::Null,
            },
            0,
        )
    }

    fn filter(services: Option<&[&str]>) -> Filter {
        let p = Principal {
            user: "u".into(),
            org: "acme".into(),
            props: None,
            svcs: None,
            role: None,
            exp: 0,
        };
        Filter::new(
            &p,
            services.map(|s| s.iter().map(|x| x.to_string()).collect()),
            None,
            Default::default(),
        )
        .unwrap()
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
        let mut b = OrgBuffer::new(10, 100);
        for s in [101, 105, 107] {
            b.push(ev(s, "finance"));
        }
        let all = filter(None);
        assert_eq!(seqs(&b.read(100, &all, 500)), (vec![101, 105, 107], 107));
        // A second reader sees the same events: reading never removes.
        assert_eq!(seqs(&b.read(100, &all, 500)), (vec![101, 105, 107], 107));
        assert_eq!(seqs(&b.read(105, &all, 500)), (vec![107], 107));
        assert_eq!(seqs(&b.read(107, &all, 500)), (vec![], 107));
        b.advance(120);
        assert_eq!(seqs(&b.read(107, &all, 500)), (vec![], 120));
        // A cursor from a node that is further ahead is kept.
        assert_eq!(seqs(&b.read(130, &all, 500)), (vec![], 130));
    }

    #[test]
    fn limit_sets_cursor_to_last_returned_and_filters_apply() {
        let mut b = OrgBuffer::new(10, 0);
        for s in 1..=6 {
            b.push(ev(s, if s % 2 == 0 { "tasks" } else { "finance" }));
        }
        assert_eq!(seqs(&b.read(0, &filter(None), 2)), (vec![1, 2], 2));
        assert_eq!(
            seqs(&b.read(0, &filter(Some(&["tasks"])), 500)),
            (vec![2, 4, 6], 6)
        );
        assert_eq!(
            seqs(&b.read(4, &filter(Some(&["finance"])), 500)),
            (vec![5], 6)
        );
    }

    #[test]
    fn full_ring_raises_floor_and_sends_old_cursors_to_the_stream() {
        let mut b = OrgBuffer::new(3, 0);
        for s in 1..=5 {
            b.push(ev(s, "finance"));
        }
        assert_eq!(b.len(), 3);
        assert!(matches!(
            b.read(1, &filter(None), 500),
            BufferRead::Behind { floor: 2 }
        ));
        assert_eq!(seqs(&b.read(2, &filter(None), 500)), (vec![3, 4, 5], 5));
        b.push(ev(4, "finance"));
        assert_eq!(b.len(), 3, "old sequences are ignored");
        b.reset(0);
        assert!(b.is_empty() && b.settled() == 0);
    }
}
