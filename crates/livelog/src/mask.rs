//! Masks secrets in assembled lines.
//!
//! Masking runs on whole lines (after [`crate::assemble`]), so a secret split across
//! any number of `write` calls is still found. For each secret it matches:
//! - the exact value;
//! - each line of a multi-line value (lines are masked one by one, since the writer
//!   sees one line at a time);
//! - its base64 forms — standard and URL-safe, with and without padding — and the
//!   base64 of the value at the other two byte alignments (what appears when the
//!   secret sits inside a larger encoded blob), trimmed to the characters that depend
//!   on the secret alone.
//!
//! Patterns shorter than [`MIN_SECRET_LEN`] bytes are skipped: masking `a` or `12`
//! would rewrite most of the log and hide nothing worth hiding.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a masked secret is replaced with.
pub const MASK: &str = "**************";

/// Shortest pattern that is masked, in bytes.
pub const MIN_SECRET_LEN: usize = 3;

/// Shortest base64 fragment (of a secret inside a larger blob) that is masked: shorter
/// fragments of a few characters would match ordinary words.
const MIN_FRAGMENT_LEN: usize = 8;

/// A compiled set of secrets; cheap to apply to lines that contain none.
#[derive(Clone)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
    /// The patterns, sorted: [`Masker::flushable_len`] looks up which of them a
    /// text's tail begins.
    patterns: Vec<String>,
    /// The longest pattern's length.
    longest: usize,
}

/// Says how many patterns, never what they are.
impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Masker {
    /// Compiles the patterns for `secrets` (empty and too-short values are skipped).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            add_with_encodings(&mut patterns, secret);
            if secret.contains('\n') {
                for line in secret.lines() {
                    add_with_encodings(&mut patterns, line.trim_end_matches('\r'));
                }
            }
        }
        patterns.retain(|p| p.len() >= MIN_SECRET_LEN);
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Masker {
                matcher: None,
                patterns,
                longest: 0,
            };
        }
        // Standard semantics, for overlapping search: every occurrence of every
        // pattern is masked, whether or not it overlaps another (`abcd` and
        // `cdefgh` in `abcdefgh`; a secret and its padded base64).
        let matcher = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .ok();
        let longest = patterns.iter().map(String::len).max().unwrap_or(0);
        Masker {
            matcher,
            patterns,
            longest,
        }
    }

    /// How many bytes from the start of an unfinished line may be sent now, masked on
    /// their own, with the rest kept until more of the line arrives: the cut is before
    /// any tail of `text` that begins a pattern (a secret, or one of its encoded forms,
    /// of which only a prefix has arrived), and never inside an occurrence. Sent that
    /// way, the pieces of a line read exactly as the whole line masked at once: no
    /// secret goes out in two unmasked pieces.
    pub fn flushable_len(&self, text: &[u8]) -> usize {
        let Some(m) = &self.matcher else {
            return text.len();
        };
        // The earliest start of a tail that a pattern begins with (and is longer than).
        let from = text.len().saturating_sub(self.longest.saturating_sub(1));
        let mut cut = (from..text.len())
            .find(|&at| self.begins_pattern(&text[at..]))
            .unwrap_or(text.len());
        if !m.is_match(text) {
            return cut;
        }
        // Occurrences overlap, so moving the cut before one may put it inside another.
        let found: Vec<(usize, usize)> = m
            .find_overlapping_iter(text)
            .map(|f| (f.start(), f.end()))
            .collect();
        loop {
            let inside = found.iter().find(|(s, e)| *s < cut && cut < *e);
            match inside {
                Some((start, _)) => cut = *start,
                None => return cut,
            }
        }
    }

    /// Whether some pattern longer than `tail` starts with it.
    fn begins_pattern(&self, tail: &[u8]) -> bool {
        // The patterns that start with `tail` sort together, from the first one not
        // below it: that one is `tail` itself or a longer one, and then the next is.
        let at = self.patterns.partition_point(|p| p.as_bytes() < tail);
        self.patterns[at..]
            .iter()
            .take(2)
            .any(|p| p.len() > tail.len() && p.as_bytes().starts_with(tail))
    }

    /// Whether any secret is configured.
    pub fn is_active(&self) -> bool {
        self.matcher.is_some()
    }

    /// Replaces every secret occurrence in `text` with [`MASK`], in place.
    pub fn mask(&self, text: &mut String) {
        if let Some(masked) = self.masked(text) {
            *text = masked;
        }
    }

    /// [`mask`](Self::mask) for a line that may be borrowed: it becomes owned only
    /// when a secret is found in it.
    pub fn mask_cow(&self, text: &mut std::borrow::Cow<'_, str>) {
        if let Some(masked) = self.masked(text) {
            *text = std::borrow::Cow::Owned(masked);
        }
    }

    /// The text with every secret replaced, or `None` when it holds none.
    ///
    /// Overlapping occurrences are masked as their union, once: replacing matches one
    /// after another (leftmost first) would leave the part of a second secret that
    /// reaches past the first one visible.
    fn masked(&self, text: &str) -> Option<String> {
        let m = self.matcher.as_ref()?;
        if !m.is_match(text) {
            return None;
        }
        // Reported in order of where they end; sorted by start to merge.
        let mut found: Vec<(usize, usize)> = m
            .find_overlapping_iter(text)
            .map(|f| (f.start(), f.end()))
            .collect();
        found.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut kept_from = 0;
        let mut ranges = found.into_iter();
        let mut current = ranges.next()?;
        for (start, end) in ranges {
            if start < current.1 {
                current.1 = current.1.max(end);
            } else {
                push_masked(&mut out, text, kept_from, current);
                kept_from = current.1;
                current = (start, end);
            }
        }
        push_masked(&mut out, text, kept_from, current);
        out.push_str(text.get(current.1..).unwrap_or_default());
        Some(out)
    }
}

/// Appends `text[from..range.0]` and the mask for `range`. Matches of UTF-8
/// patterns in UTF-8 text start and end on character boundaries, so `get` only
/// guards against a bug, never drops text in practice.
fn push_masked(out: &mut String, text: &str, from: usize, range: (usize, usize)) {
    out.push_str(text.get(from..range.0).unwrap_or_default());
    out.push_str(MASK);
}

fn add_with_encodings(out: &mut Vec<String>, value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let bytes = value.as_bytes();
    out.push(value.to_owned());
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(bytes));
    }
    // The secret at offsets 1 and 2 inside a larger encoded blob: encode with a dummy
    // prefix, then keep only the characters that depend on the secret's bytes alone
    // (drop the ones mixing prefix bits, and the last ones mixing in what follows).
    for prefix_len in 1..=2usize {
        let mut buf = vec![0u8; prefix_len];
        buf.extend_from_slice(bytes);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&buf);
            let skip = (prefix_len * 8).div_ceil(6);
            let total_bits = buf.len() * 8;
            let full_chars = total_bits / 6; // characters made only of real bits
            if full_chars >= skip + MIN_FRAGMENT_LEN {
                out.push(enc[skip..full_chars].to_owned());
            }
        }
    }
    // Offset 0 inside a larger blob: characters made only of the secret's bits.
    let full_chars = bytes.len() * 8 / 6;
    if full_chars >= MIN_FRAGMENT_LEN {
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(bytes);
            out.push(enc[..full_chars].to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::assemble::LineAssembler;
    use proptest::prelude::*;

    fn masked(secrets: &[&str], text: &str) -> String {
        let mut s = text.to_owned();
        Masker::new(secrets).mask(&mut s);
        s
    }

    #[test]
    fn exact_value_is_masked() {
        assert_eq!(
            masked(&["hunter2"], "pw=hunter2 ok\n"),
            format!("pw={MASK} ok\n")
        );
    }

    #[test]
    fn each_line_of_a_multiline_secret_is_masked() {
        let key = "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----";
        let out = masked(&[key], "AAAABBBBCCCC\n");
        assert_eq!(out, format!("{MASK}\n"));
    }

    #[test]
    fn base64_forms_are_masked() {
        let secret = "s3cr3t-value!";
        for enc in [STANDARD.encode(secret), URL_SAFE_NO_PAD.encode(secret)] {
            let out = masked(&[secret], &format!("auth: {enc}\n"));
            assert!(!out.contains(&enc), "{out}");
            assert!(out.contains(MASK));
        }
    }

    #[test]
    fn secret_inside_a_larger_base64_blob_is_masked_at_every_alignment() {
        let secret = "topsecretvalue";
        for prefix in ["", "u", "us", "user:"] {
            let blob = STANDARD.encode(format!("{prefix}{secret}@host"));
            let out = masked(&[secret], &blob);
            assert!(out.contains(MASK), "prefix {prefix:?}: {out}");
        }
    }

    #[test]
    fn overlapping_secrets_are_masked_as_one() {
        assert_eq!(
            masked(&["abcd", "cdefgh"], "x abcdefgh y"),
            format!("x {MASK} y")
        );
        assert_eq!(masked(&["cdefgh", "abcd"], "abcdefgh"), MASK);
        // One inside another, and two apart: each masked, nothing of either left.
        assert_eq!(
            masked(&["bcd", "abcde"], "abcde bcd"),
            format!("{MASK} {MASK}")
        );
        assert_eq!(
            masked(&["hunter2", "ter2xyz"], "pw=hunter2xyz;hunter2"),
            format!("pw={MASK};{MASK}")
        );
    }

    #[test]
    fn a_partial_line_keeps_back_only_what_could_begin_a_secret() {
        let m = Masker::new(&["hunter2", "ter2xyz"]);
        assert_eq!(m.flushable_len(b"Downloading 45%"), 15);
        assert_eq!(m.flushable_len(b"pw=hun"), 3, "the start of a secret waits");
        // `ter2` may begin the other secret, and the cut never falls inside `hunter2`.
        assert_eq!(m.flushable_len(b"pw=hunter2"), 3);
        assert_eq!(
            m.flushable_len(b"pw=hunter2;"),
            11,
            "a whole secret goes, masked"
        );
        assert_eq!(Masker::new::<&str>(&[]).flushable_len(b"abc"), 3);
        // Base64 forms are secrets too.
        let b64 = STANDARD.encode("hunter2");
        let text = format!("auth {}", &b64[..4]);
        assert_eq!(m.flushable_len(text.as_bytes()), 5);
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = format!("{:?}", Masker::new(&["hunter2"]));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn too_short_secrets_are_not_masked() {
        assert_eq!(masked(&["", "ab"], "ab cd\n"), "ab cd\n");
        assert!(!Masker::new(&["", "x"]).is_active());
    }

    proptest! {
        #[test]
        fn no_byte_of_any_secret_occurrence_is_left_visible(
            secrets in proptest::collection::vec("[a-d]{3,6}", 1..4),
            text in "[a-d ]{0,40}",
        ) {
            let out = masked(&secrets.iter().map(String::as_str).collect::<Vec<_>>(), &text);
            // Every byte of the text that some occurrence of a secret covers is gone:
            // the text outside the mask runs is all that is left of it.
            let kept: String = out.split(MASK).collect();
            let mut covered = vec![false; text.len()];
            // Every occurrence, overlapping ones too (`aba` twice in `ababa`). The
            // alphabet keeps base64 forms (which hold upper case) out of the text.
            for s in &secrets {
                for at in 0..text.len() {
                    if text[at..].starts_with(s.as_str()) {
                        covered[at..at + s.len()].iter_mut().for_each(|c| *c = true);
                    }
                }
            }
            let visible: String = text
                .char_indices()
                .filter(|(i, _)| !covered[*i])
                .map(|(_, c)| c)
                .collect();
            prop_assert_eq!(kept, visible, "text {:?} secrets {:?} out {:?}", text, secrets, out);
        }

        /// An unfinished line flushed after idle pauses, at any chunking: every piece
        /// is masked on its own (as the writer does), and the pieces read exactly as
        /// the whole line masked at once, so no secret — nor any byte of one — goes
        /// out unmasked across them. Secrets overlap and share prefixes (`[a-c]`).
        #[test]
        fn idle_flushes_of_a_partial_line_never_split_a_secret(
            secrets in proptest::collection::vec("[a-c]{3,7}", 1..4),
            text in "[a-c x]{0,60}",
            events in proptest::collection::vec((0usize..12, any::<bool>()), 0..20),
        ) {
            let masker = Masker::new(&secrets);
            let mut asm = LineAssembler::new(1 << 20);
            let mut pieces: Vec<String> = Vec::new();
            let mut emit = |l: crate::assemble::Assembled<'_>| {
                let mut t = l.text.into_owned();
                masker.mask(&mut t);
                pieces.push(t);
            };
            let bytes = text.as_bytes();
            let mut at = 0;
            // Chunks of random length, each followed or not by an idle flush.
            for (len, pause) in events {
                let end = (at + len).min(bytes.len());
                asm.push(&bytes[at..end], &mut emit);
                at = end;
                if pause {
                    asm.flush_partial_upto(|p| masker.flushable_len(p), &mut emit);
                }
            }
            asm.push(&bytes[at..], &mut emit);
            asm.push(b"\n", &mut emit);
            let sent = pieces.concat();
            let mut whole = format!("{text}\n");
            masker.mask(&mut whole);
            prop_assert_eq!(&sent, &whole, "pieces {:?}", pieces);
            for s in &secrets {
                prop_assert!(!sent.contains(s.as_str()), "{} in {:?}", s, pieces);
            }
        }

        #[test]
        fn secret_split_across_any_write_boundary_is_masked(
            before in "[a-z ]{0,30}", after in "[a-z ]{0,30}",
            secret in "[A-Za-z0-9]{3,20}", cut1 in 0usize..100, cut2 in 0usize..100,
        ) {
            let text = format!("{before}{secret}{after}\n");
            let bytes = text.as_bytes();
            let (mut c1, mut c2) = (cut1.min(bytes.len()), cut2.min(bytes.len()));
            if c1 > c2 { std::mem::swap(&mut c1, &mut c2); }
            let masker = Masker::new(&[secret.as_str()]);
            let mut asm = LineAssembler::new(1024);
            let mut lines = Vec::new();
            for chunk in [&bytes[..c1], &bytes[c1..c2], &bytes[c2..]] {
                asm.push(chunk, &mut |l| lines.push(l.text.into_owned()));
            }
            prop_assert_eq!(lines.len(), 1);
            let mut line = lines.remove(0);
            masker.mask(&mut line);
            prop_assert!(!line.contains(&secret), "{}", line);
            prop_assert!(line.contains(MASK));
        }
    }
}
