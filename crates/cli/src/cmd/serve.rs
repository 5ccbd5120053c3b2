//! `runlog serve`: the embedded default — log service and engine in one process.

use crate::credentials::EngineToken;
use anyhow::Context as _;
use clap::Args;
use runlog_capture::{InitOptions, LogFormat};
use runlog_engine::EngineConfig;
use runlog_protocol::{AccountId, Scope};
use runlog_service::ServiceConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Flags of `runlog serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the log service.
    #[arg(long, default_value = runlog_service::config::DEFAULT_ADDR)]
    pub service_addr: SocketAddr,
    /// Address of the engine (loopback unless --engine-token is given).
    #[arg(long, default_value = runlog_engine::config::DEFAULT_ADDR)]
    pub engine_addr: SocketAddr,
    /// Data directory: archives and the admin secret here, the engine's under `engine/`.
    #[arg(long, env = "RUNLOG_DATA_DIR", default_value = runlog_service::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Account the printed tokens belong to.
    #[arg(long, default_value = "default")]
    pub account: AccountId,
    /// Token the engine requires (needed to listen beyond loopback).
    #[command(flatten)]
    pub engine_auth: EngineToken,
    /// Lifetime of the printed tokens.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Console log format: production or debug.
    #[arg(long, env = "RUNLOG_LOG_FORMAT", default_value = "production")]
    pub log_format: LogFormat,
    /// The engine's settings, the same flags as `runlog engine`'s.
    #[command(flatten)]
    pub engine: super::engine::EngineFlags,
}

/// A log service and an engine running in this process.
pub struct Stack {
    /// Base URL of the log service.
    pub service_url: String,
    /// Base URL of the engine.
    pub engine_url: String,
    /// The account the tokens are for.
    pub account: AccountId,
    /// Write token of `account` (what a controller puts in `log_config.token`).
    pub write_token: String,
    /// Read token of `account` (for viewers and `runlog tail`).
    pub read_token: String,
    /// The token the engine requires, if any.
    pub engine_token: Option<String>,
    stop_engine: watch::Sender<bool>,
    stop_service: watch::Sender<bool>,
    engine: JoinHandle<anyhow::Result<()>>,
    service: JoinHandle<anyhow::Result<()>>,
}

/// Where and how to start a [`Stack`].
pub struct StackOptions {
    /// Service address (port 0: any free port).
    pub service_addr: SocketAddr,
    /// Engine address.
    pub engine_addr: SocketAddr,
    /// Service data dir.
    pub data_dir: PathBuf,
    /// Engine settings; `addr` and `data_dir` are filled in.
    pub engine: EngineConfig,
    /// Account of the tokens.
    pub account: AccountId,
    /// Token lifetime.
    pub token_ttl: Duration,
}

impl Stack {
    /// Starts both servers; they run until [`Stack::shutdown`].
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let (stop_engine, engine_stopped) = watch::channel(false);
        let (stop_service, service_stopped) = watch::channel(false);
        let wait = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let cfg = ServiceConfig {
            addr: opts.service_addr,
            data_dir: opts.data_dir.clone(),
            ..ServiceConfig::default()
        };
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .with_context(|| format!("log service: cannot listen on {}", cfg.addr))?;
        let service_addr = listener.local_addr()?;
        let state = runlog_service::backend::build_state(cfg).await?;
        let secret = state.secret().to_vec();
        let mint = |scope| {
            runlog_service::auth::mint_token(&secret, Some(&opts.account), scope, opts.token_ttl)
                .context("minting a token")
        };
        let write_token = mint(Scope::Write)?;
        let read_token = mint(Scope::Read)?;
        let service_stop = wait(service_stopped);
        let service = tokio::spawn(async move {
            runlog_service::serve(listener, state, service_stop).await?;
            Ok(())
        });

        let engine_token = opts.engine.token.clone();
        let engine_cfg = EngineConfig {
            addr: opts.engine_addr,
            ..opts.engine
        };
        let engine_scheme = engine_cfg.scheme();
        let (engine_addr, engine_server) =
            super::engine::start(engine_cfg, wait(engine_stopped)).await?;
        let engine = tokio::spawn(async move {
            engine_server.await?;
            Ok(())
        });
        Ok(Stack {
            service_url: format!("http://{service_addr}"),
            engine_url: format!("{engine_scheme}://{engine_addr}"),
            account: opts.account,
            write_token,
            read_token,
            engine_token,
            stop_engine,
            stop_service,
            engine,
            service,
        })
    }

    /// Stops the engine, which destroys its stage (its writers flush, archive and
    /// close their streams), and only then the log service those writers talk to:
    /// stopped together, the service was gone before the engine's last lines and
    /// archives reached it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop_engine.send(true);
        let engine = self.engine.await.context("engine task");
        let _ = self.stop_service.send(true);
        let service = self.service.await.context("log service task");
        engine??;
        service??;
        Ok(())
    }

    /// The ready-to-paste examples printed at start.
    pub fn banner(&self) -> String {
        let Stack {
            service_url,
            engine_url,
            account,
            write_token,
            read_token,
            engine_token,
            ..
        } = self;
        let (auth, run_auth) = match engine_token {
            Some(t) => (
                format!(" -H 'Authorization: Bearer {t}'"),
                format!(" --engine-token {t}"),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "runlog is ready\n\
             \x20 log service  {service_url}\n\
             \x20 viewer       {service_url}/?token={read_token}\n\
             \x20 engine       {engine_url}\n\
             \x20 account      {account}\n\
             \x20 write token  {write_token}\n\
             \x20 read token   {read_token}\n\
             \n\
             Try it:\n\
             \x20 curl -s{auth} {engine_url}/setup -d '{{\"le_log_key\":\"demo/engine\",\"log_config\":{{\"url\":\"{service_url}\",\"account_id\":\"{account}\",\"token\":\"{write_token}\",\"indirect_upload\":true}}}}'\n\
             \x20 curl -s{auth} {engine_url}/step -d '{{\"id\":\"hello\",\"script\":\"for i in 1 2 3; do echo line $i; sleep 1; done\",\"log_key\":\"demo/hello\"}}'\n\
             \x20 runlog tail --url {service_url} --account {account} --token {read_token} demo/hello\n\
             \x20 curl -s{auth} {engine_url}/destroy -d '{{}}'\n\
             \n\
             Or run a command with its output streamed through the service:\n\
             \x20 runlog run --engine {engine_url}{run_auth} --service-url {service_url} --account {account} --token {write_token} -- ls -la\n"
        )
    }
}

/// Runs service and engine until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    runlog_capture::init(InitOptions {
        format: args.log_format,
        filter: None,
    });
    // Listening before anything is printed: a SIGTERM sent as soon as the banner is
    // read would otherwise meet the default action and kill the process mid-way.
    let stop = super::service::shutdown_signal();
    let stack = Stack::start(StackOptions {
        service_addr: args.service_addr,
        engine_addr: args.engine_addr,
        data_dir: args.data_dir.clone(),
        engine: args.engine.apply(EngineConfig {
            data_dir: args.data_dir.join("engine"),
            token: args
                .engine_auth
                .engine_token
                .clone()
                .filter(|t| !t.is_empty()),
            ..EngineConfig::default()
        })?,
        account: args.account.clone(),
        token_ttl: args.token_ttl,
    })
    .await?;
    println!("{}", stack.banner());
    stop.await;
    tracing::info!(target: "runlog::cli", "shutting down");
    stack.shutdown().await
}
