//! Dependency installers: pip specs into the runtime virtualenv (through `uv` when it
//! is configured or on `PATH`, else `python -m pip`) and apt packages into the system.
//!
//! Every line an installer prints becomes a tracing event (target `runlog::install`)
//! as it arrives, so it lands in the calling request's capture ring and live stream
//! while the installer still runs. Nothing is collected at the end.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
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
        "system_dependencies {0:?} refused: this engine does not allow apt installs (start it with --allow-apt or RUNLOG_ALLOW_APT=true)"
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
    /// Use `uv pip install` when a `uv` program is known (see `uv`).
    pub prefer_uv: bool,
    /// The `uv` program when `prefer_uv` is set: `Some(path)` runs that program,
    /// `None` looks for `uv` on `PATH`. An explicit path never falls back to pip, so a
    /// wrong path is an error rather than a silent change of installer.
    pub uv: Option<PathBuf>,
    /// Whether apt may run.
    pub allow_apt: bool,
    /// The `apt-get` program (`apt-get` on `PATH` by default; tests use a stand-in).
    pub apt_get: PathBuf,
    /// Whether `apt-get update` has run in this engine's life; shared by the clones of
    /// one runtime's installer. A fresh image has no package lists, so the first
    /// install would find nothing.
    pub apt_updated: Arc<tokio::sync::Mutex<bool>>,
    /// Limit for the whole plan.
    pub timeout: Duration,
}

impl Installer {
    /// This installer aimed at the virtualenv of `venv_python`, installing from the
    /// default index: the engine's own packages (the bootstrap, `--python-package`)
    /// never take `pip_args`, which are for the calls' dependencies (e.g. a local
    /// `--find-links --no-index`).
    pub fn from_default_index(&self, venv_python: PathBuf) -> Installer {
        Installer {
            venv_python,
            pip_args: Vec::new(),
            ..self.clone()
        }
    }

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
        let (mut cmd, tool) = match self.uv_program() {
            Some(uv) => {
                let mut c = crate::child_env::installer_command(uv);
                // `--python` names the target: uv installs into the environment of that
                // interpreter, not into whatever `VIRTUAL_ENV` the engine inherited.
                // `--color never` keeps escape codes out of the log even if the
                // engine's environment forces colour.
                c.args(["pip", "install", "--color", "never", "--python"])
                    .arg(&self.venv_python);
                (c, "uv")
            }
            None => {
                let mut c = crate::child_env::installer_command(&self.venv_python);
                c.args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ]);
                (c, "pip")
            }
        };
        cmd.args(&self.pip_args).args(specs);
        run_streamed(cmd, tool).await
    }

    /// The `uv` program to install with, or `None` for `python -m pip`.
    fn uv_program(&self) -> Option<PathBuf> {
        if !self.prefer_uv {
            return None;
        }
        self.uv.clone().or_else(uv_on_path)
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

    /// `apt-get update` once per engine, then `apt-get install`; a package apt cannot
    /// locate sends it back to `update` once (the lists may be older than the
    /// package), as RunPod's worker does.
    async fn apt_install(&self, packages: &[String]) -> Result<(), InstallError> {
        {
            let mut updated = self.apt_updated.lock().await;
            if !*updated {
                self.apt_get(&["update"]).await?;
                *updated = true;
            }
        }
        tracing::info!(target: "runlog::install", "installing system packages: {}", packages.join(" "));
        match self.apt_get_install(packages).await {
            Err(InstallError::Failed {
                cause: Some(cause), ..
            }) if cause.contains("Unable to locate package") => {
                tracing::info!(target: "runlog::install", "apt-get: {cause}; updating the package lists once more");
                self.apt_get(&["update"]).await?;
                self.apt_get_install(packages).await
            }
            other => other,
        }
    }

    async fn apt_get_install(&self, packages: &[String]) -> Result<(), InstallError> {
        let mut args = vec!["install", "-y", "--no-install-recommends", "--"];
        args.extend(packages.iter().map(String::as_str));
        self.apt_get(&args).await
    }

    async fn apt_get(&self, args: &[&str]) -> Result<(), InstallError> {
        let mut cmd = crate::child_env::installer_command(&self.apt_get);
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
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
/// `warn` event as they arrive; fails with the last line that reads like a reason,
/// followed by the `cause:` lines uv prints under it.
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
        note_cause(line, cause);
    }
}

/// Keeps the reason of a failure from one installer line: pip's `ERROR: …`, apt's
/// `E: …` and uv's `error: …` start a new reason. uv prints the specifics on the
/// following `cause: …` lines (e.g. which package was not found), so those are
/// appended to keep the reason one line and complete.
fn note_cause(line: &str, cause: &std::sync::Mutex<Option<String>>) {
    let trimmed = line.trim();
    let starts_reason = ["ERROR:", "E:", "error:"]
        .iter()
        .any(|p| trimmed.starts_with(p));
    let detail = trimmed.strip_prefix("cause:").map(str::trim_start);
    if !starts_reason && detail.is_none() {
        return;
    }
    let Ok(mut kept) = cause.lock() else { return };
    match (starts_reason, detail, kept.as_mut()) {
        (true, _, _) => *kept = Some(trimmed.to_owned()),
        (false, Some(detail), Some(reason)) => {
            reason.push_str(": ");
            reason.push_str(detail);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::note_cause;
    use std::sync::Mutex;

    fn cause_of(lines: &[&str]) -> Option<String> {
        let cause = Mutex::new(None);
        for line in lines {
            note_cause(line, &cause);
        }
        cause.into_inner().expect("not poisoned")
    }

    #[test]
    fn uv_cause_lines_extend_the_error_line() {
        let got = cause_of(&[
            "Using Python 3.11.7 environment at: venv",
            "error: No solution found when resolving dependencies",
            "  cause: Because x was not found in the provided package locations",
        ]);
        assert_eq!(
            got.as_deref(),
            Some(
                "error: No solution found when resolving dependencies: Because x was not found in the provided package locations"
            )
        );
    }

    #[test]
    fn last_pip_error_line_is_the_cause() {
        let got = cause_of(&[
            "ERROR: Could not find a version that satisfies the requirement x==1",
            "ERROR: No matching distribution found for x==1",
        ]);
        assert_eq!(
            got.as_deref(),
            Some("ERROR: No matching distribution found for x==1")
        );
    }

    #[test]
    fn cause_line_without_an_error_before_it_is_no_reason() {
        assert_eq!(
            cause_of(&["cause: nothing failed yet", "Resolved 1 package"]),
            None
        );
    }
}
