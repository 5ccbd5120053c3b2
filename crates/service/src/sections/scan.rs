//! Finding marker lines in a batch without parsing every line.
//!
//! A line can hold a section marker only if its JSON holds one of a few byte
//! strings (`::group::`, `section_end:`, `--- `…); one Aho-Corasick pass over the
//! request body finds the lines that do, and only those are parsed. The markers are
//! plain ASCII, which JSON writes as itself; a writer that spells them with `\u`
//! escapes (no encoder does) is not recognised.

use crate::store::{LineBatch, StoredLine};
use aho_corasick::AhoCorasick;
use runlog_protocol::sections::parse_marker;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Byte strings every marker line's JSON contains one of.
const NEEDLES: &[&str] = &[
    "::group::",
    "::endgroup",
    "section_start:",
    "section_end:",
    "--- ",
    "+++ ",
    "~~~ ",
    DROP_MARKER_PREFIX,
];

/// How runlog's writer (`livelog`) starts the line it writes where it drops lines
/// under its bounds: `[livelog] lines are being dropped from here on: …` when the
/// loss starts, `[livelog] N lines (B bytes) were dropped starting after line P: …`
/// once it knows how many.
const DROP_MARKER_PREFIX: &str = "[livelog] ";

/// For a writer's drop marker, `Some(count)` (the count when the marker states it).
fn drop_marker(out: &str) -> Option<Option<u64>> {
    let rest = out.strip_prefix(DROP_MARKER_PREFIX)?;
    if !rest.contains(" dropped") {
        return None;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let count = rest[digits..]
        .starts_with(" lines")
        .then(|| rest[..digits].parse().ok())
        .flatten();
    Some(count)
}

/// What a [`MarkerLine`] marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A section marker ([`parse_marker`] reads it).
    Section,
    /// A writer's drop marker, with the count of lines it reports when it does.
    Drop(Option<u64>),
}

static FINDER: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| AhoCorasick::new(NEEDLES).ok());

/// The parts of a line the section index reads.
#[derive(serde::Deserialize)]
struct LineText<'a> {
    #[serde(borrow)]
    out: Cow<'a, str>,
    #[serde(default, borrow)]
    time: Cow<'a, str>,
}

/// One marker line: its `pos`, `time` and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerLine {
    /// The line's `pos`.
    pub pos: u64,
    /// The line's `time`.
    pub time: String,
    /// The line's `out`.
    pub out: String,
    /// What it marks.
    pub mark: Mark,
}

/// The marker line (a section marker or a writer's drop marker) `json` is, if it
/// is one. `None` for any other line, and for JSON
/// that does not parse (ingest validated it; a store's bytes are trusted to be it).
pub fn marker_line(pos: u64, json: &[u8]) -> Option<MarkerLine> {
    let finder = FINDER.as_ref()?;
    finder.find(json)?;
    let line: LineText<'_> = serde_json::from_slice(json).ok()?;
    let mark = if parse_marker(&line.out).is_some() {
        Mark::Section
    } else {
        Mark::Drop(drop_marker(&line.out)?)
    };
    Some(MarkerLine {
        pos,
        time: line.time.into_owned(),
        out: line.out.into_owned(),
        mark,
    })
}

/// What the index needs of one `PUT /stream` batch, taken before the batch goes to
/// the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchScan {
    /// `pos` range the batch covers when its lines are `first, first + 1, …` in
    /// request order (what writers send); `None` otherwise.
    pub run: Option<(u64, u64)>,
    /// Its marker lines, in request order.
    pub markers: Vec<MarkerLine>,
}

impl BatchScan {
    /// Scans `batch`: one pass over its buffer for the needles, and a parse of each
    /// line they fall in.
    pub fn of(batch: &LineBatch) -> Self {
        let lines = batch.lines();
        let run = match (lines.first(), lines.last()) {
            (Some(first), Some(last))
                if lines
                    .iter()
                    .enumerate()
                    .all(|(i, l)| Some(l.pos) == first.pos.checked_add(i as u64)) =>
            {
                Some((first.pos, last.pos))
            }
            _ => None,
        };
        let mut markers = Vec::new();
        let Some(finder) = FINDER.as_ref() else {
            return BatchScan { run, markers };
        };
        let buf = batch.buffer();
        // Lines sit in the buffer in request order, so a hit's line is found by a
        // binary search over their starts; a line is parsed once however many hits
        // it holds.
        let mut from = 0;
        while let Some(hit) = finder.find(aho_corasick::Input::new(&buf[..]).range(from..)) {
            let at = hit.start();
            let i = lines.partition_point(|l| l.span().start <= at);
            let Some(line) = i.checked_sub(1).map(|i| lines[i]) else {
                from = hit.end();
                continue;
            };
            let span = line.span();
            if at < span.end
                && let Some(m) = marker_line(line.pos, &buf[span.clone()])
            {
                markers.push(m);
            }
            from = span.end.max(hit.end());
        }
        BatchScan { run, markers }
    }
}

/// The `time` and `out` of a stored line (for reading back and the ledger).
pub fn text_of(line: &StoredLine) -> Option<(String, String)> {
    let t: LineText<'_> = serde_json::from_slice(&line.json).ok()?;
    Some((t.time.into_owned(), t.out.into_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    fn batch(lines: &[(u64, &str)]) -> LineBatch {
        let mut body = String::from("[");
        let mut spans = Vec::new();
        for (i, (pos, out)) in lines.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let json = serde_json::json!({"level": "info", "pos": pos, "out": out, "time": "t"});
            let start = body.len();
            body.push_str(&json.to_string());
            spans.push((*pos, start..body.len()));
        }
        body.push(']');
        LineBatch::new(Bytes::from(body), spans).unwrap()
    }

    #[test]
    fn finds_marker_lines_and_only_them() {
        let b = batch(&[
            (4, "plain\n"),
            (5, "::group::x\n"),
            (6, "a --- b\n"),
            (7, "\u{1b}[0Ksection_end:1:x\r\u{1b}[0K\n"),
        ]);
        let scan = BatchScan::of(&b);
        assert_eq!(scan.run, Some((4, 7)));
        let found: Vec<u64> = scan.markers.iter().map(|m| m.pos).collect();
        assert_eq!(found, [5, 7]);
        assert_eq!(scan.markers[0].out, "::group::x\n");
    }

    #[test]
    fn finds_the_writers_drop_markers_with_their_counts() {
        let b = batch(&[
            (
                0,
                "[livelog] lines are being dropped from here on: disk full\n",
            ),
            (
                1,
                "[livelog] 12 lines (960 bytes) were dropped starting after line 0: disk full\n",
            ),
            (2, "[livelog] something else\n"),
        ]);
        let marks: Vec<Mark> = BatchScan::of(&b).markers.iter().map(|m| m.mark).collect();
        assert_eq!(marks, [Mark::Drop(None), Mark::Drop(Some(12))]);
    }

    #[test]
    fn a_batch_out_of_order_has_no_run() {
        assert_eq!(BatchScan::of(&batch(&[(1, "a"), (0, "b")])).run, None);
        assert_eq!(BatchScan::of(&batch(&[(0, "a"), (2, "b")])).run, None);
        assert_eq!(BatchScan::of(&LineBatch::default()).run, None);
    }
}
