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

/// A request body read into one buffer of its own, sized by `Content-Length`; 413
/// past `limit` bytes.
///
/// The `Bytes` extractor hands out slices of the connection's read buffer when a
/// body arrives in one piece. A store that keeps a batch keeps that slice, which
/// pins the whole read buffer (up to ~400 KiB for a 150 KiB body, none of it counted
/// by the store's limits) and makes the connection allocate a fresh one for the next
/// request — measured as page faults near the top of the ingest profile. A body of
/// its own, exactly sized, leaves the read buffer to be reused.
pub(crate) async fn owned_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    read_body(headers, body, limit, |_| {}).await
}

/// [`owned_body`], calling `arrived` with the body received so far after every
/// chunk (to work on a large body while the rest of it is still on the way).
pub(crate) async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
    mut arrived: impl FnMut(&[u8]),
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large =
        || ApiError::TooLarge("request body is larger than this service accepts".into());
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("cannot read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
            arrived(&buf);
        }
    }
    Ok(Bytes::from(buf))
}

/// RFC 3339 (milliseconds) of a time.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    runlog_protocol::format_time(t)
}
