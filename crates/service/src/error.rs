//! [`ApiError`]: every failure a route can answer with, each mapped to one status.

use crate::archive::ArchiveError;
use crate::auth::AuthError;
use crate::store::StoreError;
use crate::store::blob::BlobError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runlog_protocol::ErrorBody;

/// A failed request; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing, malformed, forged or expired token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid token, but for another account or a smaller scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown stream, archive or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The stream's state forbids it, e.g. appending to a closed stream (409).
    #[error("{0}")]
    Conflict(String),
    /// Body or stored data over a configured bound (413).
    #[error("{0}")]
    TooLarge(String),
    /// The caller's account is over a count or rate limit of its own: streams held,
    /// tails open, requests a second (429, with `Retry-After`).
    #[error("{0}")]
    TooManyRequests(String),
    /// A backend is failing; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or corrupt data (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let mut resp = (status, Json(ErrorBody::new(self.to_string()))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Counts and rates are per second or change as the account's own streams
            // close: a second is the soonest a retry can find room.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => {
                ApiError::NotFound("stream not found: open it with POST /stream first".into())
            }
            StoreError::Closed => {
                ApiError::Conflict("stream is closed; it accepts no more lines".into())
            }
            StoreError::LimitExceeded(m) => ApiError::TooLarge(m),
            StoreError::TooMany(m) => ApiError::TooManyRequests(m),
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Corrupt(m) => ApiError::Internal(format!("corrupt stored data: {m}")),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => ApiError::NotFound("archive not found".into()),
            BlobError::Backend(m) => ApiError::Unavailable(format!("archive storage failed: {m}")),
        }
    }
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            // Said of a request to mint one, not of the caller's token.
            AuthError::TtlTooLong => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Unauthorized(e.to_string()),
        }
    }
}
