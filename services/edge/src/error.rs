//! Errors a request can end in, and how each reaches the client: HTTP
//! status, error code and `Retry-After` for HTTP answers (poll, SSE, the
//! JSON endpoints), the close code for a WebSocket stream.
//!
//! Invariant: every variant has exactly one row in [`ApiError::mapping`],
//! a `match` without a catch-all, so a new variant does not compile until
//! it is mapped on both transports. The browser SDK gives up on a
//! subscription refused with 4003 (and with 4000 before its `ack`), so a
//! failure of the server must never map to either.

use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_proto::{CloseCode, ErrorBody};
use http::{HeaderValue, StatusCode};

/// Seconds a client waits after a connection cap refused it.
const TOO_MANY_RETRY_SECS: u32 = 5;
/// Seconds a client waits while the node or the stream is unavailable.
const UNAVAILABLE_RETRY_SECS: u32 = 2;

/// A request that cannot be served, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 / 4000: a parameter, body or message is invalid.
    #[error("{0}")]
    BadParameter(String),
    /// 401 / 4001: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 / 4003: the token does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such endpoint.
    #[error("not found")]
    NotFound,
    /// 408: the request body stopped arriving.
    #[error("{0}")]
    BodyTimeout(String),
    /// 413: the body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a JSON endpoint got a body that is not declared `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After` / 4029: too many connections.
    #[error("{0}")]
    TooMany(String),
    /// 429 with `Retry-After` / 4029: too many requests of this kind from this user.
    #[error("{message}")]
    RateLimited {
        /// What was limited.
        message: String,
        /// Seconds to wait.
        retry_after: u32,
    },
    /// 503 with `Retry-After` / 1013: a limit was reached.
    #[error("{message}")]
    Overloaded {
        /// What was reached.
        message: String,
        /// Seconds to wait.
        retry_after: u32,
    },
    /// 503 with `Retry-After` / 1013: NATS or the stream cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After` / 1012: the node drains; go to another node.
    #[error("node is draining; retry on another node")]
    Draining,
    /// 503 with `Retry-After` / 4503: realtime streams are switched off
    /// (kill switch); long-poll still works.
    #[error("realtime is disabled")]
    Disabled,
    /// 500 / 1011: a bug or an unexpected upstream answer; details stay in
    /// the log (see [`ApiError::internal`]).
    #[error("internal error")]
    Internal,
}

/// How one error reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Stable machine-readable code of the JSON error body.
    pub code: &'static str,
    /// Close code when the error ends a WebSocket stream.
    pub close: CloseCode,
    /// `Retry-After` seconds, if the client should come back.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// Logs `error` (what went wrong while doing `what`) and answers 500 /
    /// 1011 without details: the client learns only that the server failed.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{what} failed");
        Self::Internal
    }

    /// The one table of how errors reach clients.
    pub fn mapping(&self) -> Mapping {
        use CloseCode as C;
        use StatusCode as S;
        let (status, code, close, retry_after) = match self {
            Self::BadParameter(_) => (S::BAD_REQUEST, "bad_parameter", C::BadMessage, None),
            Self::Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized", C::Unauthenticated, None),
            Self::Forbidden(_) => (S::FORBIDDEN, "forbidden", C::Forbidden, None),
            // Never the answer of a stream; a client's wrong request if it were.
            Self::NotFound => (S::NOT_FOUND, "not_found", C::BadMessage, None),
            Self::BodyTimeout(_) => (S::REQUEST_TIMEOUT, "body_timeout", C::BadMessage, None),
            Self::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "too_large", C::BadMessage, None),
            Self::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                C::BadMessage,
                None,
            ),
            Self::TooMany(_) => (
                S::TOO_MANY_REQUESTS,
                "too_many_connections",
                C::TooManyConnections,
                Some(TOO_MANY_RETRY_SECS),
            ),
            Self::RateLimited { retry_after, .. } => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                C::TooManyConnections,
                Some(*retry_after),
            ),
            Self::Overloaded { retry_after, .. } => (
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                C::TryAgain,
                Some(*retry_after),
            ),
            Self::Unavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                C::TryAgain,
                Some(UNAVAILABLE_RETRY_SECS),
            ),
            Self::Draining => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                C::Draining,
                Some(UNAVAILABLE_RETRY_SECS),
            ),
            Self::Disabled => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                C::Disabled,
                Some(UNAVAILABLE_RETRY_SECS),
            ),
            Self::Internal => (S::INTERNAL_SERVER_ERROR, "internal", C::InternalError, None),
        };
        Mapping {
            status,
            code,
            close,
            retry_after,
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        self.mapping().status
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.mapping().code
    }

    /// Close code when this error ends a WebSocket stream.
    pub fn close_code(&self) -> CloseCode {
        self.mapping().close
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mapping = self.mapping();
        let mut response = (
            mapping.status,
            Json(ErrorBody::new(mapping.code, self.to_string())),
        )
            .into_response();
        if let Some(secs) = mapping.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The rest of such a body is never read: end the connection rather
        // than leave the client's bytes to be taken for the next request.
        if matches!(self, Self::BodyTimeout(_) | Self::TooLarge(_)) {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<crate::ops::connections::LimitError> for ApiError {
    fn from(e: crate::ops::connections::LimitError) -> Self {
        Self::TooMany(e.message().into())
    }
}

impl From<crate::nats::rooms::RoomStoreError> for ApiError {
    fn from(e: crate::nats::rooms::RoomStoreError) -> Self {
        tracing::warn!(error = %e, "room request failed in NATS");
        Self::Unavailable("rooms are unavailable right now; try again".into())
    }
}

impl From<crate::org::registry::StreamNotReached> for ApiError {
    fn from(e: crate::org::registry::StreamNotReached) -> Self {
        Self::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant.
    fn every() -> Vec<ApiError> {
        vec![
            ApiError::BadParameter("b".into()),
            ApiError::Unauthorized("u".into()),
            ApiError::Forbidden("f".into()),
            ApiError::NotFound,
            ApiError::BodyTimeout("t".into()),
            ApiError::TooLarge("l".into()),
            ApiError::UnsupportedMediaType("m".into()),
            ApiError::TooMany("n".into()),
            ApiError::RateLimited {
                message: "r".into(),
                retry_after: 7,
            },
            ApiError::Overloaded {
                message: "o".into(),
                retry_after: 5,
            },
            ApiError::Unavailable("a".into()),
            ApiError::Draining,
            ApiError::Disabled,
            ApiError::Internal,
        ]
    }

    /// The table as the contract and the SDK know it (status, code, close,
    /// Retry-After). Written out again so that a changed number or string
    /// fails here; the match has no catch-all, so a new variant fails to
    /// compile until it is added.
    fn expected(e: &ApiError) -> (u16, &'static str, u16, Option<u32>) {
        match e {
            ApiError::BadParameter(_) => (400, "bad_parameter", 4000, None),
            ApiError::Unauthorized(_) => (401, "unauthorized", 4001, None),
            ApiError::Forbidden(_) => (403, "forbidden", 4003, None),
            ApiError::NotFound => (404, "not_found", 4000, None),
            ApiError::BodyTimeout(_) => (408, "body_timeout", 4000, None),
            ApiError::TooLarge(_) => (413, "too_large", 4000, None),
            ApiError::UnsupportedMediaType(_) => (415, "unsupported_media_type", 4000, None),
            ApiError::TooMany(_) => (429, "too_many_connections", 4029, Some(5)),
            ApiError::RateLimited { .. } => (429, "rate_limited", 4029, Some(7)),
            ApiError::Overloaded { .. } => (503, "overloaded", 1013, Some(5)),
            ApiError::Unavailable(_) => (503, "unavailable", 1013, Some(2)),
            ApiError::Draining => (503, "unavailable", 1012, Some(2)),
            ApiError::Disabled => (503, "unavailable", 4503, Some(2)),
            ApiError::Internal => (500, "internal", 1011, None),
        }
    }

    #[test]
    fn every_error_has_its_status_code_and_close_code() {
        for e in every() {
            let m = e.mapping();
            assert_eq!(
                (m.status.as_u16(), m.code, m.close.code(), m.retry_after),
                expected(&e),
                "{e:?}"
            );
            assert_eq!(e.status(), m.status);
            assert_eq!(e.code(), m.code);
            assert_eq!(e.close_code(), m.close);
        }
    }

    /// Before its `ack` the SDK stops for good on 4000 and 4003: only the
    /// client's own mistakes may close with them, never a server's failure
    /// or a limit.
    #[test]
    fn server_failures_never_close_as_the_clients_fault() {
        for e in every() {
            let fatal = matches!(e.close_code(), CloseCode::BadMessage | CloseCode::Forbidden);
            let clients_fault = e.status().is_client_error()
                && e.status() != StatusCode::UNAUTHORIZED
                && e.status() != StatusCode::TOO_MANY_REQUESTS;
            assert_eq!(fatal, clients_fault, "{e:?}");
        }
    }

    #[tokio::test]
    async fn answers_carry_the_body_and_headers_of_the_table() {
        for e in every() {
            let m = e.mapping();
            let message = e.to_string();
            let cut_off = matches!(e, ApiError::BodyTimeout(_) | ApiError::TooLarge(_));
            let response = e.into_response();
            assert_eq!(response.status(), m.status);
            let retry = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().parse::<u32>().unwrap());
            assert_eq!(retry, m.retry_after);
            assert_eq!(
                response.headers().get(http::header::CONNECTION).is_some(),
                cut_off
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(body, ErrorBody::new(m.code, message));
        }
    }
}
