//! Herald's wire types, shared by the edge node, the publisher library, the
//! demo publisher, the load generator and the tests. Pure data: no I/O.
//!
//! - [`subject`]: NATS subjects `herald.events.<org>.<service>.<property>` and
//!   their token rules.
//! - [`envelope`]: the body a domain service publishes (JSON or MessagePack),
//!   decoded and checked against its subject.
//! - [`event`]: the event as delivered to clients.
//! - [`msgpack`]: MessagePack decoding with the JSON nesting limit.
//! - [`cursor`]: stream sequence cursors, epochs and `reset` reasons.
//! - [`poll`], [`stream`]: long-poll answers and WebSocket/SSE messages.
//! - [`close`]: the stream's WebSocket close codes.
//! - [`publish`]: the body of `POST /v2/realtime/publish`.
//! - [`error`]: the JSON error body every endpoint answers with.
//! - [`claims`]: the claims of a client token.
//! - [`reject`]: why a stored message is skipped, one metrics label each.
//! - [`room`]: rooms: ids, chat messages, presence, receipts, limits and
//!   the `/v2/rooms` bodies.
//! - [`partition`]: which of K event streams holds an org (NATS's `partition(K, 1)`).
//! - [`sse`]: Server-Sent Events frames, encoded and decoded incrementally.
//! - [`stored`]: a message read back from an events stream, decoded into
//!   the event an edge delivers (or the reason it is rejected).
//! - `token` (feature `jwt`): HS256 development tokens with [`Claims`].

pub mod claims;
pub mod close;
pub mod cursor;
pub mod envelope;
pub mod error;
pub mod event;
pub mod msgpack;
pub mod partition;
pub mod poll;
pub mod publish;
pub mod reject;
pub mod room;
pub mod sse;
pub mod stored;
pub mod stream;
pub mod subject;
#[cfg(feature = "jwt")]
pub mod token;
pub mod upload;

pub use claims::{Claims, Role};
pub use close::CloseCode;
pub use cursor::{Epoch, Reset, ResetReason};
pub use envelope::{Encoding, EnvelopeError, EventBody};
pub use error::ErrorBody;
pub use event::DeliveredEvent;
pub use partition::Partitions;
pub use reject::RejectReason;
pub use subject::{EventSubject, SubjectError, Token};
