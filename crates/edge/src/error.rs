//! [`HttpError`]: every failure either server answers, each mapped to one status and
//! answered as `{"error_msg": …}` ([`runlog_protocol::ErrorBody`]) in one place.
//!
//! The log service calls it `ApiError` and the engine `EngineError` (re-exports of
//! this one type): each server's code reads in its own terms, the wire is the same.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use runlog_protocol::ErrorBody;

/// A failed request; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Malformed or incomplete input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing, malformed, forged, expired or wrong token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid token but not enough for this request (another account, a smaller
    /// scope), or a request a browser made to the engine (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown stream, archive, step or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request contradicts the server's state: a closed stream, a second setup,
    /// a reused step id (409).
    #[error("{0}")]
    Conflict(String),
    /// Body or stored data over a configured bound (413).
    #[error("{0}")]
    TooLarge(String),
    /// A token-less engine reached under a name it does not serve (421).
    #[error("{0}")]
    Misdirected(String),
    /// Well-formed but cannot be carried out, e.g. dependencies that do not install
    /// (422); the message is the cause.
    #[error("{0}")]
    Unprocessable(String),
    /// As much work as the server takes at once, e.g. `max_steps` running, or an
    /// account over a count or rate limit of its own (429, with `Retry-After: 1`).
    #[error("{0}")]
    Busy(String),
    /// A bug, corrupt data, or a failure of the server's own (500).
    #[error("{0}")]
    Internal(String),
    /// A backend is failing; retry later (503).
    #[error("{0}")]
    Unavailable(String),
}

impl HttpError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            HttpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The same error with its message passed through `f` (to mask secrets in it).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        use HttpError::*;
        match self {
            BadRequest(m) => BadRequest(f(m)),
            Unauthorized(m) => Unauthorized(f(m)),
            Forbidden(m) => Forbidden(f(m)),
            NotFound(m) => NotFound(f(m)),
            MethodNotAllowed(m) => MethodNotAllowed(f(m)),
            Conflict(m) => Conflict(f(m)),
            TooLarge(m) => TooLarge(f(m)),
            Misdirected(m) => Misdirected(f(m)),
            Unprocessable(m) => Unprocessable(f(m)),
            Busy(m) => Busy(f(m)),
            Internal(m) => Internal(f(m)),
            Unavailable(m) => Unavailable(f(m)),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let mut resp = (status, Json(ErrorBody::new(self.to_string()))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Rates are per second, and steps and an account's streams end in their
            // own time: a second is the soonest a retry can find room.
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}
