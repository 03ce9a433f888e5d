//! `/v2/uploads`: tus 1.0.0 (core, creation, creation-with-upload,
//! checksum, termination, expiration; contract section 7), so tus-js-client
//! and Uppy upload unchanged, plus `GET /v2/uploads/<id>/content` for the
//! finished file.
//!
//! Invariant: the token is checked (and the `Tus-Resumable` version) before
//! a body is read or NATS is touched; every upload is looked up under the
//! token's org, so another org's id answers 404 like one that never
//! existed. A body is stored in pieces as it arrives (one piece in memory
//! at a time), except a checksummed one, which is read whole (up to
//! `HERALD_UPLOAD_CHECKSUM_MAX_BYTES`) and verified before its first piece
//! is stored.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::jetstream::object_store::ObjectInfo;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use herald_proto::ErrorBody;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use sha1::Digest as _;
use tokio::sync::mpsc;

use crate::auth::{extract_token, Principal};
use crate::error::ApiError;
use crate::nats::uploads::{now_ms, AppendError, Found, Progress, UploadRecord, PIECE_BYTES};
use crate::node::Node;
use crate::ops::metrics::UploadFailure;
use crate::transport::body::{self, BodyLimits};
use crate::upload::completion;
use crate::upload::metadata;
use crate::upload::sniff::{self, Verdict};

/// The tus version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The tus extensions supported.
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,checksum,termination,expiration";
/// `Upload-Checksum` algorithms supported.
const TUS_CHECKSUMS: &str = "sha1,sha256";
/// The body type of PATCH (and of a POST with data).
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// tus's status for a checksum mismatch.
const CHECKSUM_MISMATCH: u16 = 460;
/// Length of an upload id.
const ID_LEN: usize = 26;
/// Headers a browser may send and read (added to the CORS layer).
pub const CORS_REQUEST_HEADERS: [&str; 8] = [
    "tus-resumable",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "upload-checksum",
    "upload-defer-length",
    "upload-concat",
    "x-http-method-override",
];
/// Headers of an answer a browser may read.
pub const CORS_EXPOSED_HEADERS: [&str; 9] = [
    "location",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "upload-offset",
    "upload-length",
    "upload-expires",
];

/// An answer other than success; every one carries `Tus-Resumable`.
#[derive(Debug)]
pub enum Refusal {
    /// One of the node's usual errors.
    Api(ApiError),
    /// A tus status (409, 410, 412, 460, …) with its code and message.
    Tus {
        /// The status.
        status: StatusCode,
        /// Stable error code.
        code: &'static str,
        /// For people.
        message: String,
        /// The stored offset, for a 409.
        offset: Option<u64>,
    },
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl Refusal {
    fn tus(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Tus {
            status,
            code,
            message: message.into(),
            offset: None,
        }
    }

    fn conflict(stored: u64, message: impl Into<String>) -> Self {
        Self::Tus {
            status: StatusCode::CONFLICT,
            code: "offset_mismatch",
            message: message.into(),
            offset: Some(stored),
        }
    }

    fn gone() -> Self {
        Self::tus(StatusCode::GONE, "expired", "the upload expired")
    }

    fn not_found() -> Self {
        Self::Api(ApiError::NotFound)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = match self {
            Self::Api(e) => e.into_response(),
            Self::Tus {
                status,
                code,
                message,
                offset,
            } => {
                let mut r = (status, Json(ErrorBody::new(code, message))).into_response();
                if let Some(o) = offset {
                    r.headers_mut()
                        .insert("upload-offset", HeaderValue::from(o));
                }
                if status == StatusCode::PRECONDITION_FAILED {
                    r.headers_mut()
                        .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
                }
                r
            }
        };
        tus_headers(response.headers_mut());
        response
    }
}

fn tus_headers(h: &mut HeaderMap) {
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
}

fn storage(node: &Node, e: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %e, "upload storage failed");
    node.metrics.count_upload_failure(UploadFailure::Storage);
    Refusal::Api(ApiError::Unavailable(
        "the upload store is not reachable; retry".into(),
    ))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The caller: a token of one org, speaking tus 1.0.0.
fn caller(node: &Node, headers: &HeaderMap, tus: bool) -> Result<Principal, Refusal> {
    let who = node.verifier.verify(extract_token(headers, None)?)?;
    if who.org == "*" {
        return Err(ApiError::Forbidden("a cross-org token cannot upload".into()).into());
    }
    if tus && header_str(headers, "tus-resumable") != Some(TUS_VERSION) {
        return Err(Refusal::tus(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_version",
            format!("Tus-Resumable must be {TUS_VERSION}"),
        ));
    }
    Ok(who)
}

fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// `len` random characters of `alphabet`.
fn random_token(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

/// A random upload id: 26 characters of `[a-z0-9]` (134 bits).
fn new_id() -> String {
    random_token(b"abcdefghijklmnopqrstuvwxyz0123456789", ID_LEN)
}

/// A random chunk subject token, as object stores name them.
fn new_nuid() -> String {
    random_token(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        22,
    )
}

fn is_upload_id(id: &str) -> bool {
    id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `OPTIONS /v2/uploads[/<id>]`: what this server speaks (no token).
pub async fn options(State(node): State<Arc<Node>>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    tus_headers(h);
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(TUS_CHECKSUMS),
    );
    h.insert(
        "tus-max-size",
        HeaderValue::from(node.config.upload_max_bytes),
    );
    r
}

/// The allowed types, normalized.
fn allowed(node: &Node, filetype: &str) -> bool {
    if node.config.upload_types.is_empty() {
        sniff::DEFAULT_TYPES.contains(&filetype)
    } else {
        node.config
            .upload_types
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(filetype))
    }
}

fn parse_length(node: &Node, headers: &HeaderMap) -> Result<u64, Refusal> {
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::BadParameter(
            "Upload-Defer-Length is not supported: send Upload-Length".into(),
        )
        .into());
    }
    let length: u64 = header_str(headers, "upload-length")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::BadParameter("Upload-Length must be a whole number of bytes".into())
        })?;
    if length == 0 {
        return Err(ApiError::BadParameter("Upload-Length must be at least 1".into()).into());
    }
    if length > node.config.upload_max_bytes {
        node.metrics.count_upload_failure(UploadFailure::TooLarge);
        return Err(ApiError::TooLarge(format!(
            "Upload-Length is over the limit of {} bytes",
            node.config.upload_max_bytes
        ))
        .into());
    }
    Ok(length)
}

/// `POST /v2/uploads`: creates an upload (and stores its first bytes when
/// the request has a body).
pub async fn create(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let who = caller(&node, &headers, true)?;
    let length = parse_length(&node, &headers)?;
    let metadata = metadata::parse(header_str(&headers, "upload-metadata").unwrap_or(""))
        .map_err(ApiError::BadParameter)?;
    if !allowed(&node, &metadata.filetype) {
        node.metrics.count_upload_failure(UploadFailure::Type);
        return Err(ApiError::UnsupportedMediaType(format!(
            "files of type {} are not accepted",
            metadata.filetype
        ))
        .into());
    }
    if let Some(p) = metadata.property_id.as_deref() {
        if !who.may_see_property(Some(p)) {
            return Err(
                ApiError::Forbidden(format!("the token does not allow property {p}")).into(),
            );
        }
    }
    let with_data = header_str(&headers, "content-type").is_some_and(|t| t == OFFSET_STREAM);
    let checksum = Checksum::parse(&headers)?;
    let record = UploadRecord {
        org: who.org.clone(),
        id: new_id(),
        length,
        metadata,
        nuid: new_nuid(),
        expires_ms: now_ms() + node.config.upload_expires.as_millis() as u64,
    };
    node.uploads
        .create(&record)
        .await
        .map_err(|e| storage(&node, e))?;
    node.metrics.uploads_started.fetch_add(1, Relaxed);
    tracing::debug!(org = %record.org, id = %record.id, length, "upload created");
    let mut offset = None;
    if with_data {
        let mut progress = Progress::default();
        match store_body(&node, &record, &mut progress, &headers, body, checksum).await {
            Ok(()) => offset = Some(progress.offset),
            // The client is gone or stalled: what arrived is stored.
            Err(_) if progress.offset > 0 => offset = Some(progress.offset),
            Err(e) => {
                if let Err(e) = node.uploads.remove(&record).await {
                    tracing::warn!(error = %e, "could not remove a refused upload");
                }
                return Err(e);
            }
        }
    }
    let mut r = StatusCode::CREATED.into_response();
    let h = r.headers_mut();
    tus_headers(h);
    let location = format!("/v2/uploads/{}", record.id);
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| ApiError::Internal)?,
    );
    if let Some(o) = offset {
        h.insert("upload-offset", HeaderValue::from(o));
    }
    if offset != Some(record.length) {
        expires_header(h, &record);
    }
    Ok(r)
}

fn expires_header(h: &mut HeaderMap, record: &UploadRecord) {
    if let Ok(v) = HeaderValue::from_str(&http_date(record.expires_ms)) {
        h.insert("upload-expires", v);
    }
}

/// Where an upload stands, for HEAD, PATCH, DELETE and GET.
enum Standing {
    /// Receiving bytes.
    Open(Box<(UploadRecord, Progress)>),
    /// Finished.
    Done(Box<ObjectInfo>),
}

/// Looks `id` up under `org`, finishing an upload whose bytes are all
/// stored but whose node died before it announced it.
async fn standing(node: &Node, org: &str, id: &str) -> Result<Standing, Refusal> {
    if !is_upload_id(id) {
        return Err(Refusal::not_found());
    }
    match node
        .uploads
        .find(org, id)
        .await
        .map_err(|e| storage(node, e))?
    {
        Found::Missing => Err(Refusal::not_found()),
        Found::Finished(info) => Ok(Standing::Done(info)),
        Found::Unfinished(record) => {
            let progress = node
                .uploads
                .progress(&record)
                .await
                .map_err(|e| storage(node, e))?;
            if progress.offset == record.length {
                return finish(node, &record, &progress).await.map(Standing::Done);
            }
            if record.expired(now_ms()) {
                return Err(Refusal::gone());
            }
            Ok(Standing::Open(Box::new((record, progress))))
        }
    }
}

async fn finish(
    node: &Node,
    record: &UploadRecord,
    progress: &Progress,
) -> Result<Box<ObjectInfo>, Refusal> {
    let info = completion::complete(&node.uploads, &node.publisher, record, progress)
        .await
        .map_err(|e| storage(node, e))?;
    node.metrics.uploads_completed.fetch_add(1, Relaxed);
    tracing::info!(org = %record.org, id = %record.id, size = record.length, "upload completed");
    Ok(Box::new(info))
}

/// `HEAD /v2/uploads/<id>`: the offset to continue from.
pub async fn head(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let who = caller(&node, &headers, true)?;
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    tus_headers(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let (offset, length, metadata) = match standing(&node, &who.org, &id).await? {
        Standing::Open(open) => {
            let (record, progress) = *open;
            expires_header(h, &record);
            (
                progress.offset,
                record.length,
                metadata::header(&record.metadata),
            )
        }
        Standing::Done(info) => {
            let size = info.size as u64;
            (size, size, metadata_header(&info))
        }
    };
    h.insert("upload-offset", HeaderValue::from(offset));
    h.insert("upload-length", HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&metadata) {
        h.insert("upload-metadata", v);
    }
    Ok(r)
}

fn metadata_header(info: &ObjectInfo) -> String {
    let mut pairs: Vec<_> = info.metadata.iter().collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `PATCH /v2/uploads/<id>`: appends the body at `Upload-Offset`.
pub async fn patch(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let who = caller(&node, &headers, true)?;
    if header_str(&headers, "content-type") != Some(OFFSET_STREAM) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a PATCH body must be {OFFSET_STREAM}"
        ))
        .into());
    }
    let offset: u64 = header_str(&headers, "upload-offset")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::BadParameter("Upload-Offset must be a whole number".into()))?;
    let checksum = Checksum::parse(&headers)?;
    let (record, mut progress) = match standing(&node, &who.org, &id).await? {
        Standing::Open(open) => *open,
        Standing::Done(info) => {
            let size = info.size as u64;
            if offset == size && empty_body(&headers) {
                return Ok(patched(size, None));
            }
            node.metrics.count_upload_failure(UploadFailure::Conflict);
            return Err(Refusal::conflict(size, "the upload is already complete"));
        }
    };
    if offset != progress.offset {
        node.metrics.count_upload_failure(UploadFailure::Conflict);
        return Err(Refusal::conflict(
            progress.offset,
            format!(
                "Upload-Offset is {offset} but the upload is at {}",
                progress.offset
            ),
        ));
    }
    let stored = store_body(&node, &record, &mut progress, &headers, body, checksum).await;
    if progress.offset == record.length {
        finish(&node, &record, &progress).await?;
        return Ok(patched(progress.offset, None));
    }
    stored?;
    Ok(patched(progress.offset, Some(&record)))
}

fn patched(offset: u64, open: Option<&UploadRecord>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    tus_headers(h);
    h.insert("upload-offset", HeaderValue::from(offset));
    if let Some(record) = open {
        expires_header(h, record);
    }
    r
}

/// The request says its body is empty: `Content-Length: 0`, or neither a
/// length nor `Transfer-Encoding` (HTTP/1.1 then has no body).
fn empty_body(headers: &HeaderMap) -> bool {
    match content_length(headers) {
        Some(n) => n == 0,
        None => !headers.contains_key(header::TRANSFER_ENCODING),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

/// An `Upload-Checksum` to verify a body against.
enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

impl Checksum {
    fn parse(headers: &HeaderMap) -> Result<Option<Self>, Refusal> {
        let Some(value) = headers.get("upload-checksum") else {
            return Ok(None);
        };
        let bad = |m: &str| Refusal::Api(ApiError::BadParameter(m.to_owned()));
        let value = value
            .to_str()
            .map_err(|_| bad("Upload-Checksum is not text"))?;
        let (algorithm, digest) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("Upload-Checksum must be `<algorithm> <base64 digest>`"))?;
        let digest = STANDARD
            .decode(digest.trim())
            .map_err(|_| bad("the Upload-Checksum digest is not base64"))?;
        match (algorithm, digest.len()) {
            ("sha256", 32) => Ok(Some(Self::Sha256(digest))),
            ("sha1", 20) => Ok(Some(Self::Sha1(digest))),
            ("sha256" | "sha1", _) => Err(bad("the Upload-Checksum digest has the wrong length")),
            _ => Err(bad(&format!(
                "Upload-Checksum algorithm {algorithm:?} is not supported (use {TUS_CHECKSUMS})"
            ))),
        }
    }

    fn matches(&self, data: &[u8]) -> bool {
        match self {
            Self::Sha1(want) => sha1::Sha1::digest(data)[..] == want[..],
            Self::Sha256(want) => sha2::Sha256::digest(data)[..] == want[..],
        }
    }
}

/// Stores a request body after `progress`, piece by piece, advancing it.
/// On an error, what was stored stays stored and `progress` says so.
async fn store_body(
    node: &Node,
    record: &UploadRecord,
    progress: &mut Progress,
    headers: &HeaderMap,
    body: Body,
    checksum: Option<Checksum>,
) -> Result<(), Refusal> {
    let room = record.length - progress.offset;
    let too_large = || {
        node.metrics.count_upload_failure(UploadFailure::TooLarge);
        Refusal::Api(ApiError::TooLarge(format!(
            "the body goes past Upload-Length ({} bytes are left)",
            room
        )))
    };
    if content_length(headers).is_some_and(|n| n > room) {
        return Err(too_large());
    }
    let mut writer = PieceWriter {
        node,
        record,
        progress,
    };
    if let Some(checksum) = checksum {
        let cap = node.config.upload_checksum_max_bytes;
        if content_length(headers).is_some_and(|n| n > cap as u64) {
            node.metrics.count_upload_failure(UploadFailure::TooLarge);
            return Err(ApiError::TooLarge(format!(
                "a PATCH with Upload-Checksum may carry at most {cap} bytes"
            ))
            .into());
        }
        let limits = BodyLimits {
            max_bytes: cap.min(usize::try_from(room).unwrap_or(usize::MAX)),
            idle: node.config.upload_idle_timeout,
        };
        let data = body::read(body, headers, limits).await.map_err(|e| {
            let why = match e {
                ApiError::TooLarge(_) => UploadFailure::TooLarge,
                _ => UploadFailure::Interrupted,
            };
            node.metrics.count_upload_failure(why);
            Refusal::Api(e)
        })?;
        if !checksum.matches(&data) {
            node.metrics.count_upload_failure(UploadFailure::Checksum);
            return Err(Refusal::tus(
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum_mismatch",
                "the body does not match Upload-Checksum; nothing was stored",
            ));
        }
        let mut data = data;
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(PIECE_BYTES));
            writer.store(piece).await?;
        }
        return Ok(());
    }
    // The body is read into the next piece while the one before is being
    // stored: reading and the piece's JetStream round trip overlap. At most
    // three pieces are held (one stored, one handed over, one filling).
    let (tx, mut rx) = mpsc::channel(1);
    let read = read_pieces(node, body, room, tx);
    let write = async {
        while let Some(received) = rx.recv().await {
            match received {
                Received::Piece(piece) => writer.store(piece).await?,
                Received::Rest(rest) => writer.keep(rest).await,
            }
        }
        Ok::<(), Refusal>(())
    };
    let (read, write) = tokio::join!(read, write);
    write?;
    match read {
        Ok(()) => Ok(()),
        Err(BodyEnd::TooLarge) => Err(too_large()),
        Err(BodyEnd::Interrupted(e)) => Err(writer.interrupted(e)),
    }
}

/// What the body reader hands the piece writer.
enum Received {
    /// A piece to store.
    Piece(Bytes),
    /// What arrived before the body stopped: kept if it can be.
    Rest(Bytes),
}

/// Why a streamed body ended early.
enum BodyEnd {
    /// It went past `Upload-Length`.
    TooLarge,
    /// It broke off or stalled.
    Interrupted(ApiError),
}

/// Reads a streamed PATCH body into pieces of [`PIECE_BYTES`] and hands
/// them to `tx`, at most `room` bytes; stops quietly when the writer
/// stopped taking them (it failed and answers for the request).
async fn read_pieces(
    node: &Node,
    body: Body,
    room: u64,
    tx: mpsc::Sender<Received>,
) -> Result<(), BodyEnd> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut received: u64 = 0;
    loop {
        let next = tokio::select! {
            () = tx.closed() => return Ok(()),
            next = tokio::time::timeout(node.config.upload_idle_timeout, stream.next()) => next,
        };
        let end = match next {
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => {
                received += chunk.len() as u64;
                if received > room {
                    return Err(BodyEnd::TooLarge);
                }
                buf.extend_from_slice(&chunk);
                while buf.len() >= PIECE_BYTES {
                    let piece = buf.split_to(PIECE_BYTES).freeze();
                    if tx.send(Received::Piece(piece)).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            Ok(Some(Err(e))) => ApiError::BadParameter(format!("the body stopped: {e}")),
            Err(_) => ApiError::BodyTimeout(format!(
                "no body bytes for {}s",
                node.config.upload_idle_timeout.as_secs_f32()
            )),
        };
        let _ = tx.send(Received::Rest(buf.freeze())).await;
        return Err(BodyEnd::Interrupted(end));
    }
    if !buf.is_empty() {
        let _ = tx.send(Received::Piece(buf.freeze())).await;
    }
    Ok(())
}

/// Appends pieces of one request, checking the file's first bytes first.
struct PieceWriter<'a> {
    node: &'a Node,
    record: &'a UploadRecord,
    progress: &'a mut Progress,
}

impl PieceWriter<'_> {
    async fn store(&mut self, piece: Bytes) -> Result<(), Refusal> {
        if self.progress.offset == 0
            && sniff::check(&self.record.metadata.filetype, &piece) == Verdict::Mismatch
        {
            self.node.metrics.count_upload_failure(UploadFailure::Type);
            if let Err(e) = self.node.uploads.remove(self.record).await {
                tracing::warn!(error = %e, "could not remove an upload of the wrong type");
            }
            return Err(ApiError::UnsupportedMediaType(format!(
                "the content is not {}; the upload was ended",
                self.record.metadata.filetype
            ))
            .into());
        }
        let len = piece.len() as u64;
        match self
            .node
            .uploads
            .append(self.record, self.progress, piece)
            .await
        {
            Ok(()) => {
                self.node.metrics.upload_bytes.fetch_add(len, Relaxed);
                Ok(())
            }
            Err(AppendError::Conflict) => {
                self.node
                    .metrics
                    .count_upload_failure(UploadFailure::Conflict);
                Err(Refusal::conflict(
                    self.progress.offset,
                    "another request appended to this upload first; nothing of this one past the offset was stored",
                ))
            }
            Err(AppendError::Store(e)) => Err(storage(self.node, e)),
        }
    }

    /// Stores what arrived before the body stopped, if it can.
    async fn keep(&mut self, rest: Bytes) {
        if !rest.is_empty() {
            if let Err(e) = self.store(rest).await {
                tracing::debug!(error = ?e, "could not keep the end of a cut-off body");
            }
        }
    }

    fn interrupted(&self, e: ApiError) -> Refusal {
        self.node
            .metrics
            .count_upload_failure(UploadFailure::Interrupted);
        tracing::debug!(org = %self.record.org, id = %self.record.id, offset = self.progress.offset, "upload body cut off");
        Refusal::Api(e)
    }
}

/// `DELETE /v2/uploads/<id>`: the upload and its bytes are gone.
pub async fn delete(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let who = caller(&node, &headers, true)?;
    if !is_upload_id(&id) {
        return Err(Refusal::not_found());
    }
    match node
        .uploads
        .find(&who.org, &id)
        .await
        .map_err(|e| storage(&node, e))?
    {
        Found::Missing => return Err(Refusal::not_found()),
        Found::Unfinished(record) => node
            .uploads
            .remove(&record)
            .await
            .map_err(|e| storage(&node, e))?,
        Found::Finished(_) => node
            .uploads
            .delete_object(&who.org, &id)
            .await
            .map_err(|e| storage(&node, e))?,
    }
    node.metrics.uploads_deleted.fetch_add(1, Relaxed);
    let mut r = StatusCode::NO_CONTENT.into_response();
    tus_headers(r.headers_mut());
    Ok(r)
}

/// `POST /v2/uploads/<id>` with `X-HTTP-Method-Override` (for clients
/// behind proxies that drop PATCH and DELETE).
pub async fn method_override(
    state: State<Arc<Node>>,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    match header_str(&headers, "x-http-method-override").map(str::to_ascii_uppercase) {
        Some(m) if m == Method::PATCH.as_str() => patch(state, id, headers, body).await,
        Some(m) if m == Method::DELETE.as_str() => delete(state, id, headers).await,
        _ => Err(ApiError::BadParameter(
            "POST to an upload needs X-HTTP-Method-Override: PATCH or DELETE".into(),
        )
        .into()),
    }
}

/// `GET /v2/uploads/<id>/content`: the finished file, streamed.
pub async fn content(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let who = caller(&node, &headers, false)?;
    let info = match standing(&node, &who.org, &id).await? {
        Standing::Done(info) => info,
        Standing::Open(open) => {
            let progress = &open.1;
            return Err(Refusal::Tus {
                status: StatusCode::CONFLICT,
                code: "unfinished",
                message: "the upload is not finished".into(),
                offset: Some(progress.offset),
            });
        }
    };
    if let Some(p) = info.metadata.get("propertyId") {
        if !who.may_see_property(Some(p)) {
            return Err(
                ApiError::Forbidden(format!("the token does not allow property {p}")).into(),
            );
        }
    }
    let chunks = node
        .uploads
        .content(&info)
        .await
        .map_err(|e| storage(&node, e))?;
    // A failed chunk read cuts the body short (the client sees less than
    // Content-Length); say why here.
    let chunks = chunks.inspect_err(move |e| {
        tracing::warn!(upload = %id, error = %e, "upload content cut short");
    });
    let mut r = Response::new(Body::from_stream(chunks));
    let h = r.headers_mut();
    let filetype = info
        .metadata
        .get("filetype")
        .map_or("application/octet-stream", String::as_str);
    if let Ok(v) = HeaderValue::from_str(filetype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size as u64));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let filename = info.metadata.get("filename").map_or("file", String::as_str);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename*=UTF-8''{}",
        percent_encode(filename)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(sha) = info
        .digest
        .as_deref()
        .and_then(|d| d.strip_prefix("SHA-256="))
        .and_then(|d| URL_SAFE.decode(d).ok())
    {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(v) = HeaderValue::from_str(&format!("\"{hex}\"")) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("sha-256={}", STANDARD.encode(&sha))) {
            h.insert("digest", v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(r)
}

/// RFC 8187 `attr-char` encoding of a file name.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_26_lowercase_alphanumerics_and_anything_else_is_not_one() {
        let id = new_id();
        assert!(is_upload_id(&id), "{id}");
        assert_ne!(new_id(), id);
        assert!(!is_upload_id("ABC"));
        assert!(!is_upload_id(&"a".repeat(27)));
        assert!(!is_upload_id("..%2f"));
    }

    #[test]
    fn checksums_parse_and_check() {
        let mut h = HeaderMap::new();
        let sum = STANDARD.encode(sha2::Sha256::digest(b"hello"));
        h.insert("upload-checksum", format!("sha256 {sum}").parse().unwrap());
        let c = Checksum::parse(&h).unwrap().unwrap();
        assert!(c.matches(b"hello"));
        assert!(!c.matches(b"hellp"));
        h.insert("upload-checksum", "md5 AAAA".parse().unwrap());
        assert!(Checksum::parse(&h).is_err());
        h.insert("upload-checksum", "sha1 AAAA".parse().unwrap());
        assert!(Checksum::parse(&h).is_err());
    }

    #[test]
    fn file_names_are_percent_encoded_for_content_disposition() {
        assert_eq!(percent_encode("Zoë's id.pdf"), "Zo%C3%AB%27s%20id.pdf");
    }
}
