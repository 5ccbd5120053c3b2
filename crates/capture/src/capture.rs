//! The per-request capture: a bounded ring of formatted lines bound to a span.

use crate::attach::insert_extension;
use crate::format::{LogFormat, format_event};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Entries a [`Capture`] keeps unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<String>,
    dropped: u64,
}

/// One request's log lines: a bounded ring (oldest dropped first, with a count).
///
/// Cloning shares the ring. Attach it to the request's span with [`Capture::attach`];
/// every event inside that span — in child spans and in tasks spawned with
/// `.instrument(span)` or `.in_current_span()` too — is recorded here and in no other
/// capture. An event inside nested captured spans goes to the innermost one only.
#[derive(Debug, Clone)]
pub struct Capture {
    ring: Arc<Mutex<Ring>>,
    capacity: usize,
}

impl Default for Capture {
    fn default() -> Self {
        Capture::new(DEFAULT_CAPACITY)
    }
}

/// Marker stored in span extensions; counted, so the layer skips the span walk
/// entirely while no capture is attached anywhere.
#[derive(Debug)]
struct Attached(Capture);

static ATTACHED: AtomicUsize = AtomicUsize::new(0);

impl Attached {
    fn new(capture: Capture) -> Self {
        ATTACHED.fetch_add(1, Ordering::Relaxed);
        Attached(capture)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        ATTACHED.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Capture {
    /// A capture that keeps the last `capacity` lines (at least one).
    pub fn new(capacity: usize) -> Self {
        Capture {
            ring: Arc::new(Mutex::new(Ring::default())),
            capacity: capacity.max(1),
        }
    }

    /// Binds this capture to `span`: events inside it are recorded here from now on.
    ///
    /// A no-op when the span is disabled or no runlog subscriber is installed.
    pub fn attach(&self, span: &tracing::Span) {
        insert_extension(span, Attached::new(self.clone()));
    }

    /// The recorded lines, oldest first. When lines were dropped, the first entry says
    /// how many (`"N earlier lines dropped"`).
    pub fn lines(&self) -> Vec<String> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(ring.lines.len() + 1);
        if ring.dropped > 0 {
            out.push(format!("{} earlier lines dropped", ring.dropped));
        }
        out.extend(ring.lines.iter().cloned());
        out
    }

    /// How many lines the bound has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped
    }

    /// The most lines kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records a line directly (used by the layer; also handy for a request's own notes).
    pub fn push(&self, line: String) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.lines.len() >= self.capacity {
            ring.lines.pop_front();
            ring.dropped += 1;
        }
        ring.lines.push_back(line);
    }
}

/// Layer that records events into the [`Capture`] of their innermost captured span.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureLayer {
    format: LogFormat,
}

impl CaptureLayer {
    /// A layer that renders captured lines in `format`.
    pub fn new(format: LogFormat) -> Self {
        CaptureLayer { format }
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Section markers are for a stream's reader, not a captured response (an
        // SDK prints a call's `stdout` as it is).
        if ATTACHED.load(Ordering::Relaxed) == 0
            || event.metadata().target() == crate::section::MARKER_TARGET
        {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let capture = span.extensions().get::<Attached>().map(|a| a.0.clone());
            if let Some(capture) = capture {
                capture.push(format_event(event, self.format));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let c = Capture::new(3);
        for i in 0..5 {
            c.push(format!("line {i}"));
        }
        assert_eq!(c.dropped(), 2);
        assert_eq!(
            c.lines(),
            vec!["2 earlier lines dropped", "line 2", "line 3", "line 4"]
        );
    }

    #[test]
    fn debug_format_adds_target_and_location() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(CaptureLayer::new(LogFormat::Debug));
        let capture = Capture::new(10);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "runlog::test", "request");
            capture.attach(&span);
            span.in_scope(|| tracing::error!(target: "runlog::test", "disk full"));
        });
        let lines = capture.lines();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        let rest = &line["2026-11-20T10:00:00.123Z".len()..];
        assert!(
            rest.starts_with(" | ERROR | runlog::test | crates/capture/src/capture.rs:"),
            "{line}"
        );
        assert!(rest.ends_with(" | disk full"), "{line}");
    }

    #[test]
    fn zero_capacity_still_keeps_the_last_line() {
        let c = Capture::new(0);
        c.push("a".into());
        c.push("b".into());
        assert_eq!(c.lines(), vec!["1 earlier lines dropped", "b"]);
    }
}
