//! Sections of a live stream, opened and closed by the code that logs into it.
//!
//! A [`Section`] writes a GitHub `::group::NAME` line when it opens and
//! `::endgroup outcome=…::` when it ends, as tracing events of [`MARKER_TARGET`]:
//! the [`crate::StreamLayer`] forwards those verbatim (no time or level prefix), so
//! the marker is the line's whole text and the log service's section parser
//! (`runlog_protocol::sections`) sees it. Sections nest like the spans they are
//! opened in. One dropped without [`Section::end`] (its request cancelled, an early
//! return) ends `cancelled`.

use runlog_protocol::sections::Outcome;
use tracing::Event;
use tracing::field::{Field, Visit};

/// The tracing target of marker events; the stream layer writes their message as the
/// whole line.
pub const MARKER_TARGET: &str = "runlog::section";

/// An open section of the stream the current span forwards to.
#[derive(Debug)]
#[must_use = "a section dropped at once ends cancelled"]
pub struct Section {
    open: bool,
}

impl Section {
    /// Opens a section named `name` (line breaks become spaces: a marker is one line).
    pub fn open(name: &str) -> Section {
        let name = name.replace(['\n', '\r'], " ");
        tracing::info!(target: MARKER_TARGET, "::group::{}", name.trim());
        Section { open: true }
    }

    /// Ends the section with `outcome`.
    pub fn end(mut self, outcome: Outcome) {
        self.close(outcome);
    }

    /// Ends the section `success` when `ok`, else `failure`.
    pub fn end_ok(self, ok: bool) {
        self.end(if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        });
    }

    fn close(&mut self, outcome: Outcome) {
        if std::mem::take(&mut self.open) {
            tracing::info!(target: MARKER_TARGET, "::endgroup outcome={}::", outcome.as_str());
        }
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        self.close(Outcome::Cancelled);
    }
}

/// The message of a marker event: the line the stream gets, as it is.
pub(crate) fn marker_line(event: &Event<'_>) -> String {
    let mut v = MessageOnly(String::new());
    event.record(&mut v);
    v.0
}

struct MessageOnly(String);

impl Visit for MessageOnly {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?}");
        }
    }
}
