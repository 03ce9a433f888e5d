//! `POST /v2/realtime/publish`: lets a service without a NATS client publish
//! an event over HTTP, with the same dedup and retries as the Rust publisher.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use herald_proto::publish::{PublishRequest, PublishResponse};
use herald_proto::{EventBody, EventSubject};
use herald_publisher::{OutgoingEvent, PublishError};
use http::HeaderMap;

use crate::auth::{extract_token, Role};
use crate::delivery::filter;
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::telemetry;
use crate::transport::body;
use crate::transport::http::require_json;

/// `POST /v2/realtime/publish` (role `publisher`). The token and role are
/// checked before the body is read.
pub async fn publish(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let principal = node.verifier.verify(extract_token(&headers, None)?)?;
    if !principal.has_role(Role::Publisher) {
        return Err(ApiError::Forbidden(
            "publishing needs the publisher role".into(),
        ));
    }
    require_json(&headers)?;
    let body = body::read_for(&node, body, &headers, node.config.max_event_bytes).await?;
    let req: PublishRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadParameter(format!("invalid publish body: {e}")))?;
    let org = principal.target_org(req.org_id.as_deref())?;
    if req.event_type.is_empty() {
        return Err(ApiError::BadParameter("eventType is required".into()));
    }
    let subject = EventSubject::new(&org, &req.service, req.property_id.as_deref())
        .map_err(|e| ApiError::BadParameter(e.to_string()))?;
    filter::check_known(&node.switches.disabled_services(), &req.service)?;
    principal.may_publish(&req.service, req.property_id.as_deref())?;
    // Without an eventId the attempt gets one here, so that a 503 can name
    // it: a retry that carries it is deduplicated by JetStream.
    let given_id = req.event_id.is_some();
    let event_id = req.event_id.unwrap_or_else(new_event_id);
    let body = EventBody {
        event_type: Some(req.event_type),
        event_id: Some(event_id.clone()),
        timestamp: req.timestamp,
        entity_type: req.entity_type,
        entity_id: req.entity_id,
        payload: req.payload,
        ..EventBody::default()
    };
    let mut event = OutgoingEvent::new(subject, body);
    // With trace export on, the publisher's own span (a child of this
    // request's server span, which continues the caller's trace) names the
    // event's trace context; without it, the caller's passes through.
    if telemetry::span_context(&tracing::Span::current()).is_none() {
        if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            event = event.with_traceparent(tp);
        }
    }
    match node.publisher.publish(event).await {
        Ok(ack) => Ok(Json(PublishResponse {
            seq: ack.seq,
            duplicate: ack.duplicate,
        })),
        Err(PublishError::Invalid(m)) => Err(ApiError::BadParameter(m)),
        Err(e @ PublishError::Unavailable { .. }) => {
            tracing::warn!(error = %e, "publish failed");
            // JetStream may have stored the event without the ack reaching
            // us; only a retry with the same eventId is deduplicated.
            let message = if given_id {
                "JetStream did not acknowledge the event; retrying with the same eventId is safe"
                    .to_owned()
            } else {
                format!(
                    "JetStream did not acknowledge the event and it may have been stored; \
                     retrying is safe only with an eventId: retry with \"eventId\":\"{event_id}\" \
                     (the id this attempt used), as a retry without one may store the event twice"
                )
            };
            Err(ApiError::Unavailable(message))
        }
        Err(e @ PublishError::Rejected { .. }) => {
            tracing::error!(error = %e, "publish rejected by JetStream");
            Err(ApiError::Internal)
        }
    }
}

/// A random event id (128 bits, hex) for a publish that named none.
fn new_event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
