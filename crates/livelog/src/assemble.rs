//! Joins raw write chunks into lines.
//!
//! This module does no I/O and keeps no clock: it turns a byte stream into lines,
//! whatever the chunking, and its memory is bounded by `max_line_bytes`.
//!
//! Rules:
//! - a line ends at `\n`; a `\r` right before it is dropped (`\r\n` → `\n`); a lone
//!   `\r` (progress bars) is kept as text;
//! - a line longer than `max_line_bytes` is cut into pieces of at most that many raw
//!   bytes, on a UTF-8 character boundary; every piece but the last ends with
//!   [`CUT_MARKER`] so a reader sees that the line continues;
//! - invalid UTF-8 becomes U+FFFD, never an error.
//!
//! The cut positions depend only on the bytes, never on how they were chunked, so the
//! same bytes always give the same lines (checked by the property tests).

use std::borrow::Cow;

/// Appended to every piece of a cut line except the last (followed by the `\n`).
pub const CUT_MARKER: &str = " [line cut: continues on the next line]";

/// One finished line, ready to be masked and numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled<'a> {
    /// The text, ending in `\n` unless it is a partial line flushed on idle or at close.
    /// Borrowed from the written chunk when the whole line was in it (the common
    /// case: no allocation, no copy), owned otherwise.
    pub text: Cow<'a, str>,
}

/// Splits a byte stream into lines; see the module documentation for the rules.
#[derive(Debug)]
pub struct LineAssembler {
    buf: Vec<u8>,
    max_line_bytes: usize,
}

impl LineAssembler {
    /// An assembler cutting lines longer than `max_line_bytes` (at least 4, so that a
    /// piece always holds one whole UTF-8 character).
    pub fn new(max_line_bytes: usize) -> Self {
        LineAssembler {
            buf: Vec::new(),
            max_line_bytes: max_line_bytes.max(4),
        }
    }

    /// Bytes held for the current unfinished line.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Feeds one chunk; calls `emit` for every line it completes.
    pub fn push<'c>(&mut self, mut chunk: &'c [u8], emit: &mut impl FnMut(Assembled<'c>)) {
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                // A whole line inside the chunk, short enough not to be cut: decoded
                // straight from the chunk, one copy (the common case).
                Some(i) if self.buf.is_empty() && i <= self.max_line_bytes => {
                    let (line, rest) = chunk.split_at(i + 1);
                    chunk = rest;
                    let text = match line.strip_suffix(b"\r\n") {
                        Some(crlf) => Cow::Owned(decode(crlf, "\n")),
                        // The line with its `\n`, as written.
                        None => match std::str::from_utf8(line) {
                            Ok(s) => Cow::Borrowed(s),
                            Err(_) => Cow::Owned(decode(&line[..i], "\n")),
                        },
                    };
                    emit(Assembled { text });
                }
                Some(i) => {
                    self.buf.extend_from_slice(&chunk[..i]);
                    chunk = &chunk[i + 1..];
                    if self.buf.last() == Some(&b'\r') {
                        self.buf.pop();
                    }
                    self.cut_while_over(0, emit);
                    let text = decode(&self.buf, "\n");
                    self.buf.clear();
                    emit(Assembled { text: text.into() });
                }
                None => {
                    self.buf.extend_from_slice(chunk);
                    chunk = &[];
                    // One byte of slack: a trailing `\r` may still turn out to be half of
                    // `\r\n` and be dropped, so cut only when the line is over the limit
                    // whatever comes next. This keeps cuts independent of chunking.
                    self.cut_while_over(1, emit);
                }
            }
        }
    }

    /// Emits the unfinished line, if any, as it is (no `\n` added): used after an idle
    /// time so that `printf "45%"` shows up, and at close.
    pub fn flush_partial(&mut self, emit: &mut impl FnMut(Assembled<'_>)) {
        if !self.buf.is_empty() {
            let text = decode(&self.buf, "");
            self.buf.clear();
            emit(Assembled { text: text.into() });
        }
    }

    /// Emits the start of the unfinished line, keeping the rest for the next write:
    /// `flushable` says how many of the pending bytes may go now (the writer keeps
    /// back a tail that could begin a secret). A UTF-8 character is never split: a cut
    /// inside one, or an incomplete one at the end, moves back to its start.
    pub fn flush_partial_upto(
        &mut self,
        flushable: impl FnOnce(&[u8]) -> usize,
        emit: &mut impl FnMut(Assembled<'_>),
    ) {
        if self.buf.is_empty() {
            return;
        }
        let len = self.buf.len();
        let mut cut = flushable(&self.buf).min(len);
        if cut == len {
            cut -= incomplete_tail(&self.buf);
        }
        let mut back = 0;
        while back < 3 && cut > 0 && cut < len && is_continuation(self.buf[cut]) {
            cut -= 1;
            back += 1;
        }
        if cut == 0 {
            return;
        }
        let text = decode(&self.buf[..cut], "");
        self.buf.drain(..cut);
        emit(Assembled { text: text.into() });
    }

    fn cut_while_over<'c>(&mut self, slack: usize, emit: &mut impl FnMut(Assembled<'c>)) {
        let mut start = 0;
        // Saturating: a configured maximum of `usize::MAX` means "never cut".
        while self.buf.len() - start > self.max_line_bytes.saturating_add(slack) {
            let rest = &self.buf[start..];
            let mut cut = self.max_line_bytes;
            // Step back over UTF-8 continuation bytes (at most 3) so the cut falls on a
            // character boundary; invalid sequences longer than that are cut anyway and
            // decode to U+FFFD.
            let mut back = 0;
            while back < 3 && cut > 1 && is_continuation(rest[cut]) {
                cut -= 1;
                back += 1;
            }
            if is_continuation(rest[cut]) {
                cut = self.max_line_bytes;
            }
            let text = decode(&rest[..cut], &format!("{CUT_MARKER}\n"));
            emit(Assembled { text: text.into() });
            start += cut;
        }
        if start > 0 {
            self.buf.drain(..start);
        }
    }
}

/// Bytes at the end of `buf` that begin a UTF-8 character whose other bytes have not
/// arrived yet (0 when it ends on a whole character, or on bytes that are invalid
/// whatever follows).
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(4) {
        let b = buf[buf.len() - back];
        if !is_continuation(b) {
            let needs = match b {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if needs > back { back } else { 0 };
        }
    }
    0
}

fn is_continuation(b: u8) -> bool {
    b & 0b1100_0000 == 0b1000_0000
}

fn decode(bytes: &[u8], suffix: &str) -> String {
    // Sized once: the common valid-UTF-8 line costs one allocation and one copy.
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let mut out = String::with_capacity(s.len() + suffix.len());
            out.push_str(s);
            out.push_str(suffix);
            out
        }
        Err(_) => {
            let mut out = String::from_utf8_lossy(bytes).into_owned();
            out.push_str(suffix);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn lines_of(max: usize, chunks: &[&[u8]], finish: bool) -> Vec<String> {
        let mut a = LineAssembler::new(max);
        let mut out = Vec::new();
        for c in chunks {
            a.push(c, &mut |l| out.push(l.text.into_owned()));
        }
        if finish {
            a.flush_partial(&mut |l| out.push(l.text.into_owned()));
        }
        out
    }

    #[test]
    fn crlf_becomes_lf_even_split_across_writes() {
        assert_eq!(
            lines_of(100, &[b"a\r", b"\nb\r\n"], false),
            vec!["a\n", "b\n"]
        );
    }

    #[test]
    fn lone_carriage_return_is_kept() {
        assert_eq!(lines_of(100, &[b"10%\r20%\n"], false), vec!["10%\r20%\n"]);
    }

    #[test]
    fn no_maximum_means_lines_are_never_cut() {
        let mut a = LineAssembler::new(usize::MAX);
        let mut lines = Vec::new();
        for part in ["abc", "def", "ghi\n"] {
            a.push(part.as_bytes(), &mut |l| lines.push(l.text.into_owned()));
        }
        assert_eq!(lines, vec!["abcdefghi\n"]);
    }

    #[test]
    fn partial_line_is_held_until_flushed() {
        let mut a = LineAssembler::new(100);
        let mut out = Vec::new();
        a.push(b"Downloading 45%", &mut |l| out.push(l.text.into_owned()));
        assert!(out.is_empty());
        assert_eq!(a.pending_len(), 15);
        a.flush_partial(&mut |l| out.push(l.text.into_owned()));
        assert_eq!(out, vec!["Downloading 45%"]);
        assert_eq!(a.pending_len(), 0);
    }

    #[test]
    fn long_line_is_cut_with_marker_and_nothing_lost() {
        let line = "x".repeat(25);
        let out = lines_of(10, &[format!("{line}\n").as_bytes()], false);
        assert_eq!(out.len(), 3);
        assert!(out[0].ends_with(&format!("{CUT_MARKER}\n")));
        let joined: String = out
            .iter()
            .map(|l| l.replace(&format!("{CUT_MARKER}\n"), ""))
            .collect();
        assert_eq!(joined, format!("{line}\n"));
    }

    #[test]
    fn cut_never_splits_a_multibyte_character() {
        // "é" is 2 bytes; 9 of them = 18 bytes; a limit of 5 must cut at 4.
        let out = lines_of(5, &["ééééééééé\n".as_bytes()], false);
        for l in &out {
            assert!(!l.contains('\u{FFFD}'), "{l:?}");
        }
        assert_eq!(out[0], format!("éé{CUT_MARKER}\n"));
    }

    #[test]
    fn partial_line_memory_is_bounded() {
        let mut a = LineAssembler::new(64);
        let mut n = 0;
        for _ in 0..1000 {
            a.push(&[b'y'; 100], &mut |_| n += 1);
            assert!(a.pending_len() <= 65);
        }
        assert!(n > 1000);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        assert_eq!(lines_of(100, &[b"a\xffb\n"], false), vec!["a\u{FFFD}b\n"]);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            data in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xC3u8), Just(0xA9u8), Just(0xE2u8), Just(0x82u8), Just(0xACu8), Just(0xFFu8), 0x20u8..0x7f],
                0..400),
            cuts in proptest::collection::vec(0usize..400, 0..20),
            max in 4usize..40,
        ) {
            let whole = lines_of(max, &[&data], true);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&data[prev..c]); prev = c; }
            chunks.push(&data[prev..]);
            let chunked = lines_of(max, &chunks, true);
            prop_assert_eq!(whole, chunked);
        }

        #[test]
        fn cut_pieces_are_valid_utf8_within_the_limit(s in "\\PC{0,200}", max in 4usize..30) {
            let out = lines_of(max, &[format!("{s}\n").as_bytes()], false);
            let marker = format!("{CUT_MARKER}\n");
            let mut rebuilt = String::new();
            for l in &out {
                let body = l.strip_suffix(&marker).or_else(|| l.strip_suffix('\n')).unwrap();
                prop_assert!(body.len() <= max, "{} > {}", body.len(), max);
                let replaced = body.contains(char::REPLACEMENT_CHARACTER) && !s.contains(char::REPLACEMENT_CHARACTER);
                prop_assert!(!replaced, "cut produced invalid UTF-8: {:?}", body);
                rebuilt.push_str(body);
            }
            prop_assert_eq!(rebuilt, s);
        }
    }
}
