//! `runlog logs`: print a stream's archive, or its live lines when not yet archived;
//! its sections (`--sections`), one section's lines (`--section NAME`), and its
//! completeness ledger (`--require-complete`).

use crate::cmd::tail::{PrintArgs, print_archive};
use crate::connect::{ConnectArgs, archive_with_progress};
use runlog_client::{FollowOptions, ReadError};
use runlog_protocol::StreamKey;
use runlog_protocol::ledger::{Incomplete, Ledger};
use runlog_protocol::sections::{Section, SectionsAnswer};
use std::io::{BufWriter, Write};
use std::time::Duration;

/// See `tail`'s `SNAPSHOT_IDLE`.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(2);

/// Flags of `runlog logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    service: ConnectArgs,
    /// Stream key.
    key: StreamKey,
    /// Print the NDJSON lines as stored instead of their text.
    #[arg(long)]
    json: bool,
    /// How the lines are printed, the same flags as `runlog tail`'s.
    #[command(flatten)]
    print: PrintArgs,
    /// Print the stream's sections (a table; JSON with `--json`) instead of its lines,
    /// then its completeness ledger when it is closed.
    #[arg(long, conflicts_with = "section")]
    sections: bool,
    /// Print only the lines of the first section with this name (or GitLab title).
    #[arg(long, value_name = "NAME")]
    section: Option<String>,
    /// Exit with status 3 when the stream's ledger does not say `complete` (or the
    /// stream has none yet), naming every reason on stderr.
    #[arg(long)]
    require_complete: bool,
}

/// Exit status of `--require-complete` for an incomplete (or unproven) log.
pub const INCOMPLETE_EXIT: i32 = 3;

/// Prints the archive; falls back to the live stream's stored lines.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let reader = args.service.reader()?;
    let account = &args.service.account()?;
    // Archives can be large: one big buffer, written in few syscalls.
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let index = if args.sections || args.section.is_some() || args.require_complete {
        Some(reader.sections(account, &args.key).await?)
    } else {
        None
    };
    if let Some(index) = index.as_ref().filter(|_| args.sections) {
        if args.json {
            serde_json::to_writer_pretty(&mut out, index)?;
            out.write_all(b"\n")?;
        } else {
            print_sections(&mut out, index)?;
        }
        out.flush()?;
        return require_complete(&args, index);
    }
    let lines = match (&args.section, &index) {
        (Some(name), Some(index)) => {
            let s = find_section(index, name)?;
            s.first_pos..=s.last_pos.unwrap_or(u64::MAX)
        }
        _ => 0..=u64::MAX,
    };
    let printed = if args.json && args.section.is_some() {
        let mut printer = JsonRows(&mut out);
        print_rows(&reader, account, &args.key, &lines, &mut printer).await
    } else if args.json {
        let mut last = b'\n';
        archive_with_progress(&reader, account, &args.key, |chunk| {
            if let Some(&b) = chunk.last() {
                last = b;
            }
            out.write_all(chunk)
        })
        .await
        .map(|_| {
            if last != b'\n' {
                // Keep the output NDJSON even if the archive lacks a final newline.
                let _ = out.write_all(b"\n");
            }
        })
    } else {
        let mut printer = args.print.printer(&mut out);
        print_archive(&reader, account, &args.key, lines.clone(), &mut printer).await
    };
    match printed {
        Ok(()) => {}
        Err(ReadError::NotFound(_)) => print_live(&args, &lines, &mut out).await?,
        Err(e) => return Err(e.into()),
    }
    out.flush()?;
    match &index {
        Some(index) => require_complete(&args, index),
        None => Ok(()),
    }
}

/// The section `--section NAME` names: the first whose name or title is `NAME`.
fn find_section<'a>(index: &'a SectionsAnswer, name: &str) -> anyhow::Result<&'a Section> {
    index
        .sections
        .iter()
        .find(|s| s.name == name || s.title.as_deref() == Some(name))
        .ok_or_else(|| {
            let names: Vec<&str> = index
                .sections
                .iter()
                .map(|s| s.name.as_str())
                .take(20)
                .collect();
            anyhow::anyhow!("no section named {name:?} (sections: {})", names.join(", "))
        })
}

/// The section table: one row per section, indented by depth.
fn print_sections(out: &mut impl Write, index: &SectionsAnswer) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<10} {:>9} {:>8} {:>17}  SECTION",
        "OUTCOME", "DURATION", "LINES", "POS"
    )?;
    for s in &index.sections {
        let outcome = s
            .outcome
            .map_or("open".to_owned(), |o| format!("{o:?}").to_lowercase());
        let duration = s
            .duration_ms
            .map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let lines = s.lines.map_or("-".to_owned(), |n| n.to_string());
        let pos = match s.last_pos {
            Some(last) => format!("{}-{last}", s.first_pos),
            None => format!("{}-", s.first_pos),
        };
        let indent = "  ".repeat(s.depth as usize);
        let name = crate::ansi::sanitize(&s.name, crate::ansi::Escapes::StripAll);
        writeln!(
            out,
            "{outcome:<10} {duration:>9} {lines:>8} {pos:>17}  {indent}{name}"
        )?;
    }
    if index.sections_dropped > 0 {
        writeln!(
            out,
            "({} more sections not indexed)",
            index.sections_dropped
        )?;
    }
    match &index.ledger {
        Some(ledger) => writeln!(out, "{}", ledger_summary(ledger)),
        None => writeln!(out, "ledger: the stream is still open"),
    }
}

/// One line saying what the ledger proves.
fn ledger_summary(l: &Ledger) -> String {
    let span = match (l.first_pos, l.last_pos) {
        (Some(a), Some(b)) => format!("lines {a}-{b}"),
        _ => "no lines".to_owned(),
    };
    let basis = match l.basis {
        runlog_protocol::ledger::Basis::WriterTotals => "checked against the writer's totals",
        runlog_protocol::ledger::Basis::Contiguity => {
            "contiguity only (the writer stated no totals)"
        }
    };
    if l.complete {
        return format!("ledger: complete, {span}, no gap; {basis}");
    }
    let reasons: Vec<String> = l.reasons.iter().map(reason).collect();
    format!(
        "ledger: INCOMPLETE ({span}; {basis}): {}",
        reasons.join("; ")
    )
}

fn reason(r: &Incomplete) -> String {
    match r {
        Incomplete::Gap { from, to } => format!("lines {from}-{to} missing"),
        Incomplete::Dropped { lines, at } => {
            format!("{lines} lines dropped by the writer (markers at {at:?})")
        }
        Incomplete::NeverClosed => "the writer never closed the stream".to_owned(),
        Incomplete::Lines { stated, held } => format!("writer stated {stated} lines, {held} held"),
        Incomplete::Bytes { stated, held } => format!("writer stated {stated} bytes, {held} held"),
        Incomplete::Digest { stated, held } => {
            format!("digest differs (stated {stated}, held {held})")
        }
    }
}

/// With `--require-complete`, an error (exit [`INCOMPLETE_EXIT`]) unless complete.
fn require_complete(args: &LogsArgs, index: &SectionsAnswer) -> anyhow::Result<()> {
    if !args.require_complete {
        return Ok(());
    }
    match &index.ledger {
        Some(l) if l.complete => Ok(()),
        Some(l) => {
            eprintln!("runlog: {}", ledger_summary(l));
            std::process::exit(INCOMPLETE_EXIT)
        }
        None => {
            eprintln!("runlog: the stream is still open; its ledger is made at close");
            std::process::exit(INCOMPLETE_EXIT)
        }
    }
}

/// `--json --section`: archive rows printed as stored.
struct JsonRows<'a, W: Write>(&'a mut W);

/// Prints the archive rows whose `pos` is in `lines`, as stored.
async fn print_rows<W: Write>(
    reader: &runlog_client::Reader,
    account: &runlog_protocol::AccountId,
    key: &StreamKey,
    lines: &std::ops::RangeInclusive<u64>,
    printer: &mut JsonRows<'_, W>,
) -> Result<(), ReadError> {
    #[derive(serde::Deserialize)]
    struct Pos {
        pos: u64,
    }
    let mut split = runlog_client::NdjsonSplitter::default();
    let mut on_row = |row: &[u8]| -> std::io::Result<()> {
        match serde_json::from_slice::<Pos>(row) {
            Ok(r) if lines.contains(&r.pos) => {
                printer.0.write_all(row)?;
                printer.0.write_all(b"\n")
            }
            _ => Ok(()),
        }
    };
    reader
        .archive(account, key, |_| {}, |chunk| split.push(chunk, &mut on_row))
        .await?;
    split.finish(&mut on_row)?;
    Ok(())
}

/// Prints the lines a live (not yet archived) stream holds now, without waiting
/// for new ones.
async fn print_live(
    args: &LogsArgs,
    lines: &std::ops::RangeInclusive<u64>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let reader = args.service.reader()?;
    let account = &args.service.account()?;
    let Some(info) = reader.info(account, &args.key).await? else {
        anyhow::bail!("no archive or stream {} in account {account}", args.key);
    };
    let mut opts = FollowOptions {
        from_line: *lines.start(),
        ..FollowOptions::default()
    };
    if info.open {
        if info.lines == 0 {
            return Ok(());
        }
        opts.stop_at_pos = Some(info.lines - 1);
        opts.stop_when_idle = Some(SNAPSHOT_IDLE);
    }
    if *lines.end() != u64::MAX {
        opts.stop_at_pos = Some(
            opts.stop_at_pos
                .map_or(*lines.end(), |p| p.min(*lines.end())),
        );
    }
    if args.json {
        reader
            .follow(account, &args.key, &opts, |line| {
                if !lines.contains(&line.pos) {
                    return Ok(());
                }
                serde_json::to_writer(&mut *out, line).map_err(std::io::Error::other)?;
                out.write_all(b"\n")
            })
            .await?;
    } else {
        let mut printer = args.print.printer(&mut *out);
        reader
            .follow(account, &args.key, &opts, |line| {
                if !lines.contains(&line.pos) {
                    return Ok(());
                }
                printer.print(&line.time, &line.out)
            })
            .await?;
    }
    Ok(())
}
