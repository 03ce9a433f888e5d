//! The HTTP side: the accept loop, the router, request bodies, rate limits
//! and the endpoints (long-poll, WebSocket, SSE, publish, admin).

pub mod admin;
pub mod body;
pub mod http;
pub mod poll;
pub mod publish;
pub mod ratelimit;
pub mod serve;
pub mod sse;
pub mod ws;
