//! The events stream's JetStream config: the one place that says what a
//! Herald events stream is. Invariant: every stream Herald creates (edge,
//! demo, tests) comes from [`events_stream`], so it stores
//! `herald.events.>` (or, with K partitions, its partition's share
//! `herald.events.*.*.*.<k>`) and RePublishes every stored event to
//! `herald.live.>`, where the edge nodes listen.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, Republish, RetentionPolicy, StorageType};
use herald_proto::subject::{EVENTS_PREFIX, LIVE_PREFIX};
use herald_proto::Partitions;

/// How long the stream keeps events unless told otherwise.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The window in which JetStream drops a repeated `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);

/// What may differ between deployments of the events stream; everything
/// else is fixed by the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Copies of each message in a cluster.
    pub replicas: usize,
    /// How long events are kept.
    pub max_age: Duration,
    /// Largest message (headers included) in bytes; `0` leaves it to the
    /// server (no limit).
    pub max_message_size: i32,
}

impl Default for StreamLimits {
    /// One replica, [`MAX_AGE`], no message size limit.
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age: MAX_AGE,
            max_message_size: 0,
        }
    }
}

/// The subjects the events stream stores: `herald.events.>`.
pub fn events_subjects() -> String {
    format!("{EVENTS_PREFIX}.>")
}

/// The config of a new events stream `name`: [`events_subjects`], limits
/// retention, file storage, [`DUPLICATE_WINDOW`], direct get, and every
/// stored event RePublished to `herald.live.>` for the edge nodes.
pub fn events_stream(name: &str, limits: StreamLimits) -> Config {
    partition_stream(name, Partitions::single(), 0, limits)
}

/// The config of partition `k`'s stream of `partitions` (named after
/// `base`, see [`Partitions::stream_name`]): as [`events_stream`], storing
/// only the partition's subjects. The RePublish keeps the partition token,
/// so live subjects are `herald.live.<org>.<service>.<property>.<k>`.
pub fn partition_stream(
    base: &str,
    partitions: Partitions,
    k: u32,
    limits: StreamLimits,
) -> Config {
    Config {
        name: partitions.stream_name(base, k),
        subjects: vec![partitions.stream_subject(k)],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: limits.max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: limits.replicas,
        max_message_size: limits.max_message_size,
        allow_direct: true,
        republish: Some(Republish {
            source: events_subjects(),
            destination: format!("{LIVE_PREFIX}.>"),
            headers_only: false,
        }),
        ..Config::default()
    }
}

/// True when `config` RePublishes every stored event, with its payload, to
/// the live subjects the edge nodes subscribe to (a source of `>` covers
/// the event subjects too).
pub fn republishes_live(config: &Config) -> bool {
    config.republish.as_ref().is_some_and(|r| {
        (r.source == events_subjects() || r.source == ">")
            && r.destination == format!("{LIVE_PREFIX}.>")
            && !r.headers_only
    })
}

/// Human-readable differences between the `want`ed and the actual (`have`)
/// config, one line per field that differs among those Herald sets.
pub fn differences(want: &Config, have: &Config) -> Vec<String> {
    let fields = [
        (
            "subjects",
            format!("{:?}", want.subjects),
            format!("{:?}", have.subjects),
        ),
        (
            "retention",
            format!("{:?}", want.retention),
            format!("{:?}", have.retention),
        ),
        (
            "storage",
            format!("{:?}", want.storage),
            format!("{:?}", have.storage),
        ),
        (
            "max_age",
            format!("{:?}", want.max_age),
            format!("{:?}", have.max_age),
        ),
        (
            "duplicate_window",
            format!("{:?}", want.duplicate_window),
            format!("{:?}", have.duplicate_window),
        ),
        (
            "num_replicas",
            want.num_replicas.to_string(),
            have.num_replicas.to_string(),
        ),
        (
            "max_message_size",
            want.max_message_size.to_string(),
            have.max_message_size.to_string(),
        ),
        (
            "republish",
            format!("{:?}", want.republish),
            format!("{:?}", have.republish),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, w, h)| w != h)
        .map(|(field, w, h)| format!("{field}: wanted {w}, found {h}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_streams_follow_the_contract() {
        let c = events_stream("HERALD_EVENTS", StreamLimits::default());
        assert_eq!(c.name, "HERALD_EVENTS");
        assert_eq!(c.subjects, ["herald.events.>"]);
        assert_eq!(c.retention, RetentionPolicy::Limits);
        assert_eq!(c.storage, StorageType::File);
        assert_eq!(c.max_age, Duration::from_secs(86_400));
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!((c.num_replicas, c.max_message_size), (1, 0));
        assert!(c.allow_direct);
        let republish = c.republish.as_ref().expect("republish");
        assert_eq!(
            (republish.source.as_str(), republish.destination.as_str()),
            ("herald.events.>", "herald.live.>")
        );
        assert!(republishes_live(&c));
    }

    #[test]
    fn limits_are_the_only_variables() {
        let limits = StreamLimits {
            replicas: 3,
            max_age: Duration::from_secs(60),
            max_message_size: 1024,
        };
        let c = events_stream("S", limits);
        assert_eq!(
            (c.num_replicas, c.max_age, c.max_message_size),
            (3, Duration::from_secs(60), 1024)
        );
        let mut base = events_stream("S", StreamLimits::default());
        base.num_replicas = 3;
        base.max_age = Duration::from_secs(60);
        base.max_message_size = 1024;
        assert_eq!(c, base);
    }

    #[test]
    fn only_a_full_live_republish_counts() {
        let mut c = events_stream("S", StreamLimits::default());
        c.republish.as_mut().expect("republish").source = ">".into();
        assert!(republishes_live(&c));
        c.republish.as_mut().expect("republish").headers_only = true;
        assert!(!republishes_live(&c));
        c.republish = None;
        assert!(!republishes_live(&c));
        let mut other = events_stream("S", StreamLimits::default());
        other.republish.as_mut().expect("republish").destination = "elsewhere.>".into();
        assert!(!republishes_live(&other));
    }

    #[test]
    fn lists_each_differing_field() {
        let want = events_stream("S", StreamLimits::default());
        assert!(differences(&want, &want).is_empty());
        let mut have = want.clone();
        have.max_age = Duration::from_secs(60);
        have.republish = None;
        let diffs = differences(&want, &have);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(diffs[0].starts_with("max_age: wanted 86400s"), "{diffs:?}");
        assert!(diffs[1].starts_with("republish: wanted Some"), "{diffs:?}");
    }
}
