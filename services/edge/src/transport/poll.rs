//! Long-poll: `GET /v1/realtime/poll` and the seeds' alias
//! `GET /v1/<service>/realtime/subscribe`. Answers at once when matching
//! events after the cursor exist, else holds until one arrives, the timeout
//! passes, the client leaves or the node drains.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use herald_proto::poll::{PollResponse, MAX_EVENTS_PER_POLL};
use herald_proto::{Reset, ResetReason};
use http::{header, HeaderMap, HeaderValue};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::delivery::reader::{Reader, Step};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::Transport;
use crate::org::decode::{now_ms, StoredEvent};
use crate::org::hub::OrgHub;
use crate::transport::admission::{self, Admitted};
use crate::transport::query::PollParams;

/// Longest wait for a new org's live subscription before serving.
pub(crate) const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Retry-After for a poll refused by the waiter cap.
const WAITER_CAP_RETRY_SECS: u32 = 5;

/// `GET /v1/realtime/poll`.
pub async fn poll(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = PollParams::parse(query.as_deref())?;
    serve(node, headers, params).await
}

/// `GET /v1/<service>/realtime/subscribe`: a poll of one service.
pub async fn subscribe_alias(
    State(node): State<Arc<Node>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut params = PollParams::parse(query.as_deref())?;
    params.subscription.services = Some(vec![service]);
    serve(node, headers, params).await
}

/// Counts a poll in progress.
struct PollGuard<'a>(&'a Node);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.polls.fetch_sub(1, Relaxed);
    }
}

/// Counts a held poll against its org's waiter cap.
struct WaiterGuard(Arc<OrgHub>);

impl WaiterGuard {
    fn try_new(hub: Arc<OrgHub>, cap: usize) -> Option<Self> {
        hub.waiters
            .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
            .ok()
            .map(|_| Self(hub))
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Relaxed);
    }
}

async fn serve(
    node: Arc<Node>,
    headers: HeaderMap,
    params: PollParams,
) -> Result<Response, ApiError> {
    // A poll in progress holds a connection slot of its user, like a stream:
    // otherwise one user could take every waiter slot of an org.
    let Admitted {
        principal,
        filter,
        registration: _registration,
    } = admission::admit(
        &node,
        Transport::LongPoll,
        &headers,
        None,
        &params.subscription,
    )?;
    // The header values share hyper's 8 KiB read buffer of the request
    // head: held with them, it would stay with every held poll.
    drop(headers);
    let timeout = params.timeout.unwrap_or(node.config.poll_timeout);

    node.polls.fetch_add(1, Relaxed);
    let _counted = PollGuard(&node);
    let deadline = Instant::now() + timeout;
    let lease = node.orgs.lease(&principal.org)?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, params.subscription.last_seq);
    if reader.check_epoch(params.subscription.epoch.as_deref()) {
        return reset(&node, ResetReason::EpochChanged, &reader);
    }
    let mut waiter = None;
    loop {
        let step = reader
            .step(node.switches.disabled_services(), MAX_EVENTS_PER_POLL)
            .await
            .map_err(|e| {
                tracing::warn!(org = %reader.lease().org, error = %e, "history read failed");
                ApiError::Unavailable("the event stream is not reachable".into())
            })?;
        match step {
            Step::Events(events) => return answer(&node, &events, &reader),
            // Report how far the scan got rather than holding it.
            Step::Progress => return answer(&node, &[], &reader),
            Step::Reset(reason) => return reset(&node, reason, &reader),
            Step::Quiet => {
                if Instant::now() >= deadline || node.draining.is_cancelled() {
                    return answer(&node, &[], &reader);
                }
                if waiter.is_none() {
                    waiter =
                        WaiterGuard::try_new(reader.lease().hub(), node.config.max_waiters_per_org);
                    if waiter.is_none() {
                        node.metrics.waiter_cap_hits.fetch_add(1, Relaxed);
                        return Err(ApiError::Overloaded {
                            message: "too many held polls for this org on this node".into(),
                            retry_after: WAITER_CAP_RETRY_SECS,
                        });
                    }
                }
                tokio::select! {
                    changed = reader.changed() => {
                        if !changed {
                            return answer(&node, &[], &reader);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = node.draining.cancelled() => {}
                }
            }
        }
    }
}

fn answer(node: &Node, events: &[Arc<StoredEvent>], reader: &Reader) -> Result<Response, ApiError> {
    node.metrics.record_deliveries(
        events.iter().map(|e| e.timing()),
        now_ms(),
        reader.delivery(),
    );
    node.trace_deliveries(&reader.lease().org, events, Transport::LongPoll);
    let body: PollResponse<&RawValue> = PollResponse {
        events: events.iter().map(|e| &*e.json).collect(),
        last_seq: reader.cursor(),
        epoch: reader.epoch().to_owned(),
        reset: None,
    };
    json_response(&body)
}

fn reset(node: &Node, reason: ResetReason, reader: &Reader) -> Result<Response, ApiError> {
    node.metrics.count_reset(reason);
    let body: PollResponse<&RawValue> = PollResponse {
        events: vec![],
        last_seq: reader.cursor(),
        epoch: reader.epoch().to_owned(),
        reset: Some(Reset { reason }),
    };
    json_response(&body)
}

/// A 200 with `body` as JSON; a body that cannot be serialised is a 500
/// (logged), never an empty 200 the client would take for an answer.
fn json_response<T: serde::Serialize>(body: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::internal("serialising a poll answer", &e))?;
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use serde::ser::Error as _;

    use super::*;

    struct Unserialisable;

    impl serde::Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("cannot"))
        }
    }

    #[test]
    fn an_answer_that_cannot_be_serialised_is_a_500_not_an_empty_200() {
        let e = json_response(&Unserialisable).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let ok = json_response(&serde_json::json!({"lastSeq": 1})).unwrap();
        assert_eq!(ok.status(), http::StatusCode::OK);
    }
}
