//! The long-poll answer (`GET /v1/realtime/poll`).

use serde::{Deserialize, Serialize};

use crate::cursor::{Epoch, Reset};
use crate::event::DeliveredEvent;

/// Most events one poll answer carries.
pub const MAX_EVENTS_PER_POLL: usize = 500;

/// A poll answer. `last_seq` is the cursor to pass to the next poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse<E = DeliveredEvent> {
    /// Matching events, oldest first.
    pub events: Vec<E>,
    /// Cursor for the next poll.
    pub last_seq: u64,
    /// Stream incarnation.
    pub epoch: Epoch,
    /// Set when the client must refetch its state.
    pub reset: Option<Reset>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::ResetReason;

    #[test]
    fn serialises_null_reset_and_parses_back() {
        let r: PollResponse = PollResponse {
            events: vec![],
            last_seq: 9,
            epoch: "E".into(),
            reset: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"events":[],"lastSeq":9,"epoch":"E","reset":null}"#
        );
        let with_reset: PollResponse = serde_json::from_str(
            r#"{"events":[],"lastSeq":3,"epoch":"E","reset":{"reason":"history_gone"}}"#,
        )
        .unwrap();
        assert_eq!(with_reset.reset.unwrap().reason, ResetReason::HistoryGone);
    }
}
