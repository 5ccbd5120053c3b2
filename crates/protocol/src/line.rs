//! The log line: the unit every part of runlog moves around.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// One log line as it travels on the wire and sits in archives (one NDJSON row each).
///
/// ```
/// use runlog_protocol::LogLine;
/// let line: LogLine = serde_json::from_str(
///     r#"{"level":"info","pos":0,"out":"hello\n","time":"2026-11-20T10:00:00.123Z"}"#,
/// ).unwrap();
/// assert_eq!(line.pos, 0);
/// assert_eq!(line.out, "hello\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Severity as a lowercase word (`trace`, `debug`, `info`, `warn`, `error`).
    ///
    /// Kept as free text rather than an enum: existing clients of this protocol send
    /// their own level names, and the service stores them verbatim.
    #[serde(default = "default_level")]
    pub level: String,
    /// 0-based line number within its stream key. Assigned once by the writer; the
    /// service stores each `pos` at most once, and refuses one above [`MAX_POS`].
    pub pos: u64,
    /// The text of the line, normally ending in `\n`.
    pub out: String,
    /// RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-20T10:00:00.123Z`.
    #[serde(default)]
    pub time: String,
    /// Optional key/value fields attached to the line (structured logging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The largest `pos` the log service stores: 2^53 − 1.
///
/// Above it a `pos` is not exact in every reader of the protocol — JavaScript (the
/// browser viewer) and the Redis store's Lua scripts hold numbers as doubles — and a
/// reader's "next `pos`" (`pos + 1`) must always exist. A writer that starts at 0
/// never gets near it.
pub const MAX_POS: u64 = (1 << 53) - 1;

fn default_level() -> String {
    "info".to_owned()
}

impl LogLine {
    /// A line stamped with the current time.
    pub fn new(level: impl Into<String>, pos: u64, out: impl Into<String>) -> Self {
        LogLine {
            level: level.into(),
            pos,
            out: out.into(),
            time: now_rfc3339(),
            args: None,
        }
    }
}

/// The current time in the wire format (`2026-11-20T10:00:00.123Z`).
pub fn now_rfc3339() -> String {
    format_time(SystemTime::now())
}

/// Formats a time in the wire format (RFC 3339, UTC, milliseconds).
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_has_milliseconds_and_zulu() {
        let s = now_rfc3339();
        assert_eq!(s.len(), "2026-11-20T10:00:00.123Z".len(), "{s}");
        assert!(s.ends_with('Z'));
    }

    #[test]
    fn large_numbers_in_args_survive_a_round_trip() {
        // Found by the log_line fuzz target: without correctly rounded float parsing,
        // 8.888…e46 came back as 8.888…87e46 after serialise → parse.
        let json = format!(r#"{{"pos":5,"out":"x","args":{{"k":{}}}}}"#, "8".repeat(47));
        let line: LogLine = serde_json::from_str(&json).expect("valid line");
        let again: LogLine =
            serde_json::from_slice(&serde_json::to_vec(&line).expect("serialises"))
                .expect("parses");
        assert_eq!(again, line);
    }

    #[test]
    fn args_are_omitted_when_absent_and_level_defaults_to_info() {
        let line: LogLine = serde_json::from_str(r#"{"pos":3,"out":"x"}"#).expect("valid line");
        assert_eq!(line.level, "info");
        let json = serde_json::to_string(&line).expect("serialises");
        assert!(!json.contains("args"), "{json}");
    }
}
