//! Stream clients: one tokio task per WebSocket or SSE connection (the
//! long-poll share reuses [`crate::poller`]). Each client checks the order
//! of what it receives and logs every event with its publish-to-receive
//! latency. A client whose connection ends reconnects at once to the next
//! edge of the list, resuming from its cursor (`hello` with `lastSeq` and
//! `epoch`; `Last-Event-ID` and `epoch` for SSE), as a real client does
//! after a node failure. Every connection attempt is logged with its ack,
//! first event and end, which is what `resume` measures recovery from.
//! Like the SDK, every client sends `org=<org>` in its stream, SSE and poll
//! URLs, so a load balancer in front of the edges can hash on it.
//! WebSocket clients speak `herald.v1.json` (text frames) or
//! `herald.v1.msgpack` (binary MessagePack frames, theirs and the server's).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use herald_proto::sse::{SseDecoder, SseFrame};
use http::header::{ACCEPT, AUTHORIZATION, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::poller::{wall_ns, PollConfig, PollerLog, PollerPlan, Pollers};

/// Bound on opening a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the WebSocket upgrade or the SSE response head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the ack after `hello` (or the SSE `ack` event).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause after a failed attempt; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between failed attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Hold of the long-poll share's polls.
const POLL_HOLD: Duration = Duration::from_secs(25);
/// Client read buffer: small, as on the edge (tungstenite's default is
/// 128 KiB per connection); it grows for larger frames.
const READ_BUFFER: usize = 8 * 1024;
/// The subprotocol of JSON WebSocket clients.
const SUBPROTOCOL: &str = "herald.v1.json";
/// The subprotocol of MessagePack WebSocket clients.
const SUBPROTOCOL_MSGPACK: &str = "herald.v1.msgpack";
/// The answer to a `ping`.
const PONG: &str = r#"{"type":"pong"}"#;

/// How a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `GET /v2/realtime/stream`, `herald.v1.json`.
    WebSocket,
    /// `GET /v2/realtime/stream`, `herald.v1.msgpack`.
    WebSocketMsgpack,
    /// `GET /v2/realtime/sse`.
    Sse,
    /// `GET /v1/realtime/poll` chains.
    LongPoll,
}

impl Transport {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::WebSocketMsgpack => "WebSocket MessagePack",
            Transport::Sse => "SSE",
            Transport::LongPoll => "long-poll",
        }
    }
}

/// One client to start.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Org index.
    pub org: u32,
    /// Bearer token (its own user in that org).
    pub token: String,
    /// Transport.
    pub transport: Transport,
    /// Index of the edge it connects to first; reconnects go to the next ones.
    pub home: usize,
    /// Local address to bind to (spreads loopback source ports over 127.0.0.x).
    pub source: Option<IpAddr>,
}

/// What all clients share.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The edges, in failover order.
    pub edges: Vec<SocketAddr>,
    /// Services every client subscribes to.
    pub services: Vec<String>,
    /// Clients opening their first connection (up to the ack) at the same time.
    pub connect_concurrency: usize,
    /// Org ids by index ([`ClientPlan::org`]), sent as `org=`; must name the
    /// org of every plan (an edge refuses an empty `org=`).
    pub orgs: Vec<String>,
}

/// How a connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The benchmark stopped it.
    Stopped,
    /// The server sent a close frame with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame (e.g. the node died).
    Ended,
    /// Connecting, the handshake or the connection failed.
    Failed(String),
}

/// One connection attempt of one client.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Edge index.
    pub edge: usize,
    /// When the attempt started.
    pub started: Instant,
    /// When the ack arrived.
    pub acked: Option<Instant>,
    /// When the first events arrived on this connection.
    pub first_event: Option<Instant>,
    /// When it ended.
    pub ended: Option<Instant>,
    /// How it ended.
    pub end: End,
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Events in arrival order with latencies, order errors, resets, failures.
    pub events: PollerLog,
    /// Connection attempts, oldest first (a running one is added when it ends).
    pub attempts: Vec<Attempt>,
}

/// A client's result.
#[derive(Debug)]
pub struct ClientRecord {
    /// Its transport.
    pub transport: Transport,
    /// What it saw.
    pub log: ClientLog,
}

/// Live progress of one client.
struct Slot {
    org: u32,
    transport: Transport,
    /// Highest event sequence received.
    received_up_to: AtomicU64,
    /// Microseconds from the start of its first attempt to its first ack (0: none yet).
    first_ack_us: AtomicU64,
    log: Mutex<ClientLog>,
}

impl Slot {
    fn log(&self) -> MutexGuard<'_, ClientLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Ctx {
    edges: Vec<SocketAddr>,
    orgs: Vec<String>,
    hosts: Vec<HeaderValue>,
    services_csv: String,
    services_json: String,
    stop: CancellationToken,
    gate: Semaphore,
    /// Clients acked at least once.
    ready: AtomicUsize,
    /// Connections acked and open now.
    live: AtomicUsize,
    /// Attempts that ended before their ack.
    failures: AtomicU64,
    /// Acked connections that ended (other than by the benchmark).
    disconnects: AtomicU64,
    /// Why acked connections ended, by reason.
    ends: Mutex<BTreeMap<String, u64>>,
    slots: Box<[Slot]>,
}

impl Ctx {
    /// The id of org `i` (empty, which edges refuse, when the config names none).
    fn org_id(&self, i: u32) -> &str {
        self.orgs.get(i as usize).map_or("", String::as_str)
    }
}

/// The running clients.
pub struct Fleet {
    ctx: Arc<Ctx>,
    handles: Vec<JoinHandle<()>>,
    polls: Vec<(Pollers, Vec<usize>)>,
    /// For long-poll clients: (group, index in group).
    lp_index: Vec<Option<(usize, usize)>>,
}

impl Fleet {
    /// Starts one task per WebSocket and SSE client, and one poll chain per
    /// long-poll client (grouped by edge; they do not fail over).
    pub fn start(config: FleetConfig, plans: Vec<ClientPlan>) -> Self {
        let hosts = config
            .edges
            .iter()
            .map(|a| {
                HeaderValue::from_str(&a.to_string())
                    .unwrap_or(HeaderValue::from_static("localhost"))
            })
            .collect();
        let ctx = Arc::new(Ctx {
            edges: config.edges.clone(),
            orgs: config.orgs.clone(),
            hosts,
            services_csv: config.services.join(","),
            services_json: serde_json::to_string(&config.services).unwrap_or_else(|_| "[]".into()),
            stop: CancellationToken::new(),
            gate: Semaphore::new(config.connect_concurrency.max(1)),
            ready: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            ends: Mutex::new(BTreeMap::new()),
            slots: plans
                .iter()
                .map(|p| Slot {
                    org: p.org,
                    transport: p.transport,
                    received_up_to: AtomicU64::new(0),
                    first_ack_us: AtomicU64::new(0),
                    log: Mutex::new(ClientLog {
                        events: PollerLog {
                            org: p.org,
                            ..PollerLog::default()
                        },
                        attempts: Vec::new(),
                    }),
                })
                .collect(),
        });
        let mut handles = Vec::with_capacity(plans.len());
        let mut lp_index = vec![None; plans.len()];
        let mut groups: Vec<Vec<(usize, PollerPlan)>> = vec![Vec::new(); config.edges.len()];
        for (i, plan) in plans.into_iter().enumerate() {
            if plan.transport == Transport::LongPoll {
                groups[plan.home % config.edges.len()].push((
                    i,
                    PollerPlan {
                        org: plan.org,
                        org_id: ctx.org_id(plan.org).to_owned(),
                        token: plan.token,
                    },
                ));
            } else {
                handles.push(tokio::spawn(run_client(i, plan, Arc::clone(&ctx))));
            }
        }
        let mut polls = Vec::new();
        for (edge, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let g = polls.len();
            let mut members = Vec::with_capacity(group.len());
            let mut plans = Vec::with_capacity(group.len());
            for (j, (i, plan)) in group.into_iter().enumerate() {
                lp_index[i] = Some((g, j));
                members.push(i);
                plans.push(plan);
            }
            let poll_config = Arc::new(PollConfig {
                addr: config.edges[edge],
                host: ctx.hosts[edge].clone(),
                services: ctx.services_csv.clone(),
                hold: POLL_HOLD,
            });
            polls.push((
                Pollers::start(poll_config, plans, config.connect_concurrency),
                members,
            ));
        }
        Self {
            ctx,
            handles,
            polls,
            lp_index,
        }
    }

    /// Clients that have been acked (long-poll: chain opened) at least once.
    pub fn ready(&self) -> usize {
        self.ctx.ready.load(Relaxed)
            + self
                .polls
                .iter()
                .map(|(p, _)| p.shared.ready())
                .sum::<usize>()
    }

    /// Stream connections acked and open now.
    pub fn live(&self) -> usize {
        self.ctx.live.load(Relaxed)
    }

    /// Failed attempts and polls so far.
    pub fn failures(&self) -> u64 {
        self.ctx.failures.load(Relaxed)
            + self
                .polls
                .iter()
                .map(|(p, _)| p.shared.errors.load(Relaxed))
                .sum::<u64>()
    }

    /// Acked stream connections that ended so far.
    pub fn disconnects(&self) -> u64 {
        self.ctx.disconnects.load(Relaxed)
    }

    /// Why acked connections ended so far: `close <code>`, `ended` (no
    /// close frame) or `failed: <error>`, with counts.
    pub fn end_reasons(&self) -> BTreeMap<String, u64> {
        self.ctx
            .ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Clients per transport: (WebSocket, SSE, long-poll).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.ctx
            .slots
            .iter()
            .fold((0, 0, 0), |(w, s, l), slot| match slot.transport {
                Transport::WebSocket | Transport::WebSocketMsgpack => (w + 1, s, l),
                Transport::Sse => (w, s + 1, l),
                Transport::LongPoll => (w, s, l + 1),
            })
    }

    /// Clients that have not yet received `last(org)`.
    pub fn behind(&self, last: impl Fn(u32) -> u64) -> usize {
        self.ctx
            .slots
            .iter()
            .enumerate()
            .filter(|(i, slot)| {
                let got = match self.lp_index[*i] {
                    Some((g, j)) => self.polls[g].0.shared.received_up_to[j].load(Relaxed),
                    None => slot.received_up_to.load(Relaxed),
                };
                got < last(slot.org)
            })
            .count()
    }

    /// Time from the start of each client's successful opening attempt
    /// (TCP connect, upgrade or SSE request, `hello`) to its ack, in ms
    /// (WebSocket and SSE clients that were acked).
    pub fn connect_times_ms(&self) -> Vec<f64> {
        self.ctx
            .slots
            .iter()
            .map(|s| s.first_ack_us.load(Relaxed))
            .filter(|&us| us > 0)
            .map(|us| us as f64 / 1000.0)
            .collect()
    }

    /// Takes the events logged so far by every WebSocket and SSE client
    /// (long-poll clients give an empty log), leaving empty logs behind.
    pub fn take_events(&self) -> Vec<PollerLog> {
        self.ctx
            .slots
            .iter()
            .map(|slot| {
                let fresh = PollerLog {
                    org: slot.org,
                    ..PollerLog::default()
                };
                std::mem::replace(&mut slot.log().events, fresh)
            })
            .collect()
    }

    /// Stops every client and returns what each saw, by client index.
    pub async fn stop(self) -> Vec<ClientRecord> {
        self.ctx.stop.cancel();
        for h in self.handles {
            let _ = h.await;
        }
        let mut lp_logs: Vec<Vec<Option<PollerLog>>> = Vec::with_capacity(self.polls.len());
        for (pollers, _) in self.polls {
            lp_logs.push(pollers.stop().await.into_iter().map(Some).collect());
        }
        self.ctx
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let mut log = std::mem::take(&mut *slot.log());
                if let Some((g, j)) = self.lp_index[i] {
                    log.events = lp_logs[g][j].take().unwrap_or_default();
                }
                ClientRecord {
                    transport: slot.transport,
                    log,
                }
            })
            .collect()
    }
}

/// A client's position, kept across its connections.
struct Position<'a> {
    /// Quiet cursor from ack, ping, reset or SSE id.
    cursor: Option<u64>,
    /// Epoch from the last ack.
    epoch: Option<String>,
    /// Highest event sequence received.
    max_seq: u64,
    /// Held until the first ack, to bound concurrent opening.
    permit: Option<SemaphorePermit<'a>>,
    first_started: Instant,
    /// When the current connection last received a ping (or its ack).
    last_ping: Option<Instant>,
}

impl Position<'_> {
    /// Where to resume: the cursor or the last event, whichever is later.
    fn resume_point(&self) -> Option<u64> {
        match (self.cursor, self.max_seq) {
            (None, 0) => None,
            (c, m) => Some(c.unwrap_or(0).max(m)),
        }
    }

    fn hello(&self, services_json: &str) -> String {
        let mut s = format!(r#"{{"type":"hello","version":1,"services":{services_json}"#);
        if let Some(seq) = self.resume_point() {
            s.push_str(&format!(r#","lastSeq":{seq}"#));
        }
        if let Some(e) = &self.epoch {
            s.push_str(r#","epoch":"#);
            s.push_str(&serde_json::to_string(e).unwrap_or_else(|_| "\"\"".into()));
        }
        s.push('}');
        s
    }

    fn acked(
        &mut self,
        ctx: &Ctx,
        slot: &Slot,
        attempt: &mut Attempt,
        seq: Option<u64>,
        epoch: Option<String>,
    ) {
        let now = Instant::now();
        attempt.acked = Some(now);
        self.last_ping = Some(now);
        if self.cursor.is_none() && self.max_seq == 0 {
            self.cursor = seq;
        }
        if epoch.is_some() {
            self.epoch = epoch;
        }
        ctx.live.fetch_add(1, Relaxed);
        self.permit = None;
        if slot.first_ack_us.load(Relaxed) == 0 {
            let us = now.duration_since(self.first_started).as_micros().max(1) as u64;
            slot.first_ack_us.store(us, Relaxed);
            ctx.ready.fetch_add(1, Relaxed);
        }
    }

    fn quiet(&mut self, seq: u64) {
        self.cursor = Some(self.cursor.map_or(seq, |c| c.max(seq)));
    }

    fn events(&mut self, slot: &Slot, attempt: &mut Attempt, at_ns: u64, events: &[Stamped]) {
        if events.is_empty() {
            return;
        }
        if attempt.first_event.is_none() {
            attempt.first_event = Some(Instant::now());
        }
        let mut log = slot.log();
        for e in events {
            record(&mut log.events, e, at_ns, &mut self.max_seq);
        }
        drop(log);
        slot.received_up_to.store(self.max_seq, Relaxed);
    }
}

fn record(log: &mut PollerLog, e: &Stamped, at_ns: u64, max_seq: &mut u64) {
    if e.seq <= *max_seq {
        log.out_of_order += 1;
    } else {
        *max_seq = e.seq;
    }
    log.seqs.push(e.seq);
    if let Some(t) = e.payload.as_ref().map(|p| p.t).filter(|&t| t > 0) {
        let us = at_ns.saturating_sub(t) / 1_000;
        log.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        log.published_ns.push(t);
    }
}

/// A server frame (WebSocket) or SSE `ack`/`reset` data, as far as the
/// load generator reads it.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", default)]
    kind: &'a str,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    events: Vec<Stamped>,
    #[serde(default)]
    epoch: Option<String>,
}

/// An event: its sequence and the publish time stamp in its payload.
#[derive(Deserialize)]
struct Stamped {
    seq: u64,
    #[serde(default)]
    payload: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    /// Publish wall-clock time, ns since the Unix epoch.
    #[serde(default)]
    t: u64,
}

async fn run_client(index: usize, plan: ClientPlan, ctx: Arc<Ctx>) {
    let slot = &ctx.slots[index];
    let mut pos = Position {
        cursor: None,
        epoch: None,
        max_seq: 0,
        permit: None,
        first_started: Instant::now(),
        last_ping: None,
    };
    let mut edge = plan.home % ctx.edges.len();
    let mut failed_in_row = 0u32;
    loop {
        if ctx.stop.is_cancelled() {
            break;
        }
        // Until its first ack a client takes a turn at the gate, so that
        // at most `connect_concurrency` clients open at once.
        if slot.first_ack_us.load(Relaxed) == 0 && pos.permit.is_none() {
            tokio::select! {
                _ = ctx.stop.cancelled() => break,
                p = ctx.gate.acquire() => match p {
                    Ok(p) => {
                        pos.permit = Some(p);
                        pos.first_started = Instant::now();
                    }
                    Err(_) => break,
                },
            }
        }
        let mut attempt = Attempt {
            edge,
            started: Instant::now(),
            acked: None,
            first_event: None,
            ended: None,
            end: End::Stopped,
        };
        let end = match plan.transport {
            Transport::Sse => sse_session(&ctx, slot, &plan, edge, &mut pos, &mut attempt).await,
            _ => ws_session(&ctx, slot, &plan, edge, &mut pos, &mut attempt).await,
        };
        attempt.ended = Some(Instant::now());
        attempt.end = end.clone();
        let acked = attempt.acked.is_some();
        if acked {
            ctx.live.fetch_sub(1, Relaxed);
        }
        {
            let mut log = slot.log();
            if let End::Failed(e) = &end {
                log.events.errors += 1;
                log.events.first_error.get_or_insert_with(|| e.clone());
            }
            if let End::Closed(code, why) = &end {
                log.events
                    .first_error
                    .get_or_insert_with(|| format!("closed with {code} {why}"));
            }
            log.events.connects += 1;
            log.attempts.push(attempt);
        }
        if end == End::Stopped {
            break;
        }
        // Whatever ended the connection, try the next edge of the list.
        edge = (edge + 1) % ctx.edges.len();
        if acked {
            ctx.disconnects.fetch_add(1, Relaxed);
            let reason = match &end {
                // For a 4000, how long before it the last ping (or the
                // ack) arrived, in 5 s steps: tells a server that stopped
                // pinging from one that stopped reading.
                End::Closed(4000, why) => format!(
                    "close 4000 \"{why}\", last ping {}–{} s before",
                    pos.last_ping.map_or(0, |t| t.elapsed().as_secs() / 5 * 5),
                    pos.last_ping
                        .map_or(0, |t| t.elapsed().as_secs() / 5 * 5 + 5)
                ),
                End::Closed(code, why) => format!("close {code} \"{why}\""),
                End::Ended => "ended".to_owned(),
                End::Failed(e) => format!("failed: {}", e.chars().take(60).collect::<String>()),
                End::Stopped => "stopped".to_owned(),
            };
            *ctx.ends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(reason)
                .or_default() += 1;
            failed_in_row = 0;
            continue;
        }
        ctx.failures.fetch_add(1, Relaxed);
        pos.permit = None;
        failed_in_row += 1;
        let pause = backoff(failed_in_row);
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Pause after the n-th failure in a row: doubling from 100 ms, at most
/// 2 s, with ±50 % jitter.
fn backoff(n: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1 << n.saturating_sub(1).min(8))
        .min(BACKOFF_MAX);
    base.mul_f64(0.5 + rand::random::<f64>())
}

async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let connect = async {
        match source {
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => TcpSocket::new_v4(),
                    IpAddr::V6(_) => TcpSocket::new_v6(),
                }?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await
            }
            None => TcpStream::connect(addr).await,
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

async fn ws_session(
    ctx: &Ctx,
    slot: &Slot,
    plan: &ClientPlan,
    edge: usize,
    pos: &mut Position<'_>,
    attempt: &mut Attempt,
) -> End {
    let addr = ctx.edges[edge];
    let stream = match tcp_connect(addr, plan.source).await {
        Ok(s) => s,
        Err(e) => return End::Failed(e),
    };
    let url = format!(
        "ws://{addr}/v2/realtime/stream?org={}",
        ctx.org_id(plan.org)
    );
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return End::Failed(format!("request: {e}")),
    };
    let headers = request.headers_mut();
    match HeaderValue::from_str(&format!("Bearer {}", plan.token)) {
        Ok(v) => headers.insert(AUTHORIZATION, v),
        Err(_) => return End::Failed("token is not a header value".into()),
    };
    let msgpack = plan.transport == Transport::WebSocketMsgpack;
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(if msgpack {
            SUBPROTOCOL_MSGPACK
        } else {
            SUBPROTOCOL
        }),
    );
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()));
    let mut ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => return End::Failed("upgrade timed out".into()),
        Ok(Err(e)) => return End::Failed(format!("upgrade: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    let encode = |json: &str| {
        if msgpack {
            Message::binary(json_to_msgpack(json))
        } else {
            Message::text(json)
        }
    };
    if let Err(e) = ws.send(encode(&pos.hello(&ctx.services_json))).await {
        return End::Failed(format!("send hello: {e}"));
    }
    let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
    let mut acked = false;
    loop {
        let limit = if acked { far_future() } else { deadline };
        let next = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => return End::Stopped,
            n = tokio::time::timeout_at(limit, ws.next()) => match n {
                Ok(n) => n,
                Err(_) => return End::Failed("no ack within 10 s".into()),
            },
        };
        let at = wall_ns();
        let message = match next {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
            Some(Ok(Message::Close(c))) => {
                return match c {
                    Some(f) => End::Closed(u16::from(f.code), f.reason.to_string()),
                    None => End::Closed(1005, String::new()),
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return End::Failed(e.to_string()),
            None => return End::Ended,
        };
        // Each subprotocol has its frame type; a frame of the other is an error.
        let parsed: Result<Frame, String> = match (&message, msgpack) {
            (Message::Text(t), false) => {
                serde_json::from_str(t.as_str()).map_err(|e| e.to_string())
            }
            (Message::Binary(b), true) => rmp_serde::from_slice(b).map_err(|e| e.to_string()),
            _ => Err("a frame of the other subprotocol".to_owned()),
        };
        let frame: Frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                let mut log = slot.log();
                log.events.errors += 1;
                log.events
                    .first_error
                    .get_or_insert_with(|| format!("bad frame: {e}"));
                continue;
            }
        };
        match frame.kind {
            "ack" if !acked => {
                acked = true;
                pos.acked(ctx, slot, attempt, frame.seq, frame.epoch);
            }
            _ if !acked => return End::Failed(format!("expected ack, got {}", frame.kind)),
            "events" => pos.events(slot, attempt, at, &frame.events),
            "ping" => {
                pos.last_ping = Some(Instant::now());
                if let Some(seq) = frame.seq {
                    pos.quiet(seq);
                }
                if let Err(e) = ws.send(encode(PONG)).await {
                    return End::Failed(format!("send pong: {e}"));
                }
            }
            "reset" => {
                slot.log().events.resets += 1;
                pos.cursor = frame.seq;
            }
            _ => {}
        }
    }
}

/// The MessagePack form of a client message written as JSON (`hello`,
/// `pong`): the same map, field for field.
fn json_to_msgpack(json: &str) -> Vec<u8> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| rmp_serde::to_vec_named(&v).ok())
        .unwrap_or_default()
}

/// A deadline that never comes.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Aborts the HTTP/1 connection task when the session ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sse_session(
    ctx: &Ctx,
    slot: &Slot,
    plan: &ClientPlan,
    edge: usize,
    pos: &mut Position<'_>,
    attempt: &mut Attempt,
) -> End {
    let stream = match tcp_connect(ctx.edges[edge], plan.source).await {
        Ok(s) => s,
        Err(e) => return End::Failed(e),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        TokioIo::new(stream),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return End::Failed(format!("handshake: {e}")),
    };
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut uri = format!(
        "/v2/realtime/sse?org={}&services={}",
        ctx.org_id(plan.org),
        ctx.services_csv
    );
    if let Some(e) = &pos.epoch {
        uri.push_str("&epoch=");
        uri.push_str(e);
    }
    let mut request = Request::get(uri)
        .header(HOST, ctx.hosts[edge].clone())
        .header(AUTHORIZATION, format!("Bearer {}", plan.token))
        .header(ACCEPT, "text/event-stream");
    if let Some(seq) = pos.resume_point() {
        request = request.header("Last-Event-ID", seq.to_string());
    }
    let request = match request.body(Empty::new()) {
        Ok(r) => r,
        Err(e) => return End::Failed(format!("request: {e}")),
    };
    let response = match tokio::time::timeout(HANDSHAKE_TIMEOUT, sender.send_request(request)).await
    {
        Err(_) => return End::Failed("no SSE response within 10 s".into()),
        Ok(Err(e)) => return End::Failed(format!("request: {e}")),
        Ok(Ok(r)) => r,
    };
    if response.status() != StatusCode::OK {
        return End::Failed(format!("HTTP {}", response.status()));
    }
    let mut body = response.into_body();
    let mut decoder = SseDecoder::new();
    let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
    loop {
        let limit = if attempt.acked.is_some() {
            far_future()
        } else {
            deadline
        };
        let next = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => return End::Stopped,
            n = tokio::time::timeout_at(limit, body.frame()) => match n {
                Ok(n) => n,
                Err(_) => return End::Failed("no ack within 10 s".into()),
            },
        };
        let at = wall_ns();
        let data = match next {
            None => return End::Ended,
            Some(Err(e)) => return End::Failed(e.to_string()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        decoder.push(&data);
        while let Some(frame) = decoder.next_frame() {
            sse_message(ctx, slot, pos, attempt, &frame, at);
        }
    }
}

/// Handles one SSE frame.
fn sse_message(
    ctx: &Ctx,
    slot: &Slot,
    pos: &mut Position<'_>,
    attempt: &mut Attempt,
    frame: &SseFrame,
    at_ns: u64,
) {
    let id = frame.id.as_deref().and_then(|i| i.parse::<u64>().ok());
    let data = frame.data.as_str();
    match frame.event.as_deref() {
        Some("ack") => {
            if attempt.acked.is_none() {
                let f: Option<Frame> = serde_json::from_str(data).ok();
                let (seq, epoch) = f.map_or((None, None), |f| (f.seq, f.epoch));
                pos.acked(ctx, slot, attempt, seq, epoch);
            }
        }
        Some("reset") => {
            slot.log().events.resets += 1;
            pos.cursor = id;
        }
        Some("updated") => {}
        Some(_service) => match serde_json::from_str::<Stamped>(data) {
            Ok(e) => pos.events(slot, attempt, at_ns, std::slice::from_ref(&e)),
            Err(e) => {
                let mut log = slot.log();
                log.events.errors += 1;
                log.events
                    .first_error
                    .get_or_insert_with(|| format!("bad SSE event: {e}"));
            }
        },
        None => {
            if let Some(seq) = id {
                pos.quiet(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> Position<'static> {
        Position {
            cursor: None,
            epoch: None,
            max_seq: 0,
            permit: None,
            first_started: Instant::now(),
            last_ping: None,
        }
    }

    #[test]
    fn hello_carries_the_resume_point() {
        let mut p = position();
        assert_eq!(
            p.hello(r#"["a"]"#),
            r#"{"type":"hello","version":1,"services":["a"]}"#
        );
        p.cursor = Some(7);
        p.max_seq = 9;
        p.epoch = Some("123".into());
        assert_eq!(
            p.hello(r#"["a"]"#),
            r#"{"type":"hello","version":1,"services":["a"],"lastSeq":9,"epoch":"123"}"#
        );
        p.quiet(12);
        assert_eq!(p.resume_point(), Some(12));
    }

    #[test]
    fn frames_parse() {
        let f: Frame = serde_json::from_str(
            r#"{"type":"events","service":"s","events":[{"seq":5,"orgId":"o","payload":{"t":1000,"i":3}},{"seq":6,"payload":null}],"seq":6}"#,
        )
        .expect("parses");
        assert_eq!((f.kind, f.events.len(), f.seq), ("events", 2, Some(6)));
        let mut log = PollerLog::default();
        let mut max = 5;
        for e in &f.events {
            record(&mut log, e, 3_000_000, &mut max);
        }
        assert_eq!(
            (
                log.seqs.clone(),
                log.latencies_us.clone(),
                log.out_of_order,
                max
            ),
            (vec![5, 6], vec![2999], 1, 6)
        );
        let ack: Frame = serde_json::from_str(
            r#"{"type":"ack","connectionId":"n-1","nodeId":"n","epoch":"99","seq":41,"expiresAt":1}"#,
        )
        .expect("parses");
        assert_eq!(
            (ack.kind, ack.seq, ack.epoch.as_deref()),
            ("ack", Some(41), Some("99"))
        );
        assert!(backoff(1) <= BACKOFF_MIN.mul_f64(1.5) && backoff(30) <= BACKOFF_MAX.mul_f64(1.5));
    }

    #[test]
    fn msgpack_frames_parse_like_json_ones() {
        let json = r#"{"type":"events","service":"s","events":[{"seq":5,"payload":{"t":1000,"i":3}}],"seq":5,"epoch":"E"}"#;
        let bytes = json_to_msgpack(json);
        assert!(
            !bytes.is_empty() && bytes[0] & 0xf0 == 0x80,
            "a MessagePack map"
        );
        let f: Frame = rmp_serde::from_slice(&bytes).expect("parses");
        assert_eq!(
            (f.kind, f.seq, f.events.len(), f.epoch.as_deref()),
            ("events", Some(5), 1, Some("E"))
        );
        assert_eq!(f.events[0].payload.as_ref().map(|p| p.t), Some(1000));
    }
}
