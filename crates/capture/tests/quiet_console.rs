#![allow(clippy::unwrap_used)]
//! A console filter stricter than `info` (what `runlog run` sets) under the real
//! process-wide subscriber: captures and streams still get `info` and above. A file
//! of its own: the subscriber is installed once per process.

use runlog_capture::{Capture, InitOptions, LogFormat, StreamSink, attach_stream, init};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl StreamSink for Collect {
    fn forward(&self, _level: &'static str, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
}

#[test]
fn a_console_showing_errors_only_leaves_captures_and_streams_their_info_events() {
    init(InitOptions {
        format: LogFormat::Production,
        filter: Some("error".into()),
    });
    let capture = Capture::new(100);
    let sink = Arc::new(Collect::default());
    let span = tracing::info_span!(target: "runlog::test", "request");
    capture.attach(&span);
    attach_stream(&span, sink.clone());
    span.in_scope(|| {
        tracing::info!(target: "runlog::test", "an info event");
        tracing::debug!(target: "runlog::test", "a debug event");
    });
    let captured = capture.lines();
    assert_eq!(captured.len(), 1, "{captured:?}");
    assert!(captured[0].contains("an info event"), "{captured:?}");
    let streamed = sink.0.lock().unwrap().clone();
    assert_eq!(streamed.len(), 1, "{streamed:?}");
    assert!(streamed[0].contains("an info event"), "{streamed:?}");
}
