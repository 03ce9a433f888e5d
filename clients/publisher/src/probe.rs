//! Proving where events land without storing anything: a probe publish to
//! `herald.events.<org>.herald-probe._` that carries `Nats-Expected-Stream`
//! (the stream the org's events must land in) and a
//! `Nats-Expected-Last-Sequence` no stream can have. The right stream
//! answers "wrong last sequence", another stream "expected stream does not
//! match", and a subject no stream captures (a missing partition mapping)
//! gets no answer at all. The edge runs it before serving a partitioned
//! deployment; `herald check` runs it for every partition.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use herald_proto::subject::EVENTS_PREFIX;
use herald_proto::Partitions;

/// Longest wait for the answer to one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Service token of the probes (never stored).
pub const PROBE_SERVICE: &str = "herald-probe";

/// What a probe found when it did not land where expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Another stream stores the probe's subject, or the probe was stored.
    #[error("the probe landed elsewhere: {0}")]
    Elsewhere(String),
    /// No stream stores the probe's subject (no responders).
    #[error("no stream stores the probe's subject: {0}")]
    NoStream(String),
    /// No answer (NATS or JetStream away, or a permission refused): nothing
    /// proven either way.
    #[error("no answer to the probe: {0}")]
    Unreachable(String),
}

/// An org token that falls in partition `k` of `partitions`.
pub fn probe_org(partitions: Partitions, k: u32) -> String {
    (0u64..)
        .map(|n| format!("herald-probe-{n}"))
        .find(|org| partitions.of(org) == k)
        .unwrap_or_default()
}

/// Proves that an event of an org of partition `k` lands in `stream`.
/// `js` should have a bounded request timeout (see [`PROBE_TIMEOUT`]).
pub async fn probe_partition(
    js: &jetstream::Context,
    partitions: Partitions,
    k: u32,
    stream: &str,
) -> Result<(), ProbeError> {
    let org = probe_org(partitions, k);
    let publish = PublishMessage::build()
        .expected_stream(stream)
        .expected_last_sequence(u64::MAX)
        .payload("{}".into());
    let subject = format!("{EVENTS_PREFIX}.{org}.{PROBE_SERVICE}._");
    let ack = js
        .send_publish(subject, publish)
        .await
        .map_err(|e| ProbeError::Unreachable(e.to_string()))?;
    match ack.await {
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(()),
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
            Err(ProbeError::NoStream(e.to_string()))
        }
        Err(e) if e.kind() == PublishErrorKind::TimedOut => {
            Err(ProbeError::Unreachable(e.to_string()))
        }
        Err(e) => Err(ProbeError::Elsewhere(e.to_string())),
        // Cannot happen with an impossible last sequence.
        Ok(_) => Err(ProbeError::Elsewhere("the probe was stored".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_is_a_probe_org_for_every_partition() {
        let p = Partitions::new(16).expect("16");
        for k in 0..16 {
            let org = probe_org(p, k);
            assert_eq!(p.of(&org), k, "{org}");
            assert!(herald_proto::subject::check_token("org", &org).is_ok());
        }
    }
}
