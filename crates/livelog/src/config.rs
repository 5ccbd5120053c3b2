//! Writer configuration and nudges.

use runlog_protocol::LogLine;
use runlog_protocol::engine::LogConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A hint attached to the close report when `pattern` appears in one of the last
/// lines of the stream (e.g. `Killed` → "the process was probably out of memory").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nudge {
    /// Substring searched for (case-sensitive) in the last lines.
    pub pattern: String,
    /// What the report says when it matches.
    pub hint: String,
}

impl Nudge {
    /// A nudge.
    pub fn new(pattern: impl Into<String>, hint: impl Into<String>) -> Self {
        Nudge {
            pattern: pattern.into(),
            hint: hint.into(),
        }
    }

    /// Common causes of failed steps that the last lines reveal.
    pub fn defaults() -> Vec<Nudge> {
        vec![
            Nudge::new(
                "Killed",
                "the process was probably killed for using too much memory (out of memory)",
            ),
            Nudge::new("Out of memory", "the process ran out of memory"),
            Nudge::new("No space left on device", "the disk is full"),
            Nudge::new(
                "command not found",
                "a command is missing: install it or fix PATH",
            ),
            Nudge::new("Permission denied", "a file or command lacks permissions"),
        ]
    }
}

/// Called synchronously with every finished (masked, numbered) line.
///
/// It runs while the writer's lock is held, in `pos` order: it must be quick and must
/// not write to the same writer.
pub type Tap = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// How a [`crate::Writer`] behaves. `WriterConfig::new(key)` gives the defaults.
#[derive(Clone)]
pub struct WriterConfig {
    /// Stream key.
    pub key: String,
    /// Values masked in every sink (see [`crate::mask`]).
    pub secrets: Vec<String>,
    /// Lines longer than this (raw bytes) are cut with a marker. Default 64 KiB.
    pub max_line_bytes: usize,
    /// Bytes of serialized lines kept in memory for sending; beyond it lines are read
    /// back from the spool. Default 8 MiB.
    pub queue_max_bytes: usize,
    /// Directory of the spool file (the complete history). Default: the temp dir.
    pub spool_dir: PathBuf,
    /// Disk cap of the spool file; lines beyond it are dropped with a marker line.
    /// Default 4 GiB.
    pub spool_max_bytes: u64,
    /// Where an undelivered history is kept after `close()` to be re-sent later.
    pub outbox_dir: Option<PathBuf>,
    /// How long `close()` may take in total. Default 30 s.
    pub close_deadline: Duration,
    /// A partial line (no `\n`) is sent after this much idle time. Default 500 ms.
    pub partial_line_flush: Duration,
    /// The stream is someone else's (lite-engine's meaning): the writer does not open
    /// it (nor reopen it when the service lost it), uploads no archive — it would
    /// overwrite the lines another writer put there — and at `close()` closes it with
    /// `DELETE /stream?snapshot=true`, so the service archives the stream's lines.
    pub skip_opening_stream: bool,
    /// `close()` only flushes (lite-engine's meaning): no archive upload, no
    /// `DELETE /stream`; whoever closes the stream archives it. Wins over
    /// `skip_opening_stream` at close.
    pub skip_closing_stream: bool,
    /// Send lines without their trailing `\n`.
    pub trim_new_line_suffix: bool,
    /// Upload the archive through the service (`POST /blob`) rather than a signed link.
    /// Unused when either skip flag is set (no archive is uploaded then).
    pub indirect_upload: bool,
    /// Patterns matched against the last lines at close.
    pub nudges: Vec<Nudge>,
    /// Sees every finished line (e.g. to capture it into a response).
    pub tap: Option<Tap>,
    /// Most lines per request. Default 10 000.
    pub max_batch_lines: usize,
    /// Most bytes per request. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Level given to lines from raw writes. Default `info`.
    pub default_level: String,
    /// Longest delay between two retries (before the jitter). Default 5 s.
    pub max_retry_delay: Duration,
}

impl WriterConfig {
    /// Defaults for stream `key`.
    pub fn new(key: impl Into<String>) -> Self {
        WriterConfig {
            key: key.into(),
            ..WriterConfig::default()
        }
    }

    /// Copies the `log_config` options (skip_opening_stream, skip_closing_stream,
    /// trim_new_line_suffix, indirect_upload).
    pub fn with_log_config(mut self, c: &LogConfig) -> Self {
        self.skip_opening_stream = c.skip_opening_stream;
        self.skip_closing_stream = c.skip_closing_stream;
        self.trim_new_line_suffix = c.trim_new_line_suffix;
        self.indirect_upload = c.indirect_upload;
        self
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            key: String::new(),
            secrets: Vec::new(),
            max_line_bytes: 64 * 1024,
            queue_max_bytes: 8 * 1024 * 1024,
            spool_dir: std::env::temp_dir(),
            spool_max_bytes: 4 * 1024 * 1024 * 1024,
            outbox_dir: None,
            close_deadline: Duration::from_secs(30),
            partial_line_flush: Duration::from_millis(500),
            skip_opening_stream: false,
            skip_closing_stream: false,
            trim_new_line_suffix: false,
            indirect_upload: true,
            nudges: Nudge::defaults(),
            tap: None,
            max_batch_lines: 10_000,
            max_batch_bytes: 1024 * 1024,
            default_level: "info".to_owned(),
            max_retry_delay: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed, only counted.
        f.debug_struct("WriterConfig")
            .field("key", &self.key)
            .field("secrets", &format_args!("[{} hidden]", self.secrets.len()))
            .field("max_line_bytes", &self.max_line_bytes)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("outbox_dir", &self.outbox_dir)
            .field("close_deadline", &self.close_deadline)
            .field("indirect_upload", &self.indirect_upload)
            .finish_non_exhaustive()
    }
}
