//! The HTTP side of rooms (contract section 6), for clients without a
//! stream connection and for bots: a room's messages by page, its
//! presence and statistics, and posting a message.
//!
//! Invariant: every endpoint checks the token (and the `rooms` claim)
//! before it reads a body or touches NATS, and acts on the token's org
//! only (a cross-org publisher names its org in the body), so no request
//! reaches another org's room.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use herald_proto::room::{
    MessagesPage, PostMessage, Posted, PresenceList, PresenceState, RoomErrorCode, RoomStats,
    DEFAULT_HISTORY, MAX_HISTORY, MAX_TEXT_BYTES,
};
use http::HeaderMap;

use crate::auth::{extract_token, Principal, Role};
use crate::error::ApiError;
use crate::nats::rooms::StateChange;
use crate::node::Node;
use crate::room::presence::PresenceView;
use crate::transport::body;
use crate::transport::http::require_json;
use crate::transport::ws::rooms::{check_message, check_room, store_message, Refusal};

impl Refusal {
    /// The refusal as an HTTP error (counted like an error frame).
    fn into_api(self, node: &Node) -> ApiError {
        node.metrics.count_room_error(self.code);
        match self.code {
            RoomErrorCode::Forbidden => ApiError::Forbidden(self.message),
            RoomErrorCode::TooLarge => ApiError::TooLarge(self.message),
            RoomErrorCode::RateLimited => ApiError::RateLimited {
                message: self.message,
                retry_after: 1,
            },
            RoomErrorCode::Unavailable => ApiError::Unavailable(self.message),
            RoomErrorCode::BadRequest | RoomErrorCode::NotJoined => {
                ApiError::BadParameter(self.message)
            }
        }
    }
}

/// The caller, allowed into `room` of its own org.
fn member(node: &Node, headers: &HeaderMap, room: &str) -> Result<Principal, ApiError> {
    let who = node.verifier.verify(extract_token(headers, None)?)?;
    if who.org == "*" {
        return Err(ApiError::Forbidden(
            "a cross-org token cannot read rooms".into(),
        ));
    }
    check_room(&who, room).map_err(|r| r.into_api(node))?;
    Ok(who)
}

fn query_u64(query: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::BadParameter(format!("{name} must be a whole number")));
        }
    }
    Ok(None)
}

/// `GET /v2/rooms/<room>/messages?before=<seq>&limit=<n>`: oldest first.
pub async fn messages(
    State(node): State<Arc<Node>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagesPage>, ApiError> {
    let who = member(&node, &headers, &room)?;
    let before = query_u64(query.as_deref(), "before")?;
    let limit = query_u64(query.as_deref(), "limit")?.unwrap_or(DEFAULT_HISTORY as u64);
    if !(1..=MAX_HISTORY as u64).contains(&limit) {
        return Err(ApiError::BadParameter(format!(
            "limit is 1 to {MAX_HISTORY}"
        )));
    }
    if before == Some(0) {
        return Err(ApiError::BadParameter("before is 1 or more".into()));
    }
    let store = node.rooms.store().await?;
    let until = match before {
        Some(b) => b - 1,
        None => store.last_seq(&who.org, &room).await?,
    };
    let started = Instant::now();
    let messages = if until == 0 {
        Vec::new()
    } else {
        store
            .history(&who.org, &room, until, limit as usize)
            .await?
    };
    node.metrics.record_room_history(started.elapsed());
    Ok(Json(MessagesPage { messages }))
}

/// The room's merged presence as stored now.
async fn presence_of(node: &Node, org: &str, room: &str) -> Result<PresenceView, ApiError> {
    let store = node.rooms.store().await?;
    let mut view = PresenceView::default();
    for change in store.room_state(org, room).await? {
        if let StateChange::Presence { room, node, entry } = change {
            view.apply(&room, &node, entry);
        }
    }
    Ok(view)
}

/// `GET /v2/rooms/<room>/presence`.
pub async fn presence(
    State(node): State<Arc<Node>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PresenceList>, ApiError> {
    let who = member(&node, &headers, &room)?;
    let view = presence_of(&node, &who.org, &room).await?;
    Ok(Json(PresenceList {
        members: view.members(&room),
    }))
}

/// `GET /v2/rooms/<room>/stats`.
pub async fn stats(
    State(node): State<Arc<Node>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RoomStats>, ApiError> {
    let who = member(&node, &headers, &room)?;
    let members = presence_of(&node, &who.org, &room).await?.members(&room);
    let store = node.rooms.store().await?;
    let messages = store.count(&who.org, &room).await?;
    let last_seq = store.last_seq(&who.org, &room).await?;
    Ok(Json(RoomStats {
        members: members.len() as u64,
        online: members
            .iter()
            .filter(|m| m.state == PresenceState::Online)
            .count() as u64,
        messages,
        last_seq,
    }))
}

/// `POST /v2/rooms/<room>/messages` (a member's token, or a publisher's of
/// the org): stores the message; members on every node get it.
pub async fn post(
    State(node): State<Arc<Node>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Posted>, ApiError> {
    let who = node.verifier.verify(extract_token(&headers, None)?)?;
    if who.org == "*" && !who.has_role(Role::Publisher) {
        return Err(ApiError::Forbidden(
            "a cross-org token needs the publisher role".into(),
        ));
    }
    check_room(&who, &room).map_err(|r| r.into_api(&node))?;
    require_json(&headers)?;
    if let Err(wait) = node.room_limiter.check(&who.org, &who.user) {
        node.metrics.guards.rate_limited.fetch_add(1, Relaxed);
        node.metrics.count_room_error(RoomErrorCode::RateLimited);
        return Err(ApiError::RateLimited {
            message: "at most 10 messages a second per user".into(),
            retry_after: wait.as_secs().max(1) as u32,
        });
    }
    // The text is at most 4096 bytes; JSON escapes can make it six times
    // that, plus the other fields.
    let body = body::read_for(&node, body, &headers, MAX_TEXT_BYTES * 6 + 1024).await?;
    let req: PostMessage = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadParameter(format!("invalid message body: {e}")))?;
    let org = who.target_org(req.org_id.as_deref())?;
    check_message(&req.text, req.client_msg_id.as_deref()).map_err(|r| r.into_api(&node))?;
    let stored = store_message(&node, &org, &room, &who.user, req.text, req.client_msg_id)
        .await
        .map_err(|r| r.into_api(&node))?;
    Ok(Json(Posted {
        seq: stored.seq,
        duplicate: stored.duplicate,
    }))
}
