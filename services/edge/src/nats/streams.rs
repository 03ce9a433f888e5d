//! The node's event streams: one, or one per partition (`HERALD_PARTITIONS`),
//! each with its sampled head.
//!
//! Invariant: an org's events are read from, and its live messages checked
//! against, exactly the stream of its partition ([`Partitions::of`]), and
//! with more than one partition the node serves only after
//! [`Streams::verify_mapping`] proved that the NATS servers map each org's
//! events into that same stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use herald_proto::Partitions;
use herald_publisher::probe::{probe_partition, ProbeError, PROBE_TIMEOUT};

use crate::nats::head::Heads;
use crate::nats::stream::{EventStream, StreamSettings};

/// The streams and their heads, by partition.
pub struct Streams {
    partitions: Partitions,
    heads: Vec<Arc<Heads>>,
    settings: StreamSettings,
}

/// The NATS servers do not put an org's events where this node reads them.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// A probe for partition `k` landed in no stream or another one.
    #[error(
        "events of partition {k} do not land in stream {stream} ({detail}); the NATS subject \
         mapping must be herald.events.*.*.* -> {mapping}, matching HERALD_PARTITIONS={count}"
    )]
    Mismatch {
        /// The partition probed.
        k: u32,
        /// The stream it should land in.
        stream: String,
        /// What the server answered.
        detail: String,
        /// The mapping destination expected.
        mapping: String,
        /// `HERALD_PARTITIONS`.
        count: u32,
    },
    /// No stream answered the probe for partition `k`: the mapping is
    /// missing, or the stream was created a moment ago and elects its
    /// leader (retry for a while before concluding).
    #[error(
        "no stream stores events of partition {k} ({detail}); the NATS subject mapping must be \
         herald.events.*.*.* -> {mapping}, matching HERALD_PARTITIONS={count}"
    )]
    NoStream {
        /// The partition probed.
        k: u32,
        /// What the server answered.
        detail: String,
        /// The mapping destination expected.
        mapping: String,
        /// `HERALD_PARTITIONS`.
        count: u32,
    },
    /// The probe got no answer (NATS or JetStream away): nothing proven.
    #[error("cannot probe partition {k}: {detail}")]
    Unreachable {
        /// The partition probed.
        k: u32,
        /// What failed.
        detail: String,
    },
}

impl Streams {
    /// Handles on the `partitions` streams named after `base`.
    pub fn new(
        client: &async_nats::Client,
        base: &str,
        partitions: Partitions,
        settings: StreamSettings,
    ) -> Self {
        let heads = (0..partitions.count())
            .map(|k| {
                let stream = EventStream::new(client.clone(), base, partitions, k, &settings);
                Arc::new(Heads::new(stream))
            })
            .collect();
        Self {
            partitions,
            heads,
            settings,
        }
    }

    /// How orgs are spread.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// The head (and stream) of `org`'s partition.
    pub fn for_org(&self, org: &str) -> &Arc<Heads> {
        &self.heads[self.partitions.of(org) as usize]
    }

    /// Every partition's head, by partition.
    pub fn all(&self) -> &[Arc<Heads>] {
        &self.heads
    }

    /// The head of the stream called `name`, if it is one of the node's.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Heads>> {
        self.heads.iter().find(|h| h.stream().name() == name)
    }

    /// Requests sent so far to read stored events, over all streams.
    pub fn read_requests(&self) -> u64 {
        self.settings.read_requests()
    }

    /// Successful head samples, over all streams.
    pub fn head_samples(&self) -> u64 {
        self.heads.iter().map(|h| h.samples()).sum()
    }

    /// Possible leader changes seen so far, over all streams.
    pub fn leader_changes(&self) -> u64 {
        self.heads.iter().map(|h| *h.elections().borrow()).sum()
    }

    /// Every stream's head was sampled within `max_age`.
    pub fn all_recent(&self, max_age: Duration) -> bool {
        self.heads.iter().all(|h| h.is_recent(max_age))
    }

    /// Proves, for each partition, that an event published to
    /// `herald.events.<org>.…` of an org of that partition lands in that
    /// partition's stream ([`probe_partition`]). Each probe carries `Nats-Expected-Stream` (the
    /// partition's stream) and an `Nats-Expected-Last-Sequence` no stream
    /// can have, so it is never stored: the right stream answers "wrong
    /// last sequence", another stream "expected stream does not match", and
    /// a subject no stream captures (no mapping) gets no answer at all.
    /// Nothing to prove with one partition.
    pub async fn verify_mapping(&self, client: &async_nats::Client) -> Result<(), MappingError> {
        let Some((_, destination)) = self.partitions.mapping() else {
            return Ok(());
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(PROBE_TIMEOUT);
        for (k, heads) in self.heads.iter().enumerate() {
            let k = k as u32;
            let stream = heads.stream().name().to_owned();
            let count = self.partitions.count();
            let mapping = destination.clone();
            match probe_partition(&js, self.partitions, k, &stream).await {
                Ok(()) => {}
                Err(ProbeError::NoStream(detail)) => {
                    return Err(MappingError::NoStream {
                        k,
                        detail,
                        mapping,
                        count,
                    })
                }
                Err(ProbeError::Unreachable(detail)) => {
                    return Err(MappingError::Unreachable { k, detail })
                }
                Err(ProbeError::Elsewhere(detail)) => {
                    return Err(MappingError::Mismatch {
                        k,
                        stream,
                        detail,
                        mapping,
                        count,
                    })
                }
            }
        }
        Ok(())
    }
}
