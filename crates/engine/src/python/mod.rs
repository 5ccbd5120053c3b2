//! The Python runtime behind `POST /execute`: a virtualenv under the data dir, worker
//! processes fed by an embedded harness, a warm pool of function workers, long-lived
//! class instances, and the pip/apt installers.
//!
//! Nothing here knows about HTTP or log streams: output leaves through an
//! [`OutputLine`] channel and tracing events, and the handler in `function.rs` decides
//! where it goes.

pub mod deps;
pub mod harness;
pub mod install;
pub mod instances;
pub mod pool;
pub mod runtime;
pub mod user_python;
pub mod venv;
pub mod worker;

pub use deps::DependencyError;
pub use runtime::{CallOutcome, PythonRuntime};

use std::path::PathBuf;
use std::time::Duration;

/// How the Python runtime is set up. [`PythonConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// Directory of the runtime virtualenv, normally `<data_dir>/python/venv`.
    pub venv_dir: PathBuf,
    /// Interpreter that creates the virtualenv (`python3` unless told otherwise).
    pub base_python: PathBuf,
    /// Packages installed when the virtualenv is created (`cloudpickle`).
    pub bootstrap_packages: Vec<String>,
    /// Packages installed into the virtualenv whenever the runtime starts (`runlog
    /// engine --python-package`), as a worker image ships them (RunPod's ships
    /// `runpod`): importable by every call without naming them as dependencies. From
    /// the default index, like the bootstrap packages.
    pub preinstall: Vec<String>,
    /// Extra arguments for installing calls' dependencies, e.g. `--find-links DIR
    /// --no-index` (the bootstrap packages always come from the default index).
    pub pip_args: Vec<String>,
    /// Use `uv pip install` when a `uv` program is known (else `python -m pip`).
    pub prefer_uv: bool,
    /// The `uv` program for `prefer_uv`: `Some(path)` runs that program, `None` (the
    /// default) looks for `uv` on `PATH`. Explicit because `PATH` belongs to the whole
    /// process: a deployment can pin its installer, and tests can use one without
    /// changing the environment.
    pub uv: Option<PathBuf>,
    /// Whether `system_dependencies` may be installed with apt-get (`runlog engine
    /// --allow-apt`). Off by default: apt changes the whole machine, as root.
    pub allow_apt: bool,
    /// The `apt-get` program: `apt-get` on `PATH` unless told otherwise.
    pub apt_get: PathBuf,
    /// Time limit of one dependency installation (system and Python together).
    pub install_timeout: Duration,
    /// Class instances unused for this long are stopped.
    pub instance_idle_timeout: Duration,
    /// Function workers kept started and idle between calls.
    pub warm_workers: usize,
    /// Most function workers running at once; further calls wait for one.
    pub max_workers: usize,
    /// The user function workers run as (the engine's step user, see
    /// [`crate::step_user`]); `None` (the default here): the engine's own. Installs
    /// into the virtualenv stay the engine's either way.
    pub user: Option<crate::step_user::StepUser>,
}

impl PythonConfig {
    /// Defaults for a runtime under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        PythonConfig {
            venv_dir: data_dir.into().join("python").join("venv"),
            base_python: PathBuf::from("python3"),
            bootstrap_packages: vec!["cloudpickle".to_owned()],
            preinstall: Vec::new(),
            pip_args: Vec::new(),
            prefer_uv: true,
            uv: None,
            allow_apt: false,
            apt_get: PathBuf::from("apt-get"),
            install_timeout: Duration::from_secs(600),
            instance_idle_timeout: Duration::from_secs(600),
            warm_workers: 2,
            max_workers: 16,
            user: None,
        }
    }
}

/// Where a line of function output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// `print` and anything written to file descriptor 1.
    Stdout,
    /// `sys.stderr` and the worker's raw stderr.
    Stderr,
    /// A `logging` record.
    Log,
}

/// Receives a call's output lines, one at a time, in arrival order, as they arrive.
///
/// Called synchronously by the code reading the worker, so a line is fully handled
/// (e.g. written to the live stream) before anything the runtime logs afterwards: the
/// stream shows the function's output and the runtime's events in their true order.
/// It must not block. (A step's raw output goes to a `process::OutputSink`, which
/// takes byte chunks and may wait.)
pub type FunctionOutput = std::sync::Arc<dyn Fn(OutputLine) + Send + Sync>;

/// One line of a function's own output, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Its source.
    pub stream: OutputStream,
    /// `info` for stdout, `error` for stderr, the record's level for logging.
    pub level: &'static str,
    /// The text, without a trailing newline.
    pub text: String,
}
