//! The engine's HTTP handlers: parse, call the domain code, map errors.

pub mod destroy;
pub mod execute;
pub mod health;
pub mod jobs;
pub mod setup;
pub mod step;

use crate::error::EngineError;
use runlog_protocol::StreamKey;

/// Longest step id, in bytes.
const MAX_STEP_ID: usize = 128;

/// A step id is a file name: `[A-Za-z0-9._-]`, 1–128 bytes, not `.` or `..`.
pub(crate) fn check_step_id(id: &str) -> Result<(), EngineError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_STEP_ID
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "step id {id:?} is invalid: 1-{MAX_STEP_ID} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Validates a stream key given in a request.
pub(crate) fn check_key(field: &str, key: &str) -> Result<(), EngineError> {
    StreamKey::new(key)
        .map(|_| ())
        .map_err(|e| EngineError::BadRequest(format!("{field}: {e}")))
}
