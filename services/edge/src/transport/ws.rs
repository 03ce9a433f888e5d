//! `GET /v2/realtime/stream`: the WebSocket stream.
//!
//! A connection reads its org's events by cursor (the same [`Reader`] as
//! long-poll), so replay after `lastSeq` and live delivery are one sequence
//! with no gap or duplicate at the switch-over. One frame is written at a
//! time: while a write is in flight, new events wait in the org buffer and go
//! out together in the next frames (one service per frame, at most
//! [`BATCH_EVENTS`] events and `HERALD_MAX_BATCH_BYTES` bytes, a larger event
//! alone), so an idle connection gets an event at once and a busy one batches
//! by itself. A read's events wait in a backlog (shared with the org buffer)
//! and are framed one frame at a time; control frames (pings, `updated`, …)
//! queue in a bounded queue, and a client that lets it fill is closed with
//! 4008. A connection that falls behind the buffer while its writes are stuck
//! is quarantined (low-tier services dropped, and the client told so by a
//! `dropped` frame before any cursor passes them), and closed with 4008 if it
//! stays behind.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use herald_proto::stream::{
    ClientMessage, Filters, ServerMessage, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK,
};
use herald_proto::ResetReason;
use http::{HeaderMap, Method};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::auth::{check_origin, find_token, Principal};
use crate::delivery::filter::Filter;
use crate::delivery::reader::{Reader, Step};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::{Control, Registration, Transport};
use crate::ops::switches::CLOSE_DISABLED;
use crate::org::decode::{now_ms, StoredEvent};
use crate::transport::poll::{form_pairs, SUBSCRIBE_WAIT};

/// Path of the stream endpoint.
pub const STREAM_PATH: &str = "/v2/realtime/stream";
/// Most events in one `events` frame.
pub const BATCH_EVENTS: usize = 100;
/// Initial read buffer per connection; it grows for larger client frames.
/// (tungstenite's default of 128 KiB per connection is what makes idle
/// connections expensive.)
const READ_BUFFER: usize = 2 * 1024;
/// Most a delivered event's frame can grow over the body it came from: a
/// MessagePack control character becomes `\u00XX` in JSON.
const EVENT_EXPANSION: usize = 6;
/// Room for an event's envelope fields and a frame's own fields.
const FRAME_SLACK: usize = 64 * 1024;
/// More than an `events` frame's own fields take besides the service name
/// (69 bytes in JSON, 48 in MessagePack), so a frame cut by the sum of its
/// events stays under the cap.
const FRAME_OVERHEAD: usize = 96;
/// Longest close reason a close frame can carry (125 bytes less the code).
const MAX_CLOSE_REASON: usize = 123;
/// How long a closing connection gets to flush what it was writing and the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause before reading the stream again after a failed history read.
const RETRY: Duration = Duration::from_secs(1);
/// How often a blocked write is checked again once it passed the slow-client timeout.
const SLOW_RECHECK: Duration = Duration::from_millis(500);

/// Close codes of the contract.
pub mod close {
    /// Bad handshake or message.
    pub const BAD_MESSAGE: u16 = 4000;
    /// Unauthenticated or expired.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// Forbidden.
    pub const FORBIDDEN: u16 = 4003;
    /// Slow consumer.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Too many connections.
    pub const TOO_MANY: u16 = 4029;
    /// Node draining: reconnect elsewhere and resume.
    pub const DRAINING: u16 = 1012;
    /// The event stream cannot be reached right now.
    pub const TRY_AGAIN: u16 = 1013;
}

/// Frame encoding chosen by subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    MessagePack,
}

/// Why a connection is closed, as the client will see it.
struct Closing {
    code: u16,
    reason: String,
}

impl Closing {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    fn from_api(e: &ApiError) -> Self {
        let code = match e {
            ApiError::Unauthorized(_) => close::UNAUTHENTICATED,
            ApiError::Forbidden(_) => close::FORBIDDEN,
            ApiError::Unavailable(_) => close::TRY_AGAIN,
            _ => close::BAD_MESSAGE,
        };
        Self::new(code, e.to_string())
    }
}

/// `GET /v2/realtime/stream`.
pub async fn stream(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = ws
        .protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(max_write_buffer(&node.config))
        .max_message_size(node.config.max_frame_bytes)
        .max_frame_size(node.config.max_frame_bytes);
    let codec = match ws.selected_protocol() {
        Some(p) if p == SUBPROTOCOL_MSGPACK => Codec::MessagePack,
        _ => Codec::Json,
    };
    // Refusals happen after the upgrade so that browsers, which cannot read
    // the status of a failed upgrade, see the close code.
    let admitted = admit(&node, &headers, query.as_deref());
    ws.on_upgrade(move |socket| async move {
        match admitted {
            Ok(admission) => Connection::run(node, socket, codec, admission).await,
            Err(closing) => {
                let (sink, incoming) = socket.split();
                Outbound::new(sink, codec, &node.config)
                    .close(incoming, closing)
                    .await;
            }
        }
    })
}

/// Bytes tungstenite may hold unsent per connection. Frames are written one
/// at a time, so this is one frame: a batch, or a lone event as large as
/// the largest body ingest accepts can become.
fn max_write_buffer(config: &crate::config::Config) -> usize {
    config
        .max_batch_bytes
        .max(config.max_event_bytes.saturating_mul(EVENT_EXPANSION))
        .saturating_add(FRAME_SLACK)
}

/// Who a connection belongs to, as far as the upgrade request tells.
enum Admission {
    /// The upgrade carried a valid token: authenticated and registered.
    Authenticated(Box<(Principal, Registration)>),
    /// The upgrade carried no token: it must come in `hello`.
    AtHello,
}

/// Checks the upgrade request: node state, the cross-site rule for cookies
/// and, when the request carries a token (header, cookie or query), the
/// token and the connection limits.
fn admit(node: &Arc<Node>, headers: &HeaderMap, query: Option<&str>) -> Result<Admission, Closing> {
    if node.draining.is_cancelled() {
        return Err(Closing::new(
            close::DRAINING,
            "node draining; reconnect elsewhere",
        ));
    }
    if node.switches.disabled() {
        return Err(Closing::new(CLOSE_DISABLED, "realtime disabled"));
    }
    let query_token = node
        .config
        .allow_query_token
        .then(|| {
            form_pairs(query.unwrap_or(""))
                .into_iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v)
        })
        .flatten();
    check_origin(&node.config.cors_origins, headers, &Method::GET, true)
        .map_err(|e| Closing::from_api(&e))?;
    let token = find_token(headers, query_token.as_deref()).map_err(|e| Closing::from_api(&e))?;
    let Some(token) = token else {
        // Until its hello, such a socket counts against no limit: refuse it
        // at once when the node is already full.
        let (ws, sse) = node.connections.counts();
        if (ws + sse) as usize >= node.config.max_connections {
            return Err(Closing::new(
                close::TOO_MANY,
                "node connection limit reached",
            ));
        }
        return Ok(Admission::AtHello);
    };
    let principal = authenticate(node, token)?;
    let registration = register(node, &principal)?;
    Ok(Admission::Authenticated(Box::new((
        principal,
        registration,
    ))))
}

fn authenticate(node: &Node, token: &str) -> Result<Principal, Closing> {
    node.verifier
        .verify(token)
        .and_then(Principal::must_subscribe)
        .map_err(|e| Closing::from_api(&e))
}

fn register(node: &Node, principal: &Principal) -> Result<Registration, Closing> {
    node.connections
        .register(
            &principal.org,
            &principal.user,
            Transport::WebSocket,
            node.config.max_connections,
            node.config.max_connections_per_user,
        )
        .map_err(|e| Closing::new(close::TOO_MANY, e.message()))
}

type Sink = SplitSink<WebSocket, Message>;
type Written = Pin<Box<dyn Future<Output = (Sink, Result<(), axum::Error>)> + Send>>;

/// The sending half: one frame in flight at a time, control frames queued
/// behind it. Events frames are not queued: they are framed from the backlog
/// only when nothing else waits, so the queue holds only what timers and the
/// client's own messages produced, and it is bounded in frames and bytes.
struct Outbound {
    sink: Option<Sink>,
    in_flight: Option<Written>,
    since: Instant,
    queue: VecDeque<Message>,
    queued_bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    codec: Codec,
}

impl Outbound {
    fn new(sink: Sink, codec: Codec, config: &crate::config::Config) -> Self {
        Self {
            sink: Some(sink),
            in_flight: None,
            since: Instant::now(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            max_frames: config.ws_outbound_frames,
            max_bytes: config.ws_outbound_bytes,
            codec,
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    fn idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    /// Queues a control frame; a client that does not read while it keeps
    /// causing them fills the queue and is closed as a slow consumer.
    fn push(&mut self, msg: &ServerMessage) -> Result<(), Closing> {
        let frame = encode(self.codec, msg);
        let bytes = frame_len(&frame);
        if self.queue.len() >= self.max_frames || self.queued_bytes + bytes > self.max_bytes {
            return Err(Closing::new(
                close::SLOW_CONSUMER,
                "slow consumer: outbound queue full",
            ));
        }
        self.queued_bytes += bytes;
        self.queue.push_back(frame);
        Ok(())
    }

    /// Starts writing `frame` (an events or `dropped` frame); only called
    /// when [`idle`](Self::idle), so it never waits behind anything.
    fn send_now(&mut self, frame: Message) {
        debug_assert!(self.idle());
        self.queued_bytes += frame_len(&frame);
        self.queue.push_back(frame);
        self.start_next();
    }

    /// Starts writing the next queued frame when nothing is in flight.
    fn start_next(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if self.queue.is_empty() || self.sink.is_none() {
            return;
        }
        let (Some(msg), Some(mut sink)) = (self.queue.pop_front(), self.sink.take()) else {
            return;
        };
        self.queued_bytes = self.queued_bytes.saturating_sub(frame_len(&msg));
        self.since = Instant::now();
        self.in_flight = Some(Box::pin(async move {
            let r = sink.send(msg).await;
            (sink, r)
        }));
    }

    /// Completes the write in flight (cancel-safe: the write stays in flight
    /// when this future is dropped).
    async fn written(&mut self) -> Result<(), axum::Error> {
        let Some(fut) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let (sink, result) = fut.await;
        self.in_flight = None;
        self.sink = Some(sink);
        result
    }

    /// Flushes what is in flight (within the grace period), sends the close
    /// frame and waits briefly for the client's answer.
    async fn close(mut self, mut incoming: SplitStream<WebSocket>, closing: Closing) {
        if self.busy()
            && tokio::time::timeout(CLOSE_GRACE, self.written())
                .await
                .is_err()
        {
            return;
        }
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        let frame = Message::Close(Some(CloseFrame {
            code: closing.code,
            reason: Utf8Bytes::from(close_reason(closing.reason)),
        }));
        if tokio::time::timeout(CLOSE_GRACE, sink.send(frame))
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(msg)) = incoming.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// `reason` cut to what a close frame can carry, at a character boundary
/// (reasons can echo client input, such as a parse error).
fn close_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut cut = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

fn encode(codec: Codec, msg: &impl Serialize) -> Message {
    match codec {
        Codec::Json => Message::Text(serde_json::to_string(msg).unwrap_or_default().into()),
        Codec::MessagePack => {
            Message::Binary(rmp_serde::to_vec_named(msg).unwrap_or_default().into())
        }
    }
}

/// An `events` frame borrowing the buffered events (JSON).
#[derive(Serialize)]
struct JsonEvents<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    service: &'a str,
    events: Vec<&'a RawValue>,
    seq: u64,
}

/// Events read but not yet framed, in `seq` order, and the `dropped` frame
/// due among them. The events are shared with the org buffer (or come from
/// one bounded history read), so holding them costs little; framing them one
/// frame at a time keeps each connection's encoded bytes to one frame.
#[derive(Default)]
struct Backlog {
    events: VecDeque<Arc<StoredEvent>>,
    /// Due before the first event past its `from_seq`.
    dropped: Option<Dropped>,
}

/// What a quarantine dropped in one read.
struct Dropped {
    services: Vec<String>,
    from_seq: u64,
    to_seq: u64,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dropped.is_none()
    }

    /// Seq of the first thing the client has not been sent yet.
    fn first_unsent(&self) -> Option<u64> {
        let event = self.events.front().map(|e| e.seq());
        let dropped = self.dropped.as_ref().map(|d| d.from_seq);
        event.into_iter().chain(dropped).min()
    }

    /// The next frame, in `seq` order: the `dropped` frame once no event
    /// before it is left, else the events of one service up to `max_bytes`
    /// (a larger event alone), stopping at the dropped range.
    fn next_frame(&mut self, codec: Codec, max_bytes: usize) -> Option<Message> {
        let stop = match &self.dropped {
            Some(d) if self.events.front().is_none_or(|e| e.seq() > d.from_seq) => {
                let d = self.dropped.take()?;
                return Some(encode(
                    codec,
                    &ServerMessage::Dropped {
                        services: d.services,
                        from_seq: d.from_seq,
                        to_seq: d.to_seq,
                    },
                ));
            }
            Some(d) => d.from_seq,
            None => u64::MAX,
        };
        let service = self.events.front()?.event.service.clone();
        let mut size = FRAME_OVERHEAD + service.len();
        let mut n = 0;
        for e in &self.events {
            if e.event.service != service || e.seq() > stop || n == BATCH_EVENTS {
                break;
            }
            let len = event_len(codec, e) + 1;
            if n > 0 && size + len > max_bytes {
                break;
            }
            size += len;
            n += 1;
        }
        let run: Vec<Arc<StoredEvent>> = self.events.drain(..n).collect();
        Some(events_frame(codec, &service, &run))
    }
}

/// Bytes `e` takes in a frame of `codec`.
fn event_len(codec: Codec, e: &StoredEvent) -> usize {
    match codec {
        Codec::Json => e.json.get().len(),
        Codec::MessagePack => e.msgpack().len(),
    }
}

/// A MessagePack `events` frame: the map `{type, service, events, seq}`
/// written around each event's shared MessagePack bytes.
fn packed_events(service: &str, run: &[Arc<StoredEvent>], seq: u64) -> Vec<u8> {
    use rmp::encode;
    let size: usize = run.iter().map(|e| e.msgpack().len()).sum();
    let mut out = Vec::with_capacity(size + FRAME_OVERHEAD + service.len());
    // Writes into a Vec cannot fail.
    let _ = encode::write_map_len(&mut out, 4);
    let _ = encode::write_str(&mut out, "type");
    let _ = encode::write_str(&mut out, "events");
    let _ = encode::write_str(&mut out, "service");
    let _ = encode::write_str(&mut out, service);
    let _ = encode::write_str(&mut out, "events");
    let _ = encode::write_array_len(&mut out, u32::try_from(run.len()).unwrap_or(u32::MAX));
    for e in run {
        out.extend_from_slice(e.msgpack());
    }
    let _ = encode::write_str(&mut out, "seq");
    let _ = encode::write_uint(&mut out, seq);
    out
}

/// An `events` frame of one service's run of events.
fn events_frame(codec: Codec, service: &str, run: &[Arc<StoredEvent>]) -> Message {
    let seq = run.last().map_or(0, |e| e.seq());
    match codec {
        Codec::Json => encode(
            codec,
            &JsonEvents {
                kind: "events",
                service,
                events: run.iter().map(|e| &*e.json).collect(),
                seq,
            },
        ),
        Codec::MessagePack => Message::Binary(packed_events(service, run, seq).into()),
    }
}

/// What a client frame turned out to be.
enum Incoming {
    Message(ClientMessage),
    Close,
    Ignore,
    Bad(String),
}

fn decode(msg: Message) -> Incoming {
    let parsed = match msg {
        Message::Text(t) => {
            serde_json::from_str::<ClientMessage>(t.as_str()).map_err(|e| e.to_string())
        }
        Message::Binary(b) => {
            herald_proto::msgpack::from_slice::<ClientMessage>(&b).map_err(|e| e.to_string())
        }
        Message::Close(_) => return Incoming::Close,
        Message::Ping(_) | Message::Pong(_) => return Incoming::Ignore,
    };
    match parsed {
        Ok(m) => Incoming::Message(m),
        Err(e) => Incoming::Bad(format!("invalid message: {e}")),
    }
}

/// Whether a slow connection is being held back.
#[derive(Default)]
struct Quarantine {
    until: Option<Instant>,
    /// Fell behind the buffer and has not caught up since.
    behind: bool,
}

/// One accepted WebSocket connection.
struct Connection {
    node: Arc<Node>,
    principal: Principal,
    registration: Registration,
    reader: Reader,
    out: Outbound,
    backlog: Backlog,
    quarantine: Quarantine,
    low_tier: Arc<std::collections::HashSet<String>>,
}

impl Connection {
    async fn run(node: Arc<Node>, socket: WebSocket, codec: Codec, admission: Admission) {
        let (sink, mut incoming) = socket.split();
        let mut out = Outbound::new(sink, codec, &node.config);
        let Handshake {
            principal,
            registration,
            reader,
            epoch_changed,
        } = match handshake(&node, admission, &mut incoming).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(closing) => return out.close(incoming, closing).await,
        };
        // The queue is empty: these two always fit.
        let _ = out.push(&ServerMessage::Ack {
            connection_id: format!("{}-{}", node.node_id, registration.id()),
            node_id: node.node_id.clone(),
            epoch: reader.epoch().to_owned(),
            seq: reader.cursor(),
            expires_at: principal.exp.saturating_mul(1000),
        });
        if epoch_changed {
            node.metrics.resets.fetch_add(1, Relaxed);
            let _ = out.push(&ServerMessage::Reset {
                reason: ResetReason::EpochChanged,
                seq: reader.cursor(),
            });
        }
        let low_tier = Arc::new(node.config.low_tier_services.iter().cloned().collect());
        let mut conn = Connection {
            node,
            principal,
            registration,
            reader,
            out,
            backlog: Backlog::default(),
            quarantine: Quarantine::default(),
            low_tier,
        };
        let closing = conn.serve(&mut incoming).await;
        if conn.quarantine.until.is_some() {
            conn.node.connections.quarantined.fetch_sub(1, Relaxed);
        }
        if let Some(closing) = closing {
            tracing::debug!(code = closing.code, reason = %closing.reason, "closing stream");
            if closing.code == close::SLOW_CONSUMER {
                conn.node.metrics.slow_closes.fetch_add(1, Relaxed);
                tracing::info!(org = %conn.principal.org, user = %conn.principal.user, "slow consumer closed");
            }
            conn.out.close(incoming, closing).await;
        }
    }

    /// Runs until the connection ends; returns the close to send, if any.
    async fn serve(&mut self, incoming: &mut SplitStream<WebSocket>) -> Option<Closing> {
        let node = Arc::clone(&self.node);
        let ping_every = node.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let (mut refresh_at, mut expires_at) = token_deadlines(&self.principal);
        let mut refresh_sent = false;
        let mut waiting = false;
        let mut retry_at: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut recheck_at = Instant::now();
        let max_batch = node.config.max_batch_bytes;
        loop {
            if self.out.idle() && self.backlog.is_empty() && !waiting && retry_at.is_none() {
                match self
                    .reader
                    .step(node.switches.disabled_services(), BATCH_EVENTS)
                    .await
                {
                    Ok(Step::Events(events)) => {
                        let events = self.drop_low_tier(events);
                        node.metrics.record_deliveries(&events, now_ms());
                        self.backlog.events.extend(events);
                    }
                    Ok(Step::Reset(reason)) => {
                        node.metrics.resets.fetch_add(1, Relaxed);
                        let reset = ServerMessage::Reset {
                            reason,
                            seq: self.reader.cursor(),
                        };
                        if let Err(c) = self.out.push(&reset) {
                            return Some(c);
                        }
                    }
                    Ok(Step::Quiet) => {
                        waiting = true;
                        self.quarantine.behind = false;
                    }
                    Ok(Step::Progress) => {}
                    Err(e) => {
                        tracing::warn!(org = %self.principal.org, error = %e, "stream read failed; retrying");
                        retry_at = Some(Instant::now() + RETRY);
                    }
                }
            }
            if self.out.idle() {
                if let Some(frame) = self.backlog.next_frame(self.out.codec, max_batch) {
                    self.out.send_now(frame);
                }
            }
            self.out.start_next();
            // Nothing to send and nothing to wait for (a history scan moved
            // the cursor without finding a match, or quarantine dropped a
            // whole read): read on at once, after the other arms had a look.
            let read_on =
                self.out.idle() && self.backlog.is_empty() && !waiting && retry_at.is_none();
            // A write blocked this long gets checked: behind the buffer means
            // the client is stuck and loses events, so it is closed.
            let slow_deadline = if self.out.busy() {
                (self.out.since + node.config.slow_client_timeout).max(recheck_at)
            } else {
                far
            };
            let busy = self.out.busy();
            tokio::select! {
                biased;
                _ = node.draining.cancelled() => return Some(Closing::new(close::DRAINING, "node draining; reconnect elsewhere")),
                cmd = self.registration.recv() => match cmd {
                    Some(Control::Close { code, reason }) => return Some(Closing::new(code, reason)),
                    Some(Control::Update { services, property }) => {
                        if let Err(c) = self.update(services, property) {
                            return Some(c);
                        }
                    }
                    None => {}
                },
                frame = incoming.next() => {
                    let Some(Ok(frame)) = frame else { return None };
                    last_heard = Instant::now();
                    match decode(frame) {
                        Incoming::Message(ClientMessage::Pong) | Incoming::Ignore => {}
                        Incoming::Message(ClientMessage::Auth { token }) => match self.renew(&token) {
                            Ok(()) => {
                                (refresh_at, expires_at) = token_deadlines(&self.principal);
                                refresh_sent = false;
                            }
                            Err(c) => return Some(c),
                        },
                        Incoming::Message(ClientMessage::Update { services, filters }) => {
                            if let Err(c) = self.update(services, filters.and_then(|f| f.property_id)) {
                                return Some(c);
                            }
                        }
                        Incoming::Message(ClientMessage::Hello { .. }) => {
                            return Some(Closing::new(close::BAD_MESSAGE, "hello sent twice"));
                        }
                        Incoming::Close => return None,
                        Incoming::Bad(why) => return Some(Closing::new(close::BAD_MESSAGE, why)),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        return Some(Closing::new(close::BAD_MESSAGE, "no pong for two pings"));
                    }
                    if let Err(c) = self.out.push(&ServerMessage::Ping { seq: self.resume_point() }) {
                        return Some(c);
                    }
                }
                _ = tokio::time::sleep_until(refresh_at), if !refresh_sent => {
                    refresh_sent = true;
                    if let Err(c) = self.out.push(&ServerMessage::Refresh { expires_at: self.principal.exp.saturating_mul(1000) }) {
                        return Some(c);
                    }
                }
                _ = tokio::time::sleep_until(expires_at) => {
                    return Some(Closing::new(close::UNAUTHENTICATED, "token expired"));
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => retry_at = None,
                _ = tokio::time::sleep_until(self.quarantine.until.unwrap_or(far)), if self.quarantine.until.is_some() => {
                    if self.quarantine.behind {
                        return Some(Closing::new(close::SLOW_CONSUMER, "slow consumer"));
                    }
                    self.quarantine.until = None;
                    node.connections.quarantined.fetch_sub(1, Relaxed);
                    tracing::info!(org = %self.principal.org, user = %self.principal.user, "connection left quarantine");
                }
                _ = tokio::time::sleep_until(slow_deadline), if slow_deadline < far => {
                    if self.reader.cursor() < self.reader.lease().floor() {
                        return Some(Closing::new(close::SLOW_CONSUMER, "slow consumer"));
                    }
                    // Blocked, but nothing is lost yet: look again shortly.
                    recheck_at = Instant::now() + SLOW_RECHECK;
                }
                // Writes and new events come last: under load they are always
                // ready and must not starve the pings, the client's pongs and
                // the timers above (which are rarely ready, so they cannot
                // starve the writes).
                r = self.out.written(), if busy => {
                    if r.is_err() {
                        return None;
                    }
                }
                changed = self.reader.changed(), if waiting || busy => {
                    if !changed {
                        return Some(Closing::new(close::TRY_AGAIN, "org state released"));
                    }
                    waiting = false;
                    if busy && self.reader.cursor() < self.reader.lease().floor() {
                        if let Some(c) = self.overflowed() {
                            return Some(c);
                        }
                    }
                }
                () = std::future::ready(()), if read_on => {}
            }
        }
    }

    /// The connection fell behind the org buffer while writing: quarantine it
    /// the first time, close it if it happens again during the quarantine.
    fn overflowed(&mut self) -> Option<Closing> {
        if self.quarantine.behind {
            return None;
        }
        self.quarantine.behind = true;
        if self.quarantine.until.is_some() {
            return Some(Closing::new(close::SLOW_CONSUMER, "slow consumer"));
        }
        self.quarantine.until = Some(Instant::now() + self.node.config.quarantine);
        self.node.connections.quarantined.fetch_add(1, Relaxed);
        tracing::info!(org = %self.principal.org, user = %self.principal.user, "slow connection quarantined");
        None
    }

    /// The cursor a ping may carry: the client has every matching event up
    /// to here, or was told it was dropped (what still waits in the backlog
    /// was read but not sent).
    fn resume_point(&self) -> u64 {
        let cursor = self.reader.cursor();
        self.backlog
            .first_unsent()
            .map_or(cursor, |s| cursor.min(s.saturating_sub(1)))
    }

    /// While quarantined, low-tier services are not delivered (and counted
    /// as dropped); the client gets a `dropped` frame naming them and the
    /// range, in `seq` order among the events. Only called with an empty
    /// backlog.
    fn drop_low_tier(&mut self, events: Vec<Arc<StoredEvent>>) -> Vec<Arc<StoredEvent>> {
        if self.quarantine.until.is_none() {
            return events;
        }
        let (dropped, kept): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|e| self.low_tier.contains(&e.event.service));
        if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
            self.node
                .metrics
                .dropped
                .fetch_add(dropped.len() as u64, Relaxed);
            let mut services: Vec<String> =
                dropped.iter().map(|e| e.event.service.clone()).collect();
            services.sort_unstable();
            services.dedup();
            self.backlog.dropped = Some(Dropped {
                services,
                from_seq: first.seq(),
                to_seq: last.seq(),
            });
        }
        kept
    }

    /// Changes the subscription in place.
    fn update(&mut self, services: Vec<String>, property: Option<String>) -> Result<(), Closing> {
        let filter = Filter::new(
            &self.principal,
            Some(services),
            property,
            self.node.switches.disabled_services(),
        )
        .map_err(|e| Closing::from_api(&e))?;
        let updated = ServerMessage::Updated {
            services: filter.services().unwrap_or_default(),
            filters: Filters {
                property_id: filter.property().map(str::to_owned),
            },
        };
        self.set_filter(filter);
        self.out.push(&updated)
    }

    /// Takes a renewed token for the same user.
    fn renew(&mut self, token: &str) -> Result<(), Closing> {
        let fresh = self
            .node
            .verifier
            .verify(token)
            .map_err(|e| Closing::from_api(&e))?;
        if fresh.user != self.principal.user || fresh.org != self.principal.org {
            return Err(Closing::new(
                close::UNAUTHENTICATED,
                "token belongs to another user",
            ));
        }
        let current = self.reader.filter();
        let filter = Filter::new(
            &fresh,
            current.services(),
            current.property().map(str::to_owned),
            self.node.switches.disabled_services(),
        )
        .map_err(|e| Closing::from_api(&e))?;
        self.set_filter(filter);
        self.principal = fresh;
        Ok(())
    }

    /// Changes what is delivered from now on, also among the events read
    /// but not sent yet.
    fn set_filter(&mut self, filter: Filter) {
        self.backlog.events.retain(|e| filter.matches(e));
        self.reader.set_filter(filter);
    }
}

/// When to send `refresh` (60 s before expiry) and when the token expires.
fn token_deadlines(p: &Principal) -> (Instant, Instant) {
    let left_ms = p.exp.saturating_mul(1000).saturating_sub(now_ms()).max(0) as u64;
    let expires = Instant::now() + Duration::from_millis(left_ms);
    let refresh = Instant::now() + Duration::from_millis(left_ms.saturating_sub(60_000));
    (refresh, expires)
}

/// A connection after its `hello`: who it is and where it reads.
struct Handshake {
    principal: Principal,
    registration: Registration,
    reader: Reader,
    epoch_changed: bool,
}

/// Waits for `hello`, authenticates with its token when the upgrade carried
/// none (4001 without a valid one), and builds the reader; `Ok(None)` when
/// the client left. A `hello` token is ignored when the upgrade was
/// authenticated already.
async fn handshake(
    node: &Arc<Node>,
    admission: Admission,
    incoming: &mut SplitStream<WebSocket>,
) -> Result<Option<Handshake>, Closing> {
    let deadline = Instant::now() + node.config.handshake_timeout;
    let hello = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout_at(deadline, incoming.next()) => f,
            _ = node.draining.cancelled() => return Err(Closing::new(close::DRAINING, "node draining; reconnect elsewhere")),
        };
        match frame {
            Err(_) => {
                return Err(Closing::new(
                    close::BAD_MESSAGE,
                    "no hello within the handshake timeout",
                ))
            }
            Ok(None) | Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(msg))) => match decode(msg) {
                Incoming::Ignore => continue,
                Incoming::Close => return Ok(None),
                Incoming::Message(m @ ClientMessage::Hello { .. }) => break m,
                Incoming::Message(_) => {
                    return Err(Closing::new(
                        close::BAD_MESSAGE,
                        "the first message must be hello",
                    ))
                }
                Incoming::Bad(why) => return Err(Closing::new(close::BAD_MESSAGE, why)),
            },
        }
    };
    let ClientMessage::Hello {
        version,
        services,
        filters,
        last_seq,
        epoch,
        token,
    } = hello
    else {
        return Err(Closing::new(
            close::BAD_MESSAGE,
            "the first message must be hello",
        ));
    };
    let (principal, registration) = match admission {
        Admission::Authenticated(admitted) => *admitted,
        Admission::AtHello => {
            let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
                Closing::new(
                    close::UNAUTHENTICATED,
                    "no token: send it in hello or in Authorization: Bearer",
                )
            })?;
            let principal = authenticate(node, &token)?;
            let registration = register(node, &principal)?;
            (principal, registration)
        }
    };
    if version != 1 {
        return Err(Closing::new(
            close::BAD_MESSAGE,
            format!("unsupported protocol version {version}"),
        ));
    }
    let property = filters.and_then(|f| f.property_id);
    let filter = Filter::new(
        &principal,
        Some(services),
        property,
        node.switches.disabled_services(),
    )
    .map_err(|e| Closing::from_api(&e))?;
    let lease = node
        .orgs
        .lease(&principal.org)
        .map_err(|e| Closing::from_api(&e.into()))?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, last_seq);
    let epoch_changed = reader.check_epoch(epoch.as_deref());
    Ok(Some(Handshake {
        principal,
        registration,
        reader,
        epoch_changed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::DeliveredEvent;

    fn event(seq: u64, service: &str, payload_bytes: usize) -> Arc<StoredEvent> {
        StoredEvent::new(
            DeliveredEvent {
                seq,
                org_id: "acme".into(),
                service: service.into(),
                property_id: None,
                event_id: seq.to_string(),
                event_type: "x".into(),
                timestamp: 0,
                entity_type: None,
                entity_id: None,
                payload: serde_json::Value::String("p".repeat(payload_bytes)),
            },
            0,
        )
    }

    fn frames(backlog: &mut Backlog, codec: Codec, cap: usize) -> Vec<(usize, ServerMessage)> {
        std::iter::from_fn(|| backlog.next_frame(codec, cap))
            .map(|m| {
                let msg = match &m {
                    Message::Text(t) => serde_json::from_str(t.as_str()).expect("json frame"),
                    Message::Binary(b) => rmp_serde::from_slice(b).expect("msgpack frame"),
                    _ => unreachable!(),
                };
                (frame_len(&m), msg)
            })
            .collect()
    }

    fn seqs(msg: &ServerMessage) -> Vec<u64> {
        match msg {
            ServerMessage::Events { events, .. } => events.iter().map(|e| e.seq).collect(),
            other => panic!("not events: {other:?}"),
        }
    }

    #[test]
    fn frames_are_cut_by_bytes_and_a_larger_event_goes_alone() {
        for codec in [Codec::Json, Codec::MessagePack] {
            let mut backlog = Backlog::default();
            backlog
                .events
                .extend((1..=10).map(|s| event(s, "files", 3000)));
            backlog.events.push_back(event(11, "files", 20_000));
            backlog.events.push_back(event(12, "files", 100));
            let out = frames(&mut backlog, codec, 10_000);
            let all: Vec<u64> = out.iter().flat_map(|(_, m)| seqs(m)).collect();
            assert_eq!(all, (1..=12).collect::<Vec<_>>());
            for (len, m) in &out {
                assert!(*len <= 10_000 || seqs(m).len() == 1, "{codec:?}: {len}");
            }
            assert!(out.iter().any(|(_, m)| seqs(m) == vec![11]), "alone");
            assert!(out.iter().any(|(_, m)| seqs(m).len() == 3), "batched");
        }
    }

    #[test]
    fn the_dropped_frame_comes_in_seq_order_and_holds_back_the_cursor() {
        let mut backlog = Backlog::default();
        backlog
            .events
            .extend([event(1, "a", 1), event(2, "a", 1), event(5, "a", 1)]);
        backlog.dropped = Some(Dropped {
            services: vec!["analytics".into()],
            from_seq: 3,
            to_seq: 6,
        });
        assert_eq!(backlog.first_unsent(), Some(1));
        let out = frames(&mut backlog, Codec::Json, 1 << 20);
        assert_eq!(
            seqs(&out[0].1),
            vec![1, 2],
            "stops before the dropped range"
        );
        assert!(matches!(
            out[1].1,
            ServerMessage::Dropped {
                from_seq: 3,
                to_seq: 6,
                ..
            }
        ));
        assert_eq!(seqs(&out[2].1), vec![5]);
        assert!(backlog.is_empty());
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        assert_eq!(close_reason("short".into()), "short");
        let cut = close_reason("é".repeat(100));
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
