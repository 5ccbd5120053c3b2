//! Serialises one line as its NDJSON row / JSON array element.
//!
//! The output is byte-for-byte what `serde_json` writes for a [`runlog_protocol::LogLine`]
//! without `args` (checked by a property test); strings that need no escaping but
//! their final newline — nearly every log line — are copied in one go instead of being
//! scanned byte by byte, which was the largest user-space cost per line.

/// Appends `{"level":…,"pos":…,"out":…,"time":…}` to `buf`.
pub fn write_row(buf: &mut Vec<u8>, level: &str, pos: u64, out: &str, time: &str) {
    buf.extend_from_slice(b"{\"level\":");
    push_str(buf, level);
    buf.extend_from_slice(b",\"pos\":");
    push_u64(buf, pos);
    buf.extend_from_slice(b",\"out\":");
    push_str(buf, out);
    buf.extend_from_slice(b",\"time\":");
    push_str(buf, time);
    buf.push(b'}');
}

fn push_str(buf: &mut Vec<u8>, s: &str) {
    // A line keeps its final newline unless `trim_new_line_suffix` is set, so "only
    // the last byte needs escaping" is the common case, not an exotic one.
    let (body, newline) = match s.strip_suffix('\n') {
        Some(body) => (body, true),
        None => (s, false),
    };
    if needs_escape(body.as_bytes()) {
        // Rare: let serde_json do the escaping. Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    } else {
        buf.push(b'"');
        buf.extend_from_slice(body.as_bytes());
        if newline {
            buf.extend_from_slice(b"\\n");
        }
        buf.push(b'"');
    }
}

/// Whether JSON needs an escape in `b` (control characters, `"`, `\`): the same set
/// serde_json escapes. A non-short-circuiting fold, so the compiler vectorises it.
fn needs_escape(b: &[u8]) -> bool {
    b.iter().fold(false, |acc, &c| {
        acc | (c < 0x20) | (c == b'"') | (c == b'\\')
    })
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use runlog_protocol::LogLine;

    proptest! {
        #[test]
        fn rows_match_serde_json_byte_for_byte(level in "\\PC{0,8}", pos in any::<u64>(), out in any::<String>(), newline in any::<bool>(), time in "[0-9TZ:.-]{0,24}") {
            // Most lines end with a newline (kept unless trimmed): the fast path for it.
            let out = if newline { out + "\n" } else { out };
            let mut ours = Vec::new();
            write_row(&mut ours, &level, pos, &out, &time);
            let line = LogLine { level, pos, out, time, args: None };
            let theirs = serde_json::to_vec(&line).expect("serialises");
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        let mut buf = Vec::new();
        write_row(&mut buf, "info", 7, "a\"b\\c\td\n", "t");
        assert_eq!(
            std::str::from_utf8(&buf).expect("utf-8"),
            r#"{"level":"info","pos":7,"out":"a\"b\\c\td\n","time":"t"}"#
        );
    }
}
