//! Rooms on one node (contract section 6): chat messages, typing,
//! presence and read receipts, shared with every other node through NATS.
//!
//! - [`registry`]: a hub per org with members here, started on a first
//!   join and stopped when idle.
//! - [`hub`]: one org's members here and the tasks that feed them (stored
//!   messages, room state, typing) and keep this node's presence written.
//! - [`presence`]: every node's presence entries merged into one state per
//!   user (pure).
//! - [`outbox`]: the bounded queue of room frames of one connection.
//!
//! The layer sees NATS through [`crate::nats::rooms`] and knows nothing of
//! transports: a connection is a member id and an [`outbox::Outbox`].

pub mod hub;
pub mod outbox;
pub mod presence;
pub mod registry;
