//! Shapes shared between the engine's HTTP API and the livelog writer.
//!
//! The engine's request/answer types (`/setup`, `/step`, `/destroy`, …) live here so
//! that the engine, the CLI and tests speak one definition.

use serde::{Deserialize, Serialize};

/// Where and how to stream logs: the lite-engine `log_config` object.
///
/// ```
/// use runlog_protocol::engine::LogConfig;
/// let c: LogConfig = serde_json::from_str(
///     r#"{"url":"http://127.0.0.1:8079","account_id":"account-123","token":"t","indirect_upload":true}"#,
/// ).unwrap();
/// assert!(c.indirect_upload);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Base URL of the log service, e.g. `http://127.0.0.1:8079`.
    pub url: String,
    /// Account that owns the streams.
    pub account_id: String,
    /// Account token (write scope) sent as `Authorization: Bearer` and `X-Harness-Token`.
    pub token: String,
    /// Upload the archive through the service (`POST /blob`) instead of a signed link.
    pub indirect_upload: bool,
    /// Do not `POST /stream` before writing (the controller opened it).
    pub skip_opening_stream: bool,
    /// Do not `DELETE /stream` at close (the controller closes it).
    pub skip_closing_stream: bool,
    /// Strip the trailing `\n` of each line before sending it.
    pub trim_new_line_suffix: bool,
}

/// What closing one livelog writer achieved; returned by `Writer::close` and, per
/// stream, by the engine's `/destroy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReport {
    /// The stream key.
    pub key: String,
    /// Lines numbered (written by the producer, after splitting).
    pub lines: u64,
    /// Bytes of line text numbered.
    pub bytes: u64,
    /// Batches the live stream accepted.
    pub batches: u64,
    /// Requests that were retried (each retry counts once).
    pub retries: u64,
    /// Lines lost because a bound forced it (disk cap), also stated by a marker line.
    pub dropped_lines: u64,
    /// Bytes lost the same way.
    pub dropped_bytes: u64,
    /// Lines the live stream is known to hold (it may hold fewer when live streaming stopped).
    pub streamed_lines: u64,
    /// Whether the complete archive was uploaded before the deadline.
    pub archived: bool,
    /// Whether the history was left in the outbox to be re-sent later.
    pub outboxed: bool,
    /// Hints from the nudges matched on the last lines (e.g. "probably out of memory").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// The first error that stopped live streaming or the upload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
