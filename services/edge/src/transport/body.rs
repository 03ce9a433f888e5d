//! Request bodies, read only after the caller's token was checked: refused
//! at once (413) when `Content-Length` is over the cap, cut off when the
//! bytes grow past it, and cut off (408) when they stop arriving for
//! `HERALD_BODY_TIMEOUT`. Memory grows with the bytes that arrived, never
//! with what the client announced, so a stalled body costs little.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, HeaderMap};

use crate::error::ApiError;
use crate::node::Node;

/// How a body is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Longest wait for the next bytes of the body.
    pub idle: Duration,
}

/// Reads a request's body of at most `max_bytes` with the node's
/// `HERALD_BODY_TIMEOUT`, counting cut-off bodies in the metrics.
pub async fn read_for(
    node: &Node,
    body: Body,
    headers: &HeaderMap,
    max_bytes: usize,
) -> Result<Bytes, ApiError> {
    let limits = BodyLimits {
        max_bytes,
        idle: node.config.body_timeout,
    };
    let read = read(body, headers, limits).await;
    if matches!(read, Err(ApiError::BodyTimeout(_))) {
        node.metrics.guards.body_timeouts.fetch_add(1, Relaxed);
    }
    read
}

/// Reads `body` whole within `limits`. `headers` are the request's, for
/// `Content-Length`.
pub async fn read(body: Body, headers: &HeaderMap, limits: BodyLimits) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("body is over {} bytes", limits.max_bytes));
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::BadParameter("Content-Length is not a number".into()))?;
        if len > limits.max_bytes as u64 {
            return Err(too_large());
        }
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(limits.idle, stream.next()).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout(format!(
                    "no body bytes for {}s",
                    limits.idle.as_secs_f32()
                )))
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                // The client went away or sent a malformed chunked body.
                return Err(ApiError::BadParameter(format!("cannot read the body: {e}")));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if buf.len() + chunk.len() > limits.max_bytes {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use http::HeaderValue;

    const LIMITS: BodyLimits = BodyLimits {
        max_bytes: 10,
        idle: Duration::from_secs(10),
    };

    fn length(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from_str(n).expect("ok"),
        );
        h
    }

    #[tokio::test]
    async fn reads_a_body_within_the_cap() {
        let b = read(Body::from("hello"), &length("5"), LIMITS)
            .await
            .expect("ok");
        assert_eq!(&b[..], b"hello");
    }

    #[tokio::test]
    async fn refuses_by_content_length_or_by_bytes() {
        let r = read(Body::empty(), &length("11"), LIMITS).await;
        assert!(matches!(r, Err(ApiError::TooLarge(_))));
        let r = read(Body::from("01234567890"), &HeaderMap::new(), LIMITS).await;
        assert!(matches!(r, Err(ApiError::TooLarge(_))));
        let r = read(Body::empty(), &length("ten"), LIMITS).await;
        assert!(matches!(r, Err(ApiError::BadParameter(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))])
            .chain(stream::pending());
        let r = read(Body::from_stream(chunks), &length("9"), LIMITS).await;
        assert!(matches!(r, Err(ApiError::BodyTimeout(_))));
    }
}
