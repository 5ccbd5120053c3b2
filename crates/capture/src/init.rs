//! Installing the one subscriber of the process.

use crate::capture::CaptureLayer;
use crate::format::{LogFormat, RunlogEventFormat};
use crate::stream::{StreamLayer, StreamSink, StreamSlot};
use std::sync::{Arc, OnceLock};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter};
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};

/// Environment variable holding the level filter (`EnvFilter` syntax).
pub const FILTER_ENV: &str = "RUNLOG_LOG";

/// How [`init`] sets the subscriber up.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Line format for the console, captures and streams.
    pub format: LogFormat,
    /// Filter directive of the console; when `None`, `RUNLOG_LOG` is read, and `info`
    /// is the default. Captures and streams get `info` and above whatever it says
    /// (and what it lets through below that): a quiet console (`runlog run` shows
    /// errors only) must not empty the engine's log stream or a call's system logs.
    pub filter: Option<String>,
}

/// Access to the installed subscriber's process-wide stream slot.
#[derive(Debug, Clone)]
pub struct CaptureHandle {
    slot: StreamSlot,
    format: LogFormat,
}

impl CaptureHandle {
    /// Forwards every event not inside a span with its own sink to `sink`.
    pub fn set_stream(&self, sink: Arc<dyn StreamSink>) -> Option<Arc<dyn StreamSink>> {
        self.slot.set(sink)
    }

    /// Stops forwarding to the process-wide sink; returns it.
    pub fn clear_stream(&self) -> Option<Arc<dyn StreamSink>> {
        self.slot.clear()
    }

    /// The format the subscriber renders lines in.
    pub fn format(&self) -> LogFormat {
        self.format
    }
}

static GLOBAL: OnceLock<CaptureHandle> = OnceLock::new();

/// The handle of the installed subscriber, if [`init`] ran.
pub fn handle() -> Option<CaptureHandle> {
    GLOBAL.get().cloned()
}

/// Installs the process' subscriber: the filter, console output to stderr, the
/// [`CaptureLayer`](crate::CaptureLayer) and the [`StreamLayer`](crate::StreamLayer).
///
/// Idempotent: later calls return the first call's handle (tests in one process share
/// it). When another subscriber was installed first, the returned handle works but
/// nothing reaches its layers.
pub fn init(opts: InitOptions) -> CaptureHandle {
    GLOBAL
        .get_or_init(|| {
            let directive = opts
                .filter
                .clone()
                .or_else(|| std::env::var(FILTER_ENV).ok())
                .unwrap_or_else(|| "info".to_owned());
            let (used, bad) = match EnvFilter::try_new(&directive) {
                Ok(_) => (directive.clone(), None),
                Err(e) => ("info".to_owned(), Some(e)),
            };
            // Per layer, not for the whole subscriber: a span the console filters out
            // would be disabled for the capture and stream layers too, and a request's
            // capture or stream could not attach to it.
            let filter = || EnvFilter::new(&used);
            let slot = StreamSlot::default();
            let console = tracing_subscriber::fmt::layer()
                .event_format(RunlogEventFormat(opts.format))
                .with_writer(std::io::stderr)
                .with_filter(filter());
            let subscriber = tracing_subscriber::registry()
                .with(console)
                .with(CaptureLayer::new(opts.format).with_filter(LevelFilter::INFO.or(filter())))
                .with(
                    StreamLayer::new(slot.clone(), opts.format)
                        .with_filter(LevelFilter::INFO.or(filter())),
                );
            let _ = tracing::subscriber::set_global_default(subscriber);
            if let Some(e) = bad {
                tracing::warn!(target: "runlog::capture", "ignoring {FILTER_ENV}={directive:?} ({e}); using info");
            }
            CaptureHandle {
                slot,
                format: opts.format,
            }
        })
        .clone()
}
