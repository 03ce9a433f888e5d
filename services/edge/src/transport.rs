//! The HTTP side: the accept loop, the router, request bodies, rate limits
//! and the endpoints (long-poll, WebSocket, SSE, publish, admin), with what the
//! realtime endpoints share: `admission` (node state, token, subscription,
//! connection caps), `query` (poll and SSE query strings) and `messages`
//! (the control messages both streams send).

pub mod admin;
pub mod admission;
pub mod body;
pub mod http;
pub mod messages;
pub mod poll;
pub mod publish;
pub mod query;
pub mod ratelimit;
pub mod serve;
pub mod sse;
pub mod ws;
