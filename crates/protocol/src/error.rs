//! The JSON error body every runlog server answers with.

use serde::{Deserialize, Serialize};

/// Body of every error answer: `{"error_msg": "…"}`.
///
/// The field name matches existing clients of this protocol style, which read
/// `error_msg` from failed calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable cause, safe to show to the caller (never contains a secret).
    pub error_msg: String,
}

impl ErrorBody {
    /// An error body with the given message.
    pub fn new(msg: impl Into<String>) -> Self {
        ErrorBody {
            error_msg: msg.into(),
        }
    }
}
