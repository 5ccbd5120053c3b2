//! A Python the step user can run: chosen before the functions' virtualenv is built,
//! checked before any worker starts.
//!
//! A root engine runs function workers as its step user ([`StepUser`]), but builds
//! and installs into their virtualenv as itself. A virtualenv does not carry its
//! interpreter: `bin/python` links to the base interpreter and the standard library
//! stays in the base's prefix. So the step user must be able to run the *base*
//! interpreter, and a common one cannot be: pyenv's (`/root/.pyenv/...`) sits in
//! root's home, mode 0700. Copying the interpreter into the venv (`--copies`) would
//! not help, its standard library would still be out of reach.
//!
//! So, when workers run as a step user: a base given as a bare name (`python3`, the
//! default) is the first of that name on the engine's `PATH` the step user can run;
//! a base given as a path must be runnable by it. Then the finished virtualenv is
//! run once as the step user, reading the harness and importing what workers import.
//! Any failure is an error naming the user, the interpreter and the cause — never a
//! silent fallback to running functions as root.

use crate::step_user::StepUser;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long one trial run may take: an interpreter's start-up is tens of
/// milliseconds; a stuck network file system should not hold the start forever.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);

/// The base interpreter to build the virtualenv with when workers run as `user`:
/// `configured` itself when it names a path, else the first file of that name on the
/// engine's `PATH` that `user` can run. The error names every candidate and why it
/// was passed over.
pub async fn base_for(configured: &Path, user: &StepUser) -> Result<PathBuf, String> {
    if configured.components().count() > 1 {
        return runs_as(configured, user, &[])
            .await
            .map(|()| configured.to_path_buf())
            .map_err(|why| {
                format!(
                    "the step user {:?} cannot run the Python {}: {why}",
                    user.name,
                    configured.display()
                )
            });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut passed_over = Vec::new();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(configured);
        if !candidate.is_file() {
            continue;
        }
        match runs_as(&candidate, user, &[]).await {
            Ok(()) => {
                if !passed_over.is_empty() {
                    tracing::info!(target: "runlog::python",
                        "functions run as {:?}: their virtualenv is built on {} (passed over, that user cannot run it: {})",
                        user.name, candidate.display(), passed_over.join("; "));
                }
                return Ok(candidate);
            }
            Err(why) => passed_over.push(format!("{}: {why}", candidate.display())),
        }
    }
    Err(format!(
        "no {} on PATH can be run by the step user {:?}, who runs function workers{}: \
         install a Python that user may read (e.g. the system's /usr/bin/python3)",
        configured.display(),
        user.name,
        if passed_over.is_empty() {
            String::new()
        } else {
            format!(" ({})", passed_over.join("; "))
        }
    ))
}

/// Checks that `user` can run the virtualenv's `python`, read `files` (the harness)
/// and import `modules` (what every worker does at start). The error names the venv's base
/// interpreter and how to rebuild it: a venv built earlier with an interpreter the
/// user cannot reach is not silently replaced under other engines sharing it.
pub async fn check_venv(
    python: &Path,
    files: &[&Path],
    modules: &[&str],
    user: &StepUser,
) -> Result<(), String> {
    // The paths as arguments, not in the code: no quoting to get wrong.
    let mut code = String::from("import sys\nfor f in sys.argv[1:]: open(f, 'rb').close()");
    for m in modules {
        code.push_str("\nimport ");
        code.push_str(m);
    }
    let venv = python
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let mut args = vec![OsStr::new("-c"), OsStr::new(&code)];
    args.extend(files.iter().map(|f| f.as_os_str()));
    runs_as(python, user, &args).await.map_err(|why| {
        let base = base_of(venv).unwrap_or_else(|| "unknown".to_owned());
        format!(
            "the step user {:?}, who runs function workers, cannot use the virtualenv {} \
                 (base interpreter {base}): {why}; remove that directory to have it rebuilt \
                 with a Python the user can run, and keep the engine's umask letting others \
                 read (022)",
            user.name,
            venv.display()
        )
    })
}

/// The base interpreter's directory a virtualenv was made from (`home` of its
/// `pyvenv.cfg`).
fn base_of(venv: &Path) -> Option<String> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| value.trim().to_owned())
    })
}

/// Runs `python args…` as `user` (default: `-c pass`, the interpreter and its
/// standard library start); `Err` says why not, from the spawn error or the last line
/// of its stderr.
async fn runs_as(python: &Path, user: &StepUser, args: &[&OsStr]) -> Result<(), String> {
    let mut cmd = crate::child_env::untrusted_command(python);
    if args.is_empty() {
        cmd.args(["-c", "pass"]);
    } else {
        cmd.args(args);
    }
    // `/`: any user may stand there, so only the interpreter itself is on trial.
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    user.apply(&mut cmd);
    let out = match tokio::time::timeout(TRIAL_LIMIT, cmd.output()).await {
        Err(_) => return Err(format!("no answer within {TRIAL_LIMIT:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or_else(|| out.status.to_string(), |l| l.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_of_a_venv_is_its_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("pyvenv.cfg"),
            "home = /usr/bin\ninclude-system-site-packages = false\n",
        )
        .expect("written");
        assert_eq!(base_of(dir.path()).as_deref(), Some("/usr/bin"));
        assert_eq!(base_of(&dir.path().join("missing")), None);
    }
}
