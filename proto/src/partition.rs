//! How orgs are spread over K event streams (`HERALD_PARTITIONS`).
//!
//! Invariant: an org's partition is what NATS's own subject-mapping
//! function `partition(K, 1)` computes on the org token (FNV-1a, 32 bits,
//! of the token's bytes, modulo K), so the server's mapping
//! `herald.events.*.*.*` → `herald.events.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{partition(K,1)}}`
//! and every Herald process agree on which stream holds an org. With K = 1
//! there is no mapping, no sixth token and one stream named as configured.

use crate::subject::EVENTS_PREFIX;

/// The number of partitions, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions(u32);

/// The most partitions a deployment may use.
pub const MAX_PARTITIONS: u32 = 1024;

impl Partitions {
    /// `count` partitions; `None` when 0 or above [`MAX_PARTITIONS`].
    pub fn new(count: u32) -> Option<Self> {
        (1..=MAX_PARTITIONS).contains(&count).then_some(Self(count))
    }

    /// One stream, no mapping.
    pub fn single() -> Self {
        Self(1)
    }

    /// How many.
    pub fn count(self) -> u32 {
        self.0
    }

    /// More than one: subjects carry the partition as a sixth token.
    pub fn is_partitioned(self) -> bool {
        self.0 > 1
    }

    /// The partition of `org`, as NATS's `partition(K, 1)` computes it.
    pub fn of(self, org: &str) -> u32 {
        fnv1a32(org.as_bytes()) % self.0
    }

    /// The name of partition `k`'s stream: `base` itself with one
    /// partition, else `<base>_<k>`.
    pub fn stream_name(self, base: &str, k: u32) -> String {
        if self.is_partitioned() {
            format!("{base}_{k}")
        } else {
            base.to_owned()
        }
    }

    /// The subjects partition `k`'s stream stores: `herald.events.>` with
    /// one partition, else `herald.events.*.*.*.<k>`.
    pub fn stream_subject(self, k: u32) -> String {
        if self.is_partitioned() {
            format!("{EVENTS_PREFIX}.*.*.*.{k}")
        } else {
            format!("{EVENTS_PREFIX}.>")
        }
    }

    /// The server mapping (source, destination) that adds the partition
    /// token; `None` with one partition.
    pub fn mapping(self) -> Option<(String, String)> {
        self.is_partitioned().then(|| {
            (
                format!("{EVENTS_PREFIX}.*.*.*"),
                format!(
                    "{EVENTS_PREFIX}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}.{{{{partition({},1)}}}}",
                    self.0
                ),
            )
        })
    }

    /// Checks the partition token of a stored subject of `org` (`None` when
    /// the subject has none): required and equal to the org's partition
    /// when partitioned, absent otherwise.
    pub fn check(self, org: &str, token: Option<&str>) -> Result<(), PartitionError> {
        match (self.is_partitioned(), token) {
            (false, None) => Ok(()),
            (false, Some(_)) => Err(PartitionError::Unexpected),
            (true, None) => Err(PartitionError::Missing),
            (true, Some(t)) if t == self.of(org).to_string() => Ok(()),
            (true, Some(_)) => Err(PartitionError::Wrong),
        }
    }
}

/// Splits `herald.events.<org>.<service>.<property>[.<partition>]` into the
/// subject without its partition token, and that token.
pub fn split(subject: &str) -> (&str, Option<&str>) {
    if subject.split('.').count() == 6 {
        if let Some((base, token)) = subject.rsplit_once('.') {
            return (base, Some(token));
        }
    }
    (subject, None)
}

/// A stored subject whose partition token does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// Partitioned, but the subject has no partition token.
    #[error("the subject has no partition token")]
    Missing,
    /// The token is not the org's partition.
    #[error("the partition token is not the org's partition")]
    Wrong,
    /// Not partitioned, but the subject has a sixth token.
    #[error("the subject has a partition token but the deployment has one partition")]
    Unexpected,
}

/// FNV-1a, 32 bits: the hash of NATS's `partition()` mapping function.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // Published test vectors of FNV-1a 32.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn one_partition_keeps_the_plain_layout() {
        let p = Partitions::single();
        assert_eq!(p.of("acme"), 0);
        assert_eq!(p.stream_name("HERALD_EVENTS", 0), "HERALD_EVENTS");
        assert_eq!(p.stream_subject(0), "herald.events.>");
        assert_eq!(p.mapping(), None);
        assert_eq!(p.check("acme", None), Ok(()));
        assert_eq!(p.check("acme", Some("0")), Err(PartitionError::Unexpected));
    }

    #[test]
    fn partitions_name_streams_subjects_and_the_mapping() {
        let p = Partitions::new(4).unwrap();
        assert_eq!(p.stream_name("HERALD_EVENTS", 3), "HERALD_EVENTS_3");
        assert_eq!(p.stream_subject(2), "herald.events.*.*.*.2");
        assert_eq!(
            p.mapping(),
            Some((
                "herald.events.*.*.*".to_owned(),
                "herald.events.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{partition(4,1)}}"
                    .to_owned()
            ))
        );
        let k = p.of("acme");
        assert_eq!(k, fnv1a32(b"acme") % 4);
        assert_eq!(p.check("acme", Some(&k.to_string())), Ok(()));
        assert_eq!(
            p.check("acme", Some(&((k + 1) % 4).to_string())),
            Err(PartitionError::Wrong)
        );
        assert_eq!(p.check("acme", None), Err(PartitionError::Missing));
        assert_eq!(p.check("acme", Some("x")), Err(PartitionError::Wrong));
    }

    #[test]
    fn orgs_spread_over_every_partition() {
        let p = Partitions::new(8).unwrap();
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[p.of(&format!("org-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }

    #[test]
    fn counts_outside_the_range_are_refused() {
        assert_eq!(Partitions::new(0), None);
        assert_eq!(Partitions::new(MAX_PARTITIONS + 1), None);
        assert_eq!(
            Partitions::new(MAX_PARTITIONS).map(Partitions::count),
            Some(1024)
        );
    }

    #[test]
    fn split_takes_off_a_sixth_token_only() {
        assert_eq!(
            split("herald.events.acme.finance.p1.3"),
            ("herald.events.acme.finance.p1", Some("3"))
        );
        assert_eq!(
            split("herald.events.acme.finance.p1"),
            ("herald.events.acme.finance.p1", None)
        );
        assert_eq!(split("a.b.c.d.e.f.g"), ("a.b.c.d.e.f.g", None));
    }
}
