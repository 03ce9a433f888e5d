//! Control across nodes. A request to any node publishes a control message on
//! `herald.control.<org>` ([`send`]); every node subscribes to
//! `herald.control.*` ([`follow`]) and applies it to the matching
//! connections it holds. Core NATS: a node that is away when a message is
//! sent misses it, which is fine for what it carries (a connection that was
//! not there cannot be changed). The HTTP endpoints that send them are in
//! `transport::admin`.

use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ops::connections::{Connections, Control};

/// Subject prefix of control messages.
pub const CONTROL_PREFIX: &str = "herald.control";

/// A control message on `herald.control.<org>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ControlMessage {
    /// Change the subscription of every connection of `user`.
    #[serde(rename_all = "camelCase")]
    Update {
        /// The user (`sub`).
        user: String,
        /// New services.
        services: Vec<String>,
        /// New property filter.
        property_id: Option<String>,
    },
    /// Close the connections of `user`, or of the whole org.
    #[serde(rename_all = "camelCase")]
    Disconnect {
        /// The user, or `None` for everyone in the org.
        user: Option<String>,
        /// Close code.
        code: u16,
        /// Reason sent with the close.
        reason: String,
    },
}

/// Applies control messages from every node to `connections` until `stop`.
pub async fn follow(
    client: async_nats::Client,
    connections: Arc<Connections>,
    stop: CancellationToken,
) {
    let mut sub = loop {
        match client.subscribe(format!("{CONTROL_PREFIX}.*")).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to control messages; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = stop.cancelled() => break,
        };
        let Some(org) = msg
            .subject
            .as_str()
            .strip_prefix(CONTROL_PREFIX)
            .and_then(|s| s.strip_prefix('.'))
        else {
            continue;
        };
        let parsed: ControlMessage = match serde_json::from_slice(&msg.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%org, error = %e, "ignoring malformed control message");
                continue;
            }
        };
        let reached = match parsed {
            ControlMessage::Update {
                user,
                services,
                property_id,
            } => connections.dispatch(
                org,
                Some(&user),
                &Control::Update {
                    services,
                    property: property_id,
                },
            ),
            ControlMessage::Disconnect { user, code, reason } => {
                connections.dispatch(org, user.as_deref(), &Control::Close { code, reason })
            }
        };
        tracing::debug!(%org, reached, "control message applied");
    }
}

/// Why a control message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message could not be encoded.
    #[error("cannot encode the control message: {0}")]
    Encode(#[from] serde_json::Error),
    /// NATS did not take it.
    #[error("NATS is not reachable: {0}")]
    Publish(#[from] async_nats::PublishError),
    /// NATS did not confirm it.
    #[error("NATS is not reachable: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// Publishes `message` to every node holding connections of `org`.
pub async fn send(
    client: &async_nats::Client,
    org: &str,
    message: &ControlMessage,
) -> Result<(), SendError> {
    let payload = serde_json::to_vec(message)?;
    client
        .publish(format!("{CONTROL_PREFIX}.{org}"), payload.into())
        .await?;
    client.flush().await?;
    Ok(())
}
