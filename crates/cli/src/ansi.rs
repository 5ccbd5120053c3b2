//! Terminal escape sequences in log text: keep colours, drop everything else.
//!
//! Log lines come from arbitrary programs. Printing them verbatim would let a log
//! move the cursor, clear the screen, retitle the window or (OSC 52) write the
//! clipboard of whoever tails it. So escape sequences are filtered, never passed
//! through blindly: on a terminal only SGR sequences (`ESC [ … m`: colours, bold)
//! survive; on a pipe every sequence is removed so files and `grep` see plain text.
//! The C1 controls (U+0080–U+009F, e.g. U+009B, a one-character CSI some terminals
//! obey) are removed in both modes.

use std::borrow::Cow;

const ESC: char = '\x1b';
const BEL: char = '\x07';

/// What to keep of the escape sequences in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escapes {
    /// Keep SGR (colour, bold, …) sequences; remove every other sequence.
    KeepColours,
    /// Remove every escape sequence, colours included.
    StripAll,
}

/// Filters the escape sequences of `text` as `mode` says.
///
/// Text without an ESC byte or a C1 control is returned borrowed, so the common case
/// costs one scan.
///
/// ```ignore
/// assert_eq!(sanitize("\x1b[31mred\x1b[0m", Escapes::StripAll), "red");
/// assert_eq!(sanitize("\x1b[2Jx", Escapes::KeepColours), "x");
/// ```
pub fn sanitize(text: &str, mode: Escapes) -> Cow<'_, str> {
    // C1 controls are U+0080–U+009F: in UTF-8, 0xC2 then 0x80–0x9F.
    if !text.bytes().any(|b| b == 0x1b || b == 0xc2) {
        return Cow::Borrowed(text);
    }
    let has_c1 = text.chars().any(is_c1);
    if !text.contains(ESC) {
        if !has_c1 {
            return Cow::Borrowed(text);
        }
        return Cow::Owned(text.chars().filter(|c| !is_c1(*c)).collect());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ESC) {
        out.push_str(&rest[..at]);
        let (len, is_sgr) = sequence_len(&rest[at..]);
        if is_sgr && mode == Escapes::KeepColours {
            out.push_str(&rest[at..at + len]);
        }
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    if has_c1 {
        out.retain(|c| !is_c1(c));
    }
    Cow::Owned(out)
}

/// A C1 control character (U+0080–U+009F).
fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

/// Length in bytes of the escape sequence at the start of `s` (which starts with
/// ESC), and whether it is an SGR sequence. An unterminated sequence runs to the
/// end of the text, so a truncated line never leaks half a sequence.
fn sequence_len(s: &str) -> (usize, bool) {
    let bytes = s.as_bytes();
    match bytes.get(1) {
        // CSI: ESC [ parameters (0x30–0x3f) intermediates (0x20–0x2f) final (0x40–0x7e).
        Some(b'[') => {
            for (i, &b) in bytes.iter().enumerate().skip(2) {
                if (0x40..=0x7e).contains(&b) {
                    let params_ok = bytes[2..i]
                        .iter()
                        .all(|c| c.is_ascii_digit() || *c == b';' || *c == b':');
                    return (i + 1, b == b'm' && params_ok);
                }
                if !(0x20..=0x3f).contains(&b) {
                    // Not a valid CSI byte: drop only what was read so far.
                    return (i, false);
                }
            }
            (s.len(), false)
        }
        // OSC, DCS, SOS, PM, APC: strings ended by BEL or ST (ESC \).
        Some(b']' | b'P' | b'X' | b'^' | b'_') => {
            let body = &s[2..];
            let bel = body.find(BEL).map(|i| i + 1);
            let st = body.find("\x1b\\").map(|i| i + 2);
            let end = match (bel, st) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => body.len(),
            };
            (2 + end, false)
        }
        // Two-byte sequences (ESC c, ESC 7, …): drop ESC and the next character.
        Some(_) => {
            let next = s[1..].chars().next().map_or(0, char::len_utf8);
            (1 + next, false)
        }
        None => (1, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            sanitize("hello\n", Escapes::StripAll),
            Cow::Borrowed("hello\n")
        ));
    }

    #[test]
    fn colours_are_stripped_on_a_pipe() {
        assert_eq!(
            sanitize("\x1b[1;31mred\x1b[0m ok\n", Escapes::StripAll),
            "red ok\n"
        );
        assert_eq!(sanitize("\x1b[38;5;208mo\x1b[m", Escapes::StripAll), "o");
    }

    #[test]
    fn c1_controls_never_reach_a_terminal() {
        // U+009B is a one-character CSI, U+009D an OSC: some terminals obey them.
        for mode in [Escapes::KeepColours, Escapes::StripAll] {
            assert_eq!(sanitize("a\u{9b}2Jb", mode), "a2Jb");
            assert!(!sanitize("\u{9d}52;c;eA==\u{7}x\x1b[1mz", mode).contains('\u{9d}'));
        }
        // Latin-1 letters share the lead byte and stay.
        assert!(matches!(
            sanitize("café ©", Escapes::KeepColours),
            Cow::Borrowed("café ©")
        ));
    }

    #[test]
    fn colours_are_kept_on_a_terminal() {
        let s = "\x1b[32mgreen\x1b[0m\n";
        assert_eq!(sanitize(s, Escapes::KeepColours), s);
    }

    #[test]
    fn cursor_moves_and_screen_clears_never_reach_a_terminal() {
        assert_eq!(
            sanitize("a\x1b[2Jb\x1b[10;1Hc\x1b[?25l", Escapes::KeepColours),
            "abc"
        );
    }

    #[test]
    fn osc_title_and_clipboard_writes_are_removed() {
        assert_eq!(sanitize("x\x1b]0;pwned\x07y", Escapes::KeepColours), "xy");
        assert_eq!(
            sanitize("x\x1b]52;c;ZXZpbA==\x1b\\y", Escapes::KeepColours),
            "xy"
        );
    }

    #[test]
    fn unterminated_sequences_are_dropped_to_the_end() {
        assert_eq!(sanitize("ok\x1b[31", Escapes::KeepColours), "ok");
        assert_eq!(sanitize("ok\x1b]0;title", Escapes::KeepColours), "ok");
        assert_eq!(sanitize("ok\x1b", Escapes::StripAll), "ok");
    }

    #[test]
    fn multibyte_text_around_sequences_survives() {
        assert_eq!(sanitize("é\x1b[1mü\x1bé", Escapes::StripAll), "éü");
        assert_eq!(sanitize("日本\x1b[0m語", Escapes::StripAll), "日本語");
    }
}
