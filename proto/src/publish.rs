//! Body and answer of `POST /v2/realtime/publish`.

use serde::{Deserialize, Serialize};

/// A publish request. The org comes from the token, or from `org_id` when
/// the token's `org` is `*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishRequest {
    /// Target service.
    pub service: String,
    /// Property, or `None` for an org-wide event.
    #[serde(default)]
    pub property_id: Option<String>,
    /// Event type.
    pub event_type: String,
    /// Event id; the edge makes one up when absent.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Entity kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    /// Entity id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Payload.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Org, only for tokens whose `org` is `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
}

/// The answer: where JetStream stored it, and whether it was a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    /// Stream sequence.
    pub seq: u64,
    /// True when JetStream had already stored this `Nats-Msg-Id`.
    pub duplicate: bool,
}
