//! Uploads (contract section 7): the payload of the `upload.completed`
//! event every finished upload publishes on its org's `uploads` service.

use serde::{Deserialize, Serialize};

/// The service finished uploads are announced on.
pub const UPLOADS_SERVICE: &str = "uploads";
/// The announcement's event type.
pub const COMPLETED_EVENT: &str = "upload.completed";
/// The announcement's entity type.
pub const ENTITY_TYPE: &str = "upload";

/// What an upload says about its file (tus `Upload-Metadata`, checked):
/// kept with the upload and repeated in its `upload.completed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadMetadata {
    /// The file's name as the user chose it.
    pub filename: String,
    /// Its declared MIME type, lowercased, without parameters.
    pub filetype: String,
    /// What the document is (`passport`, `id-card`, …), free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_type: Option<String>,
    /// The property it belongs to (a subject token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<String>,
    /// The guest it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_id: Option<String>,
}

impl UploadMetadata {
    /// Every field that is set, by its tus key.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("filename", Some(self.filename.as_str())),
            ("filetype", Some(self.filetype.as_str())),
            ("documentType", self.document_type.as_deref()),
            ("propertyId", self.property_id.as_deref()),
            ("guestId", self.guest_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// Payload of `upload.completed`: the upload's id, its metadata's fields
/// (flattened), its size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadCompleted {
    /// Upload id (its content is at `/v2/uploads/<id>/content`).
    pub id: String,
    /// What the upload said about the file.
    #[serde(flatten)]
    pub file: UploadMetadata,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_flat_camel_case_json_without_unset_fields() {
        let payload = UploadCompleted {
            id: "u1".into(),
            file: UploadMetadata {
                filename: "scan.pdf".into(),
                filetype: "application/pdf".into(),
                document_type: None,
                property_id: Some("p1".into()),
                guest_id: None,
            },
            size: 3,
            sha256: "ab".into(),
        };
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "u1",
                "filename": "scan.pdf",
                "filetype": "application/pdf",
                "propertyId": "p1",
                "size": 3,
                "sha256": "ab",
            })
        );
        let back: UploadCompleted = serde_json::from_value(json).unwrap();
        assert_eq!(back, payload);
    }
}
