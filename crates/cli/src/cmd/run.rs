//! `runlog run -- CMD ARGS…`: set up a stage, run CMD as a step, show its output live
//! from the log service (not from a local pipe), destroy, exit with CMD's exit code.

use super::serve::{Stack, StackOptions};
use super::tail::{ColorMode, LinePrinter};
use crate::connect::read_token_for_link;
use crate::credentials::{AccountToken, AdminSecret, EngineToken};
use anyhow::{Context as _, bail};
use clap::Args;
use runlog_client::{EngineClient, FollowOptions, ReadError, Reader, viewer_link};
use runlog_engine::EngineConfig;
use runlog_protocol::engine::{LogConfig, SetupRequest, StepCommand, StepRequest, StepResponse};
use runlog_protocol::{AccountId, StreamKey};
use std::io::IsTerminal as _;
use std::time::Duration;

/// How long the step's stream may take to appear once the step started.
const STREAM_APPEAR: Duration = Duration::from_secs(15);

/// Flags of `runlog run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Engine to run on; without it a log service and an engine start in this process.
    #[arg(long, env = "RUNLOG_ENGINE")]
    pub engine: Option<String>,
    /// Token of the engine.
    #[command(flatten)]
    pub engine_auth: EngineToken,
    /// Log service the engine streams to (with --engine).
    #[arg(long, env = "RUNLOG_URL", default_value = "http://127.0.0.1:8079")]
    pub service_url: String,
    /// Write token of the account (with --engine).
    #[command(flatten)]
    pub auth: AccountToken,
    /// Account of the streams.
    #[arg(long, env = "RUNLOG_ACCOUNT", default_value = "default")]
    pub account: AccountId,
    /// Stream key of the command's output (the engine's own log goes to KEY.engine).
    #[arg(long)]
    pub key: Option<StreamKey>,
    /// Time limit of the command (e.g. `10m`); its whole process group is killed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Colours: kept on a terminal, stripped on a pipe (auto), or forced.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    /// The log service's admin secret, used only for the viewer link's read token.
    #[command(flatten)]
    pub admin: AdminSecret,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// The id of the one step a run makes.
const STEP_ID: &str = "run";

/// The exit code of an interrupted run, as a shell reports a command ended by SIGINT.
const INTERRUPTED: i32 = 130;

/// Where the run happens: a remote engine, or one started here.
struct Target {
    engine_url: String,
    engine_token: Option<String>,
    service_url: String,
    token: String,
    account: AccountId,
    stack: Option<(Stack, tempfile::TempDir)>,
}

/// Runs the command and exits the process with its exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // The engine's own console logs would mix with the command's output, and its
    // warnings (a failed step) are repeated by this command: errors only.
    runlog_capture::init(runlog_capture::InitOptions {
        filter: Some(std::env::var("RUNLOG_LOG").unwrap_or_else(|_| "error".into())),
        ..Default::default()
    });
    let code = execute(args).await?;
    std::process::exit(code);
}

/// Sets up, runs, follows and destroys; returns the command's exit code.
pub async fn execute(args: RunArgs) -> anyhow::Result<i32> {
    // Listened to from the start: a Ctrl-C while the embedded stack starts or the
    // stage is set up must still clean up (the default action would kill the process
    // and leave the embedded data directory behind).
    let interrupted = super::service::shutdown_signal();
    tokio::pin!(interrupted);
    let target = tokio::select! {
        t = target(&args) => t?,
        () = &mut interrupted => return Ok(INTERRUPTED),
    };
    let key = match &args.key {
        Some(k) => k.clone(),
        None => StreamKey::new(default_key())?,
    };
    let engine_key = StreamKey::new(format!("{key}.engine"))?;
    let engine = EngineClient::new(&target.engine_url, target.engine_token.clone());
    let setup_request = SetupRequest {
        le_log_key: Some(engine_key.to_string()),
        log_config: LogConfig {
            url: target.service_url.clone(),
            account_id: target.account.to_string(),
            token: target.token.clone(),
            indirect_upload: true,
            ..LogConfig::default()
        },
        ..SetupRequest::default()
    };
    let setup = engine.setup(&setup_request);
    tokio::select! {
        r = setup => drop(r?),
        () = &mut interrupted => {
            match target.stack {
                // Stopping the embedded engine destroys whatever stage it set up.
                Some((stack, _dir)) => stack.shutdown().await?,
                // A shared engine's stage may be another controller's (ours may still
                // be waiting for it): not destroyed blindly.
                None => eprintln!(
                    "runlog: interrupted during setup; if it went through, /destroy the stage on {}",
                    target.engine_url
                ),
            }
            return Ok(INTERRUPTED);
        }
    }
    let step = StepRequest {
        id: STEP_ID.to_owned(),
        command: Some(StepCommand::Argv(args.command.clone())),
        log_key: Some(key.to_string()),
        timeout: args.timeout.map(|t| t.as_secs().max(1)),
        // Embedded: the command runs where the caller is.
        working_dir: match target.stack {
            Some(_) => Some(std::env::current_dir()?.display().to_string()),
            None => None,
        },
        ..StepRequest::default()
    };
    let outcome = async {
        engine.start_step(&step).await?;
        let read_token = match (&target.stack, &args.admin.admin_secret) {
            (Some((stack, _)), _) => Some(stack.read_token.clone()),
            (None, Some(secret)) => {
                read_token_for_link(secret, &target.account, Duration::from_secs(24 * 3600))
            }
            (None, None) => None,
        };
        let link = viewer_link(
            &target.service_url,
            &target.account,
            &key,
            read_token.as_deref(),
        );
        eprintln!("runlog: live view of {key}: {link}");
        let reader = Reader::new(&target.service_url, Some(target.token.clone()))?;
        let follow = follow(&reader, &target.account, &key, args.color);
        let poll = engine.poll_step(STEP_ID);
        let (followed, result) = tokio::join!(follow, poll);
        if let Err(e) = followed {
            eprintln!("runlog: could not show the output live: {e}");
        }
        Ok::<_, anyhow::Error>(result?)
    };
    // `None`: interrupted (Ctrl-C, SIGTERM); the stage is destroyed all the same.
    let outcome = tokio::select! {
        r = outcome => Some(r),
        () = &mut interrupted => None,
    };
    // Destroy flushes and uploads every archive, which takes a while for a long log:
    // say so on a terminal (and print nothing on a pipe).
    let spinner = if std::io::stderr().is_terminal() {
        let s = indicatif::ProgressBar::new_spinner().with_message("archiving logs…");
        s.enable_steady_tick(Duration::from_millis(100));
        s
    } else {
        indicatif::ProgressBar::hidden()
    };
    // A second Ctrl-C (or SIGTERM) gives up on an engine that does not answer.
    let destroyed = tokio::select! {
        r = engine.destroy() => r,
        () = super::service::shutdown_signal() => {
            spinner.finish_and_clear();
            eprintln!("runlog: interrupted again; the stage was not destroyed");
            return Ok(INTERRUPTED);
        }
    };
    spinner.finish_and_clear();
    if let Some((stack, _dir)) = target.stack {
        stack.shutdown().await?;
    }
    if let Err(e) = destroyed {
        eprintln!("runlog: destroy failed: {e}");
    }
    let Some(result) = outcome else {
        eprintln!("runlog: interrupted; the command was stopped");
        return Ok(INTERRUPTED);
    };
    let result = result?;
    if let Some(e) = &result.error {
        eprintln!("runlog: {e}");
    }
    Ok(exit_code(&result))
}

/// The exit code `run` ends with for a step's result: the command's own, except that
/// a step the engine stopped (its timeout) never reports success, whatever the
/// command answered to SIGTERM: 124 then, as `timeout(1)` exits.
fn exit_code(result: &StepResponse) -> i32 {
    match (&result.error, result.exit_code) {
        (Some(_), 0) => 124,
        (_, code) => code,
    }
}

/// Prints the step's stream from the service until it closes.
async fn follow(
    reader: &Reader,
    account: &AccountId,
    key: &StreamKey,
    color: ColorMode,
) -> anyhow::Result<()> {
    let mut printer = LinePrinter::new(
        std::io::stdout().lock(),
        color.escapes(),
        super::stamp::Stamper::new(false, None),
    );
    let deadline = tokio::time::Instant::now() + STREAM_APPEAR;
    let mut from_line = 0;
    loop {
        let opts = FollowOptions {
            from_line,
            ..FollowOptions::default()
        };
        let result = reader
            .follow(account, key, &opts, |line| {
                from_line = line.pos.saturating_add(1);
                printer.print(&line.time, &line.out)
            })
            .await;
        match result {
            Ok(_) => break,
            // The engine opens the stream in the background: it may not exist yet.
            Err(ReadError::NotFound(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    printer.flush()?;
    Ok(())
}

async fn target(args: &RunArgs) -> anyhow::Result<Target> {
    if let Some(engine) = &args.engine {
        let Some(token) = args.auth.token.clone() else {
            bail!("--engine needs --token (a write token of --account for the log service)");
        };
        return Ok(Target {
            engine_url: engine.trim_end_matches('/').to_owned(),
            engine_token: args.engine_auth.engine_token.clone(),
            service_url: args.service_url.trim_end_matches('/').to_owned(),
            token,
            account: args.account.clone(),
            stack: None,
        });
    }
    let dir = tempfile::tempdir().context("creating a data directory")?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let stack = Stack::start(StackOptions {
        service_addr: loopback,
        engine_addr: loopback,
        data_dir: dir.path().to_path_buf(),
        engine: EngineConfig {
            data_dir: dir.path().join("engine"),
            ..EngineConfig::default()
        },
        account: args.account.clone(),
        token_ttl: Duration::from_secs(24 * 3600),
    })
    .await?;
    Ok(Target {
        engine_url: stack.engine_url.clone(),
        engine_token: None,
        service_url: stack.service_url.clone(),
        token: stack.write_token.clone(),
        account: stack.account.clone(),
        stack: Some((stack, dir)),
    })
}

fn default_key() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("run-{ms}-{}", std::process::id())
}
