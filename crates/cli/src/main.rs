//! `runlog`: one binary that starts every part of runlog and talks to them.
//!
//! This file only parses flags and dispatches; each subcommand lives in its own
//! module under `cmd/`, and the logic lives in the library crates.

mod ansi;
mod cmd;
mod connect;
mod credentials;

use clap::{Parser, Subcommand};

/// mimalloc for the whole process (see `Cargo.toml` for the measurement).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// runlog — remote execution with centralized, live log streaming.
#[derive(Debug, Parser)]
#[command(name = "runlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Backfill a stream, then follow it until it closes.
    Tail(cmd::tail::TailArgs),
    /// Print a stream's archive (or its live lines when not yet archived).
    Logs(cmd::logs::LogsArgs),
    /// List the streams of an account.
    Ls(cmd::ls::LsArgs),
    /// Run the log service: live streams, archives, tokens, web viewer.
    Service(cmd::service::ServiceArgs),
    /// Mint an account token from the service's admin secret.
    Token(cmd::token::TokenArgs),
    /// Run the engine: stages, steps and functions, every log line streamed.
    Engine(cmd::engine::EngineArgs),
    /// Log service and engine in one process, data in ./runlog-data.
    Serve(cmd::serve::ServeArgs),
    /// Run a command as a step and show its output live from the log service.
    Run(cmd::run::RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Tail(args) => cmd::tail::run(args).await,
        Command::Logs(args) => cmd::logs::run(args).await,
        Command::Ls(args) => cmd::ls::run(args).await,
        Command::Service(args) => cmd::service::run(args).await,
        Command::Token(args) => cmd::token::run(args).await,
        Command::Engine(args) => cmd::engine::run(args).await,
        Command::Serve(args) => cmd::serve::run(args).await,
        Command::Run(args) => cmd::run::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated secrets and tokens are base64url, so one in 64 starts with `-`: such
    /// a value must still be read as the flag's value, not as another flag.
    #[test]
    fn secrets_and_tokens_may_start_with_a_hyphen() {
        for args in [
            &["runlog", "service", "--admin-secret", "-mJq2x"][..],
            &[
                "runlog",
                "token",
                "--admin-secret",
                "-mJq2x",
                "--account",
                "a",
            ],
            &["runlog", "tail", "--token", "-tok", "some/key"],
            &["runlog", "engine", "--token", "-tok"],
            &["runlog", "serve", "--engine-token", "-tok"],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
