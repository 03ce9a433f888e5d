//! Cursors into the event stream: the stream sequence a client has seen, the
//! epoch naming the stream incarnation, and the `reset` a client gets when
//! the events after its cursor can no longer all be delivered.

use serde::{Deserialize, Serialize};

/// Names one incarnation of the stream; it changes when the stream is
/// deleted and created again, so old sequences mean nothing any more.
pub type Epoch = String;

/// Why a client must refetch its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// Events after the client's cursor were removed (retention, purge).
    HistoryGone,
    /// The stream was recreated; the cursor belongs to another incarnation.
    EpochChanged,
}

/// The `reset` object of a poll answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// Why.
    pub reason: ResetReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reasons_use_contract_names() {
        let r = Reset {
            reason: ResetReason::HistoryGone,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"reason":"history_gone"}"#
        );
        let back: Reset = serde_json::from_str(r#"{"reason":"epoch_changed"}"#).unwrap();
        assert_eq!(back.reason, ResetReason::EpochChanged);
    }
}
