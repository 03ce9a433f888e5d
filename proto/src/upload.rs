//! Uploads (contract section 7): the payload of the `upload.completed`
//! event every finished upload publishes on its org's `uploads` service.

use serde::{Deserialize, Serialize};

/// The service finished uploads are announced on.
pub const UPLOADS_SERVICE: &str = "uploads";
/// The announcement's event type.
pub const COMPLETED_EVENT: &str = "upload.completed";
/// The announcement's entity type.
pub const ENTITY_TYPE: &str = "upload";

/// Payload of `upload.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadCompleted {
    /// Upload id (its content is at `/v2/uploads/<id>/content`).
    pub id: String,
    /// The file's name.
    pub filename: String,
    /// Its declared MIME type.
    pub filetype: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// What the document is, if the uploader said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_type: Option<String>,
    /// The property it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<String>,
    /// The guest it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_id: Option<String>,
}
