//! Finishing an upload whose last byte is stored: its object's metadata,
//! then the `upload.completed` event, then its record goes. Every step is
//! idempotent (the metadata is a rollup of the same content, the event
//! carries the fixed id `upload-<id>` that JetStream deduplicates), so a
//! node that died half-way leaves a job any node finishes again.

use async_nats::jetstream::object_store::ObjectInfo;
use herald_proto::upload::{UploadCompleted, COMPLETED_EVENT, ENTITY_TYPE, UPLOADS_SERVICE};
use herald_proto::{EventBody, EventSubject};
use herald_publisher::{OutgoingEvent, Publisher};

use crate::nats::uploads::{Progress, UploadRecord, UploadStore, UploadStoreError};

/// Why finishing stopped (it can be run again).
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// The object store did not take the metadata or drop the record.
    #[error(transparent)]
    Store(#[from] UploadStoreError),
    /// JetStream did not take the event.
    #[error("publish upload.completed: {0}")]
    Announce(String),
}

/// The event id of an upload's announcement.
pub fn event_id(id: &str) -> String {
    format!("upload-{id}")
}

/// The announcement's payload.
pub fn announcement(record: &UploadRecord, progress: &Progress) -> UploadCompleted {
    let digest = progress.digest.finish();
    UploadCompleted {
        id: record.id.clone(),
        file: record.metadata.clone(),
        size: progress.offset,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Finishes `record`, fully stored as `progress` says.
pub async fn complete(
    store: &UploadStore,
    publisher: &Publisher,
    record: &UploadRecord,
    progress: &Progress,
) -> Result<ObjectInfo, CompletionError> {
    debug_assert_eq!(progress.offset, record.length);
    let info = store.finish(record, progress).await?;
    let payload = announcement(record, progress);
    let subject = EventSubject::new(
        &record.org,
        UPLOADS_SERVICE,
        record.metadata.property_id.as_deref(),
    )
    .map_err(|e| CompletionError::Announce(e.to_string()))?;
    let body = EventBody {
        event_type: Some(COMPLETED_EVENT.to_owned()),
        event_id: Some(event_id(&record.id)),
        entity_type: Some(ENTITY_TYPE.to_owned()),
        entity_id: Some(record.id.clone()),
        payload: serde_json::to_value(&payload)
            .map_err(|e| CompletionError::Announce(e.to_string()))?,
        ..EventBody::default()
    };
    publisher
        .publish(OutgoingEvent::new(subject, body))
        .await
        .map_err(|e| CompletionError::Announce(e.to_string()))?;
    store.forget(record).await?;
    Ok(info)
}
