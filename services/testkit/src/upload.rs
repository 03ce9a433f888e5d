//! A tus 1.0.0 client for upload tests (contract section 7, protocol
//! section 13): each request of the protocol as one call that answers with
//! the status, the headers and the whole body, so a test can check any of
//! them; the `Upload-Metadata` and `Upload-Checksum` encodings; and
//! [`RawPatch`], a PATCH written by hand over a socket, piece by piece, for
//! the cases a whole-body client cannot make: a body sent slowly, cut
//! short, or left hanging while its node is killed. [`png`] makes a file
//! whose first bytes pass the edge's content sniffing.
//!
//! Every request is bounded ([`REQUEST_TIMEOUT`]); a transport error fails
//! the test with what was asked.

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol version every request names and every answer carries.
pub const TUS_VERSION: &str = "1.0.0";
/// The only body type `PATCH` (and `POST` with a body) takes.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Where uploads are created.
pub const UPLOADS_PATH: &str = "/v2/uploads";
/// Upper bound for one request, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The client of every [`Tus`], without redirects (a `Location` is read,
/// never followed).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build reqwest client")
    })
}

/// One answer, read whole.
#[derive(Clone)]
pub struct TusResponse {
    /// What was asked, e.g. `PATCH http://…/v2/uploads/abc`, for messages.
    pub request: String,
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (empty for `HEAD`).
    pub body: Vec<u8>,
}

impl TusResponse {
    /// Header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Upload-Offset` as a number; panics (with the answer) when it is
    /// missing or not a number.
    pub fn offset(&self) -> u64 {
        self.number("Upload-Offset")
    }

    /// Header `name` as a number; panics (with the answer) when it is
    /// missing or not a number.
    pub fn number(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} in {self}"))
    }

    /// `Location`, as the path it names (an absolute URL is cut to its
    /// path); panics (with the answer) when it is missing.
    pub fn location(&self) -> String {
        let location = self
            .header("Location")
            .unwrap_or_else(|| panic!("no Location in {self}"));
        match location.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned()),
            None => location.to_owned(),
        }
    }

    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `error.code` of a JSON error body, if any.
    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
}

impl fmt::Display for TusResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 512;
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(SHOWN)]);
        let more = if self.body.len() > SHOWN { "…" } else { "" };
        write!(f, "{} → {}", self.request, self.status)?;
        for (name, value) in &self.headers {
            write!(f, "\n  {name}: {}", value.to_str().unwrap_or("<binary>"))?;
        }
        write!(f, "\n  body ({} bytes): {text}{more}", self.body.len())
    }
}

impl fmt::Debug for TusResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A tus client of one edge node, with one token (or none).
#[derive(Clone, Debug)]
pub struct Tus {
    base: String,
    token: Option<String>,
}

impl Tus {
    /// Requests to the node at `base_url` (`http://127.0.0.1:PORT`), with
    /// `Authorization: Bearer <token>` when a token is given.
    pub fn new(base_url: &str, token: Option<&str>) -> Tus {
        Tus {
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        }
    }

    /// `path` (e.g. an upload's `Location`) on this node.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request for `path` with the token and `Tus-Resumable: 1.0.0`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.bare(method, path).header("Tus-Resumable", TUS_VERSION)
    }

    /// A request for `path` with the token and nothing else.
    pub fn bare(&self, method: Method, path: &str) -> RequestBuilder {
        let request = client().request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `OPTIONS <path>`, without token or `Tus-Resumable` (a browser's
    /// preflight or tus-js-client's discovery sends neither).
    pub async fn options(&self, path: &str) -> TusResponse {
        send(client().request(Method::OPTIONS, self.url(path))).await
    }

    /// `POST /v2/uploads` with `Upload-Length: <length>` and
    /// `Upload-Metadata: <metadata>` (see [`metadata`]).
    pub async fn create(&self, length: u64, metadata: &str) -> TusResponse {
        send(self.creation(length, metadata)).await
    }

    /// [`create`](Self::create) with a first piece of the file in the body
    /// (creation-with-upload).
    pub async fn create_with_body(&self, length: u64, metadata: &str, body: &[u8]) -> TusResponse {
        let request = self
            .creation(length, metadata)
            .header("Content-Type", OFFSET_OCTET_STREAM)
            .body(body.to_vec());
        send(request).await
    }

    fn creation(&self, length: u64, metadata: &str) -> RequestBuilder {
        self.request(Method::POST, UPLOADS_PATH)
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", metadata)
    }

    /// Creates an upload that must be accepted (201); returns its
    /// `Location` path.
    pub async fn create_ok(&self, length: u64, metadata: &str) -> String {
        let r = self.create(length, metadata).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r}");
        r.location()
    }

    /// `HEAD <location>`.
    pub async fn head(&self, location: &str) -> TusResponse {
        send(self.request(Method::HEAD, location)).await
    }

    /// The stored offset: `HEAD <location>` that must answer 200.
    pub async fn offset(&self, location: &str) -> u64 {
        let r = self.head(location).await;
        assert_eq!(r.status, StatusCode::OK, "{r}");
        r.offset()
    }

    /// `PATCH <location>` at `offset` with `body`, no checksum.
    pub async fn patch(&self, location: &str, offset: u64, body: &[u8]) -> TusResponse {
        send(self.patching(location, offset, body)).await
    }

    /// `PATCH <location>` at `offset` with `body` and `Upload-Checksum:
    /// <checksum>` (see [`checksum`]).
    pub async fn patch_checked(
        &self,
        location: &str,
        offset: u64,
        body: &[u8],
        checksum: &str,
    ) -> TusResponse {
        send(
            self.patching(location, offset, body)
                .header("Upload-Checksum", checksum),
        )
        .await
    }

    /// A PATCH request ready to send, for tests that change a header.
    pub fn patching(&self, location: &str, offset: u64, body: &[u8]) -> RequestBuilder {
        self.request(Method::PATCH, location)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", OFFSET_OCTET_STREAM)
            .body(body.to_vec())
    }

    /// Sends `body` at `offset` in PATCHes of `piece` bytes, each of which
    /// must answer 204 with the offset after it; returns the last answer.
    pub async fn patch_all(
        &self,
        location: &str,
        mut offset: u64,
        body: &[u8],
        piece: usize,
    ) -> TusResponse {
        assert!(!body.is_empty() && piece > 0, "nothing to send");
        let mut last = None;
        for chunk in body.chunks(piece) {
            let r = self.patch(location, offset, chunk).await;
            offset += chunk.len() as u64;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{r}");
            assert_eq!(r.offset(), offset, "{r}");
            last = Some(r);
        }
        last.expect("at least one piece")
    }

    /// `DELETE <location>`.
    pub async fn delete(&self, location: &str) -> TusResponse {
        send(self.request(Method::DELETE, location)).await
    }

    /// `GET <location>/content`.
    pub async fn content(&self, location: &str) -> TusResponse {
        send(self.request(Method::GET, &format!("{location}/content"))).await
    }

    /// Sends `request` (built from [`request`](Self::request) or
    /// [`bare`](Self::bare)) and reads the answer whole.
    pub async fn send(&self, request: RequestBuilder) -> TusResponse {
        send(request).await
    }
}

/// Sends `request` and reads its answer whole; panics on a transport error.
pub async fn send(request: RequestBuilder) -> TusResponse {
    let (client, request) = request.build_split();
    let request = request.expect("a well-formed request");
    let what = format!("{} {}", request.method(), request.url());
    let response = client
        .execute(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: read the body: {e}"))
        .to_vec();
    TusResponse {
        request: what,
        status,
        headers,
        body,
    }
}

/// `Upload-Metadata` for `pairs`: `key base64(value)`, comma-separated.
pub fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                (*k).to_owned()
            } else {
                format!("{k} {}", STANDARD.encode(v))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An `Upload-Metadata` header decoded into `(key, value)` pairs, in order;
/// panics on a value that is not base64 of UTF-8.
pub fn parse_metadata(header: &str) -> Vec<(String, String)> {
    header
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
            let value = STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
                .unwrap_or_else(|| panic!("metadata value of {key} in {header:?}"));
            (key.to_owned(), value)
        })
        .collect()
}

/// `Upload-Checksum` for a digest: `<algorithm> <base64(digest)>`.
pub fn checksum(algorithm: &str, digest: &[u8]) -> String {
    format!("{algorithm} {}", STANDARD.encode(digest))
}

/// The signature a PNG file starts with (what the edge sniffs for).
pub const PNG_SIGNATURE: &[u8] = &[0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

/// `len` bytes of a PNG file: the signature, then a filler that depends
/// only on `seed` (two seeds give two different files).
pub fn png(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    let mut v = PNG_SIGNATURE.to_vec();
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.truncate(len);
    v
}

/// A PATCH written over a socket by hand: the request head with
/// `Content-Length: <length>` at once, then the body in the pieces and at
/// the pace the test chooses. Dropping it closes the connection (a client
/// that went away).
pub struct RawPatch {
    stream: TcpStream,
    sent: u64,
}

impl RawPatch {
    /// Connects to `addr` and sends the head of `PATCH <location>` at
    /// `offset` announcing a body of `length` bytes, with the token.
    pub async fn start(
        addr: SocketAddr,
        location: &str,
        token: &str,
        offset: u64,
        length: u64,
    ) -> RawPatch {
        let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr}: timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let head = format!(
            "PATCH {location} HTTP/1.1\r\n\
             Host: {addr}\r\n\
             Authorization: Bearer {token}\r\n\
             Tus-Resumable: {TUS_VERSION}\r\n\
             Upload-Offset: {offset}\r\n\
             Content-Type: {OFFSET_OCTET_STREAM}\r\n\
             Content-Length: {length}\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .write_all(head.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send the PATCH head to {addr}: {e}"));
        RawPatch { stream, sent: 0 }
    }

    /// Writes `bytes` of the body; `Err` once the node closed the
    /// connection (or answered and stopped reading).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.stream.write_all(bytes))
            .await
            .map_err(|_| std::io::Error::other("write timed out"))??;
        self.stream.flush().await?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    /// Body bytes written so far (handed to the kernel; the node may have
    /// read fewer).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits (at most `timeout`) for the answer's status line; `None` when
    /// the connection closed (or the wait ended) without one.
    pub async fn status(mut self, timeout: Duration) -> Option<u16> {
        let mut head = Vec::new();
        let read = async {
            let mut buf = [0u8; 1024];
            while !head.windows(2).any(|w| w == b"\r\n") {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(timeout, read).await;
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_bare_keys_are_empty() {
        let header = metadata(&[("filename", "été.pdf"), ("filetype", "application/pdf")]);
        assert_eq!(
            header,
            "filename w6l0w6kucGRm,filetype YXBwbGljYXRpb24vcGRm"
        );
        assert_eq!(
            parse_metadata(&format!("{header},flag")),
            [
                ("filename".to_owned(), "été.pdf".to_owned()),
                ("filetype".to_owned(), "application/pdf".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn png_files_start_with_the_signature_and_depend_on_the_seed() {
        assert_eq!(&png(100, 1)[..8], PNG_SIGNATURE);
        assert_eq!(png(100, 1), png(100, 1));
        assert_ne!(png(100, 1), png(100, 2));
        assert_eq!(png(5, 1), &PNG_SIGNATURE[..5]);
    }

    #[test]
    fn checksum_is_algorithm_then_base64() {
        assert_eq!(checksum("sha1", &[0xde, 0xad, 0xbe, 0xef]), "sha1 3q2+7w==");
    }
}
