//! Herald's integration-test harness: real processes on ephemeral loopback
//! ports, no mocks.
//!
//! - [`nats_server`]: a JetStream `nats-server` that can be killed and
//!   restarted on the same port with its data, and a loopback
//!   [`NatsCluster`]. The binary comes from `HERALD_NATS_SERVER`,
//!   `.tools/bin` (installed by `scripts/setup.sh`) or `PATH`.
//! - [`edge`]: a `herald-edge` process configured by environment variables,
//!   ready once `GET /readyz` answers 200.
//! - [`token`]: HS256 test JWTs with Herald's claims, and `alg: none` tokens.
//! - [`http`]: JSON requests and free ports.
//! - [`fixture`]: NATS plus edge nodes, publishing and polling helpers.
//! - [`ws`], [`sse`]: WebSocket and SSE clients for the stream endpoints.
//!
//! Every wait has a timeout and panics with the process log when it expires.

pub mod edge;
pub mod fixture;
pub mod http;
pub mod nats_server;
mod process;
pub mod sse;
pub mod token;
pub mod ws;

pub use edge::{EdgeOptions, EdgeProcess};
pub use fixture::{seqs_of, Herald, Polled, SECRET};
pub use http::{free_port, get_json, post_json};
pub use nats_server::{accounts_config, nats_server_binary, NatsCluster, NatsServer, NatsUser};
pub use sse::{SseClient, SseMessage};
pub use token::{hs256_with, unsigned_alg_none, TokenBuilder};
pub use ws::{Received, WsClient};
