//! The strings of a line in the shape writers send,
//! `{"level":"…","pos":N,"out":"…","time":"…"}`, read without a JSON parser: for
//! the index's marker lines (`out` and `time`, [`writer_text`]) and the ledger's
//! check of every line at close (`out`, [`out_start`] and [`decode_string`]).
//!
//! Each marker line the index takes was parsed with serde for its two strings:
//! the whole object (four keys matched, `level` and `pos` skipped) for two short
//! strings. With 1 % marker lines and 100 writers that parse was the largest part
//! of the index's cost on ingest after the scan itself. A line of exactly this
//! shape holds each key once, so its two strings are what serde would read; any
//! other shape (other keys, another order, a `\u` escape) answers `None` and the
//! caller parses as before.

use std::borrow::Cow;

/// `(out, time)` of `json` when it is one line object of exactly the writers'
/// shape; `None` otherwise (the caller then parses it). `json` is trusted to be
/// valid JSON (ingest checked it): only the shape is checked here.
pub fn writer_text(json: &[u8]) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    let (out, rest) = string(out_start(json)?)?;
    let rest = rest.strip_prefix(b",\"time\":\"")?;
    let (time, rest) = string(rest)?;
    (rest == b"}").then_some((out, time))
}

/// What follows `"out":"` in a line that starts as the writers' shape does,
/// `{"level":"…","pos":N,"out":"`: the text of its `out` string, still in JSON.
/// A few compares, where a search for the key costs a call per line.
pub fn out_start(json: &[u8]) -> Option<&[u8]> {
    let rest = json.strip_prefix(b"{\"level\":\"")?;
    // A level is a short word: a plain loop beats a SIMD search's set-up here
    // (`benches/parse.rs`, `section_scan_plain`: 8.8 µs a batch, 10.8 with `memchr2`). One
    // with an escape is left to the parser.
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let rest = rest[end..].strip_prefix(b"\",\"pos\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    rest[digits..].strip_prefix(b",\"out\":\"")
}

/// Appends to `into` the text of the JSON string that starts at `s` (just after
/// its opening quote), escapes decoded, and answers where its closing quote is.
/// `None` for a `\u` escape (left to the parser) or an unclosed string; `into`
/// may then hold part of the text.
pub fn decode_string(s: &[u8], into: &mut Vec<u8>) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', s.get(from..)?)?;
        into.extend_from_slice(&s[from..at]);
        if s[at] == b'"' {
            return Some(at);
        }
        // JSON's two-character escapes; `\u` is rare in writers' lines.
        into.push(match *s.get(at + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            _ => return None,
        });
        from = at + 2;
    }
}

/// The JSON string whose text starts at `s` (just after its opening quote): its
/// text, borrowed when it holds no escape, and what follows its closing quote.
fn string(s: &[u8]) -> Option<(Cow<'_, str>, &[u8])> {
    let at = memchr::memchr2(b'"', b'\\', s)?;
    if s[at] == b'"' {
        let text = std::str::from_utf8(&s[..at]).ok()?;
        return Some((Cow::Borrowed(text), &s[at + 1..]));
    }
    let mut text = Vec::with_capacity(s.len().min(512));
    let end = decode_string(s, &mut text)?;
    // Escapes are ASCII, so they split no UTF-8 sequence of the text around them.
    let text = String::from_utf8(text).ok()?;
    Some((Cow::Owned(text), &s[end + 1..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What serde reads from a line (the reference).
    fn by_serde(json: &str) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        (s("out"), s("time"))
    }

    fn line(out: &str, time: &str) -> String {
        format!(
            r#"{{"level":"info","pos":12,"out":{},"time":{}}}"#,
            serde_json::to_string(out).unwrap(),
            serde_json::to_string(time).unwrap()
        )
    }

    #[test]
    fn reads_what_serde_reads_from_the_writers_shape() {
        for (out, time) in [
            ("::group::Build\n", "2026-11-20T10:00:00.123Z"),
            ("", ""),
            ("plain", "t"),
            ("a \"quoted\" \\ back/slash\r\n\t\u{8}\u{c}", "t"),
            ("\\", "\""),
            ("été ::group::ü", "t"),
        ] {
            let json = line(out, time);
            let (o, t) = writer_text(json.as_bytes()).unwrap();
            assert_eq!((o.into_owned(), t.into_owned()), by_serde(&json), "{json}");
        }
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        let json = line("::group::a", "t");
        let (out, time) = writer_text(json.as_bytes()).unwrap();
        assert!(matches!((out, time), (Cow::Borrowed(_), Cow::Borrowed(_))));
    }

    #[test]
    fn any_other_shape_is_left_to_the_parser() {
        for json in [
            // A `\u` escape (serde decodes it).
            r#"{"level":"info","pos":1,"out":"\u001b[0Ksection_end:1:a","time":"t"}"#,
            // No time, another order, another key, spaces.
            r#"{"level":"info","pos":1,"out":"x"}"#,
            r#"{"pos":1,"level":"info","out":"x","time":"t"}"#,
            r#"{"level":"info","pos":1,"out":"x","time":"t","args":{}}"#,
            r#"{"level":"info","pos":1,"out":"x","time":"t"} "#,
            r#"{"level":"in\"fo","pos":1,"out":"x","time":"t"}"#,
        ] {
            assert_eq!(writer_text(json.as_bytes()), None, "{json}");
        }
    }

    proptest::proptest! {
        /// On any text, the line's two strings are serde's, or the parser is asked.
        #[test]
        fn never_differs_from_serde(out in proptest::prelude::any::<String>(), time in "[ -~]{0,30}") {
            let json = line(&out, &time);
            if let Some((o, t)) = writer_text(json.as_bytes()) {
                proptest::prop_assert_eq!((o.into_owned(), t.into_owned()), by_serde(&json));
            }
        }
    }
}
