//! Archive uploads and replays: gzip with a bounded output, NDJSON validation and
//! the streaming row decoder never panic, never accept more than the limit, and
//! the decoder finds the same rows however the bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runlog_service::archive::{self, ReadLimits, RowDecoder};

const LIMIT: u64 = 1 << 20;

/// Every row the streaming decoder finds in `data`, given in pieces of `piece`
/// bytes, or `None` when it refuses the archive.
fn decoded_rows(data: &[u8], piece: usize) -> Option<Vec<Vec<u8>>> {
    let mut decoder = RowDecoder::new(ReadLimits {
        max_inflated: LIMIT,
        max_row: LIMIT as usize,
    });
    let mut rows = Vec::new();
    for mut part in data.chunks(piece.max(1)) {
        while !part.is_empty() {
            let n = decoder.feed(part).ok()?;
            part = &part[n..];
            decoder
                .rows(|row| {
                    rows.push(row.to_vec());
                    true
                })
                .ok()?;
        }
    }
    decoder.finish().ok()?;
    decoder
        .rows(|row| {
            rows.push(row.to_vec());
            true
        })
        .ok()?;
    rows.extend(decoder.last_row());
    Some(rows)
}

fuzz_target!(|data: &[u8]| {
    if archive::is_gzip(data) {
        if let Ok(plain) = archive::gunzip_limited(data, LIMIT) {
            assert!(plain.len() as u64 <= LIMIT);
        }
    }
    let validated = archive::validate_ndjson(data);
    let whole = decoded_rows(data, data.len());
    let piece = usize::from(data.first().copied().unwrap_or(1));
    // However the archive arrives, the decoder finds the same rows.
    assert_eq!(decoded_rows(data, piece), whole);
    if let Some(rows) = &whole {
        for row in rows {
            assert!(!row.contains(&b'\n'));
        }
    }
    if let (Ok(n), Some(rows), false) = (validated, &whole, archive::is_gzip(data)) {
        // Plain NDJSON: every validated row is found (blank rows aside).
        let found = rows
            .iter()
            .filter(|r| !r.iter().all(u8::is_ascii_whitespace))
            .count();
        assert_eq!(found, n);
        // What was accepted round-trips through the archive's own gzip.
        let gz = archive::gzip(data);
        assert_eq!(
            archive::gunzip_limited(&gz, data.len() as u64).expect("own gzip reads back"),
            data
        );
    }
});
