//! The runlog line format, shared by the console, the capture ring and the live stream
//! so that a line reads the same wherever it is seen.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level};

/// How an event is rendered.
///
/// - `Production`: `2026-11-20T10:00:00.123Z | INFO  | message key=value`
/// - `Debug`: `2026-11-20T10:00:00.123Z | INFO  | target | file:line | message key=value`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Time, level and message.
    #[default]
    Production,
    /// Adds the event's target and source location.
    Debug,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "production" | "prod" => Ok(LogFormat::Production),
            "debug" => Ok(LogFormat::Debug),
            other => Err(format!(
                "unknown log format {other:?}; expected production or debug"
            )),
        }
    }
}

/// The level as a fixed-width word, so messages line up in a terminal.
pub(crate) fn level_word(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN ",
        Level::INFO => "INFO ",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The lowercase level name used on the wire (`LogLine::level`).
pub(crate) fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Renders one event as a single line (no trailing newline) stamped with the current time.
pub fn format_event(event: &Event<'_>, format: LogFormat) -> String {
    let meta = event.metadata();
    let mut out = String::with_capacity(96);
    out.push_str(&runlog_protocol::now_rfc3339());
    out.push_str(" | ");
    out.push_str(level_word(meta.level()));
    out.push_str(" | ");
    if format == LogFormat::Debug {
        let _ = write!(
            out,
            "{} | {}:{} | ",
            meta.target(),
            meta.file().unwrap_or("?"),
            meta.line().unwrap_or(0)
        );
    }
    let mut visitor = MessageVisitor {
        out: &mut out,
        wrote_message: false,
        wrote_any: false,
    };
    event.record(&mut visitor);
    out
}

/// Writes the `message` field first as plain text, every other field as `key=value`.
struct MessageVisitor<'a> {
    out: &'a mut String,
    wrote_message: bool,
    wrote_any: bool,
}

impl MessageVisitor<'_> {
    fn separator(&mut self) {
        if self.wrote_any {
            self.out.push(' ');
        }
        self.wrote_any = true;
    }
}

impl Visit for MessageVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && !self.wrote_message {
            self.wrote_message = true;
            self.separator();
            self.out.push_str(value);
        } else {
            self.separator();
            let _ = write!(self.out, "{}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.separator();
        if field.name() == "message" && !self.wrote_message {
            self.wrote_message = true;
            let _ = write!(self.out, "{value:?}");
        } else {
            let _ = write!(self.out, "{}={:?}", field.name(), value);
        }
    }
}

/// Adapter so the console output of `tracing_subscriber::fmt` uses the same format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunlogEventFormat(pub LogFormat);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for RunlogEventFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        writeln!(writer, "{}", format_event(event, self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_words_are_five_wide() {
        for l in [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ] {
            assert_eq!(level_word(&l).len(), 5);
        }
    }

    #[test]
    fn format_names_parse() {
        assert_eq!("debug".parse::<LogFormat>(), Ok(LogFormat::Debug));
        assert_eq!("production".parse::<LogFormat>(), Ok(LogFormat::Production));
        assert!("loud".parse::<LogFormat>().is_err());
    }
}
