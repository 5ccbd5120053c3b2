//! `runlog logs`: print a stream's archive, or its live lines when not yet archived.

use crate::cmd::tail::{ColorMode, LinePrinter, print_archive};
use crate::connect::{ConnectArgs, archive_with_progress};
use runlog_client::{FollowOptions, ReadError};
use runlog_protocol::StreamKey;
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
    /// Colours: kept on a terminal, stripped on a pipe (auto), or forced.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    color: ColorMode,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    timestamps: bool,
}

/// Prints the archive; falls back to the live stream's stored lines.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let reader = args.service.reader()?;
    let account = &args.service.account()?;
    // Archives can be large: one big buffer, written in few syscalls.
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let printed = if args.json {
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
        let mut printer = LinePrinter::new(&mut out, args.color.escapes(), args.timestamps);
        print_archive(&reader, account, &args.key, 0, &mut printer).await
    };
    match printed {
        Ok(()) => {}
        Err(ReadError::NotFound(_)) => print_live(&args, &mut out).await?,
        Err(e) => return Err(e.into()),
    }
    out.flush()?;
    Ok(())
}

/// Prints the lines a live (not yet archived) stream holds now, without waiting
/// for new ones.
async fn print_live(args: &LogsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let reader = args.service.reader()?;
    let account = &args.service.account()?;
    let Some(info) = reader.info(account, &args.key).await? else {
        anyhow::bail!("no archive or stream {} in account {account}", args.key);
    };
    let mut opts = FollowOptions::default();
    if info.open {
        if info.lines == 0 {
            return Ok(());
        }
        opts.stop_at_pos = Some(info.lines - 1);
        opts.stop_when_idle = Some(SNAPSHOT_IDLE);
    }
    if args.json {
        reader
            .follow(account, &args.key, &opts, |line| {
                serde_json::to_writer(&mut *out, line).map_err(std::io::Error::other)?;
                out.write_all(b"\n")
            })
            .await?;
    } else {
        let mut printer = LinePrinter::new(&mut *out, args.color.escapes(), args.timestamps);
        reader
            .follow(account, &args.key, &opts, |line| {
                printer.print(&line.time, &line.out)
            })
            .await?;
    }
    Ok(())
}
