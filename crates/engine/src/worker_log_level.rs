//! `LOG_LEVEL`, the level variable of RunPod's worker, read beside runlog's own
//! `RUNLOG_LOG` so a worker's deployment settings keep their meaning on an engine.
//!
//! `RUNLOG_LOG` (a full filter directive) wins when both are set. `LOG_LEVEL` takes
//! Python's level names; `DEBUG` also selects the debug line format (target and
//! source location), as the worker switches format at that level. The level applies
//! to the console and, below `info`, to every call's system lines (captures take what
//! the console lets through below `info`).

use runlog_capture::{InitOptions, LogFormat};

/// The subscriber options for `log_level` (`LOG_LEVEL`), `runlog_log` (`RUNLOG_LOG`)
/// and a format given explicitly (`--log-format`, `RUNLOG_LOG_FORMAT`); an unknown
/// level is an error naming the accepted ones.
pub fn init_options(
    log_level: Option<&str>,
    runlog_log: Option<&str>,
    explicit_format: Option<LogFormat>,
) -> Result<InitOptions, String> {
    let runlog_log = runlog_log.filter(|v| !v.trim().is_empty());
    let level = match log_level.map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(match v.to_ascii_uppercase().as_str() {
            // Debug for runlog's own targets only: the HTTP stack's debug events
            // would bury the calls' lines.
            "DEBUG" | "TRACE" => ("info,runlog=debug", true),
            "INFO" => ("info", false),
            "WARN" | "WARNING" => ("warn", false),
            "ERROR" | "CRITICAL" | "FATAL" => ("error", false),
            _ => {
                let shown: String = v.chars().take(32).collect();
                return Err(format!(
                    "LOG_LEVEL {shown:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
                ));
            }
        }),
    };
    let filter = match (runlog_log, level) {
        (Some(directive), _) => Some(directive.to_owned()),
        (None, Some((directive, _))) => Some(directive.to_owned()),
        (None, None) => None,
    };
    let debug_format = level.is_some_and(|(_, debug)| debug);
    let format = explicit_format.unwrap_or(if debug_format {
        LogFormat::Debug
    } else {
        LogFormat::Production
    });
    Ok(InitOptions { format, filter })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(
        level: Option<&str>,
        runlog: Option<&str>,
        fmt: Option<LogFormat>,
    ) -> (LogFormat, Option<String>) {
        let o = init_options(level, runlog, fmt).expect("valid");
        (o.format, o.filter)
    }

    #[test]
    fn python_level_names_map_to_filters() {
        assert_eq!(opts(None, None, None), (LogFormat::Production, None));
        assert_eq!(
            opts(Some("WARNING"), None, None),
            (LogFormat::Production, Some("warn".into()))
        );
        assert_eq!(
            opts(Some("critical"), None, None),
            (LogFormat::Production, Some("error".into()))
        );
        assert_eq!(
            opts(Some("INFO"), None, None),
            (LogFormat::Production, Some("info".into()))
        );
    }

    #[test]
    fn debug_selects_the_debug_format_unless_one_is_given() {
        assert_eq!(
            opts(Some("DEBUG"), None, None),
            (LogFormat::Debug, Some("info,runlog=debug".into()))
        );
        assert_eq!(
            opts(Some("DEBUG"), None, Some(LogFormat::Production)),
            (LogFormat::Production, Some("info,runlog=debug".into()))
        );
    }

    #[test]
    fn runlog_log_wins_and_bad_levels_are_refused() {
        assert_eq!(
            opts(Some("ERROR"), Some("runlog=trace"), None),
            (LogFormat::Production, Some("runlog=trace".into()))
        );
        let err = init_options(Some("LOUD"), None, None).expect_err("unknown");
        assert!(err.contains("LOUD") && err.contains("WARNING"), "{err}");
    }
}
