//! `runlog engine`: run the engine (setup/step/destroy, functions) until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Args;
use runlog_capture::LogFormat;
use runlog_edge::{ServerTls, TlsFiles};
use runlog_engine::config::{DEFAULT_DATA_DIR, parse_listen_addr};
use runlog_engine::{EngineConfig, EngineState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The engine's settings that `runlog engine` and `runlog serve` both take: one
/// definition of each flag, flattened into both commands.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Engine")]
pub struct EngineFlags {
    /// The server's certificate, then any intermediates (PEM). With --tls-key and
    /// --tls-client-ca the engine serves HTTPS only: TLS 1.3, and only to clients
    /// whose certificate that CA signed (as lite-engine serves Harness's runners).
    #[arg(long, env = "SERVER_CERT_FILE", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, env = "SERVER_KEY_FILE", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The CA that client certificates must be signed by (PEM); lite-engine's
    /// CLIENT_CERT_FILE.
    #[arg(long, env = "CLIENT_CERT_FILE", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
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
    /// A Python package (a pip requirement) installed into the functions' virtualenv
    /// at start, importable by every call, as a worker image ships it — e.g.
    /// `--python-package runpod` for functions that `import runpod` as on RunPod's
    /// worker. Repeatable, or comma-separated in the variable.
    #[arg(
        long = "python-package",
        value_name = "REQ",
        env = "RUNLOG_ENGINE_PYTHON_PACKAGES",
        value_delimiter = ','
    )]
    pub python_packages: Vec<String>,
    /// Let `/setup` and `/start_step` write `files` and create `volumes` at absolute
    /// host paths, as lite-engine does on a machine a Harness runner made for one
    /// stage. Without it such paths are refused: on a shared machine they could be
    /// anything the engine's user may write.
    #[arg(long, env = "RUNLOG_ENGINE_ALLOW_HOST_PATHS")]
    pub allow_host_paths: bool,
    /// The user steps and function workers run as [default: nobody when the engine
    /// runs as root, else the engine's own user]. The stage's workspace is given to that user; the engine's
    /// spools, outbox and secrets stay out of its reach. Naming the engine's own user
    /// runs steps as it.
    #[arg(long, env = "RUNLOG_ENGINE_STEP_USER")]
    pub step_user: Option<String>,
    /// Let the step user's steps share the machine's `/tmp` and `/var/tmp`. By
    /// default each stage's steps see their stage's own temporary directory there
    /// (removed at destroy), so one stage's leftovers never reach the next.
    #[arg(long, env = "RUNLOG_ENGINE_SHARED_TMP")]
    pub shared_tmp: bool,
    /// How long a job's record (RunPod's job API: `/v2/{endpoint}/run`, `status`, …)
    /// stays readable after it ends.
    #[arg(long, env = "RUNLOG_ENGINE_JOB_RETENTION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub job_retention: Duration,
    /// Jobs queued or running at once; `run` beyond it answers 429.
    #[arg(long, env = "RUNLOG_ENGINE_JOB_QUEUE", default_value_t = 1024)]
    pub job_queue: usize,
    /// How long `status` of a queued or running job holds its answer waiting for the
    /// job to end (a request's `?wait=MS` overrides it; 0 answers at once).
    #[arg(long, env = "RUNLOG_ENGINE_JOB_STATUS_WAIT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub job_status_wait: Duration,
    /// How long closing one stream may take (flush, archive, close).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub close_deadline: Duration,
    /// How long /destroy may take in total.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub destroy_deadline: Duration,
    /// MiB held back in the data directory for the engine's own spools and outbox,
    /// given to them when a step fills the disk, made again at each /setup; 0: none.
    #[arg(long, env = "RUNLOG_ENGINE_SPOOL_RESERVE_MIB", default_value_t = 64)]
    pub spool_reserve_mib: u64,
}

/// Flags of `runlog engine` (each also read from its `RUNLOG_ENGINE_*` variable; the
/// TLS files from lite-engine's variables).
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "RunPod's SDKs (runpod, runpod-flash) run functions on this engine \
    through its job API: set RUNPOD_ENDPOINT_BASE_URL=http://ADDR/v2 (before Python imports \
    runpod; any endpoint id) and the engine's token as the API key (RUNPOD_API_KEY, or \
    runpod.api_key). Routes: /v2/{endpoint}/run, runsync, status/{id}, cancel/{id}, stream/{id}, \
    health, purge-queue. README: 'Using runlog as a RunPod worker'."
)]
pub struct EngineArgs {
    /// Address to listen on (IP:PORT, or :PORT for every interface) [default:
    /// lite-engine's HTTPS_BIND when set, else 127.0.0.1:9079, or with TLS files
    /// lite-engine's :9079]; anything but loopback requires --token or TLS.
    #[arg(long, env = "RUNLOG_ENGINE_ADDR", value_parser = parse_listen_addr)]
    pub addr: Option<SocketAddr>,
    /// lite-engine's listening address, read when --addr is not given.
    #[arg(long, env = "HTTPS_BIND", value_parser = parse_listen_addr, hide = true)]
    pub https_bind: Option<SocketAddr>,
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
    /// The engine's settings, shared with `runlog serve`.
    #[command(flatten)]
    pub engine: EngineFlags,
    /// Console log format: production (the default) or debug (adds target and
    /// file:line). `LOG_LEVEL=DEBUG` (RunPod's worker variable) also selects debug;
    /// `LOG_LEVEL` sets the level unless `RUNLOG_LOG` is set.
    #[arg(long, env = "RUNLOG_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl EngineArgs {
    /// The engine configuration these flags describe, its TLS files read and checked.
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        let config = self.engine.apply(EngineConfig {
            data_dir: self.data_dir.clone(),
            token: self.token.clone().filter(|t| !t.is_empty()),
            ..EngineConfig::default()
        })?;
        // With TLS files, lite-engine's default (`:9079`): a runner's machine sets the
        // files and no address, and the runner reaches it from another machine.
        let default_addr = if config.tls.is_some() {
            SocketAddr::from(([0, 0, 0, 0], 9079))
        } else {
            config.addr
        };
        Ok(EngineConfig {
            addr: self.addr.or(self.https_bind).unwrap_or(default_addr),
            ..config
        })
    }
}

impl EngineFlags {
    /// `base` with these settings, the TLS files read and checked.
    pub fn apply(&self, base: EngineConfig) -> anyhow::Result<EngineConfig> {
        Ok(EngineConfig {
            tls: self.tls()?,
            close_deadline: self.close_deadline,
            destroy_deadline: self.destroy_deadline,
            spool_reserve_bytes: self.spool_reserve_mib << 20,
            allowed_hosts: self.allowed_hosts.clone(),
            pass_env: self.pass_env.clone(),
            allow_apt: self.allow_apt,
            python_packages: self.python_packages.clone(),
            allow_host_paths: self.allow_host_paths,
            jobs: runlog_engine::jobs::JobsConfig {
                keep_finished: self.job_retention,
                queue_capacity: self.job_queue,
                status_wait: self.job_status_wait,
                ..base.jobs
            },
            max_steps: self.max_steps,
            step_user: runlog_engine::step_user::StepUser::chosen(self.step_user.as_deref())
                .map_err(|e| anyhow::anyhow!("{e} (--step-user)"))?,
            private_tmp: !self.shared_tmp,
            ..base
        })
    }

    /// The server TLS the three files describe; none without them.
    fn tls(&self) -> anyhow::Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(client_ca)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: client_ca.clone(),
                };
                let tls = ServerTls::from_files(&files).context("cannot serve TLS")?;
                Ok(Some(tls))
            }
            _ => anyhow::bail!(
                "--tls-cert (SERVER_CERT_FILE), --tls-key (SERVER_KEY_FILE) and \
                 --tls-client-ca (CLIENT_CERT_FILE) go together: give all three, or none"
            ),
        }
    }
}

/// Binds the engine (refusing a non-loopback address without a token) and returns
/// its address and a future that serves it until `shutdown`.
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
    let state = EngineState::new(config);
    Ok((addr, runlog_engine::serve(listener, state, shutdown)))
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
    let config = args.config()?;
    let scheme = config.scheme();
    let (addr, server) = start(config, super::service::shutdown_signal()).await?;
    tracing::info!(target: "runlog::cli", "engine ready at {scheme}://{addr}");
    server.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> EngineConfig {
        let args: EngineArgs = crate::cmd::parse_flags(flags).expect("flags parse");
        args.config().expect("a configuration")
    }

    #[test]
    fn with_tls_files_the_default_address_is_lite_engines() {
        let set = runlog_testkit::tls::TlsSet::new(&[]);
        let files = [
            "--tls-cert",
            set.server_cert.to_str().expect("path"),
            "--tls-key",
            set.server_key.to_str().expect("path"),
            "--tls-client-ca",
            set.ca_cert.to_str().expect("path"),
        ];
        let tls = config(&files);
        assert!(tls.tls.is_some());
        assert_eq!(tls.addr, "0.0.0.0:9079".parse().expect("addr"));
        assert!(tls.check_exposure().is_ok(), "mutual TLS lets it listen");

        let mut bound = files.to_vec();
        bound.extend(["--https-bind", ":9000"]);
        assert_eq!(config(&bound).addr, "0.0.0.0:9000".parse().expect("addr"));
        bound.extend(["--addr", "127.0.0.1:1"]);
        assert_eq!(config(&bound).addr, "127.0.0.1:1".parse().expect("addr"));

        let plain = config(&[]);
        assert!(plain.tls.is_none());
        assert_eq!(plain.addr, EngineConfig::default().addr);
        assert!(crate::cmd::parse_flags::<EngineArgs>(&["--addr", "somewhere"]).is_err());
    }
}
