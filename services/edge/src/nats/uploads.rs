//! Uploads in NATS (contract section 7): the object store bucket
//! `HERALD_UPLOADS`, where an upload's bytes are stored piece by piece as
//! the chunks of its future object, and the key-value bucket
//! `HERALD_UPLOAD_STATE`, which holds each unfinished upload's record.
//!
//! Invariant: the last piece on an upload's chunk subject *is* its
//! progress. Each piece carries its end offset and the running SHA-256
//! after it, and is published with `Nats-Expected-Last-Subject-Sequence`
//! naming the piece before it, so of two writers that read the same
//! progress only one can append, and a node dying between two pieces
//! leaves a consistent upload any node continues. Finishing writes only
//! the object's metadata (a rollup on its meta subject): the chunks are
//! already where every object store client reads them.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectOptions};
use async_nats::jetstream::stream::{DirectGetErrorKind, StorageType};
use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use crate::upload::digest::RunningSha256;
use crate::upload::metadata::UploadMetadata;

/// The object store bucket of finished and unfinished uploads.
pub const BUCKET: &str = "HERALD_UPLOADS";
/// The key-value bucket of unfinished uploads' records.
pub const STATE_BUCKET: &str = "HERALD_UPLOAD_STATE";
/// Largest piece stored as one message (the object store's own chunk size).
pub const PIECE_BYTES: usize = 256 * 1024;
/// Header of a piece: the upload's offset after it.
const OFFSET_HEADER: &str = "Herald-Upload-Offset";
/// Header of a piece: the pieces stored up to and including it.
const PIECES_HEADER: &str = "Herald-Upload-Pieces";
/// Header of a piece: the running SHA-256 after it ([`RunningSha256::encode`]).
const DIGEST_HEADER: &str = "Herald-Upload-Sha256";

/// Failure talking to NATS about an upload.
#[derive(Debug, thiserror::Error)]
#[error("uploads in nats: {op}: {why}")]
pub struct UploadStoreError {
    op: &'static str,
    why: String,
}

impl UploadStoreError {
    fn new(op: &'static str, why: impl std::fmt::Display) -> Self {
        Self {
            op,
            why: why.to_string(),
        }
    }
}

/// Why a piece was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended since the progress was read.
    #[error("another request appended to this upload first")]
    Conflict,
    /// NATS did not store it.
    #[error(transparent)]
    Store(#[from] UploadStoreError),
}

/// An unfinished upload, as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Owner org.
    pub org: String,
    /// Upload id.
    pub id: String,
    /// Total size declared at creation.
    pub length: u64,
    /// What the file is.
    pub metadata: UploadMetadata,
    /// The object's chunk subject token.
    pub nuid: String,
    /// When it expires unfinished (ms since the epoch).
    pub expires_ms: u64,
}

impl UploadRecord {
    /// The object's name in the bucket.
    pub fn object_name(&self) -> String {
        object_name(&self.org, &self.id)
    }

    fn chunk_subject(&self) -> String {
        format!("$O.{BUCKET}.C.{}", self.nuid)
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// Where an upload stands: what the last stored piece says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Bytes stored.
    pub offset: u64,
    /// Stream sequence of the last piece (0 before the first).
    pub last_seq: u64,
    /// Pieces stored.
    pub pieces: u64,
    /// SHA-256 of the bytes stored.
    pub digest: RunningSha256,
}

impl Default for Progress {
    /// Nothing stored yet.
    fn default() -> Self {
        Self {
            offset: 0,
            last_seq: 0,
            pieces: 0,
            digest: RunningSha256::new(),
        }
    }
}

/// An upload found by id.
#[derive(Debug)]
pub enum Found {
    /// Still receiving bytes (or finished but not yet announced: see
    /// [`UploadStore::progress`]).
    Unfinished(UploadRecord),
    /// Finished: its object.
    Finished(Box<ObjectInfo>),
    /// No such upload in this org.
    Missing,
}

/// `<org>/<id>`: the object name of an upload.
pub fn object_name(org: &str, id: &str) -> String {
    format!("{org}/{id}")
}

fn state_key(org: &str, id: &str) -> String {
    format!("{org}.{id}")
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a [`UploadStore::content`] reader is in its object.
struct ContentReading {
    stream: jetstream::stream::Stream<()>,
    subject: String,
    /// Sequence of the last chunk read.
    after: Option<u64>,
    /// Bytes still owed.
    left: u64,
    /// `SHA-256=<base64url>`, as the object's info has it.
    digest: Option<String>,
    hasher: Sha256,
}

impl ContentReading {
    async fn next(mut self) -> std::io::Result<Option<(Bytes, Self)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let chunk = self
            .stream
            .direct_get_next_for_subject(self.subject.clone(), self.after.map(|s| s + 1))
            .await
            .map_err(|e| std::io::Error::other(format!("read chunk of {}: {e}", self.subject)))?;
        let len = chunk.payload.len() as u64;
        if len > self.left {
            return Err(std::io::Error::other(format!(
                "{}: {len} bytes where {} were left",
                self.subject, self.left
            )));
        }
        self.after = Some(chunk.sequence);
        self.left -= len;
        self.hasher.update(&chunk.payload);
        if self.left == 0 {
            if let Some(digest) = &self.digest {
                let read = format!(
                    "SHA-256={}",
                    URL_SAFE.encode(self.hasher.clone().finalize())
                );
                if &read != digest {
                    return Err(std::io::Error::other(format!(
                        "{}: the bytes read have {read}, the object {digest}",
                        self.subject
                    )));
                }
            }
        }
        Ok(Some((chunk.payload, self)))
    }
}

/// Settings of the buckets a node creates.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Replicas of both buckets.
    pub replicas: usize,
}

/// The two buckets, created on first use.
pub struct UploadStore {
    js: Context,
    settings: UploadSettings,
    buckets: OnceCell<(object_store::ObjectStore, kv::Store)>,
}

impl UploadStore {
    /// A handle; nothing is sent until a method is called.
    pub fn new(client: async_nats::Client, settings: UploadSettings) -> Self {
        Self {
            js: jetstream::new(client),
            settings,
            buckets: OnceCell::new(),
        }
    }

    async fn buckets(&self) -> Result<&(object_store::ObjectStore, kv::Store), UploadStoreError> {
        self.buckets
            .get_or_try_init(|| async {
                let objects = match self.js.get_object_store(BUCKET).await {
                    Ok(o) => o,
                    Err(_) => self
                        .js
                        .create_object_store(object_store::Config {
                            bucket: BUCKET.to_owned(),
                            description: Some("Herald uploads".to_owned()),
                            storage: StorageType::File,
                            num_replicas: self.settings.replicas.max(1),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| UploadStoreError::new("create object store", e))?,
                };
                let state = match self.js.get_key_value(STATE_BUCKET).await {
                    Ok(kv) => kv,
                    Err(_) => self
                        .js
                        .create_key_value(kv::Config {
                            bucket: STATE_BUCKET.to_owned(),
                            description: "Herald unfinished uploads".to_owned(),
                            history: 1,
                            num_replicas: self.settings.replicas.max(1),
                            storage: StorageType::File,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| UploadStoreError::new("create upload state bucket", e))?,
                };
                Ok((objects, state))
            })
            .await
    }

    async fn objects_stream(&self) -> Result<jetstream::stream::Stream<()>, UploadStoreError> {
        self.js
            .get_stream_no_info(format!("OBJ_{BUCKET}"))
            .await
            .map_err(|e| UploadStoreError::new("get uploads stream", e))
    }

    /// Stores a new upload's record.
    pub async fn create(&self, record: &UploadRecord) -> Result<(), UploadStoreError> {
        let (_, state) = self.buckets().await?;
        let body = serde_json::to_vec(record).map_err(|e| UploadStoreError::new("encode", e))?;
        state
            .create(state_key(&record.org, &record.id), body.into())
            .await
            .map_err(|e| UploadStoreError::new("create upload record", e))?;
        Ok(())
    }

    /// The upload `id` of `org`, in whichever state it is.
    pub async fn find(&self, org: &str, id: &str) -> Result<Found, UploadStoreError> {
        let (_, state) = self.buckets().await?;
        let entry = state
            .get(state_key(org, id))
            .await
            .map_err(|e| UploadStoreError::new("read upload record", e))?;
        if let Some(raw) = entry {
            let record: UploadRecord = serde_json::from_slice(&raw)
                .map_err(|e| UploadStoreError::new("decode upload record", e))?;
            return Ok(Found::Unfinished(record));
        }
        Ok(match self.object(org, id).await? {
            Some(info) => Found::Finished(Box::new(info)),
            None => Found::Missing,
        })
    }

    /// The finished object of `org`'s upload `id`.
    pub async fn object(
        &self,
        org: &str,
        id: &str,
    ) -> Result<Option<ObjectInfo>, UploadStoreError> {
        self.buckets().await?;
        let subject = format!("$O.{BUCKET}.M.{}", URL_SAFE.encode(object_name(org, id)));
        let stream = self.objects_stream().await?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(m) => {
                let info: ObjectInfo = serde_json::from_slice(&m.payload)
                    .map_err(|e| UploadStoreError::new("decode object info", e))?;
                Ok((!info.deleted).then_some(info))
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(UploadStoreError::new("read object info", e)),
        }
    }

    /// Where the upload stands, from its last stored piece.
    pub async fn progress(&self, record: &UploadRecord) -> Result<Progress, UploadStoreError> {
        let stream = self.objects_stream().await?;
        let last = match stream
            .direct_get_last_for_subject(record.chunk_subject())
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(Progress::default()),
            Err(e) => return Err(UploadStoreError::new("read last piece", e)),
        };
        let header = |name: &str| {
            last.headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .ok_or_else(|| UploadStoreError::new("read last piece", format!("no {name}")))
        };
        let offset: u64 = header(OFFSET_HEADER)?
            .parse()
            .map_err(|e| UploadStoreError::new("read last piece offset", e))?;
        let digest = RunningSha256::decode(&header(DIGEST_HEADER)?)
            .filter(|d| d.len() == offset)
            .ok_or_else(|| UploadStoreError::new("read last piece", "bad digest state"))?;
        let pieces: u64 = header(PIECES_HEADER)?
            .parse()
            .map_err(|e| UploadStoreError::new("read last piece count", e))?;
        Ok(Progress {
            offset,
            last_seq: last.sequence,
            pieces,
            digest,
        })
    }

    /// Appends `piece` after `progress` and advances it; refused with
    /// [`AppendError::Conflict`] if another writer appended first.
    pub async fn append(
        &self,
        record: &UploadRecord,
        progress: &mut Progress,
        piece: Bytes,
    ) -> Result<(), AppendError> {
        let mut digest = progress.digest.clone();
        digest.update(&piece);
        let offset = progress.offset + piece.len() as u64;
        let message = PublishMessage::build()
            .payload(piece)
            .expected_last_subject_sequence(progress.last_seq)
            .header(OFFSET_HEADER, offset.to_string().as_str())
            .header(PIECES_HEADER, (progress.pieces + 1).to_string().as_str())
            .header(DIGEST_HEADER, digest.encode().as_str());
        let ack = self
            .js
            .send_publish(record.chunk_subject(), message)
            .await
            .map_err(|e| UploadStoreError::new("publish piece", e))?
            .await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                return Err(AppendError::Conflict)
            }
            Err(e) => return Err(UploadStoreError::new("piece ack", e).into()),
        };
        progress.offset = offset;
        progress.last_seq = ack.sequence;
        progress.pieces += 1;
        progress.digest = digest;
        Ok(())
    }

    /// Writes the object's metadata of a fully stored upload: from now on
    /// it is an ordinary object. Idempotent.
    pub async fn finish(
        &self,
        record: &UploadRecord,
        progress: &Progress,
    ) -> Result<ObjectInfo, UploadStoreError> {
        let sha256 = progress.digest.finish();
        let info = ObjectInfo {
            name: record.object_name(),
            description: Some(record.metadata.filename.clone()),
            metadata: record
                .metadata
                .fields()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            headers: None,
            options: Some(ObjectOptions {
                max_chunk_size: Some(PIECE_BYTES),
                link: None,
            }),
            bucket: BUCKET.to_owned(),
            nuid: record.nuid.clone(),
            size: progress.offset as usize,
            chunks: progress.pieces as usize,
            modified: Some(async_nats::datetime::now()),
            digest: Some(format!("SHA-256={}", URL_SAFE.encode(sha256))),
            deleted: false,
        };
        let body = serde_json::to_vec(&info).map_err(|e| UploadStoreError::new("encode", e))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Rollup", "sub");
        let subject = format!("$O.{BUCKET}.M.{}", URL_SAFE.encode(record.object_name()));
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| UploadStoreError::new("publish object info", e))?
            .await
            .map_err(|e| UploadStoreError::new("object info ack", e))?;
        Ok(info)
    }

    /// Forgets an unfinished upload's record (after it finished).
    pub async fn forget(&self, record: &UploadRecord) -> Result<(), UploadStoreError> {
        let (_, state) = self.buckets().await?;
        state
            .purge(state_key(&record.org, &record.id))
            .await
            .map_err(|e| UploadStoreError::new("remove upload record", e))
    }

    /// Removes an unfinished upload: its bytes, then its record.
    pub async fn remove(&self, record: &UploadRecord) -> Result<(), UploadStoreError> {
        self.objects_stream()
            .await?
            .purge()
            .filter(record.chunk_subject())
            .await
            .map_err(|e| UploadStoreError::new("purge pieces", e))?;
        self.forget(record).await
    }

    /// Removes a finished upload's object.
    pub async fn delete_object(&self, org: &str, id: &str) -> Result<(), UploadStoreError> {
        let (objects, _) = self.buckets().await?;
        objects
            .delete(object_name(org, id))
            .await
            .map_err(|e| UploadStoreError::new("delete object", e))
    }

    /// The finished object's bytes, fetched one chunk at a time as the
    /// reader asks for them (a direct get each, on any replica): nothing is
    /// read ahead, so a client that reads slowly holds one chunk on this
    /// node, never the file. A chunk missing, or bytes that do not add up
    /// to the object's size and digest, end the stream with an error.
    pub async fn content(
        &self,
        info: &ObjectInfo,
    ) -> Result<
        impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        UploadStoreError,
    > {
        let stream = self.objects_stream().await?;
        let reading = ContentReading {
            stream,
            subject: format!("$O.{BUCKET}.C.{}", info.nuid),
            after: None,
            left: info.size as u64,
            digest: info.digest.clone(),
            hasher: Sha256::new(),
        };
        Ok(futures::stream::try_unfold(reading, ContentReading::next))
    }

    /// Every unfinished upload's record.
    pub async fn unfinished(&self) -> Result<Vec<UploadRecord>, UploadStoreError> {
        let (_, state) = self.buckets().await?;
        let mut keys = state
            .keys()
            .await
            .map_err(|e| UploadStoreError::new("list upload records", e))?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| UploadStoreError::new("list upload records", e))?;
            let Some(raw) = state
                .get(&key)
                .await
                .map_err(|e| UploadStoreError::new("read upload record", e))?
            else {
                continue;
            };
            match serde_json::from_slice::<UploadRecord>(&raw) {
                Ok(r) => found.push(r),
                Err(e) => tracing::warn!(key, error = %e, "unreadable upload record"),
            }
        }
        Ok(found)
    }
}
