//! Sections of a live stream, opened and closed by the code that logs into it.
//!
//! A [`Section`] writes GitLab's `section_start:UNIX_TS:ID\r\e[0KTITLE` line when it
//! opens and `section_end:UNIX_TS:ID[outcome=…]` when it ends, as tracing events of
//! [`MARKER_TARGET`]: the [`crate::StreamLayer`] forwards those verbatim (no time or
//! level prefix), so the marker is the line's whole text and the log service's
//! section parser (`runlog_protocol::sections`) sees it. GitLab's syntax, not
//! GitHub's, because its end names the section it ends: sections that overlap rather
//! than nest (two steps running at once in the engine log) still each end with their
//! own outcome. The id is the title's letters and digits and a number unique in the
//! process. A section dropped without [`Section::end`] (its request cancelled, an
//! early return) ends `cancelled`.

use runlog_protocol::sections::Outcome;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Event;
use tracing::field::{Field, Visit};

/// The tracing target of marker events; the stream layer writes their message as the
/// whole line.
pub const MARKER_TARGET: &str = "runlog::section";

/// An open section of the stream the current span forwards to.
#[derive(Debug)]
#[must_use = "a section dropped at once ends cancelled"]
pub struct Section {
    /// The marker's identifier; `None` once ended.
    id: Option<String>,
}

/// Numbers sections, so that two with the same title have different ids.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Longest title kept from a caller (the parser keeps fewer bytes still).
const MAX_TITLE_CHARS: usize = 200;

impl Section {
    /// Opens a section titled `title` (control characters become spaces: a marker is
    /// one line).
    pub fn open(title: &str) -> Section {
        let title: String = title
            .chars()
            .take(MAX_TITLE_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let id = section_id(&title, NEXT_ID.fetch_add(1, Ordering::Relaxed));
        tracing::info!(
            target: MARKER_TARGET,
            "section_start:{}:{id}\r\x1b[0K{}",
            unix_now(),
            title.trim()
        );
        Section { id: Some(id) }
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
        if let Some(id) = self.id.take() {
            tracing::info!(
                target: MARKER_TARGET,
                "section_end:{}:{id}[outcome={}]",
                unix_now(),
                outcome.as_str()
            );
        }
    }
}

/// A GitLab section name (`[A-Za-z0-9_.-]+`): the title's first words, then `n`.
fn section_id(title: &str, n: u64) -> String {
    let mut id = String::with_capacity(40);
    for c in title.chars() {
        if id.len() >= 32 {
            break;
        }
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => id.push(c),
            _ if !id.is_empty() && !id.ends_with('_') => id.push('_'),
            _ => {}
        }
    }
    if !id.is_empty() && !id.ends_with('_') {
        id.push('_');
    }
    id.push_str(&n.to_string());
    id
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

#[cfg(test)]
mod tests {
    use super::*;
    use runlog_protocol::sections::{Marker, parse_marker};

    #[test]
    fn ids_are_gitlab_names_and_unique() {
        assert_eq!(section_id("step \"build\" (2)", 7), "step_build_2_7");
        assert_eq!(section_id("", 3), "3");
        assert_eq!(section_id("über", 1), "ber_1");
        assert_ne!(section_id("setup", 1), section_id("setup", 2));
    }

    #[test]
    fn the_markers_parse_with_title_and_outcome() {
        let start = "section_start:5:setup_1\r\x1b[0Ksetup stage-1";
        assert!(matches!(
            parse_marker(start),
            Some(Marker::Open {
                name: "setup_1",
                title: Some("setup stage-1"),
                ..
            })
        ));
        assert!(matches!(
            parse_marker("section_end:6:setup_1[outcome=failure]"),
            Some(Marker::Close {
                name: Some("setup_1"),
                outcome: Some(Outcome::Failure),
                ..
            })
        ));
    }
}
