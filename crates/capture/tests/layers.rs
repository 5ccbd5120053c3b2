#![allow(clippy::unwrap_used)]
//! The capture and stream layers under the real process-wide subscriber.

use runlog_capture::{Capture, InitOptions, LogFormat, StreamSink, attach_stream, init};
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

fn subscriber() -> runlog_capture::CaptureHandle {
    init(InitOptions {
        format: LogFormat::Production,
        filter: Some("debug".into()),
    })
}

#[derive(Default)]
struct Collect(Mutex<Vec<(String, String)>>);

impl StreamSink for Collect {
    fn forward(&self, level: &'static str, line: &str) {
        // A sink that logs must not see its own event again (re-entrancy guard).
        tracing::info!(target: "runlog::test", "sink saw a line");
        self.0
            .lock()
            .unwrap()
            .push((level.to_owned(), line.to_owned()));
    }
}

impl Collect {
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_capture_only_their_own_events_including_spawned_tasks() {
    subscriber();
    let mut handles = Vec::new();
    let mut captures = Vec::new();
    for req in 0..2 {
        let capture = Capture::new(1000);
        let span = tracing::info_span!(target: "runlog::test", "request", req);
        capture.attach(&span);
        captures.push(capture);
        handles.push(tokio::spawn(
            async move {
                for i in 0..50 {
                    tracing::info!(target: "runlog::test", "req {req} line {i}");
                    tokio::task::yield_now().await;
                }
                // A task spawned under the request's span belongs to it too.
                tokio::spawn(
                        async move {
                            tracing::warn!(target: "runlog::test", "req {req} from spawned task")
                        }
                        .in_current_span(),
                    )
                    .await
                    .unwrap();
                let child = tracing::debug_span!(target: "runlog::test", "child");
                child.in_scope(
                    || tracing::debug!(target: "runlog::test", "req {req} in child span"),
                );
            }
            .instrument(span),
        ));
    }
    tracing::info!(target: "runlog::test", "outside every request");
    for h in handles {
        h.await.unwrap();
    }
    for (req, capture) in captures.iter().enumerate() {
        let lines = capture.lines();
        assert_eq!(lines.len(), 52, "{lines:#?}");
        let other = 1 - req;
        assert!(
            lines.iter().all(|l| l.contains(&format!("req {req} "))),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains(&format!("req {other} "))));
        assert!(!lines.iter().any(|l| l.contains("outside")));
        for (i, line) in lines.iter().take(50).enumerate() {
            assert!(
                line.ends_with(&format!("| INFO  | req {req} line {i}")),
                "{line}"
            );
        }
        assert!(lines[50].contains("| WARN  | req ") && lines[50].ends_with("from spawned task"));
        assert!(lines[51].contains("| DEBUG | "));
    }
}

#[test]
fn a_full_ring_drops_the_oldest_and_says_how_many() {
    subscriber();
    let capture = Capture::new(10);
    let span = tracing::info_span!(target: "runlog::test", "request");
    capture.attach(&span);
    span.in_scope(|| {
        for i in 0..25 {
            tracing::info!(target: "runlog::test", i, "event");
        }
    });
    let lines = capture.lines();
    assert_eq!(capture.dropped(), 15);
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[0], "15 earlier lines dropped");
    assert!(lines[1].ends_with("| INFO  | event i=15"), "{}", lines[1]);
    assert!(lines[10].ends_with("| INFO  | event i=24"), "{}", lines[10]);
}

#[test]
fn production_lines_have_utc_millisecond_time_and_padded_level() {
    subscriber();
    let capture = Capture::new(10);
    let span = tracing::info_span!(target: "runlog::test", "request");
    capture.attach(&span);
    span.in_scope(|| tracing::warn!(target: "runlog::test", user = "ann", "low disk"));
    let line = &capture.lines()[0];
    // 2026-11-20T10:00:00.123Z | WARN  | low disk user="ann"
    let (time, rest) = line.split_at(24);
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{line}");
    assert_eq!(rest, " | WARN  | low disk user=\"ann\"");
}

#[test]
fn span_sinks_receive_their_events_without_feedback_or_delivery_noise() {
    subscriber();
    let a = Arc::new(Collect::default());
    let b = Arc::new(Collect::default());
    let span_a = tracing::info_span!(target: "runlog::test", "stage-a");
    let span_b = tracing::info_span!(target: "runlog::test", "stage-b");
    assert!(attach_stream(&span_a, a.clone()));
    assert!(attach_stream(&span_b, b.clone()));
    span_a.in_scope(|| {
        tracing::info!(target: "runlog::test", "creating workspace");
        tracing::warn!(target: "livelog::flush", "retrying batch");
        tracing::warn!(target: "hyper_util::client", "connection reset");
        tracing::error!(target: "runlog::test", "install failed");
    });
    span_b.in_scope(|| tracing::info!(target: "runlog::test", "stage b only"));
    let got = a.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "info");
    assert!(got[0].1.ends_with("creating workspace"));
    assert_eq!(got[1].0, "error");
    assert!(got[1].1.ends_with("install failed"));
    assert_eq!(b.lines().len(), 1);
    assert!(b.lines()[0].ends_with("stage b only"));
}

#[test]
fn the_process_wide_slot_forwards_until_cleared() {
    let handle = subscriber();
    let sink = Arc::new(Collect::default());
    tracing::info!(target: "runlog::test", "before");
    assert!(handle.set_stream(sink.clone()).is_none());
    tracing::info!(target: "runlog::test", "during");
    assert!(handle.clear_stream().is_some());
    tracing::info!(target: "runlog::test", "after");
    let lines = sink.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].ends_with("during"));
}
