//! `runlog ls`: the streams of an account.

use crate::connect::ConnectArgs;
use runlog_protocol::service::StreamInfo;
use std::io::Write;

/// Flags of `runlog ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    service: ConnectArgs,
    /// Print the list as JSON (the service's `StreamInfo` rows).
    #[arg(long)]
    json: bool,
}

/// Prints the account's streams, newest activity first.
pub async fn run(args: LsArgs) -> anyhow::Result<()> {
    let streams = args
        .service
        .reader()?
        .list_with_ledgers(&args.service.account()?)
        .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &streams)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &streams)?;
    }
    Ok(())
}

/// A plain, aligned table: readable on a terminal and easy to `awk` on a pipe.
fn write_table(out: &mut impl Write, streams: &[StreamInfo]) -> std::io::Result<()> {
    let width = streams
        .iter()
        .map(|s| s.key.as_str().len())
        .max()
        .unwrap_or(0)
        .max(3);
    writeln!(
        out,
        "{:<width$}  {:<8}  {:<10}  {:>10}  LAST ACTIVITY",
        "KEY", "STATE", "LEDGER", "LINES"
    )?;
    for s in streams {
        let state = match (s.open, s.archived) {
            (true, _) => "open",
            (false, true) => "archived",
            (false, false) => "closed",
        };
        // Only a stream closed through the service has a ledger; `-` otherwise.
        let ledger = match s.complete {
            Some(true) => "complete",
            Some(false) => "incomplete",
            None => "-",
        };
        writeln!(
            out,
            "{:<width$}  {:<8}  {:<10}  {:>10}  {}",
            s.key.as_str(),
            state,
            ledger,
            s.lines,
            s.last_activity
        )?;
    }
    Ok(())
}
