//! HTTP handlers, one module per resource. Handlers parse (extractors), call a
//! store, and map errors; the logic they share lives in the crate's other modules.

pub mod admin;
pub mod blob;
pub mod bundle;
pub mod compat;
pub mod sections;
pub mod stream;

use crate::body_budget::{BodyBudget, Reservation};
use crate::error::ApiError;
use axum::extract::rejection::BytesRejection;
use bytes::Bytes;

/// A buffered body, or the JSON error for why it could not be read (413 when over
/// the route's limit): the edge's, as the engine answers it.
pub(crate) fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    runlog_edge::json::read_body(b)
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
    budget: &BodyBudget,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    read_body(budget, headers, body, limit, |_| {})
        .await
        .map(|(b, _)| b)
}

/// [`owned_body`], calling `arrived` with the body received so far after every
/// chunk (to work on a large body while the rest of it is still on the way).
///
/// A body over `limit` is answered with 413 only after the rest of it was read and
/// dropped ([`drain`]): answering while the client still sends makes the server
/// close a connection with unread data, the kernel resets it, and the client sees
/// "connection reset" instead of the 413 (lite-engine did, for a 17.8 MB `PUT`).
///
/// The body's bytes are reserved in the service's [`BodyBudget`] while it is read
/// (all of `Content-Length` before the first byte is read); the reservation comes
/// back with the body, for the caller to hold until the store counts the lines.
pub(crate) async fn read_body(
    budget: &BodyBudget,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
    mut arrived: impl FnMut(&[u8]),
) -> Result<(Bytes, Reservation), ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::TooLarge(format!(
            "request body is larger than this service accepts ({limit} bytes)"
        ))
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain(body, declared, limit, 0).await;
        return Err(too_large());
    }
    let mut reserved = budget.empty();
    if let Some(n) = declared
        && let Err(e) = budget.grow(&mut reserved, n).await
    {
        drain(body, declared, limit, 0).await;
        return Err(e);
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("cannot read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                let read = buf.len() + data.len();
                // The part read so far is not kept while the rest is drained.
                drop(buf);
                drop(reserved);
                drain(body, declared, limit, read).await;
                return Err(too_large());
            }
            // hyper ends a body at its Content-Length, so only a chunked body
            // (no length declared) grows its reservation as it arrives.
            if declared.is_none()
                && let Err(e) = budget.grow(&mut reserved, data.len()).await
            {
                let read = buf.len() + data.len();
                drop(buf);
                drop(reserved);
                drain(body, declared, limit, read).await;
                return Err(e);
            }
            buf.extend_from_slice(&data);
            arrived(&buf);
        }
    }
    Ok((Bytes::from(buf), reserved))
}

/// Longest a refused body is read for before the 413 goes out anyway.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes of a refused body read past its limit at least (a route's limit when
/// that is more): enough for a client that is somewhat over, such as a writer
/// whose batch grew past a lowered limit; what is drained is never kept.
const DRAIN_MIN_BYTES: usize = 64 << 20;

/// Reads and drops the rest of a refused body, so the client finishes sending and
/// reads the 413 rather than a reset. Bounded in bytes (a body declared longer than
/// its limit plus the drain allowance is not read at all: it would be reset in the
/// end anyway) and in time (a client trickling bytes does not hold the answer).
async fn drain(mut body: axum::body::Body, declared: Option<usize>, limit: usize, read: usize) {
    use http_body_util::BodyExt;
    let allowance = limit.saturating_add(limit.max(DRAIN_MIN_BYTES));
    if declared.is_some_and(|n| n > allowance) {
        return;
    }
    let mut read = read;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                read = read.saturating_add(data.len());
                if read > allowance {
                    return;
                }
            }
        }
    })
    .await;
}

/// RFC 3339 (milliseconds) of a time.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    runlog_protocol::format_time(t)
}
