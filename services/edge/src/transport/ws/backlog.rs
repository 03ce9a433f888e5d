//! A connection's backlog: events read but not yet framed, in `seq` order,
//! and the `dropped` frame due among them.
//!
//! Invariant: frames come out in `seq` order: the `dropped` frame before
//! the first event past its `from_seq`; an `events` frame holds one
//! service's run, at most [`BATCH_EVENTS`] events and the byte cap (a larger
//! event alone). The events are shared with the org buffer (or come from
//! one bounded history read), so holding them costs little; framing them
//! one frame at a time keeps a connection's encoded bytes to one frame.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::ws::Message;
use herald_proto::stream::ServerMessage;

use super::codec::{Codec, EncodeError, FRAME_OVERHEAD};
use super::BATCH_EVENTS;
use crate::org::decode::StoredEvent;

/// Events read but not yet framed.
#[derive(Default)]
pub(super) struct Backlog {
    /// In `seq` order.
    pub(super) events: VecDeque<Arc<StoredEvent>>,
    /// Due before the first event past its `from_seq`.
    pub(super) dropped: Option<Dropped>,
}

/// What a quarantine dropped in one read.
#[derive(Debug)]
pub(super) struct Dropped {
    /// The services whose events were not delivered.
    pub(super) services: Vec<String>,
    /// First dropped seq.
    pub(super) from_seq: u64,
    /// Last dropped seq.
    pub(super) to_seq: u64,
}

impl Backlog {
    /// Nothing left to frame.
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dropped.is_none()
    }

    /// Seq of the first thing the client has not been sent yet.
    pub(super) fn first_unsent(&self) -> Option<u64> {
        let event = self.events.front().map(|e| e.seq());
        let dropped = self.dropped.as_ref().map(|d| d.from_seq);
        event.into_iter().chain(dropped).min()
    }

    /// The next frame, in `seq` order: the `dropped` frame once no event
    /// before it is left, else the events of one service up to `max_bytes`
    /// (a larger event alone), stopping at the dropped range.
    pub(super) fn next_frame(
        &mut self,
        codec: Codec,
        max_bytes: usize,
    ) -> Option<Result<Message, EncodeError>> {
        let stop = match &self.dropped {
            Some(d) if self.events.front().is_none_or(|e| e.seq() > d.from_seq) => {
                let d = self.dropped.take()?;
                return Some(codec.encode(&ServerMessage::Dropped {
                    services: d.services,
                    from_seq: d.from_seq,
                    to_seq: d.to_seq,
                }));
            }
            Some(d) => d.from_seq,
            None => u64::MAX,
        };
        let service = self.events.front()?.event.service.clone();
        let mut size = FRAME_OVERHEAD + service.len();
        let mut n = 0;
        for e in &self.events {
            if e.event.service != service || e.seq() > stop || n == BATCH_EVENTS {
                break;
            }
            let len = codec.event_len(e) + 1;
            if n > 0 && size + len > max_bytes {
                break;
            }
            size += len;
            n += 1;
        }
        let run: Vec<Arc<StoredEvent>> = self.events.drain(..n).collect();
        Some(codec.events(&service, &run))
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::frame_len;
    use super::super::codec::tests::{event, read};
    use super::*;

    fn frames(backlog: &mut Backlog, codec: Codec, cap: usize) -> Vec<(usize, ServerMessage)> {
        std::iter::from_fn(|| backlog.next_frame(codec, cap))
            .map(|m| {
                let m = m.expect("encodes");
                (frame_len(&m), read(&m))
            })
            .collect()
    }

    fn seqs(msg: &ServerMessage) -> Vec<u64> {
        match msg {
            ServerMessage::Events { events, .. } => events.iter().map(|e| e.seq).collect(),
            other => panic!("not events: {other:?}"),
        }
    }

    #[test]
    fn frames_are_cut_by_bytes_and_a_larger_event_goes_alone() {
        for codec in [Codec::Json, Codec::MessagePack] {
            let mut backlog = Backlog::default();
            backlog
                .events
                .extend((1..=10).map(|s| event(s, "files", 3000)));
            backlog.events.push_back(event(11, "files", 20_000));
            backlog.events.push_back(event(12, "files", 100));
            let out = frames(&mut backlog, codec, 10_000);
            let all: Vec<u64> = out.iter().flat_map(|(_, m)| seqs(m)).collect();
            assert_eq!(all, (1..=12).collect::<Vec<_>>());
            for (len, m) in &out {
                assert!(*len <= 10_000 || seqs(m).len() == 1, "{codec:?}: {len}");
            }
            assert!(out.iter().any(|(_, m)| seqs(m) == vec![11]), "alone");
            assert!(out.iter().any(|(_, m)| seqs(m).len() == 3), "batched");
        }
    }

    #[test]
    fn one_service_and_at_most_a_batch_per_frame() {
        let mut backlog = Backlog::default();
        backlog.events.extend((1..=150).map(|s| event(s, "a", 1)));
        backlog.events.push_back(event(151, "b", 1));
        let out = frames(&mut backlog, Codec::Json, 1 << 20);
        let sizes: Vec<usize> = out.iter().map(|(_, m)| seqs(m).len()).collect();
        assert_eq!(sizes, vec![BATCH_EVENTS, 50, 1]);
    }

    #[test]
    fn the_dropped_frame_comes_in_seq_order_and_holds_back_the_cursor() {
        let mut backlog = Backlog::default();
        backlog
            .events
            .extend([event(1, "a", 1), event(2, "a", 1), event(5, "a", 1)]);
        backlog.dropped = Some(Dropped {
            services: vec!["analytics".into()],
            from_seq: 3,
            to_seq: 6,
        });
        assert_eq!(backlog.first_unsent(), Some(1));
        let out = frames(&mut backlog, Codec::Json, 1 << 20);
        assert_eq!(
            seqs(&out[0].1),
            vec![1, 2],
            "stops before the dropped range"
        );
        assert!(matches!(
            out[1].1,
            ServerMessage::Dropped {
                from_seq: 3,
                to_seq: 6,
                ..
            }
        ));
        assert_eq!(seqs(&out[2].1), vec![5]);
        assert!(backlog.is_empty());
    }
}
