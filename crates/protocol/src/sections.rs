//! Sections of a log: the group markers CI systems write, and the tree they form.
//!
//! Pure: no I/O. [`parse_marker`] recognises one line; [`SectionTracker`] turns the
//! marker lines of a stream, in `pos` order, into a tree of [`Section`]s. The log
//! service keeps one tracker per stream as lines arrive; a reader gets the result as
//! a [`SectionsAnswer`].
//!
//! # Markers
//!
//! | dialect | opens | closes |
//! |---|---|---|
//! | GitHub | `::group::NAME` | `::endgroup::` (the innermost open GitHub group) |
//! | GitLab | `section_start:UNIX_TS:NAME[collapsed=true]` | `section_end:UNIX_TS:NAME` (the innermost open section of that name, and everything inside it) |
//! | Buildkite | `--- NAME`, `~~~ NAME` (collapsed), `+++ NAME` (expanded) | the next Buildkite header, or the end of the stream |
//!
//! GitLab markers may be preceded by `\e[0K` and followed by `\r\e[0K` and a header
//! (what GitLab shows as the section's title; kept as [`Section::title`]), as its
//! runner writes them. GitHub commands may be preceded by spaces and tabs (indented
//! output of a nested script). Buildkite's `^^^ +++` marks the current section to be
//! shown expanded.
//!
//! **Nesting.** Every dialect nests: a `::group::` inside an open group opens a child
//! (GitHub itself does not nest groups, and its users ask for it), a GitLab section
//! inside another is its child, and a Buildkite header closes the previous Buildkite
//! section (with anything opened inside it) and opens a sibling of it.
//!
//! **Outcomes.** A writer may state how a section ended on its end marker:
//! `::endgroup outcome=failure::` (GitHub's command-property syntax) or
//! `section_end:UNIX_TS:NAME[outcome=failure]` (GitLab's option syntax). Values:
//! `success`, `failure`, `cancelled` (and the spellings `succeeded`, `passed`, `ok`,
//! `failed`, `error`, `canceled`). An end marker without one means `success`: the
//! writer reached the section's end. Sections a close ends implicitly (a GitLab end
//! of an outer section, a Buildkite header) take that close's outcome. Sections
//! still open when the stream ends take the stream's outcome
//! ([`SectionTracker::finish`]): a step that failed marks them `failure`; without a
//! stated outcome they are `unknown`.
//!
//! Over 700 lines with its tests (about 275); the code is one parser and the tree it
//! builds, which change together.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Most sections kept per stream; later ones are counted in
/// [`SectionsAnswer::sections_dropped`]. Bounds the service's memory for a stream
/// whose every line is a header.
pub const MAX_SECTIONS: usize = 100_000;

/// Deepest nesting kept; a marker opening deeper is ignored (counted in
/// [`SectionsAnswer::ignored_markers`]).
pub const MAX_DEPTH: usize = 64;

/// Longest section name or title kept, in bytes (cut at a character boundary).
pub const MAX_NAME_BYTES: usize = 256;

/// Which CI system's syntax a section was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `::group::` / `::endgroup::`.
    Github,
    /// `section_start:` / `section_end:`.
    Gitlab,
    /// `--- `, `+++ `, `~~~ `.
    Buildkite,
}

/// How a section (or a stream) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It reached its end.
    Success,
    /// It failed (a step exiting non-zero, a stated failure).
    Failure,
    /// It was stopped before its end.
    Cancelled,
    /// It was still open when its stream ended, and nobody said how it went.
    Unknown,
}

impl Outcome {
    /// The word a marker or query states it with (`success`, `failure`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Cancelled => "cancelled",
            Outcome::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "success" | "succeeded" | "passed" | "ok" => Ok(Outcome::Success),
            "failure" | "failed" | "error" => Ok(Outcome::Failure),
            "cancelled" | "canceled" => Ok(Outcome::Cancelled),
            "unknown" => Ok(Outcome::Unknown),
            other => Err(format!(
                "unknown outcome {other:?}; expected success, failure, cancelled or unknown"
            )),
        }
    }
}

/// What one line says about sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker<'a> {
    /// A section starts at this line.
    Open {
        /// Its syntax.
        dialect: Dialect,
        /// Its name (GitLab: the identifier; others: the text after the marker).
        name: &'a str,
        /// GitLab's header, the text after `\r\e[0K`, when there is one.
        title: Option<&'a str>,
        /// The writer's folding hint (GitLab `collapsed=`, Buildkite `---`/`~~~`
        /// collapsed, `+++` expanded).
        collapsed: Option<bool>,
        /// GitLab's `UNIX_TS`, seconds.
        unix_time: Option<u64>,
    },
    /// A section ends at this line (the line is its last).
    Close {
        /// Its syntax.
        dialect: Dialect,
        /// GitLab: the name of the section it ends; GitHub: none (the innermost group).
        name: Option<&'a str>,
        /// The outcome the writer stated, if any.
        outcome: Option<Outcome>,
        /// GitLab's `UNIX_TS`, seconds.
        unix_time: Option<u64>,
    },
    /// Buildkite `^^^ +++`: show the current section expanded.
    Expand,
}

/// The marker `out` (one line's text) holds, if any.
///
/// ```
/// use runlog_protocol::sections::{parse_marker, Dialect, Marker, Outcome};
/// assert!(matches!(parse_marker("::group::Build\n"),
///     Some(Marker::Open { dialect: Dialect::Github, name: "Build", .. })));
/// assert!(matches!(parse_marker("::endgroup outcome=failure::\n"),
///     Some(Marker::Close { outcome: Some(Outcome::Failure), .. })));
/// assert_eq!(parse_marker("plain text\n"), None);
/// ```
pub fn parse_marker(out: &str) -> Option<Marker<'_>> {
    let line = out.trim_end_matches(['\n', '\r']);
    if let Some(m) = parse_gitlab(line) {
        return Some(m);
    }
    if let Some(m) = parse_github(line) {
        return Some(m);
    }
    parse_buildkite(line)
}

/// What a marker line's text starts with, after any spaces, tabs and
/// `CLEAR_LINE`s (`\x1b[0K`): a line that starts otherwise holds no marker, so a caller with
/// many lines can skip most of them with a prefix compare ([`parse_marker`]
/// decides).
pub const MARKER_STARTS: &[&str] = &[
    "::group::",
    "::endgroup",
    "section_start:",
    "section_end:",
    "--- ",
    "+++ ",
    "~~~ ",
    "^^^ +++",
];

/// The clear-line sequence GitLab's runner writes around its markers.
const CLEAR_LINE: &str = "\x1b[0K";

/// Whether `out` starts as a marker does ([`MARKER_STARTS`], after spaces, tabs and
/// GitLab's clear-line sequences): a few compares, where [`parse_marker`] decides.
pub fn may_be_marker(out: &str) -> bool {
    let mut rest = out.trim_start_matches([' ', '\t']);
    while let Some(r) = rest.strip_prefix(CLEAR_LINE) {
        rest = r;
    }
    MARKER_STARTS.iter().any(|m| rest.starts_with(m))
}

/// `s` without leading and trailing whitespace, as [`str::trim`] cuts it: ASCII
/// whitespace a byte at a time first (a marker padded with spaces cost a `char`
/// decode and a Unicode test a space), the Unicode look only when an end is not
/// plain ASCII (or is the vertical tab, which `trim_ascii` keeps).
fn trim(s: &str) -> &str {
    let t = s.trim_ascii();
    let plain = |c: Option<&u8>| c.is_none_or(|b| b.is_ascii() && *b != 0x0b);
    if plain(t.as_bytes().first()) && plain(t.as_bytes().last()) {
        t
    } else {
        t.trim()
    }
}

fn parse_gitlab(line: &str) -> Option<Marker<'_>> {
    let mut rest = line;
    while let Some(r) = rest.strip_prefix(CLEAR_LINE) {
        rest = r;
    }
    let (start, rest) = if let Some(r) = rest.strip_prefix("section_start:") {
        (true, r)
    } else {
        (false, rest.strip_prefix("section_end:")?)
    };
    let (ts, rest) = rest.split_once(':')?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unix_time = ts.parse::<u64>().ok();
    let name_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, mut rest) = rest.split_at(name_len);
    let mut options = "";
    if let Some(r) = rest.strip_prefix('[') {
        let (opts, r) = r.split_once(']')?;
        options = opts;
        rest = r;
    }
    // What follows is the end of the line or `\r` (then GitLab's `\e[0K` and header).
    let title = match rest.strip_prefix('\r') {
        Some(r) => {
            let header = r.strip_prefix(CLEAR_LINE).unwrap_or(r);
            (!header.is_empty()).then_some(header)
        }
        None if rest.is_empty() => None,
        None => return None,
    };
    let option = |key: &str| {
        options.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
    };
    Some(if start {
        Marker::Open {
            dialect: Dialect::Gitlab,
            name,
            title,
            collapsed: option("collapsed").and_then(|v| v.parse().ok()),
            unix_time,
        }
    } else {
        Marker::Close {
            dialect: Dialect::Gitlab,
            name: Some(name),
            outcome: option("outcome").and_then(|v| v.parse().ok()),
            unix_time,
        }
    })
}

fn parse_github(line: &str) -> Option<Marker<'_>> {
    let rest = line.trim_start_matches([' ', '\t']).strip_prefix("::")?;
    if let Some(name) = rest.strip_prefix("group::") {
        return Some(Marker::Open {
            dialect: Dialect::Github,
            name: trim(name),
            title: None,
            collapsed: None,
            unix_time: None,
        });
    }
    // `::endgroup::`, or with properties: `::endgroup outcome=failure::`.
    // A byte search: `split_once("::")` built a substring searcher a marker.
    let at = rest.as_bytes().windows(2).position(|w| w == b"::")?;
    // `::` is ASCII, so `at` and `at + 2` are character boundaries.
    let (command, after) = (&rest[..at], &rest[at + 2..]);
    let properties = command.strip_prefix("endgroup")?;
    if !trim(after).is_empty() || !(properties.is_empty() || properties.starts_with(' ')) {
        return None;
    }
    let outcome = properties.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == "outcome").then(|| v.parse().ok())?
    });
    Some(Marker::Close {
        dialect: Dialect::Github,
        name: None,
        outcome,
        unix_time: None,
    })
}

fn parse_buildkite(line: &str) -> Option<Marker<'_>> {
    if line.trim_end() == "^^^ +++" {
        return Some(Marker::Expand);
    }
    let (collapsed, name) = if let Some(n) = line.strip_prefix("--- ") {
        (true, n)
    } else if let Some(n) = line.strip_prefix("~~~ ") {
        (true, n)
    } else {
        (false, line.strip_prefix("+++ ")?)
    };
    let name = trim(name);
    // A bare `--- ` (a YAML document start, a rule) names nothing.
    (!name.is_empty()).then_some(Marker::Open {
        dialect: Dialect::Buildkite,
        name,
        title: None,
        collapsed: Some(collapsed),
        unix_time: None,
    })
}

/// One section of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Its name (GitLab: the identifier after the timestamp).
    pub name: String,
    /// GitLab's header text, when the marker carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The syntax it was written in.
    pub dialect: Dialect,
    /// Index (in [`SectionsAnswer::sections`]) of the section it is nested in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// 0 at the top level, its parent's depth + 1 inside another.
    pub depth: u32,
    /// `pos` of its start marker.
    pub first_pos: u64,
    /// `pos` of its last line (its end marker, when it has one); `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pos: Option<u64>,
    /// `time` of its start marker (RFC 3339).
    pub start: String,
    /// `time` of the line that ended it; `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// `end − start` in milliseconds, when both times are readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Lines from `first_pos` to `last_pos`, both included; `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    /// How it ended; `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The writer's folding hint, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapsed: Option<bool>,
}

/// A section still open: what closing it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OpenSection {
    /// Its index in `sections`; `None` when it was over [`MAX_SECTIONS`] and is
    /// only tracked so its end marker closes it and not its parent.
    index: Option<u32>,
    dialect: Dialect,
    /// Its name when GitLab's (the one end marker that names what it ends), else
    /// empty.
    name: String,
}

/// Builds the section tree of one stream from its lines, given in `pos` order.
///
/// Only marker lines need to be given ([`SectionTracker::line`] skips others
/// cheaply): a section's line count and last line follow from the `pos` of the
/// markers that open and end it.
///
/// ```
/// use runlog_protocol::sections::{SectionTracker, Outcome};
/// let mut t = SectionTracker::default();
/// t.line(0, "2026-11-20T10:00:00.000Z", "::group::Build\n");
/// t.line(1, "2026-11-20T10:00:01.000Z", "compiling\n");
/// t.line(2, "2026-11-20T10:00:03.500Z", "::endgroup::\n");
/// t.finish(Some((2, "2026-11-20T10:00:03.500Z")), None);
/// let s = &t.sections()[0];
/// assert_eq!((s.lines, s.duration_ms, s.outcome), (Some(3), Some(3500), Some(Outcome::Success)));
/// ```
///
/// A store that keeps a stream's sections apart (one record per section, so that a
/// batch costs the sections it touches, not the stream's whole list) saves the
/// tracker's [`head`](Self::head) and the sections [`changed_since`](Self::changed_since)
/// its last save, and [`resume`](Self::resume)s it holding only the sections it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionTracker {
    /// The sections from index `base` on (all of them unless resumed from a later one).
    sections: Vec<Section>,
    /// Index of `sections[0]`.
    #[serde(default)]
    base: u32,
    /// The open sections with an index below `base`, with their index (at most
    /// [`MAX_DEPTH`]): only open sections ever change.
    #[serde(default)]
    open_before: Vec<(u32, Section)>,
    stack: Vec<OpenSection>,
    ignored_markers: u64,
    sections_dropped: u64,
}

/// What a tracker is besides its sections: the open sections (with their values,
/// so updating needs nothing else) and the counts. Its size follows the nesting
/// depth, not the number of sections; a store keeps it opaque.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerHead {
    /// Sections kept so far.
    count: u32,
    stack: Vec<OpenSection>,
    /// The value of each kept open section, in stack order.
    open: Vec<(u32, Section)>,
    ignored_markers: u64,
    sections_dropped: u64,
}

impl TrackerHead {
    /// Sections kept so far (the next one opened gets this index).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The indexes of the sections open at this head.
    pub fn open_indexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.open.iter().map(|(i, _)| *i)
    }
}

impl SectionTracker {
    /// The tracker `head` describes, holding `sections`: the stored sections from
    /// index `from` on (`from..head.count()`, in order; `from` at most the count).
    /// The open sections before `from` come from the head. A tracker resumed with
    /// `from` at the count holds only what taking more markers needs.
    pub fn resume(head: TrackerHead, from: u32, sections: Vec<Section>) -> Self {
        let open_before = head.open.into_iter().filter(|(i, _)| *i < from).collect();
        SectionTracker {
            sections,
            base: from,
            open_before,
            stack: head.stack,
            ignored_markers: head.ignored_markers,
            sections_dropped: head.sections_dropped,
        }
    }

    /// The part of the tracker a store keeps beside its sections ([`TrackerHead`]).
    pub fn head(&self) -> TrackerHead {
        TrackerHead {
            count: self.count(),
            stack: self.stack.clone(),
            open: self
                .stack
                .iter()
                .filter_map(|s| s.index)
                .filter_map(|i| Some((i, self.section(i)?.clone())))
                .collect(),
            ignored_markers: self.ignored_markers,
            sections_dropped: self.sections_dropped,
        }
    }

    /// The sections that may differ from what `since` (the head of an earlier
    /// state of this tracker) describes: those opened since, and those open then.
    /// With their indexes, in index order; each at most once.
    pub fn changed_since<'a>(
        &'a self,
        since: &'a TrackerHead,
    ) -> impl Iterator<Item = (u32, &'a Section)> + 'a {
        since
            .open_indexes()
            .filter(move |i| *i < since.count)
            .chain(since.count..self.count())
            .filter_map(move |i| Some((i, self.section(i)?)))
    }

    /// Sections kept so far, held or not.
    pub fn count(&self) -> u32 {
        // MAX_SECTIONS is far below u32::MAX.
        self.base + self.sections.len() as u32
    }

    /// Section `i`, when this tracker holds it.
    pub fn section(&self, i: u32) -> Option<&Section> {
        match i.checked_sub(self.base) {
            Some(at) => self.sections.get(at as usize),
            None => self
                .open_before
                .iter()
                .find_map(|(j, s)| (*j == i).then_some(s)),
        }
    }

    fn section_mut(&mut self, i: u32) -> Option<&mut Section> {
        match i.checked_sub(self.base) {
            Some(at) => self.sections.get_mut(at as usize),
            None => self
                .open_before
                .iter_mut()
                .find_map(|(j, s)| (*j == i).then_some(s)),
        }
    }

    /// Takes one line; returns whether it was a marker.
    pub fn line(&mut self, pos: u64, time: &str, out: &str) -> bool {
        match parse_marker(out) {
            Some(m) => {
                self.marker(pos, time, m);
                true
            }
            None => false,
        }
    }

    /// Applies a marker found on the line at `pos` written at `time`.
    pub fn marker(&mut self, pos: u64, time: &str, marker: Marker<'_>) {
        match marker {
            Marker::Open {
                dialect,
                name,
                title,
                collapsed,
                unix_time,
            } => {
                if dialect == Dialect::Buildkite
                    && let Some(at) = self.stack.iter().rposition(|s| s.dialect == dialect)
                {
                    // The previous header's section ends on the line before this one.
                    let end = pos.saturating_sub(1);
                    self.close_from(at, end, time, Outcome::Success);
                }
                self.open(
                    pos,
                    time_or_unix(time, unix_time),
                    dialect,
                    name,
                    title,
                    collapsed,
                );
            }
            Marker::Close {
                dialect,
                name,
                outcome,
                unix_time,
            } => {
                let at = self
                    .stack
                    .iter()
                    .rposition(|s| s.dialect == dialect && name.is_none_or(|n| s.name == cut(n)));
                match at {
                    Some(at) => self.close_from(
                        at,
                        pos,
                        &time_or_unix(time, unix_time),
                        outcome.unwrap_or(Outcome::Success),
                    ),
                    None => self.ignored_markers += 1,
                }
            }
            Marker::Expand => match self
                .stack
                .last()
                .and_then(|s| s.index)
                .and_then(|i| self.section_mut(i))
            {
                Some(s) => s.collapsed = Some(false),
                None => self.ignored_markers += 1,
            },
        }
    }

    fn open(
        &mut self,
        pos: u64,
        time: String,
        dialect: Dialect,
        name: &str,
        title: Option<&str>,
        collapsed: Option<bool>,
    ) {
        if self.stack.len() >= MAX_DEPTH {
            self.ignored_markers += 1;
            return;
        }
        let name = cut(name).to_owned();
        // Only a GitLab end names the section it ends: the others' open entries need
        // no copy of the name.
        let open_name = if dialect == Dialect::Gitlab {
            name.clone()
        } else {
            String::new()
        };
        let index = if (self.count() as usize) < MAX_SECTIONS {
            let parent = self.stack.iter().rev().find_map(|s| s.index);
            let depth = parent
                .and_then(|p| self.section(p))
                .map_or(0, |p| p.depth + 1);
            self.sections.push(Section {
                name,
                title: title.map(|t| cut(t).to_owned()),
                dialect,
                parent,
                depth,
                first_pos: pos,
                last_pos: None,
                start: time,
                end: None,
                duration_ms: None,
                lines: None,
                outcome: None,
                collapsed,
            });
            Some(self.count() - 1)
        } else {
            self.sections_dropped += 1;
            None
        };
        self.stack.push(OpenSection {
            index,
            dialect,
            name: open_name,
        });
    }

    /// Closes the open section at stack position `at` and every one inside it, their
    /// last line being `last_pos`.
    fn close_from(&mut self, at: usize, last_pos: u64, time: &str, outcome: Outcome) {
        for k in (at..self.stack.len()).rev() {
            let Some(s) = self.stack[k].index.and_then(|i| self.section_mut(i)) else {
                continue;
            };
            let last = last_pos.max(s.first_pos);
            s.last_pos = Some(last);
            s.lines = Some(last - s.first_pos + 1);
            s.duration_ms = duration_ms(&s.start, time);
            s.end = Some(time.to_owned());
            s.outcome = Some(outcome);
        }
        self.stack.truncate(at);
    }

    /// Ends the stream: sections still open end at its last line (`pos` and `time`,
    /// `None` for a stream without lines) with `outcome`, or
    /// [`Outcome::Unknown`] when the stream's outcome was not stated.
    pub fn finish(&mut self, last: Option<(u64, &str)>, outcome: Option<Outcome>) {
        if self.stack.is_empty() {
            return;
        }
        let (pos, time) = last.unwrap_or((0, ""));
        self.close_from(0, pos, time, outcome.unwrap_or(Outcome::Unknown));
    }

    /// Marks the sections open now as failed, ending them at `last` (the stream's
    /// last line): a step that failed while the stream goes on.
    pub fn fail_open(&mut self, last: (u64, &str)) {
        if !self.stack.is_empty() {
            self.close_from(0, last.0, last.1, Outcome::Failure);
        }
    }

    /// Every section held, in the order they opened (a parent before its
    /// children): all of them, unless the tracker was [resumed](Self::resume) from
    /// a later one ([`first_held`](Self::first_held)).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Index of the first section [`sections`](Self::sections) lists.
    pub fn first_held(&self) -> u32 {
        self.base
    }

    /// Whether some section is still open.
    pub fn has_open(&self) -> bool {
        !self.stack.is_empty()
    }

    /// Markers that matched nothing (an end with no open section of its name, a
    /// `^^^ +++` outside any section, an open past [`MAX_DEPTH`]).
    pub fn ignored_markers(&self) -> u64 {
        self.ignored_markers
    }

    /// Sections opened past [`MAX_SECTIONS`] and not kept.
    pub fn sections_dropped(&self) -> u64 {
        self.sections_dropped
    }
}

/// `time`, or GitLab's `UNIX_TS` in the wire format when the line has no time.
fn time_or_unix(time: &str, unix: Option<u64>) -> String {
    match unix {
        Some(secs) if time.is_empty() => crate::format_time(
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.min(u64::from(u32::MAX))),
        ),
        _ => time.to_owned(),
    }
}

fn duration_ms(start: &str, end: &str) -> Option<u64> {
    let start = humantime::parse_rfc3339_weak(start).ok()?;
    let end = humantime::parse_rfc3339_weak(end).ok()?;
    let ms = end.duration_since(start).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// `s` cut to at most [`MAX_NAME_BYTES`] bytes at a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_NAME_BYTES {
        return s;
    }
    let mut end = MAX_NAME_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Answer of `GET /stream/sections?accountID=&key=`: a stream's sections and, once it
/// is closed, its completeness ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionsAnswer {
    /// Whether the stream is still being written (its last sections may be open).
    pub open: bool,
    /// Every section, in the order they opened; `parent` indexes into this list.
    /// With `?since=N`, only the sections from index `N` on (see [`from`](Self::from)).
    pub sections: Vec<Section>,
    /// Index of the first section listed: `0` for the whole list; with `?since=N`
    /// it is `N` (at most the number of sections), and `sections` holds only the
    /// sections from there on. A section never changes once closed, so a reader
    /// that keeps the list asks again with `since` set to the index of the first
    /// section it holds still open (or its count when none is) and replaces its list
    /// from `from` on with the answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub from: u32,
    /// Markers that matched nothing (see [`SectionTracker::ignored_markers`]).
    #[serde(default)]
    pub ignored_markers: u64,
    /// Sections past [`MAX_SECTIONS`], not listed.
    #[serde(default)]
    pub sections_dropped: u64,
    /// What the service can prove about the stream's completeness; `None` while
    /// it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<crate::ledger::Ledger>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SectionsAnswer {
    /// The answer to `?since=since`: the sections from index `since` on (all of
    /// them from `0`; none past the end), `from` set to where they start.
    pub fn since(mut self, since: u32) -> Self {
        let from = self.sections.len().min(since as usize);
        self.sections.drain(..from);
        // `from` is at most `since`, a u32.
        self.from = from as u32;
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const T0: &str = "2026-11-20T10:00:00.000Z";
    const T1: &str = "2026-11-20T10:00:01.250Z";

    #[test]
    fn github_groups_nest_and_endgroup_closes_the_innermost() {
        let mut t = SectionTracker::default();
        t.line(0, T0, "::group::outer\n");
        t.line(1, T0, "  ::group::inner\n");
        t.line(2, T0, "x\n");
        t.line(3, T1, "::endgroup::\n");
        t.line(4, T1, "::endgroup::\n");
        let s = t.sections();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].parent, s[1].depth, s[1].last_pos),
            (Some(0), 1, Some(3))
        );
        assert_eq!((s[0].last_pos, s[0].lines), (Some(4), Some(5)));
        assert_eq!(s[0].duration_ms, Some(1250));
        assert!(!t.has_open());
    }

    #[test]
    fn gitlab_markers_as_the_runner_writes_them() {
        let open = "\x1b[0Ksection_start:1732096800:build_step[collapsed=true]\r\x1b[0KBuilding the thing\n";
        let m = parse_marker(open).unwrap();
        assert_eq!(
            m,
            Marker::Open {
                dialect: Dialect::Gitlab,
                name: "build_step",
                title: Some("Building the thing"),
                collapsed: Some(true),
                unix_time: Some(1_732_096_800),
            }
        );
        let close = "\x1b[0Ksection_end:1732096805:build_step\r\x1b[0K\n";
        assert!(matches!(
            parse_marker(close),
            Some(Marker::Close {
                name: Some("build_step"),
                outcome: None,
                ..
            })
        ));
        let failed = "section_end:1732096805:build_step[outcome=failed]\n";
        assert!(matches!(
            parse_marker(failed),
            Some(Marker::Close {
                outcome: Some(Outcome::Failure),
                ..
            })
        ));
        // A name outside GitLab's alphabet, or junk after it, is not a marker.
        assert_eq!(parse_marker("section_start:1:a b\n"), None);
        assert_eq!(parse_marker("section_start:x:a\n"), None);
        assert_eq!(parse_marker("echo section_start:1:a\n"), None);
    }

    #[test]
    fn gitlab_end_closes_the_named_section_and_those_inside_it() {
        let mut t = SectionTracker::default();
        t.line(0, "", "section_start:100:a\r\x1b[0K\n");
        t.line(1, "", "section_start:101:b\r\x1b[0K\n");
        t.line(2, "", "section_end:103:a[outcome=failure]\r\x1b[0K\n");
        t.line(3, "", "section_end:104:b\r\x1b[0K\n");
        let s = t.sections();
        assert_eq!(s[0].outcome, Some(Outcome::Failure));
        assert_eq!(
            s[1].outcome,
            Some(Outcome::Failure),
            "ended inside a failed section"
        );
        assert_eq!((s[1].last_pos, s[0].last_pos), (Some(2), Some(2)));
        // No `time` on the lines: GitLab's timestamps give the times.
        assert_eq!(s[0].duration_ms, Some(3000));
        assert_eq!(t.ignored_markers(), 1, "b was already closed");
    }

    #[test]
    fn buildkite_headers_are_siblings_and_expand_marks_the_current_one() {
        let mut t = SectionTracker::default();
        t.line(0, T0, "--- :hammer: Build\n");
        t.line(1, T0, "x\n");
        t.line(2, T1, "+++ Test\n");
        t.line(3, T1, "~~~ Deploy\n");
        t.line(4, T1, "^^^ +++\n");
        t.finish(Some((9, T1)), Some(Outcome::Failure));
        let s = t.sections();
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|s| s.depth == 0));
        assert_eq!(
            (s[0].last_pos, s[0].outcome),
            (Some(1), Some(Outcome::Success))
        );
        assert_eq!(s[0].duration_ms, Some(1250));
        assert_eq!(s[1].collapsed, Some(false));
        assert_eq!(s[2].collapsed, Some(false), "^^^ +++ expands it");
        assert_eq!(
            (s[2].last_pos, s[2].outcome),
            (Some(9), Some(Outcome::Failure))
        );
        assert_eq!(parse_marker("---\n"), None);
        assert_eq!(parse_marker("--- \n"), None);
    }

    #[test]
    fn buildkite_header_inside_a_github_group_nests_in_it() {
        let mut t = SectionTracker::default();
        t.line(0, T0, "::group::job\n");
        t.line(1, T0, "--- one\n");
        t.line(2, T0, "--- two\n");
        t.line(3, T0, "::endgroup::\n");
        let s = t.sections();
        assert_eq!((s[1].parent, s[2].parent), (Some(0), Some(0)));
        assert_eq!(s[2].last_pos, Some(3), "the group's end ends it too");
    }

    #[test]
    fn stated_outcomes_and_stream_end() {
        assert!(matches!(
            parse_marker("::endgroup outcome=cancelled::"),
            Some(Marker::Close {
                outcome: Some(Outcome::Cancelled),
                ..
            })
        ));
        assert_eq!(parse_marker("::endgroupx::"), None);
        assert_eq!(parse_marker("::endgroup:: trailing"), None);
        let mut t = SectionTracker::default();
        t.line(0, T0, "::group::a\n");
        t.finish(Some((5, T1)), None);
        assert_eq!(t.sections()[0].outcome, Some(Outcome::Unknown));
        assert_eq!(t.sections()[0].lines, Some(6));
        let mut t = SectionTracker::default();
        t.line(0, T0, "::group::a\n");
        t.fail_open((3, T1));
        assert_eq!(t.sections()[0].outcome, Some(Outcome::Failure));
    }

    proptest! {
        /// The ASCII-first trim cuts exactly what `str::trim` cuts.
        #[test]
        fn trim_is_str_trim(s in "[ \t\n\r\x0b\x0ca\u{a0}\u{2003}é]{0,8}") {
            prop_assert_eq!(trim(&s), s.trim());
        }

        /// Every marker starts as [`may_be_marker`] says markers do.
        #[test]
        fn every_marker_may_be_one(out in arb_line()) {
            if parse_marker(&out).is_some() {
                prop_assert!(may_be_marker(&out), "{:?}", out);
            }
        }
    }

    #[test]
    fn unmatched_ends_are_counted_and_names_are_cut() {
        let mut t = SectionTracker::default();
        t.line(0, T0, "::endgroup::\n");
        t.line(1, T0, "^^^ +++\n");
        let long = format!("::group::{}\n", "é".repeat(400));
        t.line(2, T0, &long);
        assert_eq!(t.ignored_markers(), 2);
        assert!(t.sections()[0].name.len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn nesting_past_the_depth_cap_is_ignored() {
        let mut t = SectionTracker::default();
        for pos in 0..(MAX_DEPTH as u64 + 5) {
            t.line(pos, T0, "::group::g\n");
        }
        assert_eq!(t.sections().len(), MAX_DEPTH);
        assert_eq!(t.ignored_markers(), 5);
    }

    fn arb_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z ]{0,8}\n",
            "[a-c]{1,3}".prop_map(|n| format!("::group::{n}\n")),
            Just("::endgroup::\n".to_owned()),
            "(success|failure|bogus)".prop_map(|o| format!("::endgroup outcome={o}::\n")),
            ("[0-9]{1,12}", "[a-c]{1,2}").prop_map(|(ts, n)| format!(
                "\x1b[0Ksection_start:{ts}:{n}[collapsed=true]\r\x1b[0Kh\n"
            )),
            ("[0-9]{1,12}", "[a-c]{1,2}")
                .prop_map(|(ts, n)| format!("section_end:{ts}:{n}[outcome=failed]\n")),
            "(---|\\+\\+\\+|~~~) [a-z]{0,3}".prop_map(|h| format!("{h}\n")),
            Just("^^^ +++\n".to_owned()),
            // Anything at all: the parser never panics.
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn sections_always_form_a_tree(
            lines in proptest::collection::vec((arb_line(), 1u64..3, any::<bool>()), 0..60),
            outcome in proptest::option::of(Just(Outcome::Failure)),
        ) {
            let mut t = SectionTracker::default();
            let mut pos = 0;
            for (out, step, timed) in &lines {
                t.line(pos, if *timed { T0 } else { "" }, out);
                pos += step;
            }
            t.finish(pos.checked_sub(1).map(|p| (p, T1)), outcome);
            prop_assert!(!t.has_open());
            let s = t.sections();
            for (i, sec) in s.iter().enumerate() {
                let last = sec.last_pos.unwrap();
                prop_assert!(last >= sec.first_pos);
                prop_assert_eq!(sec.lines, Some(last - sec.first_pos + 1));
                prop_assert!(sec.outcome.is_some());
                match sec.parent {
                    None => prop_assert_eq!(sec.depth, 0),
                    Some(p) => {
                        let p = &s[p as usize];
                        prop_assert!((p as *const Section) < (sec as *const Section));
                        prop_assert_eq!(sec.depth, p.depth + 1);
                        prop_assert!(sec.first_pos >= p.first_pos);
                        prop_assert!(last <= p.last_pos.unwrap());
                    }
                }
                // Siblings never overlap: a later section starts after an earlier
                // one with the same parent has ended.
                for later in &s[i + 1..] {
                    if later.parent == sec.parent {
                        prop_assert!(later.first_pos > last);
                    }
                }
            }
        }

        /// A tracker saved as its head and changed sections after each batch, and
        /// resumed holding only the open ones, ends with the sections of one that
        /// took every line at once.
        #[test]
        fn resumed_from_a_store_it_ends_as_if_whole(
            batches in proptest::collection::vec(
                proptest::collection::vec(arb_line(), 0..8), 0..10),
        ) {
            let mut whole = SectionTracker::default();
            let mut stored: std::collections::BTreeMap<u32, Section> = Default::default();
            let mut head = TrackerHead::default();
            let mut pos = 0;
            for batch in &batches {
                let mut t = SectionTracker::resume(head.clone(), head.count(), Vec::new());
                for out in batch {
                    whole.line(pos, T0, out);
                    t.line(pos, T0, out);
                    pos += 1;
                }
                for (i, s) in t.changed_since(&head) {
                    stored.insert(i, s.clone());
                }
                head = t.head();
            }
            let all: Vec<Section> = stored.into_values().collect();
            prop_assert_eq!(all.len() as u32, head.count());
            let mut t = SectionTracker::resume(head, 0, all);
            prop_assert_eq!(t.sections(), whole.sections());
            t.finish(Some((pos, T1)), None);
            whole.finish(Some((pos, T1)), None);
            prop_assert_eq!(t, whole);
        }
    }
}
