//! Herald's integration-test harness: real processes on ephemeral loopback
//! ports, no mocks.
//!
//! - [`nats_server`]: a JetStream `nats-server` that can be killed and
//!   restarted on the same port with its data, and a loopback
//!   [`NatsCluster`]. The binary comes from `HERALD_NATS_SERVER`,
//!   `.tools/bin` (installed by `scripts/setup.sh`) or `PATH`.
//! - [`edge`]: a `herald-edge` process configured by environment variables,
//!   on a port of the kernel's choice, ready once `GET /readyz` answers 200.
//! - [`inprocess`]: an edge node inside the test process (`herald_edge::run`
//!   on a listener bound to port 0, with a shutdown future).
//! - [`token`]: HS256 test JWTs with Herald's claims, and `alg: none` tokens.
//! - [`nginx`]: a real nginx in front of edge nodes, with the repository's
//!   `deploy/nginx/herald.conf`, as the deployment runs it.
//! - [`prometheus`]: a real Prometheus scraping edge nodes with the
//!   repository's `deploy/prometheus` config and rules, queried through its
//!   HTTP API; and the `promtool` binary.
//! - [`otlp`]: a real OTLP/HTTP receiver that keeps the spans and metric
//!   points it is sent.
//! - [`http`]: JSON requests and loopback ports (also [`stable_port`], for
//!   a node restarted on the same port).
//! - [`fixture`]: NATS plus edge nodes, publishing and polling helpers.
//! - [`wait`]: bounded waits on conditions: [`eventually`] (and
//!   [`eventually_mut`]), [`wait_metric`], [`held_poll`].
//! - [`ws`], [`sse`]: WebSocket and SSE clients for the stream endpoints.
//! - [`room`]: a room member over the stream (join, say, typing, read,
//!   status) that waits for room frames by what they are.
//! - [`upload`]: a tus 1.0.0 client for `/v2/uploads`, and a PATCH written
//!   by hand over a socket (slow, cut short, or cut by a killed node).
//!
//! Every wait has a timeout and panics, with what it waited for and the last
//! value or process log it saw, when it expires.

pub mod edge;
pub mod fixture;
pub mod http;
pub mod inprocess;
pub mod nats_server;
pub mod nginx;
pub mod otlp;
mod process;
pub mod prometheus;
pub mod room;
pub mod sse;
pub mod token;
pub mod upload;
pub mod wait;
pub mod ws;

pub use edge::{EdgeOptions, EdgeProcess};
pub use fixture::{seqs_of, EdgeNode, Herald, Polled, SECRET};
pub use http::{get_json, post_json, refused_port, stable_port, RefusedPort};
pub use inprocess::{parse_config, InProcessEdge, Shutdown};
pub use nats_server::{accounts_config, nats_server_binary, NatsCluster, NatsServer, NatsUser};
pub use nginx::{nginx_binary, Nginx};
pub use otlp::{OtlpReceiver, ReceivedPoint, ReceivedSpan};
pub use prometheus::{prometheus_binary, promtool_binary, Prometheus};
pub use room::RoomClient;
pub use sse::{SseClient, SseMessage};
pub use token::{hs256_with, unsigned_alg_none, TokenBuilder};
pub use upload::{RawPatch, Tus, TusResponse};
pub use wait::{
    eventually, eventually_mut, held_poll, metrics, wait_metric, wait_metric_at_least,
    wait_metric_until, Outcome,
};
pub use ws::{Received, WsClient};
