//! WebSocket close codes of the stream (`/v2/realtime/stream`).
//!
//! Invariant: every code the edge sends is a variant here, and each
//! variant's number never changes: clients branch on them (the browser SDK
//! re-authenticates on 4001, stops on 4003, falls back to long-poll on 4503,
//! moves to another node on 1012). A new situation gets a new variant, never
//! a reused number.

use std::fmt;

/// A close code the edge sends, with its number on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1011: the server failed (a frame could not be encoded); reconnect
    /// and resume. Details stay in the server's log.
    InternalError = 1011,
    /// 1012: the node drains; reconnect elsewhere at once and resume.
    Draining = 1012,
    /// 1013: the event stream cannot be reached right now, or a limit of
    /// the node was hit; reconnect with backoff and resume.
    TryAgain = 1013,
    /// 4000: a bad handshake or message (also a client silent for two pings).
    BadMessage = 4000,
    /// 4001: unauthenticated, the token expired, or an administrator
    /// disconnected the user: get a fresh token before reconnecting.
    Unauthenticated = 4001,
    /// 4003: the token does not allow this subscription.
    Forbidden = 4003,
    /// 4008: slow consumer: the client did not read fast enough.
    SlowConsumer = 4008,
    /// 4029: too many connections (node or per-user cap).
    TooManyConnections = 4029,
    /// 4503: realtime streams are switched off (kill switch); use long-poll.
    Disabled = 4503,
}

impl CloseCode {
    /// Every code, for tables and tests.
    pub const ALL: [CloseCode; 9] = [
        Self::InternalError,
        Self::Draining,
        Self::TryAgain,
        Self::BadMessage,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::SlowConsumer,
        Self::TooManyConnections,
        Self::Disabled,
    ];

    /// The number sent in the close frame.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The variant with this number, if the edge sends it.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl From<CloseCode> for u16 {
    fn from(c: CloseCode) -> u16 {
        c.code()
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers are wire contract (contract section 4, close codes, and
    /// the SDK's `closeReasonForCode`): this table changes only with them.
    #[test]
    fn numbers_are_the_contracts() {
        let table = [
            (CloseCode::InternalError, 1011),
            (CloseCode::Draining, 1012),
            (CloseCode::TryAgain, 1013),
            (CloseCode::BadMessage, 4000),
            (CloseCode::Unauthenticated, 4001),
            (CloseCode::Forbidden, 4003),
            (CloseCode::SlowConsumer, 4008),
            (CloseCode::TooManyConnections, 4029),
            (CloseCode::Disabled, 4503),
        ];
        assert_eq!(table.len(), CloseCode::ALL.len());
        for (code, number) in table {
            assert_eq!(code.code(), number, "{code:?}");
            assert_eq!(u16::from(code), number);
            assert_eq!(code.to_string(), number.to_string());
            assert_eq!(CloseCode::from_code(number), Some(code));
        }
    }

    #[test]
    fn every_number_is_one_code() {
        for (i, a) in CloseCode::ALL.iter().enumerate() {
            for b in &CloseCode::ALL[i + 1..] {
                assert_ne!(a.code(), b.code(), "{a:?} and {b:?}");
            }
        }
        for unknown in [0, 1000, 1006, 4002, 4999] {
            assert_eq!(CloseCode::from_code(unknown), None, "{unknown}");
        }
    }
}
