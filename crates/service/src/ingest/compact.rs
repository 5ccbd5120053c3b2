//! The fast path of batch parsing: the compact line shape every runlog writer sends.
//!
//! A batch such as `[{"level":"info","pos":7,"out":"text","time":"…"},…]` — no
//! whitespace inside a line, only the keys `level`, `pos`, `out` and `time`, `pos` a
//! plain integer, strings without `\u` escapes — is checked here with prefix
//! comparisons and vectorised byte checks instead of a general JSON parser:
//! this shape is almost all of the traffic, and the general parser was the largest
//! cost of ingest.
//!
//! Strings are not searched one by one: one vectorised pass over the body
//! (`QuoteIndex`, 64 bytes at a time) marks every quote that closes or opens a
//! string, checks every escape and notes control and non-ASCII bytes; finding the end
//! of a string is then a bit search in that index. Per-string searches cost more than
//! the bytes they scanned (three strings a line).
//!
//! The rule that keeps it safe: [`scan`] either returns exactly what the general
//! parser (`super::parse_general`) would, or `None`, and the caller then runs the
//! general parser, which also writes the error messages. It never refuses anything.
//! A proptest and the `ingest_batch` fuzz target compare the two paths.

use runlog_protocol::MAX_POS;
use std::ops::Range;

/// One line found by [`scan`]: its `pos` and where its JSON object sits in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactLine {
    /// The line's `pos`.
    pub pos: u64,
    /// The byte range of the line's `{…}` in the body.
    pub span: Range<usize>,
    /// The first byte of its `out` value's JSON text (`"` when the text is empty):
    /// found on the way, so a caller that skips lines by how their text starts
    /// (the section index) needs not locate it again.
    pub out_first: u8,
}

/// The lines of `body` when the whole body is a batch of compact lines; `None` when
/// anything falls outside that shape (valid or not — the general parser decides).
pub fn scan(body: &[u8]) -> Option<Vec<CompactLine>> {
    scan_part(body, true, true)
}

/// The lines of one part of a batch body, for scanning a body while it arrives
/// ([`super::Incremental`]): a part that is not `last` is whole line objects each
/// followed by its comma, split off right before the next `{`; only the `first` part
/// has the opening `[`, only the `last` the closing `]`. Spans are relative to `part`.
///
/// Parts that all scan give exactly the lines [`scan`] gives for their concatenation:
/// each part ends on a comma outside any string, so no escape or string runs from one
/// part into the next, and a split that fell inside a string leaves that string
/// unclosed, which fails the part. A part split at ASCII bytes is UTF-8 exactly when
/// the whole is.
pub fn scan_part(part: &[u8], first: bool, last: bool) -> Option<Vec<CompactLine>> {
    let index = QuoteIndex::new(part)?;
    let mut lines = Vec::with_capacity(part.len() / 128);
    let mut i = 0;
    if first {
        i = skip_ws(part, 0);
        if *part.get(i)? != b'[' {
            return None;
        }
        i = skip_ws(part, i + 1);
        if last && *part.get(i)? == b']' {
            return (skip_ws(part, i + 1) == part.len()).then_some(lines);
        }
    }
    loop {
        let (pos, end, out_first) = object(part, i, &index)?;
        lines.push(CompactLine {
            pos,
            span: i..end,
            out_first,
        });
        i = skip_ws(part, end);
        match *part.get(i)? {
            b',' if !last && i + 1 == part.len() => return Some(lines),
            b',' => i = skip_ws(part, i + 1),
            b']' if last => break,
            _ => return None,
        }
    }
    (skip_ws(part, i + 1) == part.len()).then_some(lines)
}

/// Where the strings of a body can end, found in one pass over it.
///
/// Built on the assumption that every backslash sits inside a string, which holds
/// for every body this path accepts: the structural walk ([`object`]) looks at each
/// byte outside strings itself and refuses a backslash there. Under it, a quote not
/// escaped by an odd run of backslashes opens or closes a string.
struct QuoteIndex {
    /// Bit `i % 64` of word `i / 64`: byte `i` is an unescaped `"`.
    quotes: Vec<u64>,
    /// The same for bytes below 0x20; empty when the body has none (almost always).
    controls: Vec<u64>,
}

/// Bytes that may follow a backslash in a string this path takes (`\u` is left to
/// the general parser).
fn plain_escape(c: u8) -> bool {
    // A table, not a `match`: the match compiled to an indirect jump per escape.
    const PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut k = 0;
        let plain = *b"\"\\/bfnrt";
        while k < plain.len() {
            t[plain[k] as usize] = true;
            k += 1;
        }
        t
    };
    PLAIN[usize::from(c)]
}

impl QuoteIndex {
    /// The index of `body`; `None` when the body is not UTF-8 or has an escape other
    /// than the plain ones (both left to the general parser).
    fn new(body: &[u8]) -> Option<QuoteIndex> {
        let words = body.len().div_ceil(64);
        let mut quotes = Vec::with_capacity(words);
        let mut controls = Vec::new();
        let mut ascii = true;
        // Bit 0: the first byte of the next block is escaped (a backslash ended this one).
        let mut carry = 0u64;
        for (w, block) in body.chunks(64).enumerate() {
            let m = block_masks(block);
            ascii &= m.ascii;
            if m.control != 0 && controls.is_empty() {
                controls.resize(words, 0);
            }
            if let Some(c) = controls.get_mut(w) {
                *c = m.control;
            }
            let escaped = escaped_bytes(m.backslash, &mut carry);
            // Every escape must be a plain one.
            let mut check = escaped;
            while check != 0 {
                let at = w * 64 + check.trailing_zeros() as usize;
                check &= check - 1;
                if !plain_escape(*body.get(at)?) {
                    return None;
                }
            }
            quotes.push(m.quote & !escaped);
        }
        if carry != 0 {
            // A backslash is the body's last byte: no string ends properly.
            return None;
        }
        if !ascii {
            std::str::from_utf8(body).ok()?;
        }
        Some(QuoteIndex { quotes, controls })
    }

    /// The first unescaped quote at or after byte `from`.
    fn next_quote(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut bits = self.quotes.get(w)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
            w += 1;
            bits = *self.quotes.get(w)?;
        }
    }

    /// Whether any byte in `from..to` is below 0x20.
    fn has_control(&self, from: usize, to: usize) -> bool {
        if self.controls.is_empty() || from >= to {
            return false;
        }
        let (first, last) = (from / 64, (to - 1) / 64);
        (first..=last).any(|w| {
            let lo = if w == first { from % 64 } else { 0 };
            let hi = if w == last { (to - 1) % 64 } else { 63 };
            let span = (u64::MAX << lo) & (u64::MAX >> (63 - hi));
            self.controls.get(w).is_some_and(|c| c & span != 0)
        })
    }
}

/// The bytes of a block escaped by a backslash (the byte after each backslash that
/// is not itself escaped), without a branch per backslash: simdjson's escape scanner.
/// `carry` is 1 when the block's first byte is escaped by the previous block's last
/// backslash, and is set the same way for the next block.
fn escaped_bytes(backslash: u64, carry: &mut u64) -> u64 {
    const ODD_BITS: u64 = 0xAAAA_AAAA_AAAA_AAAA;
    // A backslash escaped by the previous block cannot start an escape.
    let potential_escape = backslash & !*carry;
    // Each run of backslashes, subtracted from its shifted self with the odd bits
    // set, leaves a code whose bits mark the escaping backslashes and what they escape.
    let maybe_escaped = potential_escape << 1;
    let code = ((maybe_escaped | ODD_BITS).wrapping_sub(potential_escape)) ^ ODD_BITS;
    let escaped = code ^ (backslash | *carry);
    let escape = code & backslash;
    *carry = escape >> 63;
    escaped
}

/// Bit masks of one block of up to 64 bytes (bit `i` = byte `i`).
#[derive(Debug, PartialEq, Eq)]
struct BlockMasks {
    quote: u64,
    backslash: u64,
    /// Bytes below 0x20.
    control: u64,
    /// No byte is 0x80 or above.
    ascii: bool,
}

/// The masks of a block, 16 bytes per SSE2 compare (baseline on x86-64, so no
/// runtime detection). A short last block is padded with spaces, which match nothing.
///
/// Quotes and backslashes get a mask from every lane. Control and non-ASCII bytes
/// are rare, so each lane only folds into a running minimum and a running OR (one
/// instruction each); the control mask is built only for a block that has one, and
/// non-ASCII needs no mask at all (it only sends the body to the UTF-8 check).
/// `parse_batch` of the bench body: 30.1 µs against 31.1 µs with four masks a lane.
#[cfg(target_arch = "x86_64")]
fn block_masks(block: &[u8]) -> BlockMasks {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let mut padded = [b' '; 64];
    let full: &[u8; 64] = match block.try_into() {
        Ok(full) => full,
        Err(_) => {
            padded[..block.len()].copy_from_slice(block);
            &padded
        }
    };
    let quote = set_splat_i8_m128i(b'"' as i8);
    let backslash = set_splat_i8_m128i(b'\\' as i8);
    let mut m = BlockMasks {
        quote: 0,
        backslash: 0,
        control: 0,
        ascii: true,
    };
    let mut lowest = set_splat_i8_m128i(-1);
    let mut any_bits = set_splat_i8_m128i(0);
    for (k, lane) in full.chunks_exact(16).enumerate() {
        let Ok(lane) = <&[u8; 16]>::try_from(lane) else {
            continue; // unreachable: 64 is four lanes of 16
        };
        let v = load_unaligned_m128i(lane);
        let bits = |x| u64::from(move_mask_i8_m128i(x) as u16) << (16 * k);
        m.quote |= bits(cmp_eq_mask_i8_m128i(v, quote));
        m.backslash |= bits(cmp_eq_mask_i8_m128i(v, backslash));
        lowest = min_u8_m128i(lowest, v);
        any_bits |= v;
    }
    // A byte below 0x20 somewhere: the lowest value seen at some position is at most
    // 0x1f, i.e. equals its minimum with 0x1f.
    let below_space = set_splat_i8_m128i(0x1f);
    let at_most = |v| cmp_eq_mask_i8_m128i(min_u8_m128i(v, below_space), v);
    if move_mask_i8_m128i(at_most(lowest)) != 0 {
        for (k, lane) in full.chunks_exact(16).enumerate() {
            if let Ok(lane) = <&[u8; 16]>::try_from(lane) {
                let v = load_unaligned_m128i(lane);
                m.control |= u64::from(move_mask_i8_m128i(at_most(v)) as u16) << (16 * k);
            }
        }
    }
    m.ascii = move_mask_i8_m128i(any_bits) == 0;
    m
}

/// The masks of a block, one byte at a time: targets without SSE2, and the model
/// the SSE2 version is tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn block_masks_scalar(block: &[u8]) -> BlockMasks {
    let mut m = BlockMasks {
        quote: 0,
        backslash: 0,
        control: 0,
        ascii: true,
    };
    for (i, &c) in block.iter().enumerate() {
        let bit = 1u64 << i;
        if c == b'"' {
            m.quote |= bit;
        }
        if c == b'\\' {
            m.backslash |= bit;
        }
        if c < 0x20 {
            m.control |= bit;
        }
        if c >= 0x80 {
            m.ascii = false;
        }
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
fn block_masks(block: &[u8]) -> BlockMasks {
    block_masks_scalar(block)
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
    /// The first byte of its text, once seen.
    out: Option<u8>,
    time: bool,
}

/// A compact line object starting at `b[i] == '{'`: its `pos`, the index after
/// its closing `}`, and the first byte of its `out` string's text.
fn object(b: &[u8], i: usize, index: &QuoteIndex) -> Option<(u64, usize, u8)> {
    writer_order(b, i, index).or_else(|| any_order(b, i, index))
}

/// Whether `b[at..]` starts with `prefix`: a fixed-size compare the compiler turns
/// into one or two integer compares (a slice compare was a `memcmp` call).
fn has_prefix<const N: usize>(b: &[u8], at: usize, prefix: &[u8; N]) -> bool {
    b.get(at..)
        .and_then(|rest| rest.first_chunk::<N>())
        .is_some_and(|head| head == prefix)
}

/// The exact shape a runlog writer sends, `{"level":"…","pos":N,"out":"…","time":"…"}`,
/// checked as one straight sequence. Accepts only what [`any_order`] accepts (the
/// same checks, in a fixed order); anything else is left to it.
fn writer_order(b: &[u8], i: usize, index: &QuoteIndex) -> Option<(u64, usize, u8)> {
    if !has_prefix(b, i, b"{\"level\":") {
        return None;
    }
    let j = string_end(b, i + 9, index)?;
    if !has_prefix(b, j, b",\"pos\":") {
        return None;
    }
    let (pos, j) = integer(b, j + 7)?;
    if !has_prefix(b, j, b",\"out\":") {
        return None;
    }
    // The byte after the opening quote: the closing quote at worst, so in range.
    let out_first = *b.get(j + 8)?;
    let j = string_end(b, j + 7, index)?;
    if !has_prefix(b, j, b",\"time\":") {
        return None;
    }
    let j = string_end(b, j + 8, index)?;
    (*b.get(j)? == b'}').then_some((pos, j + 1, out_first))
}

/// A compact line object with the known keys in any order, each at most once.
fn any_order(b: &[u8], mut i: usize, index: &QuoteIndex) -> Option<(u64, usize, u8)> {
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    let mut seen = Seen::default();
    loop {
        // A key: one of the four, written plainly, and its colon.
        if has_prefix(b, i, b"\"pos\":") && seen.pos.is_none() {
            let (pos, end) = integer(b, i + 6)?;
            seen.pos = Some(pos);
            i = end;
        } else if has_prefix(b, i, b"\"out\":") && seen.out.is_none() {
            seen.out = Some(*b.get(i + 7)?);
            i = string_end(b, i + 6, index)?;
        } else if has_prefix(b, i, b"\"level\":") && !seen.level {
            seen.level = true;
            i = string_end(b, i + 8, index)?;
        } else if has_prefix(b, i, b"\"time\":") && !seen.time {
            seen.time = true;
            i = string_end(b, i + 7, index)?;
        } else {
            return None;
        }
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    Some((seen.pos?, i + 1, seen.out?))
}

/// A JSON string starting at `b[i] == '"'`: the index after its closing quote. Its
/// escapes were checked when the index was built; a control byte inside it (which
/// must be escaped in JSON) leaves the body to the general parser.
fn string_end(b: &[u8], i: usize, index: &QuoteIndex) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let end = index.next_quote(i + 1)?;
    if index.has_control(i + 1, end) {
        return None;
    }
    Some(end + 1)
}

/// A `pos` starting at `i`: a non-negative JSON integer up to [`MAX_POS`], its value
/// and the index after it. Fractions, exponents, signs, leading zeros and larger
/// values are left to the general parser (which refuses the ones out of range with
/// a message naming the line).
fn integer(b: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut value: u64 = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(i) {
        value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    let digits = i - start;
    if digits == 0 || (digits > 1 && b[start] == b'0') || value > MAX_POS {
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
        let body = br#" [{"level":"info","pos":0,"out":"a\n\"q\"\\","time":"2026-11-20T10:00:00.123Z"} , {"pos":9007199254740991,"out":"\u{e9}"}] "#;
        let body = std::str::from_utf8(body).unwrap().replace("\\u{e9}", "é");
        let lines = scan(body.as_bytes()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].pos, 0);
        assert_eq!(
            &body[lines[0].span.clone()],
            r#"{"level":"info","pos":0,"out":"a\n\"q\"\\","time":"2026-11-20T10:00:00.123Z"}"#
        );
        assert_eq!(lines[1].pos, MAX_POS);
        assert_eq!(
            &body[lines[1].span.clone()],
            r#"{"pos":9007199254740991,"out":"é"}"#
        );
        assert_eq!(scan(b"[]"), Some(vec![]));
        assert_eq!(scan(b" [ ] "), Some(vec![]));
    }

    #[test]
    fn a_pos_above_the_largest_is_left_to_the_general_path() {
        for pos in [
            "9007199254740992",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            let body = format!(r#"[{{"pos":{pos},"out":"x"}}]"#);
            assert_eq!(scan(body.as_bytes()), None, "{pos}");
        }
    }

    /// The index as a byte-at-a-time model would build it: the unescaped quotes,
    /// or `None` for a bad escape or a backslash at the very end.
    fn model_quotes(body: &[u8]) -> Option<Vec<usize>> {
        let mut quotes = Vec::new();
        let mut escaped = false;
        for (i, &c) in body.iter().enumerate() {
            if escaped {
                if !plain_escape(c) {
                    return None;
                }
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                quotes.push(i);
            }
        }
        (!escaped).then_some(quotes)
    }

    fn index_quotes(index: &QuoteIndex, len: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(q) = index.next_quote(at) {
            assert!(q < len);
            found.push(q);
            at = q + 1;
        }
        found
    }

    /// [`escaped_bytes`] as a loop over the backslashes, one at a time.
    fn escaped_by_loop(backslash: u64, carry: &mut u64) -> u64 {
        let mut escaped = *carry;
        *carry = 0;
        for at in 0..64 {
            if backslash & (1 << at) == 0 || escaped & (1 << at) != 0 {
                continue;
            }
            if at == 63 {
                *carry = 1;
            } else {
                escaped |= 1 << (at + 1);
            }
        }
        escaped
    }

    proptest::proptest! {
        #[test]
        fn branchless_escapes_agree_with_a_loop(
            // Runs of backslashes are what matters: dense masks have long ones.
            a in proptest::num::u64::ANY,
            b in proptest::num::u64::ANY,
            carry in 0u64..2,
        ) {
            for backslash in [a, a | b, a & b, !a, a | (a << 1) | (a << 2)] {
                let (mut c1, mut c2) = (carry, carry);
                let fast = escaped_bytes(backslash, &mut c1);
                let slow = escaped_by_loop(backslash, &mut c2);
                proptest::prop_assert_eq!(fast, slow, "backslash {:064b} carry {}", backslash, carry);
                proptest::prop_assert_eq!(c1, c2);
            }
        }
    }

    #[test]
    fn quotes_and_escapes_are_found_at_every_offset_across_blocks() {
        for len in [1, 63, 64, 65, 127, 128, 130] {
            for at in 0..len {
                for pattern in [&b"\""[..], b"\\\"", b"\\\\\"", b"\\n\"", b"\\\\"] {
                    let mut body = vec![b'a'; len + pattern.len()];
                    body[at..at + pattern.len()].copy_from_slice(pattern);
                    let index = QuoteIndex::new(&body);
                    let model = model_quotes(&body);
                    assert_eq!(index.is_some(), model.is_some(), "len {len} at {at}");
                    if let (Some(index), Some(model)) = (index, model) {
                        assert_eq!(index_quotes(&index, body.len()), model, "len {len} at {at}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_index_agrees_with_a_byte_at_a_time_model(
            body in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'"', b'\\', b'n', b'u', b'\n', 0x80, b' ']),
                0..300,
            )
        ) {
            let index = QuoteIndex::new(&body);
            let model = model_quotes(&body).filter(|_| std::str::from_utf8(&body).is_ok());
            proptest::prop_assert_eq!(index.is_some(), model.is_some());
            if let (Some(index), Some(model)) = (index, model) {
                proptest::prop_assert_eq!(index_quotes(&index, body.len()), model);
                for from in 0..body.len() {
                    let to = (from + 70).min(body.len());
                    let any = body[from..to].iter().any(|&c| c < 0x20);
                    proptest::prop_assert_eq!(index.has_control(from, to), any);
                }
            }
        }

        #[test]
        fn sse2_masks_agree_with_the_scalar_ones(
            block in proptest::collection::vec(proptest::num::u8::ANY, 0..=64)
        ) {
            proptest::prop_assert_eq!(block_masks(&block), block_masks_scalar(&block));
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
