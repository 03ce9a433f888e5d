//! Herald edge node: delivers events from NATS JetStream to clients over
//! long-poll, WebSocket and SSE, resumable on any node.
//!
//! The data path, top to bottom; each layer uses only the ones below it:
//!
//! ```text
//! transport   HTTP accept loop, router, poll / sse / ws / publish endpoints
//!    |
//! delivery    a client's cursor over its org (reader) and what it may see (filter)
//!    |
//! upload      tus rules (metadata, sniffing), resumable digest, completion, sweep
//!    |
//! room        per org: members here <- message feed, room state, typing (NATS)
//!    |
//! org         registry -> hub (buffer, waiters) <- feed task <- live queue
//!    |
//! nats        connection, event stream (JetStream reads), sampled stream head
//!    |
//! config      settings, validated up front
//! ```
//!
//! - [`transport`] holds `serve` (HTTP/1.1 accept loop), `http` (router),
//!   `admission` (node state, token, subscription and caps, shared by every
//!   realtime endpoint), `query` (poll and SSE query strings), `messages`
//!   (the control messages both streams send), the endpoints `poll`, `sse`,
//!   `ws` (with `ws/`: writer, codec, backlog, handshake, deadlines, rooms),
//!   `publish`, `admin`, `client_telemetry`, `rooms` and `uploads`, request `body`
//!   limits and `ratelimit`.
//! - [`delivery`] holds `reader` (a client's cursor, shared by every transport)
//!   and `filter`.
//! - [`upload`] holds `digest` (a SHA-256 resumable on any node),
//!   `metadata` and `sniff` (the rules of an upload's declared file),
//!   `completion` (object info, `upload.completed`) and `sweep` (expiry).
//! - [`room`] holds `registry` (a hub per org with room members here),
//!   `hub` (the members and the tasks that feed them), `presence` (every
//!   node's entries merged, pure) and `outbox` (a connection's room frames).
//! - [`org`] holds `registry` (org state created on a first client, evicted
//!   when idle), `hub` (the buffer and its waiters), `feed` (the task that
//!   keeps the buffer gap-free) and `trust` (its pure state machine), `live`
//!   (the bounded live queue that marks every possible loss in order),
//!   `history` (reads for clients behind the buffer), `buffer` and `decode`
//!   (NATS messages to events or counted rejections).
//! - [`nats`] holds `connection`, `stream` (an event stream in JetStream),
//!   `head` (a stream's sampled head: epoch, first and last sequence) and
//!   `streams` (one stream and head per partition, and the check that the
//!   servers' partition mapping agrees), `rooms` (the rooms stream and
//!   state bucket) and `uploads` (the uploads object store and records).
//! - [`ops`] holds open `connections` and their limits, `control` across nodes,
//!   kill `switches`, `metrics`, `telemetry`.
//! - Beside the layers: [`config`], [`auth`] (tokens), [`error`] (errors as
//!   HTTP answers), [`node`] (the bundle the server hands to the
//!   endpoints) and [`server`] (`run(listener, config, shutdown)`, the entry
//!   point).

pub mod auth;
pub mod config;
pub(crate) mod delivery;
pub mod error;
pub(crate) mod nats;
pub(crate) mod node;
pub mod ops;
pub mod org;
pub mod room;
pub mod server;
pub mod transport;
pub mod upload;

pub use config::Config;
pub use server::{run, RunError};
