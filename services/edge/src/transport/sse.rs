//! `GET /v2/realtime/sse`: Server-Sent Events. Each event is `id: <seq>`,
//! `event: <service>`, `data: <event JSON>`; `event: reset` when the client
//! must refetch; `event: updated` after an in-place change; `event: ack`
//! first. A keep-alive comment every `HERALD_SSE_KEEPALIVE` also carries
//! `id: <quiet cursor>` when it moved, so a reconnect (`Last-Event-ID`) of a
//! quiet client resumes near the head. The stream ends at the token's
//! expiry, at an admin disconnect, when the kill switch turns on and at
//! drain, checked before every event, so a busy stream ends on time too.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use herald_proto::ResetReason;
use http::{header, HeaderMap, HeaderValue};
use serde_json::json;
use tokio::time::{Instant, Interval};

use crate::auth::extract_token;
use crate::delivery::filter::{split_services, Filter};
use crate::delivery::reader::{Reader, Step};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::{Control, Registration, Transport};
use crate::org::decode::now_ms;
use crate::transport::poll::{form_pairs, SUBSCRIBE_WAIT};
use crate::transport::ws::BATCH_EVENTS;

/// Pause before reading the stream again after a failed history read.
const RETRY: Duration = Duration::from_secs(1);

/// Parsed query (and `Last-Event-ID`) of an SSE request.
#[derive(Debug, Default)]
pub struct SseParams {
    services: Option<Vec<String>>,
    property: Option<String>,
    last_seq: Option<u64>,
    epoch: Option<String>,
    token: Option<String>,
}

/// Parses an SSE request's raw query string and `Last-Event-ID`; a bad value is a 400.
pub fn parse(query: Option<&str>, headers: &HeaderMap) -> Result<SseParams, ApiError> {
    let mut p = SseParams::default();
    let bad_seq =
        |name: &str| ApiError::BadParameter(format!("{name}: must be a non-negative integer"));
    for (key, value) in form_pairs(query.unwrap_or("")) {
        match key.as_str() {
            "services" => p.services = Some(split_services(&value)),
            "propertyId" if !value.is_empty() => p.property = Some(value),
            "lastSeq" if !value.is_empty() => {
                p.last_seq = Some(value.parse().map_err(|_| bad_seq("lastSeq"))?)
            }
            "epoch" if !value.is_empty() => p.epoch = Some(value),
            "token" if !value.is_empty() => p.token = Some(value),
            _ => {}
        }
    }
    if let Some(id) = headers.get("last-event-id") {
        let id = id.to_str().map_err(|_| bad_seq("Last-Event-ID"))?.trim();
        if !id.is_empty() {
            p.last_seq = Some(id.parse().map_err(|_| bad_seq("Last-Event-ID"))?);
        }
    }
    Ok(p)
}

/// `GET /v2/realtime/sse`.
pub async fn sse(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if node.draining.is_cancelled() {
        return Err(ApiError::Unavailable(
            "node is draining; retry on another node".into(),
        ));
    }
    if node.switches.disabled() {
        return Err(ApiError::Unavailable("realtime is disabled".into()));
    }
    let params = parse(query.as_deref(), &headers)?;
    let query_token = params
        .token
        .as_deref()
        .filter(|_| node.config.allow_query_token);
    let principal = node
        .verifier
        .verify(extract_token(&headers, query_token)?)?
        .must_subscribe()?;
    let filter = Filter::new(
        &principal,
        params.services,
        params.property,
        node.switches.disabled_services(),
    )?;
    let registration = node.connections.register(
        &principal.org,
        &principal.user,
        Transport::Sse,
        node.config.max_connections,
        node.config.max_connections_per_user,
    )?;
    let lease = node.orgs.lease(&principal.org)?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, params.last_seq);
    let epoch_changed = reader.check_epoch(params.epoch.as_deref());

    let mut pending = VecDeque::new();
    let ack = json!({
        "connectionId": format!("{}-{}", node.node_id, registration.id()),
        "nodeId": node.node_id,
        "epoch": reader.epoch(),
        "seq": reader.cursor(),
        "expiresAt": principal.exp.saturating_mul(1000),
    });
    pending.push_back(Event::default().event("ack").data(ack.to_string()));
    if epoch_changed {
        pending.push_back(reset_event(
            &node,
            ResetReason::EpochChanged,
            reader.cursor(),
        ));
    }
    let every = node.config.sse_keepalive;
    let expires_at = Instant::now()
        + Duration::from_millis(
            principal
                .exp
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
    principal: crate::auth::Principal,
    registration: Registration,
    pending: VecDeque<Event>,
    keepalive: Interval,
    expires_at: Instant,
    last_id: u64,
    waiting: bool,
    done: bool,
}

fn reset_event(node: &Node, reason: ResetReason, head: u64) -> Event {
    node.metrics
        .resets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Event::default()
        .event("reset")
        .id(head.to_string())
        .data(json!({"reason": reason, "seq": head}).to_string())
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
                match Filter::new(
                    &self.principal,
                    Some(services),
                    property,
                    self.node.switches.disabled_services(),
                ) {
                    Ok(filter) => {
                        let updated = json!({"services": filter.services(), "filters": {"propertyId": filter.property()}});
                        self.reader.set_filter(filter);
                        self.pending
                            .push_back(Event::default().event("updated").data(updated.to_string()));
                        false
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "refused subscription update; closing SSE stream");
                        true
                    }
                }
            }
        }
    }
}

async fn next_event(mut st: SseState) -> Option<(Result<Event, Infallible>, SseState)> {
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
                    st.node.metrics.record_deliveries(&events, now_ms());
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
                    st.pending
                        .push_back(reset_event(&st.node, reason, st.reader.cursor()));
                    st.last_id = st.reader.cursor();
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
