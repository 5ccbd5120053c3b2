//! Dependency installers: pip specs into the runtime virtualenv (through `uv` when it
//! is on `PATH`, else `python -m pip`) and apt packages into the system.
//!
//! Every line an installer prints becomes a tracing event (target `runlog::install`)
//! as it arrives, so it lands in the calling request's capture ring and live stream
//! while the installer still runs. Nothing is collected at the end.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;

/// Why an installation failed. The `Display` text is the one-line cause of the call's
/// `error`; the installer's full output is already in the call's log.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The installer could not be started.
    #[error("{tool} could not be started: {source}")]
    Spawn {
        /// The program.
        tool: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The installer exited with a failure.
    #[error("{tool} failed ({status}){}", cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default())]
    Failed {
        /// The program.
        tool: String,
        /// Its exit status.
        status: String,
        /// The last line that looks like the reason (`ERROR: …`, `E: …`).
        cause: Option<String>,
    },
    /// The installation did not finish within the time limit.
    #[error("dependency installation timed out after {0:?}")]
    TimedOut(Duration),
    /// System packages were requested but this engine does not allow apt.
    #[error(
        "system_dependencies {0:?} refused: this engine does not allow apt installs (start it with apt allowed)"
    )]
    AptNotAllowed(Vec<String>),
    /// System packages were requested but the engine does not run as root.
    #[error("system_dependencies {0:?} need root: apt-get install must run as root")]
    AptNeedsRoot(Vec<String>),
    /// A spec that would be read as an installer option.
    #[error("dependency {0:?} refused: specs must not start with '-'")]
    BadSpec(String),
}

/// What to install for one call.
#[derive(Debug, Clone, Default)]
pub struct InstallPlan {
    /// pip requirement specs.
    pub python: Vec<String>,
    /// apt package names.
    pub system: Vec<String>,
    /// Install both kinds at once (`accelerate_downloads`), else system first.
    pub parallel: bool,
}

/// How installers run.
#[derive(Debug, Clone)]
pub struct Installer {
    /// Interpreter of the target virtualenv.
    pub venv_python: PathBuf,
    /// Extra pip arguments (`--find-links`, `--no-index`, an index URL…).
    pub pip_args: Vec<String>,
    /// Use `uv pip install` when `uv` is on `PATH`.
    pub prefer_uv: bool,
    /// Whether apt may run.
    pub allow_apt: bool,
    /// Limit for the whole plan.
    pub timeout: Duration,
}

impl Installer {
    /// Installs `plan`, streaming every installer line as it arrives.
    pub async fn install(&self, plan: &InstallPlan) -> Result<(), InstallError> {
        if let Some(bad) = plan
            .python
            .iter()
            .chain(&plan.system)
            .find(|s| s.starts_with('-') || s.trim().is_empty())
        {
            return Err(InstallError::BadSpec(bad.clone()));
        }
        if !plan.system.is_empty() {
            self.check_apt_allowed(&plan.system).await?;
        }
        let work = async {
            let system = async {
                if plan.system.is_empty() {
                    Ok(())
                } else {
                    self.apt_install(&plan.system).await
                }
            };
            let python = async {
                if plan.python.is_empty() {
                    Ok(())
                } else {
                    self.pip_install(&plan.python).await
                }
            };
            if plan.parallel {
                let (s, p) = tokio::join!(system, python);
                s.and(p)
            } else {
                system.await?;
                python.await
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| InstallError::TimedOut(self.timeout))?
    }

    /// Installs pip specs into the virtualenv.
    pub async fn pip_install(&self, specs: &[String]) -> Result<(), InstallError> {
        tracing::info!(target: "runlog::install", "installing Python packages: {}", specs.join(" "));
        let mut cmd = match uv_on_path().filter(|_| self.prefer_uv) {
            Some(uv) => {
                let mut c = Command::new(uv);
                c.args(["pip", "install", "--python"])
                    .arg(&self.venv_python);
                c
            }
            None => {
                let mut c = Command::new(&self.venv_python);
                c.args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ]);
                c
            }
        };
        cmd.args(&self.pip_args).args(specs);
        run_streamed(cmd, "pip").await
    }

    async fn check_apt_allowed(&self, packages: &[String]) -> Result<(), InstallError> {
        if !self.allow_apt {
            return Err(InstallError::AptNotAllowed(packages.to_vec()));
        }
        if !running_as_root().await {
            return Err(InstallError::AptNeedsRoot(packages.to_vec()));
        }
        Ok(())
    }

    async fn apt_install(&self, packages: &[String]) -> Result<(), InstallError> {
        tracing::info!(target: "runlog::install", "installing system packages: {}", packages.join(" "));
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends", "--"])
            .args(packages);
        run_streamed(cmd, "apt-get").await
    }
}

/// `uv` on `PATH`, if any.
pub fn uv_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("uv"))
        .find(|candidate| candidate.is_file())
}

async fn running_as_root() -> bool {
    // `id -u` rather than libc: the crate denies unsafe code.
    match Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

/// Runs `cmd`, turning each stdout line into an `info` event and each stderr line into a
/// `warn` event as they arrive; fails with the last line that reads like a reason.
pub async fn run_streamed(mut cmd: Command, tool: &str) -> Result<(), InstallError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| InstallError::Spawn {
        tool: tool.to_owned(),
        source,
    })?;
    let cause = std::sync::Mutex::new(None::<String>);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (_, _, status) = tokio::join!(
        pump(stdout, tool, false, &cause),
        pump(stderr, tool, true, &cause),
        child.wait()
    );
    let status = status.map_err(|source| InstallError::Spawn {
        tool: tool.to_owned(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(InstallError::Failed {
        tool: tool.to_owned(),
        status: status.to_string(),
        cause: cause.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}

async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    tool: &str,
    is_stderr: bool,
    cause: &std::sync::Mutex<Option<String>>,
) {
    let Some(pipe) = pipe else { return };
    let mut segments = BufReader::new(pipe).split(b'\n');
    // Split on bytes: installers may print invalid UTF-8, which becomes U+FFFD here.
    while let Ok(Some(raw)) = segments.next_segment().await {
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches('\r');
        if is_stderr {
            tracing::warn!(target: "runlog::install", "{tool} | {line}");
        } else {
            tracing::info!(target: "runlog::install", "{tool} | {line}");
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("ERROR:")
            || trimmed.starts_with("E:")
            || trimmed.starts_with("error:")
        {
            if let Ok(mut c) = cause.lock() {
                *c = Some(trimmed.to_owned());
            }
        }
    }
}
