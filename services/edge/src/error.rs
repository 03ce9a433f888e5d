//! Errors a request can end in, mapped to HTTP status, error code and
//! `Retry-After` in one place.

use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_proto::ErrorBody;
use http::{HeaderValue, StatusCode};

/// A request that cannot be served, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter or body is invalid.
    #[error("{0}")]
    BadParameter(String),
    /// 401: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token does not allow this.
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
    /// 429 with `Retry-After`: too many connections.
    #[error("{0}")]
    TooMany(String),
    /// 429 with `Retry-After`: too many requests of this kind from this user.
    #[error("{message}")]
    RateLimited {
        /// What was limited.
        message: String,
        /// Seconds to wait.
        retry_after: u32,
    },
    /// 503 with `Retry-After`: a limit was reached.
    #[error("{message}")]
    Overloaded {
        /// What was reached.
        message: String,
        /// Seconds to wait.
        retry_after: u32,
    },
    /// 503 with `Retry-After`: NATS or the stream cannot be reached, or the node drains.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected upstream answer; details stay in the log.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooMany(_) | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadParameter(_) => "bad_parameter",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::BodyTimeout(_) => "body_timeout",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooMany(_) => "too_many_connections",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Internal => "internal",
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            Self::Overloaded { retry_after, .. } | Self::RateLimited { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::TooMany(_) => Some(5),
            Self::Unavailable(_) => Some(2),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            Json(ErrorBody::new(self.code(), self.to_string())),
        )
            .into_response();
        if let Some(secs) = self.retry_after() {
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

impl From<crate::org::registry::StreamNotReached> for ApiError {
    fn from(e: crate::org::registry::StreamNotReached) -> Self {
        Self::Unavailable(e.to_string())
    }
}
