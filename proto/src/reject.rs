//! Why a stored message is skipped instead of delivered: the closed set of
//! reject reasons, each a metrics label. Invariant: every rejected message
//! is counted under exactly one of [`RejectReason::ALL`]; there is no
//! free-text or unknown reason.

use std::fmt;

/// Why a stored message can never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The body is over the size limit.
    TooLarge,
    /// The body is not a JSON object / MessagePack map of the right shape.
    Invalid,
    /// `eventType` is missing or empty.
    MissingEventType,
    /// `orgId`, `service` or `propertyId` in the body disagrees with the subject.
    Mismatch,
    /// The subject is not an event subject of the org it was read for.
    BadSubject,
}

impl RejectReason {
    /// Every reason, in the order metrics list them.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::TooLarge,
        RejectReason::Invalid,
        RejectReason::MissingEventType,
        RejectReason::Mismatch,
        RejectReason::BadSubject,
    ];

    /// The metrics label, e.g. `too_large`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::Invalid => "invalid",
            RejectReason::MissingEventType => "missing_event_type",
            RejectReason::Mismatch => "mismatch",
            RejectReason::BadSubject => "bad_subject",
        }
    }

    /// Position in [`RejectReason::ALL`], for one counter per reason.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for RejectReason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_reason_once_at_its_index() {
        for (i, r) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(r.to_string(), r.as_str());
        }
        let mut labels: Vec<&str> = RejectReason::ALL.map(RejectReason::as_str).to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }
}
