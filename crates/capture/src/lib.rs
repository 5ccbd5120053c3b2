//! tracing layers for runlog: console format, per-request capture, live forwarding.
//!
//! One subscriber for the whole process ([`init`]) combines three small layers:
//!
//! - console output to stderr in the runlog format ([`LogFormat`]);
//! - [`CaptureLayer`]: events inside a span that carries a [`Capture`] (and inside its
//!   children, including tasks spawned with `.instrument(span)`) land in that capture's
//!   bounded ring, and in no other;
//! - [`StreamLayer`]: events are forwarded to a live log stream ([`StreamSink`]), either
//!   the one attached to the nearest enclosing span or the process-wide one set on the
//!   [`CaptureHandle`]. It never re-enters itself and skips the targets of the code that
//!   delivers the stream (livelog, HTTP client internals), so a stream never logs about
//!   itself into itself. Events of [`MARKER_TARGET`] ([`Section`]) are forwarded as
//!   their bare message: the section markers the log service indexes.
//!
//! ```
//! use runlog_capture::Capture;
//! let capture = Capture::new(100);
//! let span = tracing::info_span!(target: "runlog::engine", "request");
//! capture.attach(&span);
//! span.in_scope(|| tracing::info!(target: "runlog::engine", "installing"));
//! // Without an installed subscriber nothing is recorded; with `runlog_capture::init`
//! // the line above would be in `capture.lines()`.
//! assert!(capture.lines().len() <= 1);
//! ```

mod attach;
mod capture;
mod format;
mod init;
mod section;
mod stream;

pub use capture::{Capture, CaptureLayer, DEFAULT_CAPACITY};
pub use format::{LogFormat, format_event};
pub use init::{CaptureHandle, InitOptions, handle, init};
pub use section::{MARKER_TARGET, Section};
pub use stream::{StreamLayer, StreamSink, StreamSlot, attach_stream, is_excluded_target};
