//! `runlog tail`: backfill a stream, then follow it until it closes.

use super::stamp::{Stamper, TimeForm};
use crate::ansi::{Escapes, sanitize};
use crate::connect::{ConnectArgs, archive_with_progress};
use runlog_client::{FollowEnd, FollowOptions, ReadError, Reader};
use runlog_protocol::{AccountId, LogLine, StreamKey};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// When no line arrives for this long, a `--no-follow` read of an open stream
/// treats what it has as the snapshot (covers gaps the line count cannot see).
const SNAPSHOT_IDLE: Duration = Duration::from_secs(2);

/// Whether to keep colours in printed lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorMode {
    /// Keep colours when stdout is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always keep colours.
    Always,
    /// Never keep colours.
    Never,
}

impl ColorMode {
    /// What to keep of escape sequences on this stdout.
    pub fn escapes(self) -> Escapes {
        let keep = match self {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        if keep {
            Escapes::KeepColours
        } else {
            Escapes::StripAll
        }
    }
}

/// How `runlog tail` and `runlog logs` print a line: one definition of the flags,
/// flattened into both commands.
#[derive(Debug, Clone, clap::Args)]
pub struct PrintArgs {
    /// Colours: kept on a terminal, stripped on a pipe (auto), or forced.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    color: ColorMode,
    /// Prefix each line with its timestamp, as its writer sent it.
    #[arg(long)]
    timestamps: bool,
    /// Prefix each line with its time in this form: `utc`, `local` (the `TZ` zone),
    /// `since-start` (since the first line printed) or `delta` (since the line
    /// before).
    #[arg(long, value_enum, value_name = "FORM", conflicts_with = "timestamps")]
    time: Option<TimeForm>,
}

impl PrintArgs {
    /// A printer writing to `out` as these flags ask.
    pub fn printer<W: Write>(&self, out: W) -> LinePrinter<W> {
        LinePrinter::new(
            out,
            self.color.escapes(),
            Stamper::new(self.timestamps, self.time),
        )
    }
}

/// Flags of `runlog tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    service: ConnectArgs,
    /// Stream key.
    #[arg(required_unless_present = "job")]
    key: Option<StreamKey>,
    /// Follow the log of an engine job (RunPod's job API) by its id: the stream
    /// `jobs/<ID>` the engine writes when its stage names a log service.
    #[arg(long, value_name = "ID", conflicts_with = "key")]
    job: Option<String>,
    /// Print what is stored now and exit instead of following.
    #[arg(long)]
    no_follow: bool,
    /// First line to print (0-based `pos`).
    #[arg(long, default_value_t = 0)]
    since_line: u64,
    /// How the lines are printed, the same flags as `runlog logs`'s.
    #[command(flatten)]
    print: PrintArgs,
    /// Give up when the service stays unreachable this long (e.g. `30s`, `10m`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    reconnect_for: Duration,
    /// Wait up to this long for a stream that does not exist yet (e.g. a job that
    /// has not started) instead of failing at once.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
}

/// How often `--wait` asks whether the stream exists.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Polls the stream list until `key` appears or `limit` passes.
async fn wait_for_stream(
    reader: &Reader,
    account: &AccountId,
    key: &StreamKey,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if reader.info(account, key).await?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no stream {key} in account {account} after waiting {limit:?}");
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Prints lines as `runlog tail` and `runlog logs` show them.
pub struct LinePrinter<W: Write> {
    out: W,
    escapes: Escapes,
    stamps: Stamper,
}

impl<W: Write> LinePrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, escapes: Escapes, stamps: Stamper) -> Self {
        LinePrinter {
            out,
            escapes,
            stamps,
        }
    }

    /// Prints one line's text (with its timestamp when asked), ending in `\n`.
    pub fn print(&mut self, time: &str, text: &str) -> std::io::Result<()> {
        if let Some(stamp) = self.stamps.stamp(time) {
            write!(self.out, "{stamp} ")?;
        }
        let text = sanitize(text, self.escapes);
        self.out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Follows the stream (or prints its archive when the live stream is gone).
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let key = match (&args.key, &args.job) {
        (Some(key), _) => key.clone(),
        (None, Some(job)) => StreamKey::new(runlog_engine::jobs::job_log_key(job))
            .map_err(|e| anyhow::anyhow!("--job {job:?}: not a job id ({e})"))?,
        (None, None) => anyhow::bail!("give a stream key or --job ID"),
    };
    let reader = args.service.reader()?;
    let account = &args.service.account()?;
    if std::io::stderr().is_terminal() {
        // Without a token: the caller's token may be write-scoped, and links travel.
        let link = runlog_client::viewer_link(reader.base_url(), account, &key, None);
        eprintln!("runlog: following {key} · view in a browser: {link}");
    }
    // Stdout is line-buffered: each line reaches a terminal or a pipe as it arrives.
    let mut printer = args.print.printer(std::io::stdout().lock());
    if let Some(limit) = args.wait {
        wait_for_stream(&reader, account, &key, limit).await?;
    }
    let mut opts = FollowOptions {
        from_line: args.since_line,
        reconnect_for: args.reconnect_for,
        ..FollowOptions::default()
    };
    if args.no_follow {
        match reader.info(account, &key).await? {
            Some(info) if info.open => {
                if info.lines == 0 {
                    return Ok(());
                }
                opts.stop_at_pos = Some(info.lines - 1);
                opts.stop_when_idle = Some(SNAPSHOT_IDLE);
            }
            Some(_) => {}
            None => anyhow::bail!("no stream {key} in account {account}"),
        }
    }
    let mut next_line = args.since_line;
    let followed = reader
        .follow(account, &key, &opts, |line: &LogLine| {
            next_line = line.pos.saturating_add(1);
            printer.print(&line.time, &line.out)
        })
        .await;
    match followed {
        Ok(summary) => {
            tracing::debug!(?summary, "tail ended");
            if summary.end == FollowEnd::Idle && !args.no_follow {
                anyhow::bail!("the stream went quiet unexpectedly");
            }
            printer.flush()?;
            Ok(())
        }
        // The live lines are dropped once archived: the archive is the stream now.
        // Continue after what was printed, so no line appears twice.
        Err(ReadError::NotFound(_)) => {
            print_archive(&reader, account, &key, next_line..=u64::MAX, &mut printer).await?;
            printer.flush()?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints the archive's lines whose `pos` is in `lines`; used when a stream has no live lines.
pub async fn print_archive<W: Write>(
    reader: &Reader,
    account: &AccountId,
    key: &StreamKey,
    lines: std::ops::RangeInclusive<u64>,
    printer: &mut LinePrinter<W>,
) -> Result<(), ReadError> {
    let mut split = runlog_client::NdjsonSplitter::default();
    let mut malformed = 0u64;
    let mut on_row = |row: &[u8]| -> std::io::Result<()> {
        match serde_json::from_slice::<ArchiveRow<'_>>(row) {
            Ok(r) if lines.contains(&r.pos) => printer.print(&r.time, &r.out),
            Ok(_) => Ok(()),
            Err(_) => {
                malformed += 1;
                Ok(())
            }
        }
    };
    archive_with_progress(reader, account, key, |chunk| split.push(chunk, &mut on_row)).await?;
    split.finish(&mut on_row)?;
    if malformed > 0 {
        eprintln!("runlog: skipped {malformed} archive rows that are not log lines");
    }
    Ok(())
}

/// The fields of an archive row that printing needs, borrowed where the JSON has
/// no escapes, so printing a large archive does not allocate per line.
#[derive(serde::Deserialize)]
struct ArchiveRow<'a> {
    #[serde(default)]
    pos: u64,
    #[serde(borrow)]
    out: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    time: std::borrow::Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_carries_no_control_character_to_the_terminal() {
        let mut p = LinePrinter::new(Vec::new(), Escapes::KeepColours, Stamper::new(true, None));
        p.print("\x1b]52;c;ZXZpbA==\x07\u{9b}2J2026-11-20T10:00:00Z", "a\n")
            .expect("a Vec takes every write");
        let out = String::from_utf8(p.out).expect("UTF-8");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.ends_with("2026-11-20T10:00:00Z a\n"), "{out:?}");
    }
}
