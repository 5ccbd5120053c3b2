//! `runlog`: one binary that starts every part of runlog and talks to them.
//!
//! This file only parses flags and dispatches; each subcommand lives in its own
//! module under `cmd/`, and the logic lives in the library crates.

mod cmd;

use clap::{Parser, Subcommand};

/// runlog — remote execution with centralized, live log streaming.
#[derive(Debug, Parser)]
#[command(name = "runlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
    }
}
