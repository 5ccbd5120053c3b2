//! The CLI's escape-sequence filter (compiled from its source file): on a pipe no
//! ESC survives; on a terminal only SGR colour sequences do; filtering is idempotent.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/cli/src/ansi.rs"]
mod ansi;

use ansi::{Escapes, sanitize};
use libfuzzer_sys::fuzz_target;

/// Every ESC in `s` starts `ESC [ [0-9;:]* m`.
fn only_sgr(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0x1b {
            if b.get(i + 1) != Some(&b'[') {
                return false;
            }
            let mut j = i + 2;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b';' || b[j] == b':') {
                j += 1;
            }
            if b.get(j) != Some(&b'm') {
                return false;
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let stripped = sanitize(&text, Escapes::StripAll);
    assert!(!stripped.contains('\x1b'), "{text:?} -> {stripped:?}");
    let kept = sanitize(&text, Escapes::KeepColours);
    assert!(only_sgr(&kept), "{text:?} -> {kept:?}");
    assert_eq!(sanitize(&kept, Escapes::KeepColours), kept);
    assert_eq!(sanitize(&stripped, Escapes::StripAll), stripped);
});
