//! The engine's counters, rendered in the Prometheus text format at `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one engine.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Stages set up.
    pub setups: AtomicU64,
    /// Stages destroyed.
    pub destroys: AtomicU64,
    /// Steps started.
    pub steps_started: AtomicU64,
    /// Steps that ended with exit code 0 and no error.
    pub steps_succeeded: AtomicU64,
    /// Steps that failed, timed out or were killed.
    pub steps_failed: AtomicU64,
    /// Requests refused (4xx) or failed (5xx).
    pub errors: AtomicU64,
    /// Requests refused before any handler as a browser's, or as reaching a
    /// token-less engine under a name it does not serve (`browser_guard`).
    pub refused_callers: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, steps_running: u64) -> String {
        let mut out = String::new();
        let counters = [
            ("runlog_engine_setups_total", "Stages set up.", &self.setups),
            (
                "runlog_engine_destroys_total",
                "Stages destroyed.",
                &self.destroys,
            ),
            (
                "runlog_engine_steps_started_total",
                "Steps started.",
                &self.steps_started,
            ),
            (
                "runlog_engine_steps_succeeded_total",
                "Steps that exited 0.",
                &self.steps_succeeded,
            ),
            (
                "runlog_engine_steps_failed_total",
                "Steps that failed, timed out or were killed.",
                &self.steps_failed,
            ),
            (
                "runlog_engine_request_errors_total",
                "Requests answered with an error.",
                &self.errors,
            ),
            (
                "runlog_engine_refused_callers_total",
                "Requests refused as a browser's or under a name the engine does not serve.",
                &self.refused_callers,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP runlog_engine_steps_running Steps running now.\n# TYPE runlog_engine_steps_running gauge\nrunlog_engine_steps_running {steps_running}"
        );
        out
    }
}
