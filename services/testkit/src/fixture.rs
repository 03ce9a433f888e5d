//! A whole Herald on loopback for end-to-end tests: one JetStream
//! nats-server, N edge nodes (processes, or in the test process), a NATS
//! client that publishes like a domain service (or like `nats pub`), and
//! helpers to poll the nodes and wait on them.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::HeaderMap;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::edge::{EdgeOptions, EdgeProcess};
use crate::http::{get_json, HeaderMap as HttpHeaders, StatusCode};
use crate::inprocess::{InProcessEdge, Shutdown};
use crate::nats_server::{NatsServer, NatsUser};
use crate::token::TokenBuilder;
use crate::wait;

/// Secret every fixture node verifies tokens with.
pub const SECRET: &str = "herald-test-secret-0123456789";

/// An edge node the fixture can talk to: a process or an in-process node.
pub trait EdgeNode {
    /// The address the node listens on.
    fn addr(&self) -> SocketAddr;

    /// `http://127.0.0.1:<port>`.
    fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

impl EdgeNode for EdgeProcess {
    fn addr(&self) -> SocketAddr {
        EdgeProcess::addr(self)
    }
}

impl EdgeNode for InProcessEdge {
    fn addr(&self) -> SocketAddr {
        InProcessEdge::addr(self)
    }
}

/// NATS plus edge nodes: [`EdgeProcess`]es (the default, from
/// [`Herald::start`] and friends) or [`InProcessEdge`]s (from
/// [`Herald::start_in_process`]).
pub struct Herald<E = EdgeProcess> {
    /// The nats-server.
    pub nats: NatsServer,
    /// The edge nodes, in start order.
    pub edges: Vec<E>,
    client: async_nats::Client,
    /// The edge binary (processes only).
    bin: PathBuf,
    env: Vec<(String, String)>,
}

/// One poll answer.
#[derive(Debug, Clone)]
pub struct Polled {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: Value,
    /// Headers.
    pub headers: HttpHeaders,
}

/// `seq` of each event.
pub fn seqs_of(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

impl Polled {
    /// `seq` of every returned event.
    pub fn seqs(&self) -> Vec<u64> {
        self.events()
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect()
    }

    /// The returned events.
    pub fn events(&self) -> Vec<Value> {
        self.body["events"].as_array().cloned().unwrap_or_default()
    }

    /// The cursor for the next poll.
    pub fn last_seq(&self) -> u64 {
        self.body["lastSeq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no lastSeq in {} {}", self.status, self.body))
    }
}

impl Herald<EdgeProcess> {
    /// Starts NATS and `edges` nodes of the binary `bin` with default settings.
    pub async fn start(bin: impl AsRef<Path>, edges: usize) -> Herald {
        Self::start_with(bin, edges, &[]).await
    }

    /// Starts NATS and `edges` nodes with extra environment variables.
    pub async fn start_with(bin: impl AsRef<Path>, edges: usize, env: &[(&str, &str)]) -> Herald {
        Self::start_on(NatsServer::start().await, bin, edges, env).await
    }

    /// Starts NATS with the shipped users and permissions
    /// (`nats/herald.conf`) and `edges` nodes logged in as
    /// [`NatsUser::edge`] (`HERALD_NATS_USER`/`HERALD_NATS_PASSWORD`); the
    /// fixture publishes as [`NatsUser::publisher`].
    pub async fn start_with_accounts(
        bin: impl AsRef<Path>,
        edges: usize,
        env: &[(&str, &str)],
    ) -> Herald {
        let edge = NatsUser::edge();
        let mut env = env.to_vec();
        env.push(("HERALD_NATS_USER", &edge.name));
        env.push(("HERALD_NATS_PASSWORD", &edge.password));
        Self::start_on(NatsServer::start_with_accounts().await, bin, edges, &env).await
    }

    /// Starts NATS with the mapping for `partitions` streams
    /// ([`NatsServer::start_partitioned`]) and `edges` nodes with
    /// `HERALD_PARTITIONS=<partitions>`.
    pub async fn start_partitioned(
        bin: impl AsRef<Path>,
        edges: usize,
        partitions: u32,
        env: &[(&str, &str)],
    ) -> Herald {
        let k = partitions.to_string();
        let mut env = env.to_vec();
        env.push(("HERALD_PARTITIONS", &k));
        Self::start_on(
            NatsServer::start_partitioned(partitions).await,
            bin,
            edges,
            &env,
        )
        .await
    }

    async fn start_on(
        nats: NatsServer,
        bin: impl AsRef<Path>,
        edges: usize,
        env: &[(&str, &str)],
    ) -> Herald {
        let mut herald = Herald::around(nats, bin.as_ref().to_owned(), env).await;
        for _ in 0..edges {
            herald.add_edge(&[]).await;
        }
        herald
    }

    /// Starts one more edge node (with `extra` on top of the fixture's env).
    pub async fn add_edge(&mut self, extra: &[(&str, &str)]) -> usize {
        let opts = self.options(extra);
        self.edges.push(EdgeProcess::spawn(&self.bin, opts).await);
        self.edges.len() - 1
    }
}

impl Herald<InProcessEdge> {
    /// Starts NATS and `edges` nodes inside the test process, each from
    /// `run(listener, config, shutdown)` (edge tests pass `herald_edge::run`)
    /// with the settings a process would get from the fixture and `env`
    /// (see [`EdgeOptions::args`]).
    pub async fn start_in_process<C, F, Fut, Err>(
        edges: usize,
        env: &[(&str, &str)],
        run: F,
    ) -> Herald<InProcessEdge>
    where
        C: clap::Parser,
        F: Fn(TcpListener, C, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), Err>> + Send + 'static,
        Err: fmt::Display,
    {
        let nats = NatsServer::start().await;
        let mut herald = Herald::around(nats, PathBuf::new(), env).await;
        for _ in 0..edges {
            let opts = herald.options(&[]);
            herald.edges.push(InProcessEdge::start(&opts, &run).await);
        }
        herald
    }
}

impl<E: EdgeNode> Herald<E> {
    /// The fixture around `nats`, without edge nodes yet.
    async fn around(nats: NatsServer, bin: PathBuf, env: &[(&str, &str)]) -> Herald<E> {
        let client = if nats.has_accounts() {
            nats.connect_as(&NatsUser::publisher()).await
        } else {
            nats.connect().await
        };
        Herald {
            nats,
            edges: Vec::new(),
            client,
            bin,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A node's options: public metrics, the fixture's env, then `extra`.
    fn options(&self, extra: &[(&str, &str)]) -> EdgeOptions {
        let mut opts =
            EdgeOptions::new(self.nats.url(), SECRET).with_env("HERALD_METRICS_PUBLIC", "true");
        for (k, v) in &self.env {
            opts = opts.with_env(k.clone(), v.clone());
        }
        for (k, v) in extra {
            opts = opts.with_env(*k, *v);
        }
        opts
    }

    /// A token builder with the fixture's secret, user `u1` of `org`.
    pub fn user(&self, org: &str) -> TokenBuilder {
        TokenBuilder::new(SECRET).sub("u1").org(org)
    }

    /// A plain user token of `org`.
    pub fn token(&self, org: &str) -> String {
        self.user(org).build()
    }

    /// The NATS client the fixture publishes with (the `publisher` user when
    /// the accounts config is loaded).
    pub fn nats_client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `body` to the event subject through JetStream and returns
    /// its sequence. `Nats-Msg-Id` is `<org>:<service>:<eventId>` when the
    /// body has an `eventId`.
    pub async fn publish(
        &self,
        org: &str,
        service: &str,
        property: Option<&str>,
        body: Value,
    ) -> u64 {
        let mut headers = HeaderMap::new();
        if let Some(id) = body["eventId"].as_str() {
            headers.insert("Nats-Msg-Id", format!("{org}:{service}:{id}").as_str());
        }
        let subject = format!("herald.events.{org}.{service}.{}", property.unwrap_or("_"));
        self.publish_raw(&subject, headers, body.to_string().into_bytes())
            .await
    }

    /// Publishes raw bytes with headers through JetStream; returns the sequence.
    pub async fn publish_raw(&self, subject: &str, headers: HeaderMap, payload: Vec<u8>) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        let ack = js
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
            .unwrap_or_else(|e| panic!("publish to {subject}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("ack for {subject}: {e}"));
        ack.sequence
    }

    /// `GET /v1/realtime/poll?<query>` on node `node`.
    pub async fn poll(&self, node: usize, token: &str, query: &str) -> Polled {
        let url = format!("{}/v1/realtime/poll?{query}", self.edges[node].base_url());
        let (status, body, headers) = get_json(&url, Some(token)).await;
        Polled {
            status,
            body,
            headers,
        }
    }

    /// Polls node `node` (passing `lastSeq` on from `from`) until `count`
    /// events arrived or a poll comes back empty; returns them and the cursor.
    /// Panics on a non-200 answer or a reset.
    pub async fn collect(
        &self,
        node: usize,
        token: &str,
        query: &str,
        from: u64,
        count: usize,
    ) -> (Vec<Value>, u64) {
        let mut events = Vec::new();
        let mut cursor = from;
        while events.len() < count {
            let r = self
                .poll(node, token, &format!("{query}&lastSeq={cursor}&timeout=5"))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.body["reset"].is_null(), "unexpected reset: {}", r.body);
            let got = r.events();
            cursor = r.last_seq();
            if got.is_empty() {
                break;
            }
            events.extend(got);
        }
        (events, cursor)
    }

    /// `GET /v2/realtime/metrics` on node `node` (the fixture makes it public).
    pub async fn metrics(&self, node: usize) -> Value {
        let url = format!("{}/v2/realtime/metrics", self.edges[node].base_url());
        get_json(&url, None).await.1
    }

    /// [`wait::wait_metric`] on node `node`: waits (at most `timeout`)
    /// until the metric at JSON pointer `pointer` equals `want`; returns
    /// the metrics document.
    pub async fn wait_metric(
        &self,
        node: usize,
        pointer: &str,
        want: impl Into<Value>,
        timeout: Duration,
    ) -> Value {
        wait::wait_metric(&self.edges[node].base_url(), pointer, want, timeout).await
    }

    /// [`wait::wait_metric_at_least`] on node `node`.
    pub async fn wait_metric_at_least(
        &self,
        node: usize,
        pointer: &str,
        min: u64,
        timeout: Duration,
    ) -> Value {
        wait::wait_metric_at_least(&self.edges[node].base_url(), pointer, min, timeout).await
    }

    /// [`wait::held_poll`] on node `node`: starts `GET
    /// /v1/realtime/poll?<query>` and returns its task once the node holds it.
    pub async fn held_poll(&self, node: usize, token: &str, query: &str) -> JoinHandle<Polled> {
        wait::held_poll(&self.edges[node].base_url(), token, query).await
    }
}
