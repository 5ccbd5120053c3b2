//! Parsing a `PUT /stream` body into stored lines — the hot path of ingest.
//!
//! Two paths give the same result. [`compact::scan`] takes the batches writers send
//! (compact lines of four known keys) with byte searches alone. Anything else goes
//! to the general path: one serde pass checks every element against the line shape
//! without building strings (`pos` read, string fields validated in place, errors
//! naming the failing line), then a byte scan finds each element's span. Either
//! way each line is stored as a `Bytes` slice *of the request body*: no per-line
//! allocation, no re-serialisation for SSE or archives.

pub mod compact;

use crate::error::ApiError;
use crate::store::LineBatch;
use bytes::Bytes;
use runlog_protocol::MAX_POS;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Accepts any JSON string without keeping it.
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// Accepts any JSON object without keeping it.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                // Values are parsed as `Value`, not skipped with `IgnoredAny`: skipping
                // has no depth limit, so a line nested deeper than serde_json's limit
                // (128) would be stored and then be unreadable by every client that
                // parses a `LogLine`. Only lines with `args` pay for this.
                while map.next_entry::<IgnoredAny, serde_json::Value>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

/// The shape of a line, checked without copying: `pos` and `out` required, the
/// rest optional but typed. Unknown fields are kept in the stored JSON verbatim.
#[derive(Deserialize)]
#[allow(dead_code)] // fields exist to be type-checked, not read
struct LineShape {
    pos: u64,
    out: AnyStr,
    #[serde(default)]
    level: Option<AnyStr>,
    #[serde(default)]
    time: Option<AnyStr>,
    #[serde(default)]
    args: Option<AnyObject>,
}

/// The batch as one serde pass: a sequence of [`LineShape`]s whose errors name the
/// failing element, so a client learns which line of a 1 000-line batch was wrong.
struct Batch(Vec<LineShape>);

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Batch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array of log lines")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
                let mut lines = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                loop {
                    match seq.next_element::<LineShape>() {
                        // Above it, readers' `pos + 1` and the Redis store's Lua
                        // arithmetic (doubles) would not be exact.
                        Ok(Some(line)) if line.pos > MAX_POS => {
                            return Err(serde::de::Error::custom(format_args!(
                                "line {}: pos {} is above the largest allowed, {MAX_POS}",
                                lines.len(),
                                line.pos
                            )));
                        }
                        Ok(Some(line)) => lines.push(line),
                        Ok(None) => return Ok(Batch(lines)),
                        Err(e) => {
                            let at = lines.len();
                            return Err(serde::de::Error::custom(format_args!("line {at}: {e}")));
                        }
                    }
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// Parses a JSON array of lines into a [`LineBatch`] over `body`: each line's JSON
/// is a span of the body; a line spread over several text lines is compacted so it
/// fits one SSE `data:` field and one NDJSON row.
pub fn parse_batch(body: &Bytes) -> Result<LineBatch, ApiError> {
    match compact::scan(body) {
        Some(lines) => compact_batch(body, lines),
        None => parse_general(body),
    }
}

/// The batch of lines the compact path found in `body`.
fn compact_batch(body: &Bytes, lines: Vec<compact::CompactLine>) -> Result<LineBatch, ApiError> {
    let line_bytes = lines.iter().map(|l| l.span.len()).sum();
    let spans = lines.into_iter().map(|l| {
        let span = Span {
            start: l.span.start,
            end: l.span.end,
            multiline: false,
        };
        (l.pos, span)
    });
    // The compact shape has no whitespace inside a line.
    into_batch(body, line_bytes, false, spans)
}

/// Parses a batch while its body arrives, so that the service scans the first parts
/// of a large body while the client is still sending the rest: a mebibyte batch
/// was parsed only after its last byte came in, with the client idle meanwhile.
///
/// Feed it the body received so far after every chunk; once at least [`PART_BYTES`]
/// are unscanned, it scans them up to the last `},{` as one part
/// ([`compact::scan_part`]). [`Incremental::finish`] scans the rest and answers exactly
/// what [`parse_batch`] answers for the whole body: when any part declines (a split
/// that fell inside a string, or anything outside the compact shape), it runs
/// [`parse_batch`] on the whole body.
#[derive(Debug)]
pub struct Incremental {
    /// `body[..scanned]` is scanned: whole lines, each with its comma.
    scanned: usize,
    /// `body[..searched]` holds no `},{` past `scanned`: each byte is searched once,
    /// or a body without one (a single huge line, pretty-printed JSON) would be
    /// searched again from `scanned` at every chunk, quadratic in its size.
    searched: usize,
    /// Bytes looked at by the searches, to test that each is looked at once.
    #[cfg(test)]
    search_work: usize,
    lines: Vec<compact::CompactLine>,
    declined: bool,
    part_bytes: usize,
}

impl Default for Incremental {
    fn default() -> Self {
        Incremental::with_part_bytes(PART_BYTES)
    }
}

/// Unscanned bytes that make a part worth scanning before the body is complete.
pub const PART_BYTES: usize = 64 * 1024;

impl Incremental {
    /// A parser that scans parts of at least `part_bytes` (tests and the fuzzer use
    /// small parts; the service [`PART_BYTES`]).
    pub fn with_part_bytes(part_bytes: usize) -> Self {
        Incremental {
            scanned: 0,
            searched: 0,
            #[cfg(test)]
            search_work: 0,
            lines: Vec::new(),
            declined: false,
            part_bytes: part_bytes.max(1),
        }
    }

    /// Scans what of `body` (the body received so far) makes a whole part.
    pub fn feed(&mut self, body: &[u8]) {
        if self.declined || body.len() - self.scanned < self.part_bytes {
            return;
        }
        // Two bytes back: a `},{` may straddle the end of the last search.
        let from = self.searched.saturating_sub(2).max(self.scanned);
        let found = memchr::memmem::rfind(&body[from..], b"},{");
        #[cfg(test)]
        {
            self.search_work += body.len() - from;
        }
        // The last one found: no other follows it in what has arrived.
        self.searched = body.len();
        if let Some(at) = found {
            // Right after the comma: the part ends with it, the next starts at `{`.
            let end = from + at + 2;
            self.scan(&body[..end], false);
        }
    }

    /// The batch of the whole `body`.
    pub fn finish(self, body: &Bytes) -> Result<LineBatch, ApiError> {
        self.finish_with_out_first(body).map(|(batch, _)| batch)
    }

    /// [`finish`](Self::finish), and when the compact path read the whole body,
    /// the first byte of each line's `out` text in batch order
    /// ([`compact::CompactLine::out_first`]): the section index skips most lines
    /// by it, without locating their text again.
    pub fn finish_with_out_first(
        mut self,
        body: &Bytes,
    ) -> Result<(LineBatch, Option<Vec<u8>>), ApiError> {
        self.scan(body, true);
        if self.declined {
            return Ok((parse_batch(body)?, None));
        }
        let out_first = self.lines.iter().map(|l| l.out_first).collect();
        Ok((compact_batch(body, self.lines)?, Some(out_first)))
    }

    /// Scans `body[self.scanned..]` as one part.
    fn scan(&mut self, body: &[u8], last: bool) {
        if self.declined {
            return;
        }
        let start = self.scanned;
        match compact::scan_part(&body[start..], start == 0, last) {
            // The first part's spans are already the body's.
            Some(lines) if start == 0 => {
                self.lines = lines;
                self.scanned = body.len();
            }
            Some(lines) => {
                self.lines.extend(lines.into_iter().map(|mut l| {
                    l.span = l.span.start + start..l.span.end + start;
                    l
                }));
                self.scanned = body.len();
            }
            None => self.declined = true,
        }
    }
}

fn batch_too_big() -> ApiError {
    ApiError::TooLarge("a batch must be smaller than 4 GiB".into())
}

/// The general path of [`parse_batch`]: any valid batch, and the error messages of
/// invalid ones. Public so that tests and the fuzzer can hold the fast path to it.
///
/// One serde pass validates the whole body and reads each `pos`; a byte scan of the
/// (now known valid) body then finds where each element starts and ends. Measured
/// cheaper than parsing into `Vec<&RawValue>` and then each raw value again.
pub fn parse_general(body: &Bytes) -> Result<LineBatch, ApiError> {
    let Batch(shapes) = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be a JSON array of log lines (a batch): {e}"
        ))
    })?;
    let spans = element_spans(body)?;
    if spans.len() != shapes.len() {
        return Err(ApiError::Internal(
            "line boundaries disagree with the parser".into(),
        ));
    }
    let line_bytes = spans.iter().map(|s| s.end - s.start).sum();
    let multiline = spans.iter().any(|s| s.multiline);
    into_batch(
        body,
        line_bytes,
        multiline,
        shapes.into_iter().map(|s| s.pos).zip(spans),
    )
}

/// The batch of a parsed body: `(pos, span)` of each line; `line_bytes` is the sum
/// of the spans' lengths, `multiline` whether any span holds a raw newline.
fn into_batch(
    body: &Bytes,
    line_bytes: usize,
    multiline: bool,
    lines: impl ExactSizeIterator<Item = (u64, Span)>,
) -> Result<LineBatch, ApiError> {
    // Stored lines share the body's buffer, which lives as long as any of them.
    // When most of the body is not line JSON (padding), or a line must be
    // compacted, copy the lines into a new buffer instead, so memory stays
    // proportional to what the limits count.
    if line_bytes * 2 >= body.len() && !multiline {
        return LineBatch::new(body.clone(), lines.map(|(pos, s)| (pos, s.start..s.end)))
            .ok_or_else(batch_too_big);
    }
    let mut buf = Vec::with_capacity(line_bytes);
    let mut spans = Vec::with_capacity(lines.len());
    for (pos, span) in lines {
        let start = buf.len();
        let json = &body[span.start..span.end];
        if span.multiline {
            // Newlines can only sit between tokens (JSON strings escape them);
            // re-serialising drops them. Rare: clients send compact JSON.
            let value: serde_json::Value =
                serde_json::from_slice(json).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            serde_json::to_writer(&mut buf, &value)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        } else {
            buf.extend_from_slice(json);
        }
        spans.push((pos, start..buf.len()));
    }
    LineBatch::new(Bytes::from(buf), spans).ok_or_else(batch_too_big)
}

/// Where one element of the top-level array sits in the body.
#[derive(Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    /// Contains a raw `\n` or `\r` (between tokens).
    multiline: bool,
}

/// The byte ranges of the top-level array's elements, each of which must be an
/// object. Only called on a body serde_json has already accepted as valid JSON, so
/// tracking strings, escapes and nesting depth is enough.
fn element_spans(b: &[u8]) -> Result<Vec<Span>, ApiError> {
    let not_object = || {
        ApiError::BadRequest("every element of the batch must be a JSON object (a log line)".into())
    };
    let mut spans = Vec::with_capacity(b.len() / 128);
    let mut depth = 0u32;
    let mut start = 0;
    let mut multiline = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                // Skip the string to its closing quote, jumping with a SIMD search
                // (most of a batch's bytes are string contents).
                i += 1;
                while let Some(at) = memchr::memchr2(b'"', b'\\', &b[i.min(b.len())..]) {
                    i += at;
                    if b[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
            }
            b'{' | b'[' => {
                if depth == 1 {
                    if c != b'{' {
                        return Err(not_object());
                    }
                    start = i;
                    multiline = false;
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    spans.push(Span {
                        start,
                        end: i + 1,
                        multiline,
                    });
                }
            }
            b'\n' | b'\r' if depth >= 2 => multiline = true,
            b',' | b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
            _ if depth == 1 => return Err(not_object()),
            _ => {}
        }
        i += 1;
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_slices_of_the_body() {
        let body = Bytes::from_static(br#"[{"level":"info","pos":0,"out":"a\n","time":"t","args":{"k":1}}, {"pos":1,"out":"b","extra":true}]"#);
        let lines = parse_batch(&body).unwrap().to_stored();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            &lines[0].json[..],
            br#"{"level":"info","pos":0,"out":"a\n","time":"t","args":{"k":1}}"#
        );
        assert_eq!(lines[1].pos, 1);
        assert_eq!(&lines[1].json[..], br#"{"pos":1,"out":"b","extra":true}"#);
    }

    #[test]
    fn a_pos_above_the_largest_is_refused_naming_the_line() {
        let ok = format!(r#"[{{"pos":0,"out":"a"}},{{"pos":{MAX_POS},"out":"b"}}]"#);
        let lines = parse_batch(&Bytes::from(ok)).unwrap().to_stored();
        assert_eq!(lines[1].pos, MAX_POS);
        for pos in ["9007199254740992", "18446744073709551615"] {
            let body = format!(
                r#"[{{"level":"info","pos":0,"out":"a","time":"t"}},{{"level":"info","pos":{pos},"out":"b","time":"t"}}]"#
            );
            match parse_batch(&Bytes::from(body)) {
                Err(ApiError::BadRequest(msg)) => {
                    assert!(
                        msg.contains(&format!("line 1: pos {pos} is above")),
                        "{msg}"
                    )
                }
                other => panic!("pos {pos}: {other:?}"),
            }
        }
    }

    #[test]
    fn spans_skip_brackets_quotes_and_escapes_inside_strings() {
        let body = Bytes::from_static(br#" [ {"pos":0,"out":"a \"}{[,\\","args":{"k":[1,{"x":"]"}]}} ,{"pos":1,"out":"\\"} ] "#);
        let lines = parse_batch(&body).unwrap().to_stored();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            &lines[0].json[..],
            br#"{"pos":0,"out":"a \"}{[,\\","args":{"k":[1,{"x":"]"}]}}"#
        );
        assert_eq!(&lines[1].json[..], br#"{"pos":1,"out":"\\"}"#);
        assert!(parse_batch(&Bytes::from_static(b"[]")).unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn every_line_round_trips(outs in proptest::collection::vec(".{0,20}", 0..20)) {
            let lines: Vec<serde_json::Value> = outs
                .iter()
                .enumerate()
                .map(|(pos, out)| serde_json::json!({"pos": pos, "out": out, "args": {"o": out}}))
                .collect();
            let body = Bytes::from(serde_json::to_vec(&lines).unwrap());
            let parsed = parse_batch(&body).unwrap().to_stored();
            proptest::prop_assert_eq!(parsed.len(), lines.len());
            for (p, l) in parsed.iter().zip(&lines) {
                let back: serde_json::Value = serde_json::from_slice(&p.json).unwrap();
                proptest::prop_assert_eq!(&back, l);
            }
        }
    }

    proptest::proptest! {
        /// Writer-shaped batches (escapes, non-ASCII, optional keys in any order) take
        /// the fast path and give what the general parser gives.
        #[test]
        fn the_fast_path_agrees_with_the_general_parser(
            lines in proptest::collection::vec(
                (
                    0..=MAX_POS,
                    "[a-z \"\\\\\n\t/é€😀]{0,20}",
                    proptest::option::of("[a-z]{0,5}"),
                    proptest::option::of("[0-9:TZ.-]{0,24}"),
                    proptest::bool::ANY,
                ),
                0..20,
            )
        ) {
            let objects: Vec<String> = lines
                .iter()
                .map(|(pos, out, level, time, time_first)| {
                    let mut fields = vec![
                        format!("\"pos\":{pos}"),
                        format!("\"out\":{}", serde_json::to_string(out).unwrap()),
                    ];
                    if let Some(l) = level {
                        fields.push(format!("\"level\":{}", serde_json::to_string(l).unwrap()));
                    }
                    if let Some(t) = time {
                        let t = format!("\"time\":{}", serde_json::to_string(t).unwrap());
                        if *time_first { fields.insert(0, t) } else { fields.push(t) }
                    }
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            let body = Bytes::from(format!("[{}]", objects.join(",")));
            let fast = compact::scan(&body);
            proptest::prop_assert!(fast.is_some(), "{:?}", body);
            let general = parse_general(&body).unwrap().to_stored();
            let parsed = parse_batch(&body).unwrap().to_stored();
            proptest::prop_assert_eq!(parsed.len(), general.len());
            for (p, g) in parsed.iter().zip(&general) {
                proptest::prop_assert_eq!(p.pos, g.pos);
                proptest::prop_assert_eq!(&p.json, &g.json);
            }
        }

        /// Whatever the fast path accepts of arbitrary bytes, the general parser
        /// accepts with the same lines.
        #[test]
        fn the_fast_path_accepts_nothing_the_general_parser_refuses(
            body in "[\\[\\]{},:\" a-z0-9\\\\\n]{0,60}"
        ) {
            if let Some(fast) = compact::scan(body.as_bytes()) {
                let general = parse_general(&Bytes::from(body.clone())).unwrap().to_stored();
                proptest::prop_assert_eq!(fast.len(), general.len());
                for (f, g) in fast.iter().zip(&general) {
                    proptest::prop_assert_eq!(f.pos, g.pos);
                    proptest::prop_assert_eq!(&body.as_bytes()[f.span.clone()], &g.json[..]);
                }
            }
        }
    }

    /// The stored lines of a parse, or the error message.
    fn outcome(r: Result<LineBatch, ApiError>) -> Result<Vec<(u64, Vec<u8>)>, String> {
        r.map(|b| {
            b.to_stored()
                .into_iter()
                .map(|l| (l.pos, l.json.to_vec()))
                .collect()
        })
        .map_err(|e| e.to_string())
    }

    /// Feeds `body` to an [`Incremental`] in chunks ending at `cuts`.
    fn incremental(body: &Bytes, cuts: &[usize], part_bytes: usize) -> Result<LineBatch, ApiError> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parse = Incremental::with_part_bytes(part_bytes);
        for c in cuts.into_iter().chain([body.len()]) {
            parse.feed(&body[..c]);
        }
        parse.finish(body)
    }

    proptest::proptest! {
        /// However a body arrives, scanning it in parts answers what parsing it
        /// whole answers: the same lines, or the same error. Texts are drawn to hold
        /// `},{` and escapes, so that parts also split inside strings.
        #[test]
        fn a_body_parsed_as_it_arrives_gives_what_the_whole_body_gives(
            outs in proptest::collection::vec("[a-z{},:\\\"]{0,12}", 1..40),
            raw in proptest::bool::ANY,
            junk in "[\\[\\]{},:\" a-z0-9\\\\]{0,8}",
            cuts in proptest::collection::vec(0usize..4096, 0..12),
            part_bytes in 1usize..200,
        ) {
            let objects: Vec<String> = outs
                .iter()
                .enumerate()
                .map(|(pos, out)| {
                    // Raw: the text dropped in unescaped (often invalid JSON).
                    let out = if raw { format!("\"{out}\"") } else { serde_json::to_string(out).unwrap() };
                    format!("{{\"level\":\"info\",\"pos\":{pos},\"out\":{out},\"time\":\"t\"}}")
                })
                .collect();
            let mut text = format!("[{}]", objects.join(","));
            if raw {
                text.push_str(&junk);
            }
            let body = Bytes::from(text);
            let whole = outcome(parse_batch(&body));
            let parts = outcome(incremental(&body, &cuts, part_bytes));
            proptest::prop_assert_eq!(parts, whole);
        }
    }

    #[test]
    fn a_body_without_separators_is_searched_once_not_at_every_chunk() {
        // One line of 1 MiB: no `},{` anywhere.
        let body = format!(
            "[{{\"level\":\"info\",\"pos\":0,\"out\":\"{}\",\"time\":\"t\"}}]",
            "x".repeat(1 << 20)
        );
        let body = Bytes::from(body);
        let mut parse = Incremental::with_part_bytes(1024);
        let mut feeds = 0;
        for end in (0..body.len()).step_by(4096) {
            parse.feed(&body[..end]);
            feeds += 1;
        }
        assert_eq!(parse.scanned, 0, "no part without a separator");
        // Each byte once, plus the two-byte overlap per search (it was ~130 MiB).
        assert!(
            parse.search_work <= body.len() + 2 * feeds,
            "{} bytes searched for a body of {}",
            parse.search_work,
            body.len()
        );
        let lines = parse.finish(&body).unwrap().to_stored();
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn a_split_inside_a_string_falls_back_to_the_whole_body() {
        // `},{` inside `out`: the first part ends inside a string and declines.
        let body = Bytes::from_static(
            br#"[{"level":"info","pos":0,"out":"a},{b","time":"t"},{"level":"info","pos":1,"out":"c","time":"t"}]"#,
        );
        let mut parse = Incremental::with_part_bytes(1);
        parse.feed(&body[..40]);
        assert!(parse.declined, "a part split inside a string was taken");
        let lines = parse.finish(&body).unwrap().to_stored();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].pos, 1);
        let mut parse = Incremental::with_part_bytes(1);
        parse.feed(&body);
        assert!(!parse.declined);
        assert!(parse.scanned > 0, "no part was scanned before the end");
        assert_eq!(outcome(parse.finish(&body)), outcome(parse_batch(&body)));
    }

    #[test]
    fn padded_body_is_not_kept_alive_by_its_lines() {
        let body = Bytes::from(format!(
            "[{}{{\"pos\":0,\"out\":\"x\"}}]",
            " ".repeat(10_000)
        ));
        let lines = parse_batch(&body).unwrap().to_stored();
        // A copy, not a slice: the 10 KB body can be freed.
        let inside = body.as_ptr_range();
        assert!(!inside.contains(&lines[0].json.as_ptr()));
    }

    #[test]
    fn pretty_printed_lines_are_compacted() {
        let body = Bytes::from_static(b"[{\n  \"pos\": 0,\n  \"out\": \"x\"\n}]");
        let lines = parse_batch(&body).unwrap().to_stored();
        assert!(!lines[0].json.contains(&b'\n'));
    }

    #[test]
    fn args_nested_deeper_than_clients_can_read_are_refused() {
        let deep = format!(
            "[{{\"pos\":0,\"out\":\"x\",\"args\":{}1{}}}]",
            "{\"a\":".repeat(200),
            "}".repeat(200)
        );
        assert!(serde_json::from_str::<Vec<runlog_protocol::LogLine>>(&deep).is_err());
        assert!(parse_batch(&Bytes::from(deep)).is_err());
        let shallow = r#"[{"pos":0,"out":"x","args":{"a":{"b":[1,2,{"c":null}]}}}]"#;
        assert!(parse_batch(&Bytes::from_static(shallow.as_bytes())).is_ok());
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"[[0, \"x\"]]",
            b"[{\"pos\":0,\"out\":\"x\"}, [1, \"y\"]]",
            b"[{\"out\":\"x\"}]",
            b"[{\"pos\":-1,\"out\":\"x\"}]",
            b"[{\"pos\":0,\"out\":5}]",
            b"[{\"pos\":0,\"out\":\"x\",\"args\":[1]}]",
            b"[{\"pos\":0,\"out\":\"\xff\"}]",
            b"[{\"pos\":0",
        ] {
            assert!(
                parse_batch(&Bytes::copy_from_slice(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn errors_name_the_failing_line_of_the_batch() {
        let body = Bytes::from_static(b"[{\"pos\":0,\"out\":\"a\"},{\"pos\":1,\"out\":7}]");
        let Err(ApiError::BadRequest(msg)) = parse_batch(&body) else {
            panic!("a line with a numeric `out` must be a bad request");
        };
        assert!(msg.contains("line 1:"), "{msg}");
        assert!(msg.contains("expected a string"), "{msg}");
    }
}
