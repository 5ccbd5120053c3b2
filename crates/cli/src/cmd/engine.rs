//! `runlog engine`: run the engine (setup/step/destroy, functions) until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Args;
use runlog_capture::LogFormat;
use runlog_engine::config::{DEFAULT_ADDR, DEFAULT_DATA_DIR};
use runlog_engine::function::{Functions, FunctionsConfig};
use runlog_engine::{EngineConfig, EngineState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `runlog engine` (each also read from its `RUNLOG_ENGINE_*` variable).
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "RunPod's SDKs (runpod, runpod-flash) run functions on this engine \
    through its job API: set RUNPOD_ENDPOINT_BASE_URL=http://ADDR/v2 (before Python imports \
    runpod; any endpoint id) and the engine's token as the API key (RUNPOD_API_KEY, or \
    runpod.api_key). Routes: /v2/{endpoint}/run, runsync, status/{id}, cancel/{id}, stream/{id}, \
    health, purge-queue. README: 'Using runlog as a RunPod worker'."
)]
pub struct EngineArgs {
    /// Address to listen on; anything but loopback requires --token.
    #[arg(long, env = "RUNLOG_ENGINE_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Directory for stage workspaces, spools and the outbox.
    #[arg(long, env = "RUNLOG_ENGINE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Token every request must carry (`Authorization: Bearer …`).
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "RUNLOG_ENGINE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A host name a token-less engine also answers (besides localhost and IP
    /// literals); repeatable. Any other `Host` may be a web page that rebound its DNS
    /// name to loopback, and is refused.
    #[arg(
        long = "allow-host",
        value_name = "NAME",
        env = "RUNLOG_ENGINE_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// A variable of the engine's environment that steps inherit besides the base
    /// (PATH, HOME, USER, locale, TERM, TMPDIR, TZ, proxies); repeatable. Nothing else
    /// of the engine's environment (its token, say) reaches a step.
    #[arg(
        long = "pass-env",
        value_name = "NAME",
        env = "RUNLOG_ENGINE_PASS_ENV",
        value_delimiter = ','
    )]
    pub pass_env: Vec<String>,
    /// Steps running at once; one more is refused with 429 until one ends.
    #[arg(long, env = "RUNLOG_ENGINE_MAX_STEPS", default_value_t = EngineConfig::default().max_steps)]
    pub max_steps: usize,
    /// Let functions install their `system_dependencies` with apt-get (the engine
    /// must run as root), as RunPod's worker does; `apt-get update` runs before the
    /// first install. Without it such a call fails, saying so.
    #[arg(long, env = "RUNLOG_ALLOW_APT")]
    pub allow_apt: bool,
    /// Let `/setup` and `/start_step` write `files` and create `volumes` at absolute
    /// host paths, as lite-engine does on a machine a Harness runner made for one
    /// stage. Without it such paths are refused: on a shared machine they could be
    /// anything the engine's user may write.
    #[arg(long, env = "RUNLOG_ENGINE_ALLOW_HOST_PATHS")]
    pub allow_host_paths: bool,
    /// How long a job's record (RunPod's job API: `/v2/{endpoint}/run`, `status`, …)
    /// stays readable after it ends.
    #[arg(long, env = "RUNLOG_ENGINE_JOB_RETENTION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub job_retention: Duration,
    /// Jobs queued or running at once; `run` beyond it answers 429.
    #[arg(long, env = "RUNLOG_ENGINE_JOB_QUEUE", default_value_t = 1024)]
    pub job_queue: usize,
    /// How long closing one stream may take (flush, archive, close).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub close_deadline: Duration,
    /// How long /destroy may take in total.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub destroy_deadline: Duration,
    /// Console log format: production (the default) or debug (adds target and
    /// file:line). `LOG_LEVEL=DEBUG` (RunPod's worker variable) also selects debug;
    /// `LOG_LEVEL` sets the level unless `RUNLOG_LOG` is set.
    #[arg(long, env = "RUNLOG_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl EngineArgs {
    /// The engine configuration these flags describe.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            token: self.token.clone().filter(|t| !t.is_empty()),
            close_deadline: self.close_deadline,
            destroy_deadline: self.destroy_deadline,
            allowed_hosts: self.allowed_hosts.clone(),
            pass_env: self.pass_env.clone(),
            allow_apt: self.allow_apt,
            allow_host_paths: self.allow_host_paths,
            jobs: runlog_engine::jobs::JobsConfig {
                keep_finished: self.job_retention,
                queue_capacity: self.job_queue,
                ..runlog_engine::jobs::JobsConfig::default()
            },
            max_steps: self.max_steps,
            ..EngineConfig::default()
        }
    }
}

/// Binds the engine (refusing a non-loopback address without a token) and returns
/// its address and a future that serves it, with the function endpoints mounted,
/// until `shutdown`.
pub async fn start(
    config: EngineConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = runlog_engine::bind(&config)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    // The state resolves a relative data dir; the functions use the resolved one.
    let state = EngineState::new(config);
    let mut fcfg = FunctionsConfig::new(state.data_dir());
    fcfg.python.allow_apt = state.config().allow_apt;
    fcfg.jobs = state.config().jobs.clone();
    let functions = Functions::new(fcfg);
    state.set_functions(functions.clone());
    let extra = runlog_engine::function::routes(functions);
    Ok((addr, runlog_engine::serve(listener, state, extra, shutdown)))
}

/// Runs the engine until SIGINT or SIGTERM.
pub async fn run(args: EngineArgs) -> anyhow::Result<()> {
    let options = runlog_engine::worker_log_level::init_options(
        std::env::var("LOG_LEVEL").ok().as_deref(),
        std::env::var("RUNLOG_LOG").ok().as_deref(),
        args.log_format,
    )
    .map_err(anyhow::Error::msg)?;
    runlog_capture::init(options);
    let (addr, server) = start(args.config(), super::service::shutdown_signal()).await?;
    tracing::info!(target: "runlog::cli", "engine ready at http://{addr}");
    server.await?;
    Ok(())
}
