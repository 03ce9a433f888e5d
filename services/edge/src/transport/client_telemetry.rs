//! `POST /v2/telemetry/client`: what browser SDKs report about themselves
//! (fast-empty polls, leader changes, reconnects, delivery latency,
//! refused subscriptions), counted into the node's metrics.
//!
//! Invariant: a batch is counted whole or not at all. Every event is
//! validated before anything is counted, so a 400 leaves the metrics as
//! they were; label values come from fixed lists ([`ClientEvent`],
//! [`ClientTransport`]), so no client input can grow a label set.
//!
//! The token comes from `Authorization` or the cookie like everywhere else,
//! or, only when the request carries neither, from a `token` field of the
//! body: `navigator.sendBeacon` (the SDK's last flush when a page is
//! hidden) cannot set headers, and a body, unlike a URL, stays out of
//! access logs (the same reasoning as the WebSocket `hello` token).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::find_token;
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::metrics::{ClientEvent, ClientSample, ClientTransport};
use crate::transport::body;
use crate::transport::http::require_json;

/// The route.
pub const PATH: &str = "/v2/telemetry/client";
/// Largest body: a full batch of small events, with room for a token.
pub const MAX_BODY: usize = 16 * 1024;
/// Most events in one batch.
pub const MAX_EVENTS: usize = 100;
/// Most attributes on one event; they are free-form, so they are bounded.
const MAX_ATTRS: usize = 16;

/// A batch as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    events: Vec<ReportedEvent>,
    /// The token, for a beacon that could not send a header.
    #[serde(default)]
    token: Option<String>,
}

/// One event as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportedEvent {
    name: String,
    value: f64,
    #[serde(default)]
    attrs: Option<Map<String, Value>>,
}

/// `POST /v2/telemetry/client` (any user token): `202 {"accepted":n}`.
pub async fn report(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A header or cookie token is checked before the body is read; only a
    // request without one has its (bounded) body read to find it.
    let header_token = find_token(&headers, None)?;
    if let Some(token) = header_token {
        admit(&node, token)?;
    }
    require_json(&headers)?;
    let body = body::read_for(&node, body, &headers, MAX_BODY).await?;
    let report: Report = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadParameter(format!("invalid telemetry body: {e}")))?;
    if header_token.is_none() {
        let token = report
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "no token: send Authorization: Bearer <token> or \"token\" in the body".into(),
                )
            })?;
        admit(&node, token)?;
    }
    let samples = validate(&report.events)?;
    node.metrics.record_client(&samples);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": samples.len()})),
    ))
}

/// Verifies `token` (any user of any org) and takes one call from its
/// user's telemetry budget.
fn admit(node: &Node, token: &str) -> Result<(), ApiError> {
    let who = node.verifier.verify(token)?;
    if let Err(wait) = node.telemetry_limiter.check(&who.org, &who.user) {
        node.metrics.guards.rate_limited.fetch_add(1, Relaxed);
        return Err(ApiError::RateLimited {
            message: "too many telemetry reports for this user".into(),
            retry_after: wait.as_secs().max(1) as u32,
        });
    }
    Ok(())
}

/// Every event checked, in order; the first bad one refuses the batch.
fn validate(events: &[ReportedEvent]) -> Result<Vec<ClientSample>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::BadParameter("events must not be empty".into()));
    }
    if events.len() > MAX_EVENTS {
        return Err(ApiError::BadParameter(format!(
            "at most {MAX_EVENTS} events per report, got {}",
            events.len()
        )));
    }
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let bad = |what: String| ApiError::BadParameter(format!("events[{i}]: {what}"));
            let event = ClientEvent::parse(&e.name).ok_or_else(|| {
                let known: Vec<&str> = ClientEvent::ALL.iter().map(|e| e.as_str()).collect();
                bad(format!(
                    "unknown name {:?} (known: {})",
                    e.name,
                    known.join(", ")
                ))
            })?;
            if !e.value.is_finite() || e.value < 0.0 {
                return Err(bad(format!(
                    "value must be a finite number >= 0, got {}",
                    e.value
                )));
            }
            let attrs = e.attrs.as_ref();
            if attrs.is_some_and(|a| a.len() > MAX_ATTRS) {
                return Err(bad(format!("at most {MAX_ATTRS} attrs")));
            }
            // Other attributes are accepted and ignored: SDKs may send more
            // than this node counts.
            let transport = ClientTransport::from_attr(
                attrs
                    .and_then(|a| a.get("transport"))
                    .and_then(Value::as_str),
            );
            Ok(ClientSample {
                event,
                value: e.value,
                transport,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<ClientSample>, ApiError> {
        let report: Report =
            serde_json::from_str(body).map_err(|e| ApiError::BadParameter(e.to_string()))?;
        validate(&report.events)
    }

    #[test]
    fn takes_known_events_and_bounds_labels() {
        let s = parse(
            r#"{"events":[
                {"name":"reconnect","value":1,"attrs":{"transport":"sse","page":"/x"}},
                {"name":"reconnect","value":1,"attrs":{"transport":"carrier-pigeon"}},
                {"name":"delivery_latency_ms","value":42.5}
            ],"token":"t"}"#,
        )
        .expect("valid");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].transport, ClientTransport::Sse);
        assert_eq!(s[1].transport, ClientTransport::Other);
        assert_eq!(s[2].event, ClientEvent::DeliveryLatencyMs);
        assert_eq!(s[2].value, 42.5);
    }

    #[test]
    fn refuses_a_batch_with_any_bad_event() {
        for body in [
            r#"{"events":[]}"#,
            r#"{"events":[{"name":"reconnect","value":1},{"name":"nope","value":1}]}"#,
            r#"{"events":[{"name":"reconnect","value":-1}]}"#,
            r#"{"events":[{"name":"reconnect","value":"1"}]}"#,
            r#"{"events":[{"name":"reconnect"}]}"#,
            r#"{"events":[{"name":"reconnect","value":1e999}]}"#,
            r#"{"events":[{"name":"reconnect","value":1,"extra":true}]}"#,
            r#"{"events":[{"name":"reconnect","value":1,"attrs":[1]}]}"#,
            r#"{"events":[{"name":"reconnect","value":1}],"orgId":"x"}"#,
            r#"{"events":{"name":"reconnect"}}"#,
        ] {
            assert!(
                matches!(parse(body), Err(ApiError::BadParameter(_))),
                "{body}"
            );
        }
        let many: Vec<String> = (0..=MAX_EVENTS)
            .map(|_| r#"{"name":"fast_empty","value":1}"#.to_owned())
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, many.join(","));
        assert!(matches!(parse(&body), Err(ApiError::BadParameter(_))));
        let attrs: Vec<String> = (0..=MAX_ATTRS).map(|i| format!(r#""a{i}":1"#)).collect();
        let body = format!(
            r#"{{"events":[{{"name":"fast_empty","value":1,"attrs":{{{}}}}}]}}"#,
            attrs.join(",")
        );
        assert!(matches!(parse(&body), Err(ApiError::BadParameter(_))));
    }
}
