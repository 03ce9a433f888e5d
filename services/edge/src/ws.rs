//! `GET /v2/realtime/stream`: the WebSocket stream.
//!
//! A connection reads its org's events by cursor (the same [`Reader`] as
//! long-poll), so replay after `lastSeq` and live delivery are one sequence
//! with no gap or duplicate at the switch-over. One frame is written at a
//! time: while a write is in flight, new events wait in the org buffer and go
//! out together in the next frames (one service per frame, at most
//! [`BATCH_EVENTS`] events), so an idle connection gets an event at once and a
//! busy one batches by itself. A connection that falls behind the buffer
//! while its writes are stuck is quarantined (low-tier services dropped), and
//! closed with 4008 if it stays behind.

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
use herald_proto::{DeliveredEvent, ResetReason};
use http::HeaderMap;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::auth::{extract_token, Principal};
use crate::connections::{Control, LimitError, Registration, Transport};
use crate::error::ApiError;
use crate::filter::Filter;
use crate::ingest::{now_ms, StoredEvent};
use crate::node::Node;
use crate::poll::{form_pairs, SUBSCRIBE_WAIT};
use crate::reader::{Reader, Step};
use crate::registry::Registry;
use crate::switches::CLOSE_DISABLED;

/// Most events in one `events` frame.
pub const BATCH_EVENTS: usize = 100;
/// Initial read buffer per connection; it grows for larger client frames.
/// (tungstenite's default of 128 KiB per connection is what makes idle
/// connections expensive.)
const READ_BUFFER: usize = 2 * 1024;
/// Bytes tungstenite may hold unsent per connection: one frame at most, as
/// frames are written one at a time.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
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
        .max_write_buffer_size(MAX_WRITE_BUFFER)
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
            Ok((principal, registration)) => {
                Connection::run(node, socket, codec, principal, registration).await
            }
            Err(closing) => {
                let (sink, incoming) = socket.split();
                Outbound::new(sink, codec).close(incoming, closing).await;
            }
        }
    })
}

fn admit(
    node: &Arc<Node>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Principal, Registration), Closing> {
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
    let token =
        extract_token(headers, query_token.as_deref()).map_err(|e| Closing::from_api(&e))?;
    let principal = node
        .verifier
        .verify(token)
        .and_then(Principal::must_subscribe)
        .map_err(|e| Closing::from_api(&e))?;
    let registration = node
        .connections
        .register(
            &principal.org,
            &principal.user,
            Transport::WebSocket,
            node.config.max_connections,
            node.config.max_connections_per_user,
        )
        .map_err(|e| match e {
            LimitError::Node => Closing::new(close::TOO_MANY, "node connection limit reached"),
            LimitError::User => Closing::new(close::TOO_MANY, "too many connections for this user"),
        })?;
    Ok((principal, registration))
}

type Sink = SplitSink<WebSocket, Message>;
type Written = Pin<Box<dyn Future<Output = (Sink, Result<(), axum::Error>)> + Send>>;

/// The sending half: one frame in flight at a time, the rest queued (the
/// queue only ever holds the frames of one read plus a few control messages).
struct Outbound {
    sink: Option<Sink>,
    in_flight: Option<Written>,
    since: Instant,
    queue: VecDeque<Message>,
    codec: Codec,
}

impl Outbound {
    fn new(sink: Sink, codec: Codec) -> Self {
        Self {
            sink: Some(sink),
            in_flight: None,
            since: Instant::now(),
            queue: VecDeque::new(),
            codec,
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    fn idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    fn push(&mut self, msg: &ServerMessage) {
        self.queue.push_back(encode(self.codec, msg));
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
            reason: Utf8Bytes::from(closing.reason),
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

/// An `events` frame borrowing the buffered events (MessagePack).
#[derive(Serialize)]
struct PackedEvents<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    service: &'a str,
    events: Vec<&'a DeliveredEvent>,
    seq: u64,
}

/// Queues `events` as frames of one service each, in sequence order.
fn push_events(out: &mut Outbound, events: &[Arc<StoredEvent>]) {
    for run in events.chunk_by(|a, b| a.event.service == b.event.service) {
        let service = run[0].event.service.as_str();
        let seq = run[run.len() - 1].seq();
        let frame = match out.codec {
            Codec::Json => encode(
                Codec::Json,
                &JsonEvents {
                    kind: "events",
                    service,
                    events: run.iter().map(|e| &*e.json).collect(),
                    seq,
                },
            ),
            Codec::MessagePack => encode(
                Codec::MessagePack,
                &PackedEvents {
                    kind: "events",
                    service,
                    events: run.iter().map(|e| &e.event).collect(),
                    seq,
                },
            ),
        };
        out.queue.push_back(frame);
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
    quarantine: Quarantine,
    low_tier: Arc<std::collections::HashSet<String>>,
}

impl Connection {
    async fn run(
        node: Arc<Node>,
        socket: WebSocket,
        codec: Codec,
        principal: Principal,
        registration: Registration,
    ) {
        let (sink, mut incoming) = socket.split();
        let mut out = Outbound::new(sink, codec);
        let reader = match handshake(&node, &principal, &mut incoming).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(closing) => return out.close(incoming, closing).await,
        };
        let (reader, epoch_changed) = reader;
        out.push(&ServerMessage::Ack {
            connection_id: format!("{}-{}", node.node_id, registration.id()),
            node_id: node.node_id.clone(),
            epoch: reader.epoch().to_owned(),
            seq: reader.cursor(),
            expires_at: principal.exp.saturating_mul(1000),
        });
        if epoch_changed {
            node.metrics.resets.fetch_add(1, Relaxed);
            out.push(&ServerMessage::Reset {
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
        loop {
            if self.out.idle() && !waiting && retry_at.is_none() {
                match self.reader.step(&node, BATCH_EVENTS).await {
                    Ok(Step::Events(events)) => {
                        let events = self.drop_low_tier(events);
                        node.metrics.record_deliveries(&events, now_ms());
                        push_events(&mut self.out, &events);
                    }
                    Ok(Step::Reset(reason)) => {
                        node.metrics.resets.fetch_add(1, Relaxed);
                        self.out.push(&ServerMessage::Reset {
                            reason,
                            seq: self.reader.cursor(),
                        });
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
            self.out.start_next();
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
                    self.out.push(&ServerMessage::Ping { seq: self.reader.cursor() });
                }
                _ = tokio::time::sleep_until(refresh_at), if !refresh_sent => {
                    refresh_sent = true;
                    self.out.push(&ServerMessage::Refresh { expires_at: self.principal.exp.saturating_mul(1000) });
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

    /// While quarantined, low-tier services are not delivered (and counted as dropped).
    fn drop_low_tier(&self, mut events: Vec<Arc<StoredEvent>>) -> Vec<Arc<StoredEvent>> {
        if self.quarantine.until.is_some() {
            let before = events.len();
            events.retain(|e| !self.low_tier.contains(&e.event.service));
            self.node
                .metrics
                .dropped
                .fetch_add((before - events.len()) as u64, Relaxed);
        }
        events
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
        self.reader.set_filter(filter);
        self.out.push(&updated);
        Ok(())
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
        self.reader.set_filter(filter);
        self.principal = fresh;
        Ok(())
    }
}

/// When to send `refresh` (60 s before expiry) and when the token expires.
fn token_deadlines(p: &Principal) -> (Instant, Instant) {
    let left_ms = p.exp.saturating_mul(1000).saturating_sub(now_ms()).max(0) as u64;
    let expires = Instant::now() + Duration::from_millis(left_ms);
    let refresh = Instant::now() + Duration::from_millis(left_ms.saturating_sub(60_000));
    (refresh, expires)
}

/// Waits for `hello` and builds the reader; `Ok(None)` when the client left.
async fn handshake(
    node: &Arc<Node>,
    principal: &Principal,
    incoming: &mut SplitStream<WebSocket>,
) -> Result<Option<(Reader, bool)>, Closing> {
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
    } = hello
    else {
        return Err(Closing::new(
            close::BAD_MESSAGE,
            "the first message must be hello",
        ));
    };
    if version != 1 {
        return Err(Closing::new(
            close::BAD_MESSAGE,
            format!("unsupported protocol version {version}"),
        ));
    }
    let property = filters.and_then(|f| f.property_id);
    let filter = Filter::new(
        principal,
        Some(services),
        property,
        node.switches.disabled_services(),
    )
    .map_err(|e| Closing::from_api(&e))?;
    let lease = Registry::lease(node, &principal.org).map_err(|e| Closing::from_api(&e))?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, last_seq);
    let epoch_changed = reader.check_epoch(epoch.as_deref());
    Ok(Some((reader, epoch_changed)))
}
