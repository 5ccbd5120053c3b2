//! Counters for `/metrics`, kept in atomics and rendered as Prometheus text.
//!
//! Hand-rolled on purpose: a dozen atomics and one `format!` are lighter than an
//! exporter crate with its own registry.

use axum::http::StatusCode;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Error kinds counted by `/metrics`, by status.
const ERROR_KINDS: [(u16, &str); 9] = [
    (400, "bad_request"),
    (401, "unauthorized"),
    (403, "forbidden"),
    (404, "not_found"),
    (409, "conflict"),
    (413, "too_large"),
    (429, "too_many_requests"),
    (500, "internal"),
    (503, "unavailable"),
];

/// Service counters. Cheap to clone (shared).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Lines stored by `PUT /stream` (duplicates excluded).
    pub lines_in: AtomicU64,
    /// Request body bytes received by `PUT /stream`.
    pub bytes_in: AtomicU64,
    /// Duplicate lines ignored.
    pub duplicate_lines: AtomicU64,
    /// SSE subscribers connected now.
    pub subscribers: AtomicI64,
    /// Archives written.
    pub archives_written: AtomicU64,
    /// Of those, archives a client uploaded (`POST /blob`, a signed link's `PUT`); the
    /// rest the service built from its own lines. A writer that closes with its totals
    /// uploads only when the service could not prove it holds every line, so this
    /// counts those fallbacks.
    pub archives_uploaded: AtomicU64,
    /// Streams expired by the sweep.
    pub streams_expired: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    other_errors: AtomicU64,
}

impl Metrics {
    /// Counts an error answer by its status.
    pub fn count_error(&self, status: StatusCode) {
        match ERROR_KINDS
            .iter()
            .position(|(code, _)| *code == status.as_u16())
        {
            Some(i) => self.errors[i].fetch_add(1, Ordering::Relaxed),
            None => self.other_errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Errors answered so far with `status`.
    pub fn errors(&self, status: StatusCode) -> u64 {
        ERROR_KINDS
            .iter()
            .position(|(code, _)| *code == status.as_u16())
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Prometheus text exposition; `streams_open` comes from the store and
    /// `body_bytes_in_flight` from the body budget.
    pub fn render(&self, streams_open: u64, body_bytes_in_flight: usize) -> String {
        let mut s = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "runlog_streams_open",
            "gauge",
            "Live streams open now.",
            streams_open.to_string(),
        );
        metric(
            "runlog_body_bytes_in_flight",
            "gauge",
            "Bytes of request bodies reserved by requests being read now.",
            body_bytes_in_flight.to_string(),
        );
        metric(
            "runlog_lines_in_total",
            "counter",
            "Lines stored by PUT /stream.",
            load(&self.lines_in),
        );
        metric(
            "runlog_bytes_in_total",
            "counter",
            "Body bytes received by PUT /stream.",
            load(&self.bytes_in),
        );
        metric(
            "runlog_duplicate_lines_total",
            "counter",
            "Lines ignored because their pos was stored.",
            load(&self.duplicate_lines),
        );
        metric(
            "runlog_subscribers",
            "gauge",
            "SSE subscribers connected now.",
            self.subscribers.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "runlog_archives_written_total",
            "counter",
            "Archives written.",
            load(&self.archives_written),
        );
        metric(
            "runlog_archives_uploaded_total",
            "counter",
            "Archives uploaded by a client rather than built from the stored lines.",
            load(&self.archives_uploaded),
        );
        metric(
            "runlog_streams_expired_total",
            "counter",
            "Idle or retained streams removed by the sweep.",
            load(&self.streams_expired),
        );
        let _ = writeln!(
            s,
            "# HELP runlog_errors_total Error answers by kind.\n# TYPE runlog_errors_total counter"
        );
        for (i, (_, kind)) in ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                s,
                "runlog_errors_total{{kind=\"{kind}\"}} {}",
                self.errors[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "runlog_errors_total{{kind=\"other\"}} {}",
            load(&self.other_errors)
        );
        s
    }
}

fn load(a: &AtomicU64) -> String {
    a.load(Ordering::Relaxed).to_string()
}

/// Decrements the subscriber gauge when an SSE response ends (or is dropped).
#[derive(Debug)]
pub struct SubscriberGuard(Arc<Metrics>);

impl SubscriberGuard {
    /// Counts one subscriber until dropped.
    pub fn new(m: Arc<Metrics>) -> Self {
        m.subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(m)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
