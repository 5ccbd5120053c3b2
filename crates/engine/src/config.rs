//! [`EngineConfig`]: what an engine instance is started with, and the settings of
//! its function routes ([`FunctionsConfig`]) and job routes ([`JobsConfig`]), kept
//! here so that the modules they configure depend on this one, never the reverse.

use crate::python::PythonConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listening address: loopback only, because the engine runs commands.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9079";
/// Default data directory (workspaces, spools, outbox).
pub const DEFAULT_DATA_DIR: &str = "./runlog-data/engine";

/// Engine settings. `EngineConfig::default()` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where to listen. Anything but loopback requires `token` or `tls`.
    pub addr: SocketAddr,
    /// Root of stage workspaces (`stages/`), spools (`spool/`) and the outbox (`outbox/`).
    pub data_dir: PathBuf,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How long closing one stream may take (flush, archive, close). Default 30 s.
    pub close_deadline: Duration,
    /// How long `/destroy` may take in total, whatever is stuck. Default 60 s.
    pub destroy_deadline: Duration,
    /// Between SIGTERM and SIGKILL when a step's process group is stopped. Default 5 s.
    pub kill_grace: Duration,
    /// After a step's main process exits, how long its output pipes may stay open
    /// (held by leftover background processes) before the group is killed. Default 2 s.
    pub drain_grace: Duration,
    /// Largest accepted request body. Default 32 MiB (setup carries files).
    pub max_body: usize,
    /// Host names a token-less engine answers besides loopback's (`localhost`, IP
    /// literals): any other `Host` may be a web page that rebound its DNS name to
    /// loopback. Empty by default.
    pub allowed_hosts: Vec<String>,
    /// Variables of the engine's environment that steps inherit besides the base
    /// ([`crate::child_env::BASE_NAMES`]). Empty by default.
    pub pass_env: Vec<String>,
    /// Connections served at once, and how long a request's headers and body may take
    /// to arrive (also the idle keep-alive timeout). See [`runlog_edge::Limits`].
    pub connection_limits: runlog_edge::Limits,
    /// Steps running at once; one more is refused with 429. Each holds a process
    /// group, two pipes, a spool file and a connection. Default 256.
    pub max_steps: usize,
    /// Whether functions may install `system_dependencies` with apt-get, as RunPod's
    /// worker does. Off by default: apt changes the whole machine, as root.
    pub allow_apt: bool,
    /// Packages installed into the functions' virtualenv at start (`--python-package`),
    /// importable by every call as a worker image's are.
    pub python_packages: Vec<String>,
    /// The job routes' queue bound, retention and waits ([`crate::jobs`]).
    pub jobs: JobsConfig,
    /// When set, the engine serves HTTPS only, TLS 1.3 with a client certificate its
    /// CA signed (as lite-engine does for Harness's runners): a caller is then
    /// authenticated in the handshake, token or not. `None` by default (plain HTTP).
    pub tls: Option<runlog_edge::ServerTls>,
    /// Whether setup and steps may write files and create volume directories at
    /// absolute host paths, as lite-engine does on the machine a runner made for
    /// one stage. Off by default: on a shared machine such a path may be anything
    /// the engine's user can write.
    pub allow_host_paths: bool,
    /// How often the machine's CPU and memory use are sampled while a stage lives
    /// (`os_stats`, the memory metrics stream). Default 1 s.
    pub machine_sample_interval: Duration,
    /// The user steps and function workers run as (`--step-user`); `None`: the
    /// engine's own. The default is `nobody` when the engine runs as root
    /// ([`crate::step_user`]).
    pub step_user: Option<crate::step_user::StepUser>,
    /// Whether the steps of an engine that runs them as another user see their
    /// stage's temporary directory at `/tmp` and `/var/tmp` (a mount namespace of
    /// their own, [`crate::private_tmp`]), so what one stage leaves in `/tmp` is gone
    /// before the next. On by default; off with `--shared-tmp`. Not used with
    /// `allow_host_paths` (a machine made for one stage, whose host paths, such as
    /// `/tmp/harness`, the steps must see), nor where it would hide the workspace or
    /// the working directory, nor where the kernel refuses the namespace (a warning
    /// at start says so).
    pub private_tmp: bool,
    /// Bytes held back in the spool directory for the engine's own spools and outbox
    /// (`livelog::reserve`), made again at each `/setup`: a step that fills the file
    /// system leaves the writers that much to go on with. 0: none. Default 64 MiB.
    pub spool_reserve_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9079)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            token: None,
            close_deadline: Duration::from_secs(30),
            destroy_deadline: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            drain_grace: Duration::from_secs(2),
            max_body: 32 << 20,
            allowed_hosts: Vec::new(),
            pass_env: Vec::new(),
            connection_limits: runlog_edge::Limits::default(),
            max_steps: 256,
            allow_apt: false,
            python_packages: Vec::new(),
            jobs: JobsConfig::default(),
            tls: None,
            allow_host_paths: false,
            machine_sample_interval: Duration::from_secs(1),
            // A root engine without a `nobody` user keeps root steps here; the CLI
            // refuses to start so instead (`StepUser::chosen`).
            step_user: crate::step_user::StepUser::default_for_engine()
                .ok()
                .flatten(),
            spool_reserve_bytes: 64 << 20,
            private_tmp: true,
        }
    }
}

impl EngineConfig {
    /// The function endpoints' settings this configuration implies: the runtime and
    /// spools under `data_dir`, `allow_apt`, `python_packages`, `step_user` (the
    /// workers' user) and `jobs`; the rest
    /// [`FunctionsConfig::new`]'s defaults.
    pub fn functions_config(&self) -> FunctionsConfig {
        let mut functions = FunctionsConfig::new(&self.data_dir);
        functions.python.allow_apt = self.allow_apt;
        functions.python.preinstall = self.python_packages.clone();
        functions.python.user = self.step_user.clone();
        functions.jobs = self.jobs.clone();
        functions
    }

    /// Directory holding one workspace per stage.
    pub fn stages_dir(&self) -> PathBuf {
        self.data_dir.join("stages")
    }

    /// Directory of the writers' spool files.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    /// Directory of histories not yet delivered to the log service.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// The token every request must carry; `None` when there is none (an empty token
    /// is no token).
    pub fn required_token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// Whether every caller proves who it is: with a token, or with a client
    /// certificate in the TLS handshake. Only then may the engine listen beyond
    /// loopback, or answer a `Host` that is not a loopback name.
    pub fn authenticates_callers(&self) -> bool {
        self.required_token().is_some() || self.tls.is_some()
    }

    /// The scheme callers reach the engine by: `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Refuses to listen beyond loopback without a token or mutual TLS: the engine
    /// runs commands.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.addr.ip().is_loopback() || self.authenticates_callers() {
            Ok(())
        } else {
            Err(format!(
                "refusing to listen on {} without a token or mutual TLS: the engine runs \
                 commands; pass --token, or --tls-cert, --tls-key and --tls-client-ca (or \
                 listen on 127.0.0.1)",
                self.addr
            ))
        }
    }
}

/// Parses a listening address as lite-engine's `HTTPS_BIND` holds it (Go's form):
/// `host:port`, `[v6]:port`, or `:port` for every IPv4 interface.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let parsed = match text.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
            .ok(),
        None => text.parse().ok(),
    };
    parsed.ok_or_else(|| {
        format!("{text:?} is not a listening address: give IP:PORT, [IPv6]:PORT or :PORT")
    })
}

/// Settings of the function endpoints.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// The Python runtime.
    pub python: PythonConfig,
    /// Entries of each call's capture ring (system log lines kept for `stdout`).
    pub capture_capacity: usize,
    /// Bytes of function output kept for `stdout` (the last lines; the live stream and
    /// its archive keep all). Default 16 MiB: a byte cap, never a line count, so a
    /// call printing many short lines gets them all back, as from RunPod's worker.
    pub output_bytes: usize,
    /// Directory of the spool files of calls streamed with `log_key`.
    pub spool_dir: PathBuf,
    /// Where an undelivered stream history is kept to be re-sent later.
    pub outbox_dir: Option<PathBuf>,
    /// The job routes' queue, retention and waits.
    pub jobs: JobsConfig,
}

impl FunctionsConfig {
    /// Defaults for an engine whose data directory is `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        // Workers run in their own working directory: the venv path must be absolute.
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        FunctionsConfig {
            python: PythonConfig::new(&data_dir),
            capture_capacity: runlog_capture::DEFAULT_CAPACITY,
            output_bytes: 16 << 20,
            spool_dir: data_dir.join("spool"),
            outbox_dir: Some(data_dir.join("outbox")),
            jobs: JobsConfig::default(),
        }
    }
}

/// Limits of the job routes.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Jobs queued or running at once; `run` beyond it is answered 429. Default 1024.
    pub queue_capacity: usize,
    /// Jobs running at once (the others wait `IN_QUEUE`). Default 16, the Python
    /// runtime's default worker bound.
    pub max_running: usize,
    /// How long an ended job's record stays readable. Default 30 minutes (RunPod's
    /// retention of `run` results).
    pub keep_finished: Duration,
    /// Bytes the ended jobs' records may hold (outputs, unread lines); beyond it the
    /// oldest are forgotten before their time. Default 256 MiB.
    pub keep_bytes: usize,
    /// How long `runsync` waits before answering `IN_PROGRESS` (its `?wait=` in ms
    /// may ask for less or more, up to 5 minutes). Default 90 s.
    pub runsync_wait: Duration,
    /// How long `status` of a job still queued or running holds its answer, waiting
    /// for the job to end (its `?wait=` in ms may ask for less or more, `0` answering at
    /// once). The SDKs poll `status` with pauses of 0.1–1 s between polls; held, the
    /// first poll after `run` answers the moment a short call ends instead of a pause
    /// later, and a poller makes one request where it made many. The record is the
    /// same either way. Default 500 ms.
    pub status_wait: Duration,
    /// Bytes of log lines a job keeps for `stream` until read (the oldest are dropped
    /// beyond it). Default 16 MiB.
    pub stream_buffer: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            queue_capacity: 1024,
            max_running: 16,
            keep_finished: Duration::from_secs(30 * 60),
            keep_bytes: 256 << 20,
            runsync_wait: Duration::from_secs(90),
            status_wait: Duration::from_millis(500),
            stream_buffer: 16 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token() {
        let mut c = EngineConfig {
            addr: "0.0.0.0:9079".parse().expect("addr"),
            ..EngineConfig::default()
        };
        assert!(c.check_exposure().is_err());
        c.token = Some(String::new());
        assert!(c.check_exposure().is_err(), "an empty token is no token");
        c.token = Some("s3cret".into());
        assert!(c.check_exposure().is_ok());
        assert!(EngineConfig::default().check_exposure().is_ok());
        let v6 = EngineConfig {
            addr: "[::1]:9079".parse().expect("addr"),
            ..EngineConfig::default()
        };
        assert!(v6.check_exposure().is_ok());
    }

    #[test]
    fn listen_addresses_parse_as_lite_engine_writes_them() {
        let any: SocketAddr = "0.0.0.0:9079".parse().expect("addr");
        assert_eq!(parse_listen_addr(":9079"), Ok(any));
        assert_eq!(parse_listen_addr("0.0.0.0:9079"), Ok(any));
        assert_eq!(
            parse_listen_addr("[::1]:1"),
            Ok("[::1]:1".parse().expect("addr"))
        );
        for bad in ["", ":", ":x", "9079", "host:9079", ":70000"] {
            let e = parse_listen_addr(bad).expect_err(bad);
            assert!(e.contains("not a listening address"), "{e}");
        }
    }
}
