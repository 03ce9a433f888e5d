//! `POST /v2/realtime/publish`: lets a service without a NATS client publish
//! an event over HTTP, with the same dedup and retries as the Rust publisher.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use herald_proto::publish::{PublishRequest, PublishResponse};
use herald_proto::{EventBody, EventSubject};
use herald_publisher::{OutgoingEvent, PublishError};
use http::HeaderMap;

use crate::auth::{extract_token, Role};
use crate::error::ApiError;
use crate::http::require_json;
use crate::node::Node;

/// `POST /v2/realtime/publish` (role `publisher`).
pub async fn publish(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PublishResponse>, ApiError> {
    let principal = node.verifier.verify(extract_token(&headers, None)?)?;
    if !principal.has_role(Role::Publisher) {
        return Err(ApiError::Forbidden(
            "publishing needs the publisher role".into(),
        ));
    }
    require_json(&headers)?;
    if body.len() > node.config.max_event_bytes {
        return Err(ApiError::TooLarge(format!(
            "body is over {} bytes",
            node.config.max_event_bytes
        )));
    }
    let req: PublishRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadParameter(format!("invalid publish body: {e}")))?;
    let org = principal.target_org(req.org_id.as_deref())?;
    if req.event_type.is_empty() {
        return Err(ApiError::BadParameter("eventType is required".into()));
    }
    let subject = EventSubject::new(&org, &req.service, req.property_id.as_deref())
        .map_err(|e| ApiError::BadParameter(e.to_string()))?;
    principal.may_publish(&req.service, req.property_id.as_deref())?;
    let body = EventBody {
        event_type: Some(req.event_type),
        event_id: req.event_id,
        timestamp: req.timestamp,
        entity_type: req.entity_type,
        entity_id: req.entity_id,
        payload: req.payload,
        ..EventBody::default()
    };
    let mut event = OutgoingEvent::new(subject, body);
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        event = event.with_traceparent(tp);
    }
    match node.publisher.publish(event).await {
        Ok(ack) => Ok(Json(PublishResponse {
            seq: ack.seq,
            duplicate: ack.duplicate,
        })),
        Err(PublishError::Invalid(m)) => Err(ApiError::BadParameter(m)),
        Err(e @ PublishError::Unavailable { .. }) => {
            tracing::warn!(error = %e, "publish failed");
            Err(ApiError::Unavailable(
                "JetStream did not acknowledge the event; retrying is safe".into(),
            ))
        }
        Err(e @ PublishError::Rejected { .. }) => {
            tracing::error!(error = %e, "publish rejected by JetStream");
            Err(ApiError::Internal)
        }
    }
}
