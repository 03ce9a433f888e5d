//! `GET /v2/realtime/sse`: Server-Sent Events. Each event is `id: <seq>`,
//! `event: <service>`, `data: <event JSON>`; `event: ack` first, `event:
//! reset` when the client must refetch, `event: updated` after an in-place
//! change, their data the same [`ServerMessage`] JSON a WebSocket client
//! gets. A keep-alive comment every `HERALD_SSE_KEEPALIVE` also carries
//! `id: <quiet cursor>` when it moved, so a reconnect (`Last-Event-ID`) of a
//! quiet client resumes near the head. The stream ends at the token's
//! expiry (plus the clock leeway that token checks allow), at an admin disconnect, when the kill switch turns on and at
//! drain, checked before every event, so a busy stream ends on time too.
//! Admission and the query are those of long-poll ([`admission`],
//! [`SseParams`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use herald_proto::stream::ServerMessage;
use herald_proto::ResetReason;
use http::{header, HeaderMap, HeaderValue};
use tokio::time::{Instant, Interval};

use crate::auth::{Principal, LEEWAY_SECS};
use crate::delivery::reader::{Reader, Step};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::{Control, Registration, Transport};
use crate::org::decode::now_ms;
use crate::transport::admission::{self, Admitted};
use crate::transport::messages;
use crate::transport::poll::SUBSCRIBE_WAIT;
use crate::transport::query::SseParams;
use crate::transport::ws::BATCH_EVENTS;

/// Pause before reading the stream again after a failed history read.
const RETRY: Duration = Duration::from_secs(1);

/// `GET /v2/realtime/sse`.
pub async fn sse(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let requested = Instant::now();
    let params = SseParams::parse(query.as_deref(), &headers)?;
    let Admitted {
        principal,
        filter,
        registration,
    } = admission::admit(
        &node,
        Transport::Sse,
        &headers,
        params.token.as_deref(),
        &params.subscription,
    )?;
    let lease = node.orgs.lease(&principal.org)?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, params.subscription.last_seq);
    let epoch_changed = reader.check_epoch(params.subscription.epoch.as_deref());

    // Failing here is still a 500; once streaming, a failure ends the stream.
    let mut pending = VecDeque::new();
    pending.push_back(message_event(
        "ack",
        None,
        &messages::ack(&node, &registration, &principal, &reader),
    )?);
    node.metrics.record_connect_ack(requested.elapsed());
    if epoch_changed {
        let head = reader.cursor();
        pending.push_back(message_event(
            "reset",
            Some(head),
            &messages::reset(&node, ResetReason::EpochChanged, head),
        )?);
    }
    let every = node.config.sse_keepalive;
    // The token is accepted up to the leeway past `exp`, so the stream lasts
    // as long: ending it at `exp` would have EventSource reconnect (with a
    // token still accepted) into streams that end at once, for the whole leeway.
    let expires_at = Instant::now()
        + Duration::from_millis(
            principal
                .exp
                .saturating_add(LEEWAY_SECS as i64)
                .saturating_mul(1000)
                .saturating_sub(now_ms())
                .max(0) as u64,
        );
    let state = SseState {
        last_id: reader.cursor(),
        node,
        reader,
        principal,
        registration,
        pending,
        keepalive: tokio::time::interval_at(Instant::now() + every, every),
        expires_at,
        waiting: false,
        done: false,
    };
    let mut response = Sse::new(futures::stream::unfold(state, next_event)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

struct SseState {
    node: Arc<Node>,
    reader: Reader,
    principal: Principal,
    registration: Registration,
    pending: VecDeque<Event>,
    keepalive: Interval,
    expires_at: Instant,
    last_id: u64,
    waiting: bool,
    done: bool,
}

/// An event named `name` whose data is `message` as JSON (the same bytes
/// as the WebSocket's JSON frame). A message that cannot be serialised is
/// an error (logged), never an event with empty data.
fn message_event(name: &str, id: Option<u64>, message: &ServerMessage) -> Result<Event, ApiError> {
    let mut event = Event::default().event(name);
    if let Some(id) = id {
        event = event.id(id.to_string());
    }
    event
        .json_data(message)
        .map_err(|e| ApiError::internal("serialising an SSE message", &e))
}

impl SseState {
    /// True when the stream must end now. Checked before every event, not
    /// only when the stream is quiet: a busy stream would otherwise outlive
    /// its token, an admin disconnect, the kill switch and drain.
    fn must_end(&mut self) -> bool {
        if self.done
            || self.node.draining.is_cancelled()
            || Instant::now() >= self.expires_at
            || self.node.switches.disabled()
        {
            return true;
        }
        while let Some(cmd) = self.registration.try_recv() {
            if self.control(cmd) {
                return true;
            }
        }
        false
    }

    /// Applies a control command; true when it ends the stream.
    fn control(&mut self, cmd: Control) -> bool {
        match cmd {
            Control::Close { .. } => true,
            Control::Update { services, property } => {
                match admission::subscribe(&self.node, &self.principal, Some(services), property) {
                    Ok(filter) => {
                        let updated = messages::updated(&filter);
                        self.reader.set_filter(filter);
                        !self.send("updated", None, &updated)
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "refused subscription update; closing SSE stream");
                        true
                    }
                }
            }
        }
    }

    /// Queues `message`; false (the stream must end) when it cannot be
    /// serialised.
    fn send(&mut self, name: &str, id: Option<u64>, message: &ServerMessage) -> bool {
        match message_event(name, id, message) {
            Ok(event) => {
                self.pending.push_back(event);
                true
            }
            Err(_) => false,
        }
    }
}

/// The stream's next event, and its state for the one after.
///
/// Not an `async fn`: one would copy the state into a local beside the
/// argument, and every held stream's future would carry both.
#[allow(clippy::manual_async_fn)] // the point: see above
fn next_event(
    mut st: SseState,
) -> impl std::future::Future<Output = Option<(Result<Event, Infallible>, SseState)>> + Send {
    async move {
        loop {
            if st.must_end() {
                return None;
            }
            if let Some(event) = st.pending.pop_front() {
                return Some((Ok(event), st));
            }
            if !st.waiting {
                match st
                    .reader
                    .step(st.node.switches.disabled_services(), BATCH_EVENTS)
                    .await
                {
                    Ok(Step::Events(events)) => {
                        st.node.metrics.record_deliveries(
                            events.iter().map(|e| e.timing()),
                            now_ms(),
                            st.reader.delivery(),
                        );
                        st.node
                            .trace_deliveries(&st.principal.org, &events, Transport::Sse);
                        for e in &events {
                            st.pending.push_back(
                                Event::default()
                                    .id(e.seq().to_string())
                                    .event(&e.event.service)
                                    .data(e.json.get()),
                            );
                        }
                        st.last_id = st.reader.cursor();
                    }
                    Ok(Step::Reset(reason)) => {
                        let head = st.reader.cursor();
                        let reset = messages::reset(&st.node, reason, head);
                        if !st.send("reset", Some(head), &reset) {
                            return None;
                        }
                        st.last_id = head;
                    }
                    Ok(Step::Quiet) => st.waiting = true,
                    Ok(Step::Progress) => {}
                    Err(e) => {
                        tracing::warn!(org = %st.principal.org, error = %e, "stream read failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = st.node.draining.cancelled() => st.done = true,
                _ = tokio::time::sleep_until(st.expires_at) => st.done = true,
                cmd = st.registration.recv() => {
                    if let Some(cmd) = cmd {
                        st.done = st.control(cmd);
                    }
                }
                changed = st.reader.changed() => {
                    if !changed {
                        st.done = true;
                    }
                    st.waiting = false;
                }
                _ = st.keepalive.tick() => {
                    let mut event = Event::default().comment("keep-alive");
                    if st.reader.cursor() > st.last_id {
                        st.last_id = st.reader.cursor();
                        event = event.id(st.last_id.to_string());
                    }
                    st.pending.push_back(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_proto::stream::Filters;

    use super::*;

    async fn wire(event: Event) -> String {
        let body = Sse::new(futures::stream::iter([Ok::<_, Infallible>(event)]))
            .into_response()
            .into_body();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn control_events_carry_the_websockets_json() {
        let reset = ServerMessage::Reset {
            reason: ResetReason::HistoryGone,
            seq: 97,
        };
        assert_eq!(
            wire(message_event("reset", Some(97), &reset).unwrap()).await,
            "event: reset\nid: 97\ndata: {\"type\":\"reset\",\"reason\":\"history_gone\",\"seq\":97}\n\n"
        );
        let updated = ServerMessage::Updated {
            services: vec!["tasks".into()],
            filters: Filters {
                property_id: Some("p1".into()),
            },
        };
        let text = wire(message_event("updated", None, &updated).unwrap()).await;
        let data = text
            .strip_prefix("event: updated\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap();
        assert_eq!(data, serde_json::to_string(&updated).unwrap());
    }
}
