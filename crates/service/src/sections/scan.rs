//! Finding marker lines in a batch without parsing every line.
//!
//! Markers stand at the start of a line's text (after spaces, tabs and GitLab's
//! `\e[0K`), so a line can hold one only if its `out` value starts with one of
//! [`MARKER_STARTS`] or the writer's drop-marker prefix. Each line's JSON is looked
//! at only there: its `"out":` key is found (in the first bytes, where writers put
//! it) and a few bytes compared; only lines that pass are read (their `out` and
//! `time`: directly for the writers' shape, `line_text.rs`, by serde otherwise).
//! An Aho-Corasick pass over the whole body for the same strings cost 4× more
//! (32 µs against 8 µs per 1 000 lines, `benches/parse.rs`, `section_scan`). The
//! markers are plain ASCII, which JSON writes as itself; a line whose text starts
//! with any other `\u` escape is parsed to be sure (a writer may escape more than
//! JSON needs). A writer that puts another `"out":` key inside a line before its
//! own is not recognised.

use super::line_text::{out_start, writer_text};
use crate::store::{LineBatch, StoredLine};
use memchr::memmem;
use runlog_protocol::sections::{MARKER_STARTS, may_be_marker};
use std::borrow::Cow;
use std::sync::LazyLock;

static OUT_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"out\""));

/// Where the text of a line's `out` value starts in its JSON.
fn out_value(json: &[u8]) -> Option<&[u8]> {
    out_start(json).or_else(|| any_out_value(json))
}

fn skip_ws(mut r: &[u8]) -> &[u8] {
    while let Some((b' ' | b'\t' | b'\n' | b'\r', rest)) = r.split_first() {
        r = rest;
    }
    r
}

/// [`out_value`] for any other shape: the first `"out"` followed by `:` (spaces
/// allowed around it) and a string.
fn any_out_value(json: &[u8]) -> Option<&[u8]> {
    OUT_KEY.find_iter(json).find_map(|at| {
        let rest = skip_ws(&json[at + 5..]).strip_prefix(b":")?;
        skip_ws(rest).strip_prefix(b"\"")
    })
}

/// Whether a line whose `out` JSON text starts with `first` may hold a marker:
/// the first bytes [`may_hold_marker`] lets through (a marker's, or the writer's
/// drop marker's, a space, or a backslash starting `\t` or an escape).
const fn may_start_marker(first: u8) -> bool {
    matches!(
        first,
        b':' | b's' | b'-' | b'+' | b'~' | b'^' | b'[' | b' ' | b'\\'
    )
}

/// Indexes of the lines whose `out` text may start a marker by its first byte
/// (`firsts[i]` for line `i`). The bytes are tested [`CHUNK`] at a time without a
/// branch (one table load a byte, or-ed), and only a chunk that holds such a byte
/// is looked at byte by byte: a test and a branch per line was the largest part
/// of the scan of a batch with 1 % marker lines.
fn candidates(firsts: &[u8]) -> impl Iterator<Item = usize> + '_ {
    firsts
        .chunks(CHUNK)
        .enumerate()
        .filter(|(_, chunk)| chunk.iter().fold(0, |any, &b| any | STARTS[usize::from(b)]) != 0)
        .flat_map(|(k, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter(|(_, b)| may_start_marker(**b))
                .map(move |(i, _)| k * CHUNK + i)
        })
}

/// Lines [`candidates`] tests at once.
const CHUNK: usize = 32;

/// [`may_start_marker`] as a table: 1 for a byte that may start a marker.
static STARTS: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = may_start_marker(b as u8) as u8;
        b += 1;
    }
    t
};

/// Whether a line's JSON may hold a marker: its `out` text starts, after spaces,
/// tabs and `\e[0K` (as JSON writes them), with a marker's first bytes.
fn may_hold_marker(json: &[u8]) -> bool {
    let Some(mut text) = out_value(json) else {
        return false;
    };
    // The first byte settles most lines: a compare per marker was ≈ 30 ns a line.
    loop {
        match text.first() {
            Some(b':' | b's' | b'-' | b'+' | b'~' | b'^' | b'[') => break,
            Some(b' ') => text = &text[1..],
            Some(b'\\') => {
                if let Some(r) = text.strip_prefix(b"\\t") {
                    text = r;
                } else if let Some(r) = text
                    .strip_prefix(b"\\u001b[0K")
                    .or_else(|| text.strip_prefix(b"\\u001B[0K"))
                {
                    text = r;
                } else {
                    // Any other `\u` escape may spell a marker's character (a
                    // writer escaping more than JSON needs): the parse decides. Only
                    // lines whose text starts with an escaped character pay it —
                    // e.g. non-ASCII first characters from encoders that escape
                    // them all, as Python's `json.dumps` does by default.
                    return text.starts_with(b"\\u");
                }
            }
            _ => return false,
        }
    }
    MARKER_STARTS
        .iter()
        .chain(std::iter::once(&DROP_MARKER_PREFIX))
        .any(|m| text.starts_with(m.as_bytes()))
}

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
    /// A line that starts as a section marker does
    /// ([`runlog_protocol::sections::may_be_marker`]; the tracker parses it, and
    /// takes it or not).
    Section,
    /// A writer's drop marker, with the count of lines it reports when it does.
    Drop(Option<u64>),
}

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
    if !may_hold_marker(json) {
        return None;
    }
    let line = read_text(json)?;
    // The tracker parses a section marker (once, when it takes the line); here it
    // is told apart from a drop marker by how it starts.
    let mark = if may_be_marker(&line.out) {
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

/// A line's `out` and `time`: read directly when the line has the writers' shape
/// ([`writer_text`]), else parsed.
fn read_text(json: &[u8]) -> Option<LineText<'_>> {
    match writer_text(json) {
        Some((out, time)) => Some(LineText { out, time }),
        None => serde_json::from_slice(json).ok(),
    }
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
    /// Scans `batch`: a look at the start of each line's `out`, and a parse of the
    /// lines that may hold a marker.
    pub fn of(batch: &LineBatch) -> Self {
        Self::of_with(batch, None)
    }

    /// [`of`](Self::of), given the first byte of each line's `out` text when the
    /// parser found it (`out_first[i]` for line `i`, as
    /// [`crate::ingest::Incremental::finish_with_out_first`] answers): a line
    /// whose text cannot start a marker by that byte is skipped with one compare,
    /// where locating its text again cost ≈ 13 ns a line.
    pub fn of_with(batch: &LineBatch, out_first: Option<&[u8]>) -> Self {
        let lines = batch.lines();
        let run = match (lines.first(), lines.last()) {
            // The last `pos` without overflow, then every line's offset from the
            // first: a fold without an early exit, which vectorises.
            (Some(first), Some(last))
                if first.pos.checked_add(lines.len() as u64 - 1) == Some(last.pos)
                    && lines.iter().enumerate().fold(true, |run, (i, l)| {
                        run & (l.pos.wrapping_sub(first.pos) == i as u64)
                    }) =>
            {
                Some((first.pos, last.pos))
            }
            _ => None,
        };
        let buf = batch.buffer();
        let markers = match out_first.filter(|f| f.len() == lines.len()) {
            Some(firsts) => candidates(firsts)
                .filter_map(|i| {
                    let l = lines.get(i)?;
                    marker_line(l.pos, &buf[l.span()])
                })
                .collect(),
            None => lines
                .iter()
                .filter_map(|l| marker_line(l.pos, &buf[l.span()]))
                .collect(),
        };
        BatchScan { run, markers }
    }
}

/// The `time` and `out` of a stored line (for reading back and the ledger).
pub fn text_of(line: &StoredLine) -> Option<(String, String)> {
    let t = read_text(&line.json)?;
    Some((t.time.into_owned(), t.out.into_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use runlog_protocol::sections::parse_marker;

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
    fn the_start_of_out_is_found_in_any_key_order_and_spacing() {
        for json in [
            r#"{"pos":1,"out":"  ::group::a\n"}"#,
            r#"{"pos":1,"out" : "\t::endgroup::"}"#,
            r#"{"time":"t","level":"info","args":{"k":1},"pos":1,"out":"\u001b[0Ksection_end:1:a\r\u001b[0K"}"#,
            r#"{"pos":1,"out":"^^^ +++"}"#,
        ] {
            assert!(may_hold_marker(json.as_bytes()), "{json}");
        }
        for json in [
            r#"{"pos":1,"out":"x ::group::a"}"#,
            r#"{"pos":1,"out":"---"}"#,
            r#"{"pos":1,"level":"::group::","out":"x"}"#,
        ] {
            assert!(!may_hold_marker(json.as_bytes()), "{json}");
        }
    }

    proptest::proptest! {
        /// The first-bytes test never passes over a line the parser would read as
        /// a marker, whatever the key order and the text.
        #[test]
        fn the_quick_test_never_misses_a_marker(
            out in proptest::prop_oneof![
                "[ \t]{0,3}(::group::|::endgroup::|--- |\\+\\+\\+ |~~~ |\\^\\^\\^ \\+\\+\\+)[a-z ]{0,5}\n?",
                "(\u{1b}\\[0K){0,2}section_(start|end):[0-9]{1,3}:[a-z]{1,3}(\\[collapsed=true\\])?(\r\u{1b}\\[0K[a-z]{0,3})?",
                proptest::prelude::any::<String>(),
            ],
            level in "[a-z]{0,6}",
        ) {
            // The writers' compact shape (located by compares), and serde_json's
            // sorted keys (`level`, `out`, `pos`: located by a search).
            let quoted = serde_json::to_string(&out).unwrap();
            let compact = format!(r#"{{"level":"{level}","pos":3,"out":{quoted},"time":"t"}}"#);
            let sorted = serde_json::to_vec(&serde_json::json!({"level": level, "pos": 3, "out": out})).unwrap();
            // Every character escaped, as a writer escaping more than JSON needs would.
            let escaped: String = out.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
            let all_escaped = format!(r#"{{"level":"{level}","pos":3,"out":"{escaped}"}}"#);
            if parse_marker(&out).is_some() {
                proptest::prop_assert!(may_hold_marker(all_escaped.as_bytes()), "{all_escaped}");
                proptest::prop_assert!(may_hold_marker(compact.as_bytes()), "{compact}");
                proptest::prop_assert!(may_hold_marker(&sorted), "{}", String::from_utf8_lossy(&sorted));
            }
            // An `out` key inside `args` before the line's own is the documented
            // blind spot; it must not panic.
            let nested = serde_json::to_vec(&serde_json::json!({"args": {"out": "x"}, "out": out})).unwrap();
            let _ = may_hold_marker(&nested);
        }
    }

    proptest::proptest! {
        /// The parser's first byte of each `out` skips no marker: the scan given it
        /// finds what the scan that locates each text finds, in the writers' key
        /// order and in serde's sorted one.
        #[test]
        fn the_parsers_first_bytes_skip_no_marker(
            outs in proptest::collection::vec(proptest::prop_oneof![
                "[ \t]{0,2}(::group::|::endgroup::|--- |\\+\\+\\+ |~~~ |\\^\\^\\^ \\+\\+\\+)[a-z ]{0,5}\n?",
                "section_(start|end):[0-9]{1,3}:[a-z]{1,3}",
                "\\[livelog\\] [0-9]{1,2} lines were dropped",
                proptest::prelude::any::<String>(),
            ], 0..12),
            writer_order in proptest::prelude::any::<bool>(),
        ) {
            let lines: Vec<String> = outs.iter().enumerate().map(|(pos, out)| {
                let quoted = serde_json::to_string(out).unwrap();
                if writer_order {
                    format!(r#"{{"level":"info","pos":{pos},"out":{quoted},"time":"t"}}"#)
                } else {
                    serde_json::json!({"level": "info", "out": out, "pos": pos}).to_string()
                }
            }).collect();
            let body = Bytes::from(format!("[{}]", lines.join(",")));
            let (batch, firsts) = crate::ingest::Incremental::default()
                .finish_with_out_first(&body)
                .unwrap();
            proptest::prop_assert_eq!(
                BatchScan::of_with(&batch, firsts.as_deref()),
                BatchScan::of(&batch)
            );
        }
    }

    #[test]
    fn the_compact_parser_gives_the_first_byte_of_each_text() {
        let body = Bytes::from_static(
            br#"[{"level":"info","pos":0,"out":"::group::a","time":"t"},{"pos":1,"out":""},{"out":"x","pos":2}]"#,
        );
        let (batch, firsts) = crate::ingest::Incremental::default()
            .finish_with_out_first(&body)
            .unwrap();
        assert_eq!(firsts.as_deref(), Some(&b":\"x"[..]));
        let scan = BatchScan::of_with(&batch, firsts.as_deref());
        assert_eq!(scan.markers.len(), 1);
    }

    #[test]
    fn markers_spelled_with_unicode_escapes_are_found() {
        let escaped =
            r#"{"level":"info","pos":3,"out":"\u003a\u003agroup\u003a\u003aBuild\n","time":"t"}"#;
        let m = marker_line(3, escaped.as_bytes()).expect("a marker");
        assert_eq!(
            (m.out.as_str(), m.mark),
            ("::group::Build\n", Mark::Section)
        );
        let gitlab = r#"{"pos":4,"out":"\u001b[0K\u0073ection_end:1:a"}"#;
        assert!(marker_line(4, gitlab.as_bytes()).is_some());
        // Escaped text that is no marker passes the quick test, and the parse says no.
        let accented = r#"{"pos":5,"out":"\u00e9t\u00e9 ::group::x"}"#;
        assert!(may_hold_marker(accented.as_bytes()));
        assert_eq!(marker_line(5, accented.as_bytes()), None);
    }

    #[test]
    fn the_chunked_test_picks_the_lines_the_byte_test_picks() {
        for b in 0..=u8::MAX {
            assert_eq!(STARTS[usize::from(b)] == 1, may_start_marker(b), "{b}");
        }
        // Candidates in the first and last byte of chunks, and a short last chunk.
        let mut firsts = vec![b'x'; 3 * CHUNK + 5];
        for i in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 7, 3 * CHUNK + 4] {
            firsts[i] = b':';
        }
        let want: Vec<usize> = (0..firsts.len())
            .filter(|&i| may_start_marker(firsts[i]))
            .collect();
        assert_eq!(candidates(&firsts).collect::<Vec<_>>(), want);
        assert_eq!(candidates(&[]).count(), 0);
    }

    #[test]
    fn a_batch_out_of_order_has_no_run() {
        assert_eq!(BatchScan::of(&batch(&[(1, "a"), (0, "b")])).run, None);
        assert_eq!(BatchScan::of(&batch(&[(0, "a"), (2, "b")])).run, None);
        assert_eq!(BatchScan::of(&LineBatch::default()).run, None);
    }
}
