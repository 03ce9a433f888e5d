//! The admin and control endpoints: `POST /v2/realtime/update-services`
//! (change a user's subscriptions in place), `POST /v2/realtime/disconnect`
//! (close a user's or an org's connections, for logout and permission
//! changes) and the kill switches `GET`/`PUT /v2/realtime/switches`. Each
//! checks the caller's token before it reads the body; the first two reach
//! every node through [`control`](crate::ops::control).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use herald_proto::CloseCode;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{extract_token, Principal, Role};
use crate::delivery::filter::Filter;
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::control::{self, ControlMessage};
use crate::ops::switches::{self, SwitchState};
use crate::transport::body;
use crate::transport::http::require_json;

/// Largest control request body; the largest one names 64 services.
const MAX_CONTROL_BODY: usize = 16 * 1024;

async fn send(node: &Node, org: &str, message: &ControlMessage) -> Result<(), ApiError> {
    control::send(&node.client, org, message)
        .await
        .map_err(|e| match e {
            control::SendError::Encode(e) => {
                tracing::error!(error = %e, "cannot encode a control message");
                ApiError::Internal
            }
            e => ApiError::Unavailable(e.to_string()),
        })
}

fn principal(node: &Node, headers: &HeaderMap) -> Result<Principal, ApiError> {
    node.verifier.verify(extract_token(headers, None)?)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadParameter(format!("invalid body: {e}")))
}

/// Reads and parses a control body; call only once the caller is authorized.
async fn read<T: for<'de> Deserialize<'de>>(
    node: &Node,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    parse(&body::read_for(node, body, headers, MAX_CONTROL_BODY).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServices {
    services: Vec<String>,
    #[serde(default)]
    property_id: Option<String>,
}

/// `POST /v2/realtime/update-services`: the caller's own connections, on
/// every node. Rate-limited per (org, user): each call reaches every node.
pub async fn update_services(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let who = principal(&node, &headers)?;
    if who.org == "*" {
        return Err(ApiError::Forbidden(
            "a cross-org token has no connections".into(),
        ));
    }
    require_json(&headers)?;
    if let Err(wait) = node.control_limiter.check(&who.org, &who.user) {
        node.metrics
            .guards
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::RateLimited {
            message: "too many update-services calls for this user".into(),
            retry_after: wait.as_secs().max(1) as u32,
        });
    }
    let req: UpdateServices = read(&node, &headers, body).await?;
    // Checked here so the caller learns of a forbidden change; every
    // connection checks again against its own token.
    Filter::new(
        &who,
        Some(req.services.clone()),
        req.property_id.clone(),
        node.switches.disabled_services(),
    )?;
    let message = ControlMessage::Update {
        user: who.user.clone(),
        services: req.services,
        property_id: req.property_id,
    };
    send(&node, &who.org, &message).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Disconnect {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v2/realtime/disconnect` (role `admin`): closes a user's
/// connections, or every connection of the org, on every node, with 4001.
pub async fn disconnect(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let who = principal(&node, &headers)?;
    if who.role != Some(Role::Admin) {
        return Err(ApiError::Forbidden(
            "disconnecting needs the admin role".into(),
        ));
    }
    require_json(&headers)?;
    let req: Disconnect = read(&node, &headers, body).await?;
    let org = who.target_org(req.org_id.as_deref())?;
    let reason = req
        .reason
        .unwrap_or_else(|| "disconnected by an administrator".into());
    let message = ControlMessage::Disconnect {
        user: req.user_id,
        code: CloseCode::Unauthenticated.code(),
        reason,
    };
    send(&node, &org, &message).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))))
}

/// `GET /v2/realtime/switches` (role `admin` with `org: "*"`): this node's
/// effective switches. They are node-wide, so an org's admin may not read them.
pub async fn get_switches(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = principal(&node, &headers)?;
    if !who.is_cluster_admin() {
        return Err(ApiError::Forbidden(
            "switches need an admin token with org '*'".into(),
        ));
    }
    let mut services: Vec<String> = node
        .switches
        .disabled_services()
        .disabled()
        .cloned()
        .collect();
    services.sort();
    Ok(Json(json!({
        "disabled": node.switches.disabled(),
        "disabledServices": services,
        "cluster": node.switches.runtime(),
    })))
}

/// `PUT /v2/realtime/switches` (role `admin` with `org: "*"`): sets the
/// cluster-wide switches; every node applies them within a second or two.
pub async fn put_switches(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SwitchState>, ApiError> {
    let who = principal(&node, &headers)?;
    if !who.is_cluster_admin() {
        return Err(ApiError::Forbidden(
            "cluster switches need an admin token with org '*'".into(),
        ));
    }
    require_json(&headers)?;
    let state: SwitchState = read(&node, &headers, body).await?;
    for s in &state.disabled_services {
        herald_proto::subject::check_token("service", s)
            .map_err(|e| ApiError::BadParameter(e.to_string()))?;
    }
    switches::store(&node.client, node.config.stream_replicas, &state)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot store switches");
            ApiError::Unavailable("cannot store the switches in NATS".into())
        })?;
    Ok(Json(state))
}
