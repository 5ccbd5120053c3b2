//! HTTP handlers, one module per resource. Handlers parse (extractors), call a
//! store, and map errors; the logic they share lives in the crate's other modules.

pub mod admin;
pub mod blob;
pub mod stream;

use crate::error::ApiError;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use bytes::Bytes;

/// A buffered body, or the JSON error for why it could not be read (413 when over
/// the route's limit).
pub(crate) fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("request body is larger than this service accepts".into())
        } else {
            ApiError::BadRequest(format!("cannot read request body: {}", r.body_text()))
        }
    })
}

/// RFC 3339 (milliseconds) of a time.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    runlog_protocol::format_time(t)
}
