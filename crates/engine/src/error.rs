//! [`EngineError`]: every failure a request can meet, each mapped to one status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runlog_protocol::ErrorBody;

/// A request failure; the message is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Malformed or incomplete request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A request a browser made: the engine answers controllers only (403).
    #[error("{0}")]
    Forbidden(String),
    /// A token-less engine reached under a name it does not serve (421).
    #[error("{0}")]
    Misdirected(String),
    /// Unknown step (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request contradicts the engine's state: a second setup, a reused step id,
    /// a step without a stage (409).
    #[error("{0}")]
    Conflict(String),
    /// The engine runs as many steps as it may (429).
    #[error("{0}")]
    Busy(String),
    /// Body larger than the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The request is well-formed but cannot be carried out (422), e.g. its
    /// dependencies cannot be installed; the message is the installer's cause.
    #[error("{0}")]
    Unprocessable(String),
    /// The engine failed (500), e.g. the workspace could not be created.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// The same error with its message passed through `f` (to mask secrets in it).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        use EngineError::*;
        match self {
            BadRequest(m) => BadRequest(f(m)),
            Unauthorized(m) => Unauthorized(f(m)),
            Forbidden(m) => Forbidden(f(m)),
            Misdirected(m) => Misdirected(f(m)),
            NotFound(m) => NotFound(f(m)),
            MethodNotAllowed(m) => MethodNotAllowed(f(m)),
            Conflict(m) => Conflict(f(m)),
            TooLarge(m) => TooLarge(f(m)),
            Busy(m) => Busy(f(m)),
            Unprocessable(m) => Unprocessable(f(m)),
            Internal(m) => Internal(f(m)),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            EngineError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EngineError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            EngineError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        (self.status(), Json(ErrorBody::new(self.to_string()))).into_response()
    }
}
