//! Where a call's lines go: the function's output kept for `stdout` (bounded by bytes),
//! the observer that feeds a job's `stream` (masked), the tee that sends the call's
//! system lines to its live stream and observer, and the assembled `stdout`.

use crate::stage::WriterSink;
use livelog::mask::Masker;
use runlog_capture::StreamSink;
use std::collections::VecDeque;
use std::sync::Arc;

/// The function's output kept for the response: the last lines within `cap` bytes,
/// with a count of the earlier ones dropped, so a function printing without end cannot
/// exhaust the engine's memory.
#[derive(Debug)]
pub(crate) struct OutputRing {
    lines: VecDeque<String>,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    cap: usize,
    /// The call's live stream, which holds every line.
    log_key: Option<String>,
}

impl OutputRing {
    pub(crate) fn new(cap: usize, log_key: Option<String>) -> Self {
        OutputRing {
            lines: VecDeque::new(),
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            cap: cap.max(1),
            log_key,
        }
    }

    pub(crate) fn push(&mut self, line: String) {
        // A line counts its newline: the cap bounds the `stdout` text itself.
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.cap && self.lines.len() > 1 {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len() + 1;
            self.dropped_lines += 1;
            self.dropped_bytes += old.len() as u64 + 1;
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped_lines > 0 {
            let whole = match &self.log_key {
                Some(key) => format!("the live stream {key} holds them all"),
                None => "send log_key to keep every line in a live stream".to_owned(),
            };
            out.push(format!(
                "[runlog: {} earlier output lines ({} bytes) dropped past the {}-byte cap; {whole}]",
                self.dropped_lines, self.dropped_bytes, self.cap
            ));
        }
        out.extend(self.lines.iter().cloned());
        out
    }
}

/// Receives each line of a call as it arrives (must not block).
pub type LineObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// An observer that only ever sees lines with the call's secrets masked.
#[derive(Clone)]
pub(crate) struct MaskedObserver {
    pub(crate) f: LineObserver,
    pub(crate) masker: Masker,
}

impl MaskedObserver {
    pub(crate) fn observe(&self, line: &str) {
        if self.masker.is_active() {
            let mut line = line.to_owned();
            self.masker.mask(&mut line);
            (self.f)(&line);
        } else {
            (self.f)(line);
        }
    }
}

/// Forwards the call's system log lines into its live stream and its observer.
pub(crate) struct TeeSink {
    pub(crate) writer: Option<WriterSink>,
    pub(crate) observer: Option<MaskedObserver>,
}

impl StreamSink for TeeSink {
    fn forward(&self, level: &'static str, line: &str) {
        if let Some(w) = &self.writer {
            w.forward(level, line);
        }
        // The engine's section markers are for the log stream's reader; a job's
        // `stream` hands out what a call's `stdout` holds, which has none.
        if let Some(o) = &self.observer
            && runlog_protocol::sections::parse_marker(line).is_none()
        {
            o.observe(line);
        }
    }
}

/// The response's `stdout`: system lines, a blank line, the function's output.
pub fn assemble_stdout(system: &[String], output: &[String]) -> String {
    let len = system
        .iter()
        .chain(output)
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + 1;
    let mut s = String::with_capacity(len);
    for line in system {
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    for line in output {
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ring_keeps_the_last_bytes_and_names_the_stream_with_all() {
        let mut ring = OutputRing::new(14, Some("calls/x".into()));
        for n in 0..5 {
            ring.push(format!("line {n}"));
        }
        assert_eq!(
            ring.lines(),
            vec![
                "[runlog: 3 earlier output lines (21 bytes) dropped past the 14-byte cap; \
                 the live stream calls/x holds them all]",
                "line 3",
                "line 4"
            ]
        );
        let mut ring = OutputRing::new(1, None);
        ring.push("a line longer than the cap is kept whole".into());
        assert_eq!(ring.lines().len(), 1, "the last line always stays");
    }

    #[test]
    fn many_short_lines_under_the_cap_are_all_kept() {
        let mut ring = OutputRing::new(16 << 20, None);
        for n in 0..20_000 {
            ring.push(format!("line {n}"));
        }
        let lines = ring.lines();
        assert_eq!(lines.len(), 20_000);
        assert_eq!(lines[0], "line 0");
    }

    #[test]
    fn stdout_is_system_lines_blank_line_then_output() {
        let s = assemble_stdout(&["sys 1".into(), "sys 2".into()], &["out 1".into()]);
        assert_eq!(s, "sys 1\nsys 2\n\nout 1\n");
        assert_eq!(assemble_stdout(&[], &[]), "\n");
    }
}
