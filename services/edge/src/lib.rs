//! Herald edge node: delivers events from NATS JetStream to clients over
//! long-poll, WebSocket and SSE, resumable on any node.
//!
//! - [`config`]: settings from flags and environment, validated up front.
//! - [`server`]: `run(listener, config, shutdown)`, the entry point;
//!   [`serve`]: the HTTP/1.1 accept loop with small per-connection buffers.
//! - [`nats`], [`jetstream`], [`head`]: the NATS connection, the event stream
//!   and the sampled stream head (epoch, first and last sequence).
//! - [`registry`], [`org`], [`live`], [`buffer`]: per-org state created on
//!   the first client, the ingestion task that keeps the buffer gap-free,
//!   the bounded live queue that marks every possible loss in order, and
//!   the ring of recent events read by cursor.
//! - [`ingest`]: NATS messages to buffered events or counted rejections.
//! - [`reader`]: a client's cursor over its org's events, shared by every transport.
//! - [`auth`], [`filter`]: tokens and what each client may see.
//! - [`http`], [`poll`], [`ws`], [`sse`], [`publish`]: the endpoints.
//! - [`connections`], [`control`], [`switches`]: open streams and their
//!   limits, control across nodes over NATS, kill switches.
//! - [`body`], [`ratelimit`]: request bodies read after the token, within
//!   a size cap and an inactivity timeout; per-user rate limits.
//! - [`error`], [`metrics`], [`telemetry`]: errors as HTTP answers, counters,
//!   logs and traces.

pub mod auth;
pub mod body;
pub mod buffer;
pub mod config;
pub mod connections;
pub mod control;
pub mod error;
pub mod filter;
pub mod head;
pub mod http;
pub mod ingest;
pub mod jetstream;
pub mod live;
pub mod metrics;
pub mod nats;
pub mod node;
pub mod org;
pub mod poll;
pub mod publish;
pub mod ratelimit;
pub mod reader;
pub mod registry;
pub mod serve;
pub mod server;
pub mod sse;
pub mod switches;
pub mod telemetry;
pub mod ws;

pub use config::Config;
pub use server::{run, RunError};
