//! The HTTP side: the accept loop, the router, request bodies, rate limits
//! and the endpoints (long-poll, WebSocket, SSE, publish, admin, client
//! telemetry, rooms), with what the
//! realtime endpoints share: `admission` (node state, token, subscription,
//! connection caps), `query` (poll and SSE query strings) and `messages`
//! (the control messages both streams send).

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod body;
pub(crate) mod client_telemetry;
pub(crate) mod http;
pub(crate) mod messages;
pub(crate) mod poll;
pub(crate) mod publish;
pub mod query;
pub(crate) mod ratelimit;
pub(crate) mod rooms;
pub(crate) mod serve;
pub(crate) mod sse;
pub(crate) mod uploads;
pub(crate) mod ws;
