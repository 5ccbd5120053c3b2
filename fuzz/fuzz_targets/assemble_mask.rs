//! livelog's line assembler and masker, as the writer chains them: whatever the
//! bytes and however they are chunked, the lines are the same, bounded in length,
//! and a secret (or its base64) never survives in a line that holds it whole.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use livelog::assemble::{CUT_MARKER, LineAssembler};
use livelog::mask::Masker;

fn lines(max: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut asm = LineAssembler::new(max);
    let mut out = Vec::new();
    for c in chunks {
        asm.push(c, &mut |l| out.push(l.text.into_owned()));
        assert!(asm.pending_len() <= max + 1, "partial line over its bound");
    }
    asm.flush_partial(&mut |l| out.push(l.text.into_owned()));
    out
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let max = u.int_in_range(4usize..=256)?;
    // Secrets are alphanumeric, as tokens and passwords mostly are: the mask's `*`
    // can then never form a new occurrence, so "not contained" is exact.
    let secret_len = u.int_in_range(3usize..=24)?;
    let mut secret = String::new();
    for _ in 0..secret_len {
        let i = u.int_in_range(0u8..=61)?;
        secret.push(char::from(match i {
            0..=25 => b'a' + i,
            26..=51 => b'A' + (i - 26),
            _ => b'0' + (i - 52),
        }));
    }
    let encoded = STANDARD.encode(&secret);
    // The stream: raw bytes where 0x00 stands for the secret and 0x01 for its base64,
    // so the fuzzer can place them anywhere, next to any bytes.
    let raw: Vec<u8> = u.arbitrary()?;
    let mut data = Vec::new();
    for b in raw {
        match b {
            0 => data.extend_from_slice(secret.as_bytes()),
            1 => data.extend_from_slice(encoded.as_bytes()),
            b => data.push(b),
        }
    }
    let mut cuts: Vec<usize> = Vec::new();
    while !u.is_empty() && cuts.len() < 16 {
        cuts.push(u.int_in_range(0..=data.len())?);
    }
    cuts.sort_unstable();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut prev = 0;
    for c in cuts {
        chunks.push(&data[prev..c]);
        prev = c;
    }
    chunks.push(&data[prev..]);

    let whole = lines(max, &[&data]);
    let chunked = lines(max, &chunks);
    assert_eq!(whole, chunked, "chunking changed the lines");

    let marker = format!("{CUT_MARKER}\n");
    let masker = Masker::new(&[secret.as_str()]);
    let mut after_cut = false;
    for line in chunked {
        let body = line
            .strip_suffix(&marker)
            .or_else(|| line.strip_suffix('\n'))
            .unwrap_or(&line);
        // Each invalid byte may become a 3-byte U+FFFD; a partial line flushed at the
        // end may hold one byte of slack (a `\r` that could still start `\r\n`).
        assert!(
            body.len() <= (max + 1) * 3,
            "{} > {max}: {line:?}",
            body.len()
        );
        let cut = line.ends_with(&marker);
        let mut masked = line.clone();
        masker.mask(&mut masked);
        // A line cut in two may split a secret between the pieces: only whole lines
        // are held to the promise.
        if !cut && !after_cut {
            assert!(!masked.contains(&secret), "secret left in {masked:?}");
            assert!(!masked.contains(&encoded), "base64 left in {masked:?}");
        }
        after_cut = cut;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
