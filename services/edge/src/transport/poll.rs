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

use crate::auth::extract_token;
use crate::config::MAX_POLL_TIMEOUT;
use crate::delivery::filter::{split_services, Filter};
use crate::delivery::reader::{Reader, Step};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::Transport;
use crate::org::decode::{now_ms, StoredEvent};
use crate::org::hub::OrgHub;

/// Longest wait for a new org's live subscription before serving.
pub(crate) const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Retry-After for a poll refused by the waiter cap.
const WAITER_CAP_RETRY_SECS: u32 = 5;

/// Parsed query of a poll.
#[derive(Debug, Default, PartialEq)]
pub struct PollParams {
    services: Option<Vec<String>>,
    property: Option<String>,
    last_seq: Option<u64>,
    epoch: Option<String>,
    timeout: Option<Duration>,
}

impl PollParams {
    /// Parses a poll's raw query string; a bad value is a 400.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self::default();
        let bad = |name: &str, why: &str| ApiError::BadParameter(format!("{name}: {why}"));
        for (key, value) in form_pairs(query.unwrap_or("")) {
            match key.as_str() {
                "services" => p.services = Some(split_services(&value)),
                "propertyId" if !value.is_empty() => p.property = Some(value),
                "lastSeq" if !value.is_empty() => {
                    p.last_seq = Some(
                        value
                            .parse()
                            .map_err(|_| bad("lastSeq", "must be a non-negative integer"))?,
                    )
                }
                "epoch" if !value.is_empty() => p.epoch = Some(value),
                "timeout" if !value.is_empty() => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| bad("timeout", "must be whole seconds"))?;
                    let d = Duration::from_secs(secs);
                    if d > MAX_POLL_TIMEOUT {
                        return Err(bad("timeout", "must be at most 55"));
                    }
                    p.timeout = Some(d);
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// `key=value` pairs of a query string, percent-decoded.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match bytes.get(i + 1..i + 3) {
                Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(h) << 4 | hex(l));
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /v1/realtime/poll`.
pub async fn poll(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = PollParams::parse(query.as_deref())?;
    serve(node, &headers, params).await
}

/// `GET /v1/<service>/realtime/subscribe`: a poll of one service.
pub async fn subscribe_alias(
    State(node): State<Arc<Node>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut params = PollParams::parse(query.as_deref())?;
    params.services = Some(vec![service]);
    serve(node, &headers, params).await
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
    headers: &HeaderMap,
    params: PollParams,
) -> Result<Response, ApiError> {
    if node.draining.is_cancelled() {
        return Err(ApiError::Unavailable(
            "node is draining; retry on another node".into(),
        ));
    }
    let principal = node
        .verifier
        .verify(extract_token(headers, None)?)?
        .must_subscribe()?;
    let filter = Filter::new(
        &principal,
        params.services,
        params.property,
        node.switches.disabled_services(),
    )?;
    let timeout = params.timeout.unwrap_or(node.config.poll_timeout);
    // A poll in progress holds a connection slot of its user, like a stream:
    // otherwise one user could take every waiter slot of an org.
    let _registration = node.connections.register(
        &principal.org,
        &principal.user,
        Transport::LongPoll,
        node.config.max_connections,
        node.config.max_connections_per_user,
    )?;

    node.polls.fetch_add(1, Relaxed);
    let _counted = PollGuard(&node);
    let deadline = Instant::now() + timeout;
    let lease = node.orgs.lease(&principal.org)?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, params.last_seq);
    if reader.check_epoch(params.epoch.as_deref()) {
        return Ok(reset(&node, ResetReason::EpochChanged, &reader));
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
            Step::Events(events) => return Ok(answer(&node, &events, &reader)),
            // Report how far the scan got rather than holding it.
            Step::Progress => return Ok(answer(&node, &[], &reader)),
            Step::Reset(reason) => return Ok(reset(&node, reason, &reader)),
            Step::Quiet => {
                if Instant::now() >= deadline || node.draining.is_cancelled() {
                    return Ok(answer(&node, &[], &reader));
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
                            return Ok(answer(&node, &[], &reader));
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = node.draining.cancelled() => {}
                }
            }
        }
    }
}

fn answer(node: &Node, events: &[Arc<StoredEvent>], reader: &Reader) -> Response {
    node.metrics.record_deliveries(events, now_ms());
    let body: PollResponse<&RawValue> = PollResponse {
        events: events.iter().map(|e| &*e.json).collect(),
        last_seq: reader.cursor(),
        epoch: reader.epoch().to_owned(),
        reset: None,
    };
    json_response(&body)
}

fn reset(node: &Node, reason: ResetReason, reader: &Reader) -> Response {
    node.metrics.resets.fetch_add(1, Relaxed);
    let body: PollResponse<&RawValue> = PollResponse {
        events: vec![],
        last_seq: reader.cursor(),
        epoch: reader.epoch().to_owned(),
        reset: Some(Reset { reason }),
    };
    json_response(&body)
}

fn json_response<T: serde::Serialize>(body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parameters() {
        let p = PollParams::parse(Some(
            "services=finance,guest&propertyId=p1&lastSeq=41&epoch=E&timeout=5",
        ))
        .unwrap();
        assert_eq!(
            p.services,
            Some(vec!["finance".to_owned(), "guest".to_owned()])
        );
        assert_eq!(p.property.as_deref(), Some("p1"));
        assert_eq!(
            (p.last_seq, p.timeout),
            (Some(41), Some(Duration::from_secs(5)))
        );
        assert_eq!(PollParams::parse(None).unwrap(), PollParams::default());
        assert_eq!(
            PollParams::parse(Some("services=a%2Cb")).unwrap().services,
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        for q in [
            "lastSeq=-1",
            "lastSeq=abc",
            "timeout=56",
            "timeout=1.5",
            "lastSeq=99999999999999999999999",
        ] {
            assert!(
                matches!(PollParams::parse(Some(q)), Err(ApiError::BadParameter(_))),
                "{q}"
            );
        }
    }

    #[test]
    fn percent_decoding_survives_garbage() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
