//! The sending half of a connection: one frame in flight at a time, control
//! frames queued behind it, and the close.
//!
//! Invariant: at most one frame is being written; the queue behind it is
//! bounded in frames and bytes, and a client that lets it fill is closed as
//! a slow consumer (4008). `events` frames are never queued: they are
//! framed from the backlog only when the writer is [`idle`](Outbound::idle),
//! so the queue holds only what timers and the client's own messages
//! produced. A close frame carries a contract close code and a reason of at
//! most [`MAX_CLOSE_REASON`] bytes.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::{Sink, SinkExt, Stream, StreamExt};
use herald_proto::stream::ServerMessage;
use herald_proto::CloseCode;
use tokio::time::Instant;

use super::codec::{frame_len, Codec};
use crate::error::ApiError;

/// Longest close reason a close frame can carry (125 bytes less the code).
pub(super) const MAX_CLOSE_REASON: usize = 123;
/// How long a closing connection gets to flush what it was writing and the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a closed connection waits for the client's close frame.
const CLOSE_ANSWER: Duration = Duration::from_secs(1);

/// Why a connection is closed, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Closing {
    /// The close code.
    pub(super) code: CloseCode,
    /// Why, for people (cut to fit when sent).
    pub(super) reason: String,
}

impl Closing {
    pub(super) fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// A close asked for by a control message. Its code comes from another
    /// node; one this node does not know closes as an administrator's
    /// disconnect (4001), the only close a control message asks for.
    pub(super) fn from_control(code: u16, reason: String) -> Self {
        let code = CloseCode::from_code(code).unwrap_or_else(|| {
            tracing::warn!(
                code,
                "unknown close code in a control message; closing with 4001"
            );
            CloseCode::Unauthenticated
        });
        Self::new(code, reason)
    }
}

/// Every error closes with the code of the error table.
impl From<&ApiError> for Closing {
    fn from(e: &ApiError) -> Self {
        Self::new(e.close_code(), e.to_string())
    }
}

impl From<ApiError> for Closing {
    fn from(e: ApiError) -> Self {
        Self::from(&e)
    }
}

impl fmt::Display for Closing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// The sink of a WebSocket connection.
pub(super) type WsSink = SplitSink<WebSocket, Message>;

type Written<S, E> = Pin<Box<dyn Future<Output = (S, Result<(), E>)> + Send>>;

/// The sending half of one connection.
pub(super) struct Outbound<S: Sink<Message> = WsSink> {
    sink: Option<S>,
    in_flight: Option<Written<S, S::Error>>,
    /// When the frame in flight started.
    since: Instant,
    queue: VecDeque<Message>,
    queued_bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    codec: Codec,
}

impl<S> Outbound<S>
where
    S: Sink<Message> + Unpin + Send + 'static,
    S::Error: Send,
{
    /// A writer of `codec` frames whose queue takes at most `max_frames`
    /// frames and `max_bytes` bytes.
    pub(super) fn new(sink: S, codec: Codec, max_frames: usize, max_bytes: usize) -> Self {
        Self {
            sink: Some(sink),
            in_flight: None,
            since: Instant::now(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            max_frames,
            max_bytes,
            codec,
        }
    }

    /// The frames' encoding.
    pub(super) fn codec(&self) -> Codec {
        self.codec
    }

    /// A frame is being written.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// When the frame in flight started, if one is.
    pub(super) fn writing_since(&self) -> Option<Instant> {
        self.busy().then_some(self.since)
    }

    /// Nothing is being written and nothing waits.
    pub(super) fn idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    /// Queues a control frame; a client that does not read while it keeps
    /// causing them fills the queue and is closed as a slow consumer.
    pub(super) fn push(&mut self, msg: &ServerMessage) -> Result<(), Closing> {
        let frame = self
            .codec
            .encode(msg)
            .map_err(|e| ApiError::internal("encoding a stream frame", &e))?;
        let bytes = frame_len(&frame);
        if self.queue.len() >= self.max_frames || self.queued_bytes + bytes > self.max_bytes {
            return Err(Closing::new(
                CloseCode::SlowConsumer,
                "slow consumer: outbound queue full",
            ));
        }
        self.queued_bytes += bytes;
        self.queue.push_back(frame);
        Ok(())
    }

    /// Starts writing `frame` (an events or `dropped` frame); only called
    /// when [`idle`](Self::idle), so it never waits behind anything.
    pub(super) fn send_now(&mut self, frame: Message) {
        debug_assert!(self.idle());
        self.queued_bytes += frame_len(&frame);
        self.queue.push_back(frame);
        self.start_next();
    }

    /// Starts writing the next queued frame when nothing is in flight.
    pub(super) fn start_next(&mut self) {
        if self.in_flight.is_some() || self.queue.is_empty() {
            return;
        }
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        let Some(msg) = self.queue.pop_front() else {
            self.sink = Some(sink);
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
    pub(super) async fn written(&mut self) -> Result<(), S::Error> {
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
    pub(super) async fn close<I, E>(mut self, mut incoming: I, closing: Closing)
    where
        I: Stream<Item = Result<Message, E>> + Unpin,
    {
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
            code: closing.code.code(),
            reason: Utf8Bytes::from(close_reason(closing.reason)),
        }));
        if tokio::time::timeout(CLOSE_GRACE, sink.send(frame))
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_ANSWER, async {
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

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;

    use super::super::codec::tests::read;
    use super::*;

    type Test = Outbound<mpsc::Sender<Message>>;

    fn writer(max_frames: usize, max_bytes: usize) -> (Test, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(16);
        (Outbound::new(tx, Codec::Json, max_frames, max_bytes), rx)
    }

    fn ping(seq: u64) -> ServerMessage {
        ServerMessage::Ping { seq }
    }

    #[tokio::test]
    async fn a_full_queue_closes_as_a_slow_consumer() {
        let (mut out, _rx) = writer(2, 1 << 20);
        out.push(&ping(1)).unwrap();
        out.push(&ping(2)).unwrap();
        let full = out.push(&ping(3)).unwrap_err();
        assert_eq!(full.code, CloseCode::SlowConsumer);

        let (mut out, _rx) = writer(100, 40);
        out.push(&ping(1)).unwrap(); // 23 bytes
        assert_eq!(
            out.push(&ping(2)).unwrap_err().code,
            CloseCode::SlowConsumer,
            "bounded in bytes too"
        );
    }

    #[tokio::test]
    async fn one_frame_is_in_flight_at_a_time_in_queue_order() {
        let (mut out, mut rx) = writer(8, 1 << 20);
        assert!(out.idle() && out.writing_since().is_none());
        out.push(&ping(1)).unwrap();
        out.push(&ping(2)).unwrap();
        out.start_next();
        assert!(out.busy() && out.writing_since().is_some());
        out.start_next(); // still the first frame
        out.written().await.unwrap();
        assert!(!out.busy() && !out.idle(), "the second frame waits");
        out.start_next();
        out.written().await.unwrap();
        assert!(out.idle());
        let sent: Vec<ServerMessage> = [rx.next().await, rx.next().await]
            .iter()
            .map(|m| read(m.as_ref().unwrap()))
            .collect();
        assert_eq!(sent, vec![ping(1), ping(2)]);
        // What was written no longer counts against the bound.
        for i in 0..8 {
            out.push(&ping(i)).unwrap();
        }
    }

    #[tokio::test]
    async fn the_close_frame_carries_the_code_and_a_short_reason() {
        let (out, mut rx) = writer(8, 1 << 20);
        let incoming = futures::stream::empty::<Result<Message, ()>>();
        out.close(
            incoming,
            Closing::new(CloseCode::Unauthenticated, "é".repeat(100)),
        )
        .await;
        let Some(Message::Close(Some(frame))) = rx.next().await else {
            panic!("no close frame");
        };
        assert_eq!(frame.code, 4001);
        assert!(frame.reason.len() <= MAX_CLOSE_REASON);
    }

    #[test]
    fn errors_close_with_the_code_of_the_table() {
        let forbidden = ApiError::Forbidden("no".into());
        assert_eq!(
            Closing::from(&forbidden),
            Closing::new(CloseCode::Forbidden, "no")
        );
        assert_eq!(Closing::from(ApiError::Draining).code, CloseCode::Draining);
        assert_eq!(
            Closing::from_control(4503, "off".into()).code,
            CloseCode::Disabled
        );
        assert_eq!(
            Closing::from_control(4999, "?".into()).code,
            CloseCode::Unauthenticated
        );
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        assert_eq!(close_reason("short".into()), "short");
        let cut = close_reason("é".repeat(100));
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
