//! The wire line parser: any bytes either fail cleanly or give a line that
//! survives a serialise/parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runlog_protocol::LogLine;

fuzz_target!(|data: &[u8]| {
    // One line, as in an NDJSON archive row or an SSE `data:` field.
    if let Ok(line) = serde_json::from_slice::<LogLine>(data) {
        let again = serde_json::to_vec(&line).expect("a parsed line serialises");
        let back: LogLine = serde_json::from_slice(&again).expect("own output parses");
        assert_eq!(back, line);
    }
    // A whole `PUT /stream` batch as a client library would read it.
    if let Ok(batch) = serde_json::from_slice::<Vec<LogLine>>(data) {
        let again = serde_json::to_vec(&batch).expect("a parsed batch serialises");
        let back: Vec<LogLine> = serde_json::from_slice(&again).expect("own output parses");
        assert_eq!(back, batch);
    }
});
