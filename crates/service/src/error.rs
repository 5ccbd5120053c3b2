//! [`ApiError`]: every failure a route can answer with, each mapped to one status, and
//! how the stores', archives' and tokens' errors become one.

use crate::archive::ArchiveError;
use crate::auth::AuthError;
use crate::store::StoreError;
use crate::store::blob::BlobError;

/// A failed request; the message is safe to show the caller. It is the edge's
/// [`runlog_edge::HttpError`], the one error answer both servers give
/// (`{"error_msg": …}`, the status from the variant, a 5xx logged), under the name
/// the service's code uses; the conversions from the service's own errors are here.
pub use runlog_edge::HttpError as ApiError;

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
            StoreError::TooMany(m) => ApiError::Busy(m),
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
