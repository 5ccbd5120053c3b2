//! Archive uploads: gzip with a bounded output, NDJSON validation and replay never
//! panic, and never accept more than the limit.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runlog_service::archive;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if archive::is_gzip(data) {
        if let Ok(plain) = archive::gunzip_limited(data, LIMIT) {
            assert!(plain.len() as u64 <= LIMIT);
        }
    }
    let rows = archive::validate_ndjson(data);
    let replayed = archive::rows_with_pos(&Bytes::copy_from_slice(data));
    if let Ok(n) = rows {
        // Replay keeps only rows with a numeric pos: never more than were accepted.
        assert!(replayed.len() <= n, "{} > {n}", replayed.len());
        // What was accepted round-trips through the archive's own gzip.
        let gz = archive::gzip(data);
        assert_eq!(
            archive::gunzip_limited(&gz, data.len() as u64).expect("own gzip reads back"),
            data
        );
    }
    for row in replayed {
        assert!(!row.json.contains(&b'\n'));
    }
});
