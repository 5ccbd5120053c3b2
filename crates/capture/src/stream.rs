//! Forwarding events to a live log stream.
//!
//! The sink is found per event: the one attached to the innermost enclosing span
//! ([`attach_stream`]) wins, else the process-wide [`StreamSlot`]. Attaching to spans
//! lets several engines (or stages) share one process without mixing their logs.

use crate::attach::insert_extension;
use crate::format::{LogFormat, format_event, level_name};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Where forwarded events go, e.g. a `livelog::Writer`.
///
/// `forward` is called on the thread that logged the event, so it must not block: a
/// writer's non-blocking `try_write_line` is the intended implementation.
pub trait StreamSink: Send + Sync {
    /// Takes one rendered line (no trailing newline) and its level (`info`, `warn`, …).
    fn forward(&self, level: &'static str, line: &str);
}

/// Targets whose events are never forwarded: the stream's own delivery machinery. A
/// failing upload that logged into the stream it is uploading would feed itself.
const EXCLUDED_PREFIXES: [&str; 9] = [
    "livelog",
    "runlog::livelog",
    "reqwest",
    "hyper",
    "h2",
    "tower",
    "rustls",
    "want",
    "mio",
];

/// Whether events of `target` are kept out of live streams.
pub fn is_excluded_target(target: &str) -> bool {
    EXCLUDED_PREFIXES.iter().any(|p| {
        target.starts_with(p)
            && matches!(
                target.as_bytes().get(p.len()),
                None | Some(b':') | Some(b'_')
            )
    })
}

thread_local! {
    /// Set while this thread is inside `StreamSink::forward`: anything the sink logs is
    /// not forwarded again.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Sinks attached to spans anywhere in the process; lets the layer skip the span walk
/// entirely when there are none.
static SPAN_SINKS: AtomicUsize = AtomicUsize::new(0);

struct AttachedSink(Arc<dyn StreamSink>);

impl Drop for AttachedSink {
    fn drop(&mut self) {
        SPAN_SINKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Forwards events inside `span` (and its children, and tasks spawned under it) to `sink`.
/// Returns `false` when the span is disabled or no runlog subscriber is installed.
pub fn attach_stream(span: &tracing::Span, sink: Arc<dyn StreamSink>) -> bool {
    SPAN_SINKS.fetch_add(1, Ordering::Relaxed);
    // When insertion fails the value is dropped here, which undoes the count.
    insert_extension(span, AttachedSink(sink))
}

/// The process-wide stream: a settable slot, cheap to test when empty.
#[derive(Clone, Default)]
pub struct StreamSlot {
    inner: Arc<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    set: AtomicBool,
    sink: RwLock<Option<Arc<dyn StreamSink>>>,
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSlot")
            .field("set", &self.inner.set.load(Ordering::Relaxed))
            .finish()
    }
}

impl StreamSlot {
    /// Sets the sink; returns the previous one.
    pub fn set(&self, sink: Arc<dyn StreamSink>) -> Option<Arc<dyn StreamSink>> {
        self.replace(Some(sink))
    }

    /// Empties the slot; returns what it held.
    pub fn clear(&self) -> Option<Arc<dyn StreamSink>> {
        self.replace(None)
    }

    /// Puts `sink` in the slot, and the flag `get` reads first in step with it
    /// (under the lock, so a `set` and a `clear` at once cannot leave them apart).
    fn replace(&self, sink: Option<Arc<dyn StreamSink>>) -> Option<Arc<dyn StreamSink>> {
        let mut slot = self
            .inner
            .sink
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.set.store(sink.is_some(), Ordering::Release);
        std::mem::replace(&mut *slot, sink)
    }

    fn get(&self) -> Option<Arc<dyn StreamSink>> {
        if !self.inner.set.load(Ordering::Acquire) {
            return None;
        }
        self.inner
            .sink
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Layer that forwards events to the innermost span's sink, else to the slot's.
#[derive(Debug, Clone, Default)]
pub struct StreamLayer {
    slot: StreamSlot,
    format: LogFormat,
}

impl StreamLayer {
    /// A layer reading the process-wide sink from `slot`.
    pub fn new(slot: StreamSlot, format: LogFormat) -> Self {
        StreamLayer { slot, format }
    }

    fn sink_for<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Option<Arc<dyn StreamSink>>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if SPAN_SINKS.load(Ordering::Relaxed) > 0
            && let Some(scope) = ctx.event_scope(event)
        {
            for span in scope {
                if let Some(sink) = span.extensions().get::<AttachedSink>() {
                    return Some(sink.0.clone());
                }
            }
        }
        self.slot.get()
    }
}

impl<S> Layer<S> for StreamLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if FORWARDING.get() || is_excluded_target(event.metadata().target()) {
            return;
        }
        let Some(sink) = self.sink_for(event, &ctx) else {
            return;
        };
        let line = if event.metadata().target() == crate::section::MARKER_TARGET {
            crate::section::marker_line(event)
        } else {
            format_event(event, self.format)
        };
        FORWARDING.set(true);
        sink.forward(level_name(event.metadata().level()), &line);
        FORWARDING.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_targets_are_excluded_and_look_alikes_are_not() {
        for t in [
            "livelog",
            "livelog::writer",
            "runlog::livelog::flush",
            "hyper_util::client",
            "h2::codec",
            "tower_http::trace",
            "reqwest::connect",
        ] {
            assert!(is_excluded_target(t), "{t}");
        }
        for t in ["runlog::engine", "h2o", "towering", "runlog_engine::step"] {
            assert!(!is_excluded_target(t), "{t}");
        }
    }
}
