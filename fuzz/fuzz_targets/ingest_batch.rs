//! The service's `PUT /stream` body parser: bad bodies are refused with an error,
//! accepted ones give lines that are one-row JSON objects carrying their own `pos`
//! (never above `MAX_POS`), its fast path (`compact::scan`) agrees with the general
//! parser, and parsing a body while it arrives (`Incremental`, in parts) answers what
//! parsing it whole answers.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
struct Pos {
    pos: u64,
    out: String,
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    // The fast path may only take a batch the general parser reads the same way.
    if let Some(fast) = runlog_service::ingest::compact::scan(data) {
        let general = runlog_service::ingest::parse_general(&body)
            .expect("the fast path accepted a batch the general parser refuses")
            .to_stored();
        assert_eq!(fast.len(), general.len());
        for (f, g) in fast.iter().zip(&general) {
            assert_eq!(f.pos, g.pos);
            assert_eq!(&data[f.span.clone()], &g.json[..]);
        }
    }
    let whole = runlog_service::ingest::parse_batch(&body);
    // Arrival in 13-byte chunks, parts of at least 7 bytes.
    let mut parts = runlog_service::ingest::Incremental::with_part_bytes(7);
    for end in (0..data.len()).step_by(13) {
        parts.feed(&data[..end]);
    }
    let parts = parts.finish(&body);
    match (&whole, &parts) {
        (Ok(w), Ok(p)) => {
            let (w, p) = (w.to_stored(), p.to_stored());
            assert_eq!(w.len(), p.len());
            for (a, b) in w.iter().zip(&p) {
                assert_eq!((a.pos, &a.json), (b.pos, &b.json));
            }
        }
        (Err(w), Err(p)) => assert_eq!(w.to_string(), p.to_string()),
        _ => panic!("parsing in parts disagrees with parsing whole"),
    }
    let Ok(batch) = whole else {
        return;
    };
    let lines = batch.to_stored();
    for line in &lines {
        // Stored JSON must fit one SSE `data:` field and one NDJSON row.
        assert!(
            !line.json.iter().any(|b| *b == b'\n' || *b == b'\r'),
            "stored line spans rows: {:?}",
            String::from_utf8_lossy(&line.json)
        );
        let parsed: Pos = serde_json::from_slice(&line.json).expect("stored line is a line");
        assert_eq!(parsed.pos, line.pos);
        assert!(line.pos <= runlog_protocol::MAX_POS, "pos {} stored", line.pos);
        let _ = parsed.out;
    }
});
