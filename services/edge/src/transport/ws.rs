//! `GET /v2/realtime/stream`: the WebSocket stream, and the loop that
//! serves one connection.
//!
//! A connection reads its org's events by cursor (the same [`Reader`] as
//! long-poll), so replay after `lastSeq` and live delivery are one sequence
//! with no gap or duplicate at the switch-over. One frame is written at a
//! time: while a write is in flight, new events wait in the org buffer and go
//! out together in the next frames, so an idle connection gets an event at
//! once and a busy one batches by itself. A connection that falls behind the
//! buffer while its writes are stuck is quarantined (low-tier services
//! dropped, and the client told so by a `dropped` frame before any cursor
//! passes them), and closed with 4008 if it stays behind.
//!
//! Invariant: the loop waits on one thing at a time of each kind: drain,
//! control commands, the client's frames, the next deadline of
//! [`Deadlines`], the write in flight and the org's changes; and it ends
//! with exactly one close (or the client gone), whose code comes from the
//! error table or the contract's close codes.
//!
//! The parts: [`handshake`] (upgrade and `hello`), [`writer`] (the
//! one-frame writer and the close), [`codec`] (frames both ways),
//! [`backlog`] (events read but not yet framed) and [`deadlines`] (the
//! timers).

mod backlog;
mod codec;
mod deadlines;
mod handshake;
pub(crate) mod rooms;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use futures::stream::SplitStream;
use futures::StreamExt;
use herald_proto::stream::{ClientMessage, ServerMessage, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use herald_proto::{CloseCode, ResetReason};
use http::HeaderMap;
use tokio::time::Instant;

use self::backlog::{Backlog, Dropped};
use self::codec::{decode, Codec, Incoming};
use self::deadlines::{Deadlines, Due};
use self::handshake::{Admission, Handshake};
use self::rooms::ConnRooms;
use self::writer::{Closing, Outbound};
use crate::auth::Principal;
use crate::delivery::reader::{Reader, Step};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::{Control, Registration, Transport};
use crate::org::decode::{now_ms, StoredEvent};
use crate::room::outbox::RoomFrame;
use crate::transport::{admission, messages};

/// Path of the stream endpoint.
pub const STREAM_PATH: &str = "/v2/realtime/stream";
/// Most events in one `events` frame.
pub const BATCH_EVENTS: usize = 100;
/// Read buffer per connection; it grows for a larger client frame.
/// tungstenite fills the whole buffer before each read (its default of 128
/// KiB is what makes idle connections expensive), and clients send small
/// frames (`hello`, acks, pongs, room requests).
const READ_BUFFER: usize = 512;
/// Most a delivered event's frame can grow over the body it came from: a
/// MessagePack control character becomes `\u00XX` in JSON.
const EVENT_EXPANSION: usize = 6;
/// Room for an event's envelope fields and a frame's own fields.
const FRAME_SLACK: usize = 64 * 1024;
/// Pause before reading the stream again after a failed history read.
const RETRY: Duration = Duration::from_secs(1);

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
    let codec = Codec::for_protocol(ws.selected_protocol());
    // Refusals happen after the upgrade so that browsers, which cannot read
    // the status of a failed upgrade, see the close code.
    let admitted = handshake::admit(&node, &headers, query.as_deref());
    ws.on_upgrade(move |socket| async move {
        let upgraded = Instant::now();
        let (sink, incoming) = socket.split();
        let out = Outbound::new(
            sink,
            codec,
            node.config.ws_outbound_frames,
            node.config.ws_outbound_bytes,
        );
        // The handshake runs in this task; the serving loop gets a task of
        // its own, so that only its future is held for the connection's
        // life (this one's states, the handshake's among them, are not).
        let opened = match admitted {
            Ok(admission) => {
                Box::pin(Connection::open(node, out, incoming, admission, upgraded)).await
            }
            Err(refused) => {
                Box::pin(out.close(incoming, Closing::from(refused))).await;
                None
            }
        };
        if let Some((conn, incoming)) = opened {
            tokio::spawn(conn.run(incoming));
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

/// One accepted WebSocket connection.
struct Connection {
    node: Arc<Node>,
    principal: Principal,
    registration: Registration,
    reader: Reader,
    out: Outbound,
    backlog: Backlog,
    deadlines: Deadlines,
    /// Fell behind the buffer and has not caught up since.
    behind: bool,
    low_tier: Arc<HashSet<String>>,
    /// The rooms the connection is in.
    rooms: ConnRooms,
}

impl Connection {
    /// Completes the handshake and sends the `ack`; `None` once the
    /// connection is closed (refused, or gone).
    async fn open(
        node: Arc<Node>,
        mut out: Outbound,
        mut incoming: SplitStream<WebSocket>,
        admission: Admission,
        upgraded: Instant,
    ) -> Option<(Connection, SplitStream<WebSocket>)> {
        let Handshake {
            principal,
            registration,
            reader,
            epoch_changed,
        } = match handshake::handshake(&node, admission, &mut incoming).await {
            Ok(Some(h)) => h,
            Ok(None) => return None,
            Err(closing) => {
                out.close(incoming, closing).await;
                return None;
            }
        };
        // The queue is empty: these two fit, unless they cannot be encoded.
        let mut first = vec![messages::ack(&node, &registration, &principal, &reader)];
        if epoch_changed {
            let head = reader.cursor();
            first.push(messages::reset(&node, ResetReason::EpochChanged, head));
        }
        if let Err(closing) = first.iter().try_for_each(|m| out.push(m)) {
            out.close(incoming, closing).await;
            return None;
        }
        node.metrics.record_connect_ack(upgraded.elapsed());
        let deadlines = Deadlines::new(
            Instant::now(),
            node.config.ping_interval,
            node.config.slow_client_timeout,
            token_left(&principal),
        );
        let low_tier = Arc::new(node.config.low_tier_services.iter().cloned().collect());
        let rooms = ConnRooms::new(&node);
        let conn = Connection {
            node,
            principal,
            registration,
            reader,
            out,
            backlog: Backlog::default(),
            deadlines,
            behind: false,
            low_tier,
            rooms,
        };
        Some((conn, incoming))
    }

    /// Serves the connection until it ends, then closes it.
    ///
    /// Not an `async fn`: one would copy `self` into a local beside the
    /// argument, and every held connection's future would carry both. The
    /// block uses the captured `self` in place, and `finish` is boxed so
    /// that its states add nothing either.
    #[allow(clippy::manual_async_fn)] // the point: see above
    fn run(
        mut self,
        mut incoming: SplitStream<WebSocket>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let closing = self.serve(&mut incoming).await;
            Box::pin(self.finish(incoming, closing)).await;
        }
    }

    /// Leaves the rooms and sends `closing`, if any.
    async fn finish(self, incoming: SplitStream<WebSocket>, closing: Option<Closing>) {
        self.rooms.close(&self.node, &self.principal.org);
        if self.deadlines.quarantined() {
            self.node.connections.quarantined.fetch_sub(1, Relaxed);
        }
        if let Some(closing) = closing {
            tracing::debug!(code = closing.code.code(), reason = %closing.reason, "closing stream");
            if closing.code == CloseCode::SlowConsumer {
                self.node.metrics.slow_closes.fetch_add(1, Relaxed);
                tracing::info!(org = %self.principal.org, user = %self.principal.user, "slow consumer closed");
            }
            self.out.close(incoming, closing).await;
        }
    }

    /// Runs until the connection ends; returns the close to send, if any.
    async fn serve(&mut self, incoming: &mut SplitStream<WebSocket>) -> Option<Closing> {
        let node = Arc::clone(&self.node);
        let max_batch = node.config.max_batch_bytes;
        let mut waiting = false;
        loop {
            if self.out.idle() && self.backlog.is_empty() && !waiting && !self.deadlines.retrying()
            {
                match self
                    .reader
                    .step(node.switches.disabled_services(), BATCH_EVENTS)
                    .await
                {
                    Ok(Step::Events(events)) => {
                        let events = self.drop_low_tier(events);
                        node.metrics.record_deliveries(
                            events.iter().map(|e| e.timing()),
                            now_ms(),
                            self.reader.delivery(),
                        );
                        node.trace_deliveries(&self.principal.org, &events, Transport::WebSocket);
                        self.backlog.events.extend(events);
                    }
                    Ok(Step::Reset(reason)) => {
                        let reset = messages::reset(&node, reason, self.reader.cursor());
                        if let Err(c) = self.out.push(&reset) {
                            return Some(c);
                        }
                    }
                    Ok(Step::Quiet) => {
                        waiting = true;
                        self.behind = false;
                    }
                    Ok(Step::Progress) => {}
                    Err(e) => {
                        tracing::warn!(org = %self.principal.org, error = %e, "stream read failed; retrying");
                        self.deadlines.retry_in(Instant::now(), RETRY);
                    }
                }
            }
            if self.out.idle() {
                match self.backlog.next_frame(self.out.codec(), max_batch) {
                    Some(Ok(frame)) => self.out.send_now(frame),
                    Some(Err(e)) => {
                        return Some(ApiError::internal("encoding an events frame", &e).into())
                    }
                    None => {}
                }
            }
            self.out.start_next();
            // Nothing to send and nothing to wait for (a history scan moved
            // the cursor without finding a match, or quarantine dropped a
            // whole read): read on at once, after the other arms had a look.
            let read_on = self.out.idle()
                && self.backlog.is_empty()
                && !waiting
                && !self.deadlines.retrying();
            self.deadlines.writing(self.out.writing_since());
            let next_deadline = self.deadlines.next();
            let busy = self.out.busy();
            let room_frames = self.out.idle();
            tokio::select! {
                biased;
                _ = node.draining.cancelled() => return Some(ApiError::Draining.into()),
                cmd = self.registration.recv() => match cmd {
                    Some(Control::Close { code, reason }) => return Some(Closing::from_control(code, reason)),
                    Some(Control::Update { services, property }) => {
                        if let Err(c) = self.update(services, property) {
                            return Some(c);
                        }
                    }
                    None => {}
                },
                frame = incoming.next() => {
                    let Some(Ok(frame)) = frame else { return None };
                    self.deadlines.heard(Instant::now());
                    if let Err(c) = self.on_frame(decode(frame)) {
                        return c;
                    }
                }
                _ = tokio::time::sleep_until(next_deadline) => {
                    if let Some(due) = self.deadlines.take_due(Instant::now()) {
                        if let Err(c) = self.on_due(due) {
                            return Some(c);
                        }
                    }
                }
                frame = self.rooms.recv(), if room_frames => {
                    if let Err(c) = self.on_room_frame(frame) {
                        return Some(c);
                    }
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
                        return Some(Closing::new(CloseCode::TryAgain, "org state released"));
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

    /// Handles a client frame; `Err` ends the connection (with a close,
    /// or none when the client closed).
    fn on_frame(&mut self, frame: Incoming) -> Result<(), Option<Closing>> {
        match frame {
            Incoming::Message(ClientMessage::Pong) | Incoming::Ignore => Ok(()),
            Incoming::Message(ClientMessage::Auth { token }) => Ok(self.renew(&token)?),
            Incoming::Message(ClientMessage::Update { services, filters }) => {
                Ok(self.update(services, filters.and_then(|f| f.property_id))?)
            }
            Incoming::Message(ClientMessage::Hello { .. }) => Err(Some(Closing::new(
                CloseCode::BadMessage,
                "hello sent twice",
            ))),
            Incoming::Message(
                m @ (ClientMessage::Join { .. }
                | ClientMessage::Leave { .. }
                | ClientMessage::Say { .. }
                | ClientMessage::Typing { .. }
                | ClientMessage::Read { .. }
                | ClientMessage::Status { .. }),
            ) => {
                if let Some(answer) = self.rooms.handle(&self.node, &self.principal, m) {
                    self.out.push(&answer)?;
                }
                Ok(())
            }
            Incoming::BadRoom { room, why } => {
                let refusal =
                    rooms::Refusal::new(herald_proto::room::RoomErrorCode::BadRequest, why);
                Ok(self.out.push(&refusal.frame(&self.node, room.as_deref()))?)
            }
            Incoming::Close => Err(None),
            Incoming::Bad(why) => Err(Some(Closing::new(CloseCode::BadMessage, why))),
        }
    }

    /// Sends a frame the rooms handed over (only called when the writer is
    /// idle, so it goes out alone, like an events frame).
    fn on_room_frame(&mut self, frame: Option<RoomFrame>) -> Result<(), Closing> {
        let msg = match frame {
            Some(RoomFrame::Send(msg)) if self.rooms.still_wanted(&msg) => msg,
            Some(RoomFrame::Send(_)) | None => return Ok(()),
            Some(RoomFrame::JoinFailed { room, error }) => {
                self.rooms.join_failed(&room);
                error
            }
            Some(RoomFrame::Overflow) => return Err(slow_consumer()),
        };
        let frame = self
            .out
            .codec()
            .encode(&msg)
            .map_err(|e| Closing::from(ApiError::internal("encoding a room frame", &e)))?;
        self.out.send_now(frame);
        Ok(())
    }

    /// Handles a deadline that came due.
    fn on_due(&mut self, due: Due) -> Result<(), Closing> {
        match due {
            Due::Ping => self.out.push(&ServerMessage::Ping {
                seq: self.resume_point(),
            }),
            Due::Silent => Err(Closing::new(CloseCode::BadMessage, "no pong for two pings")),
            Due::Refresh => self.out.push(&ServerMessage::Refresh {
                expires_at: self.principal.exp.saturating_mul(1000),
            }),
            Due::Expired => Err(Closing::new(CloseCode::Unauthenticated, "token expired")),
            // The loop reads again on its next turn.
            Due::Retry => Ok(()),
            Due::QuarantineOver => {
                self.node.connections.quarantined.fetch_sub(1, Relaxed);
                if self.behind {
                    return Err(slow_consumer());
                }
                tracing::info!(org = %self.principal.org, user = %self.principal.user, "connection left quarantine");
                Ok(())
            }
            // Blocked, and behind the buffer: the client is stuck and loses
            // events. Blocked but nothing lost yet: looked at again shortly.
            Due::SlowWrite if self.reader.cursor() < self.reader.lease().floor() => {
                Err(slow_consumer())
            }
            Due::SlowWrite => Ok(()),
        }
    }

    /// The connection fell behind the org buffer while writing: quarantine it
    /// the first time, close it if it happens again during the quarantine.
    fn overflowed(&mut self) -> Option<Closing> {
        if self.behind {
            return None;
        }
        self.behind = true;
        if self.deadlines.quarantined() {
            return Some(slow_consumer());
        }
        self.deadlines
            .quarantine(Instant::now(), self.node.config.quarantine);
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
        if !self.deadlines.quarantined() {
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
        let filter = admission::subscribe(&self.node, &self.principal, Some(services), property)?;
        let updated = messages::updated(&filter);
        self.set_filter(filter);
        self.out.push(&updated)
    }

    /// Takes a renewed token for the same user.
    fn renew(&mut self, token: &str) -> Result<(), Closing> {
        let fresh = self.node.verifier.verify(token)?;
        if fresh.user != self.principal.user || fresh.org != self.principal.org {
            return Err(Closing::new(
                CloseCode::Unauthenticated,
                "token belongs to another user",
            ));
        }
        let current = self.reader.filter();
        let filter = admission::subscribe(
            &self.node,
            &fresh,
            current.services(),
            current.property().map(str::to_owned),
        )?;
        self.set_filter(filter);
        self.deadlines.token(Instant::now(), token_left(&fresh));
        self.principal = fresh;
        Ok(())
    }

    /// Changes what is delivered from now on, also among the events read
    /// but not sent yet.
    fn set_filter(&mut self, filter: crate::delivery::filter::Filter) {
        self.backlog.events.retain(|e| filter.matches(e));
        self.reader.set_filter(filter);
    }
}

fn slow_consumer() -> Closing {
    Closing::new(CloseCode::SlowConsumer, "slow consumer")
}

/// Time until the token expires (none left when it has).
fn token_left(p: &Principal) -> Duration {
    let left_ms = p.exp.saturating_mul(1000).saturating_sub(now_ms()).max(0);
    Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
}
