//! The fast path of batch parsing: the compact line shape every runlog writer sends.
//!
//! A batch such as `[{"level":"info","pos":7,"out":"text","time":"…"},…]` — no
//! whitespace inside a line, only the keys `level`, `pos`, `out` and `time`, `pos` a
//! plain integer, strings without `\u` escapes — is checked here with prefix
//! comparisons and vectorised byte checks instead of a general JSON parser:
//! this shape is almost all of the traffic, and the general parser was the largest
//! cost of ingest.
//!
//! The rule that keeps it safe: [`scan`] either returns exactly what the general
//! parser (`super::parse_general`) would, or `None`, and the caller then runs the
//! general parser, which also writes the error messages. It never refuses anything.
//! A proptest and the `ingest_batch` fuzz target compare the two paths.

use std::ops::Range;

/// One line found by [`scan`]: its `pos` and where its JSON object sits in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactLine {
    /// The line's `pos`.
    pub pos: u64,
    /// The byte range of the line's `{…}` in the body.
    pub span: Range<usize>,
}

/// The lines of `body` when the whole body is a batch of compact lines; `None` when
/// anything falls outside that shape (valid or not — the general parser decides).
pub fn scan(body: &[u8]) -> Option<Vec<CompactLine>> {
    // One pass over the whole body answers two questions for every string in it.
    // UTF-8: JSON text outside strings is ASCII, so a valid body means valid strings,
    // and a body of ASCII alone (most logs) needs no further validation. Control
    // bytes: legal only as whitespace between elements (this shape has none inside a
    // line), so a body without any spares every string that check.
    let (controls, ascii) = body.iter().fold((false, true), |(controls, ascii), &c| {
        (controls | (c < 0x20), ascii & c.is_ascii())
    });
    if !ascii {
        std::str::from_utf8(body).ok()?;
    }
    let mut lines = Vec::with_capacity(body.len() / 128);
    let mut i = skip_ws(body, 0);
    if *body.get(i)? != b'[' {
        return None;
    }
    i = skip_ws(body, i + 1);
    if *body.get(i)? == b']' {
        return (skip_ws(body, i + 1) == body.len()).then_some(lines);
    }
    loop {
        let (pos, end) = object(body, i, controls)?;
        lines.push(CompactLine { pos, span: i..end });
        i = skip_ws(body, end);
        match *body.get(i)? {
            b',' => i = skip_ws(body, i + 1),
            b']' => break,
            _ => return None,
        }
    }
    (skip_ws(body, i + 1) == body.len()).then_some(lines)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Which of the known keys a line has had, to refuse duplicates (the general parser
/// refuses a repeated field).
#[derive(Default)]
struct Seen {
    level: bool,
    pos: Option<u64>,
    out: bool,
    time: bool,
}

/// A compact line object starting at `b[i] == '{'`: its `pos` and the index after
/// its closing `}`.
fn object(b: &[u8], mut i: usize, controls: bool) -> Option<(u64, usize)> {
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    let mut seen = Seen::default();
    loop {
        // A key: one of the four, written plainly, and its colon.
        let rest = b.get(i..)?;
        if rest.starts_with(b"\"pos\":") && seen.pos.is_none() {
            let (pos, end) = integer(b, i + 6)?;
            seen.pos = Some(pos);
            i = end;
        } else if rest.starts_with(b"\"out\":") && !seen.out {
            seen.out = true;
            i = string_end(b, i + 6, controls)?;
        } else if rest.starts_with(b"\"level\":") && !seen.level {
            seen.level = true;
            i = string_end(b, i + 8, controls)?;
        } else if rest.starts_with(b"\"time\":") && !seen.time {
            seen.time = true;
            i = string_end(b, i + 7, controls)?;
        } else {
            return None;
        }
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    if !seen.out {
        return None;
    }
    Some((seen.pos?, i + 1))
}

/// A JSON string starting at `b[i] == '"'` with no `\u` escape: the index after its
/// closing quote. The body is already known to be UTF-8; `controls` says whether it
/// holds any control byte at all (almost never: then no string needs checking).
fn string_end(b: &[u8], i: usize, controls: bool) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let mut j = i + 1;
    loop {
        let at = j + quote_or_backslash(b.get(j..)?)?;
        // A control byte must be escaped inside a string.
        if controls && has_control_byte(&b[j..at]) {
            return None;
        }
        if b[at] == b'"' {
            return Some(at + 1);
        }
        match b.get(at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j = at + 2,
            // `\u` (surrogate pairs and all) is left to the general parser.
            _ => return None,
        }
    }
}

/// The index of the first `"` or `\\` in `s`. Most strings of a line are short (a
/// level, a timestamp): the first words are checked inline eight bytes at a time, and
/// only a long rest goes to `memchr`, whose call costs more than a short string.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// The lowest set high bit marks the first zero byte of `v` (bits above it may be
    /// false positives from the borrow, so only the lowest is used).
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }
    const INLINE_WORDS: usize = 4;
    for (k, chunk) in s.chunks_exact(8).take(INLINE_WORDS).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let found =
            zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(k * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let checked = (s.len() / 8).min(INLINE_WORDS) * 8;
    memchr::memchr2(b'"', b'\\', &s[checked..]).map(|at| checked + at)
}

/// Whether any byte is below 0x20. A fold, not `any`, so the compiler vectorises it.
fn has_control_byte(s: &[u8]) -> bool {
    s.iter().fold(false, |found, &c| found | (c < 0x20))
}

/// A non-negative JSON integer that fits `u64`, starting at `i`: its value and the
/// index after it. Fractions, exponents, signs and leading zeros are left to the
/// general parser.
fn integer(b: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut value: u64 = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(i) {
        value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    let digits = i - start;
    if digits == 0 || (digits > 1 && b[start] == b'0') {
        return None;
    }
    Some((value, i))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_writers_batch_takes_the_fast_path() {
        let body = br#" [{"level":"info","pos":0,"out":"a\n\"q\"\\","time":"2026-11-20T10:00:00.123Z"} , {"pos":18446744073709551615,"out":"\u{e9}"}] "#;
        let body = std::str::from_utf8(body).unwrap().replace("\\u{e9}", "é");
        let lines = scan(body.as_bytes()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].pos, 0);
        assert_eq!(
            &body[lines[0].span.clone()],
            r#"{"level":"info","pos":0,"out":"a\n\"q\"\\","time":"2026-11-20T10:00:00.123Z"}"#
        );
        assert_eq!(lines[1].pos, u64::MAX);
        assert_eq!(
            &body[lines[1].span.clone()],
            r#"{"pos":18446744073709551615,"out":"é"}"#
        );
        assert_eq!(scan(b"[]"), Some(vec![]));
        assert_eq!(scan(b" [ ] "), Some(vec![]));
    }

    #[test]
    fn the_first_quote_or_backslash_is_found_at_every_offset() {
        for len in 0..80 {
            for at in 0..len {
                for special in [b'"', b'\\'] {
                    let mut s = vec![b'a'; len];
                    s[at] = special;
                    // A second one after it must not be taken instead.
                    if at + 1 < len {
                        s[at + 1] = b'"';
                    }
                    assert_eq!(quote_or_backslash(&s), Some(at), "len {len} at {at}");
                }
            }
            // Bytes that differ from the targets by one bit are not taken for them.
            let near = vec![b'"' ^ 1; len];
            assert_eq!(quote_or_backslash(&near), None);
            let high = vec![0xA2; len];
            assert_eq!(quote_or_backslash(&high), None);
        }
    }

    #[test]
    fn anything_else_is_left_to_the_general_parser() {
        for other in [
            &br#"[{"pos":0,"out":"x","args":{}}]"#[..],     // args
            br#"[{"pos":0,"out":"x","extra":1}]"#,          // unknown key
            br#"[{"pos":0,"out":"x","pos":1}]"#,            // duplicate
            br#"[{"pos":0}]"#,                              // no out
            br#"[{"out":"x"}]"#,                            // no pos
            br#"[{"pos":01,"out":"x"}]"#,                   // leading zero
            br#"[{"pos":1.0,"out":"x"}]"#,                  // fraction
            br#"[{"pos":1e3,"out":"x"}]"#,                  // exponent
            br#"[{"pos":-1,"out":"x"}]"#,                   // sign
            br#"[{"pos":18446744073709551616,"out":"x"}]"#, // overflow
            br#"[{"pos":0,"out":"\u0041"}]"#,               // \u escape
            br#"[{"pos":0,"out":"\x"}]"#,                   // bad escape
            br#"[{"pos":0,"out":"a	b"}]"#,                  // raw tab in a string
            br#"[{ "pos":0,"out":"x"}]"#,                   // whitespace inside
            br#"[{"pos":0,"out":"x"},]"#,                   // trailing comma
            br#"[{"pos":0,"out":"x"}] x"#,                  // trailing text
            br#"[{"pos":0,"out":"x"}"#,                     // unterminated
            br#"{"pos":0,"out":"x"}"#,                      // not an array
            br#"[{"pos":0,"out":5}]"#,                      // out not a string
            b"[{\"pos\":0,\"out\":\"\xff\"}]",              // not UTF-8
            b"",
        ] {
            assert_eq!(scan(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
