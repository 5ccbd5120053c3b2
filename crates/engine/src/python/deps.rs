//! Dependency installation shared by `POST /setup` and `POST /execute`: one record of
//! what this runtime has installed, one install at a time in the process (a mutex)
//! and on the virtualenv across processes (an `flock` on a file beside it).
//!
//! One record for both routes: a package `/setup` installed is not installed again by
//! each function call that lists it (even an "already satisfied" pip run costs about a
//! second), and the two routes never run pip into the same virtualenv at once.

use crate::python::install::{InstallError, InstallPlan, Installer};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Why dependencies were not installed. The `Display` text is the one-line cause a
/// caller reports; the installer's own output is already in the log.
#[derive(Debug, thiserror::Error)]
pub enum DependencyError {
    /// The virtualenv the Python packages go into could not be prepared.
    #[error("the Python runtime could not be prepared: {0}")]
    Runtime(String),
    /// The install lock could not be taken: a fault of the engine's host, not of the
    /// request.
    #[error("dependency installation failed: cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// pip, uv or apt failed (or were not allowed to run).
    #[error("dependency installation failed: {0}")]
    Install(#[from] InstallError),
}

/// The installer of one runtime and what it has installed so far.
#[derive(Debug)]
pub(crate) struct Installs {
    installer: Installer,
    /// Specs installed successfully, `"pip <spec>"` / `"apt <name>"`.
    installed: Mutex<HashSet<String>>,
    /// One install at a time in this process: two pip runs into one venv corrupt it.
    turn: tokio::sync::Mutex<()>,
    /// Lock file beside the venv, for the same guarantee across processes (two
    /// engines sharing a data dir).
    lock_path: PathBuf,
}

impl Installs {
    pub(crate) fn new(installer: Installer, lock_path: PathBuf) -> Self {
        Installs {
            installer,
            installed: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
            lock_path,
        }
    }

    /// The installer (the virtualenv's bootstrap uses it too).
    pub(crate) fn installer(&self) -> &Installer {
        &self.installer
    }

    /// Installs the specs of `python` and `system` not installed before; logs one
    /// line either way. `parallel`: packages may be fetched concurrently.
    pub(crate) async fn ensure(
        &self,
        python: &[String],
        system: &[String],
        parallel: bool,
    ) -> Result<(), DependencyError> {
        // Wait for our turn before planning, so a caller that waited behind another's
        // install of the same specs finds them done and skips them.
        let _turn = self.turn.lock().await;
        let _lock = lock(&self.lock_path)
            .await
            .map_err(|source| DependencyError::Lock {
                path: self.lock_path.clone(),
                source,
            })?;
        let plan = {
            let done = self
                .installed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            InstallPlan {
                python: missing(python, &done, "pip"),
                system: missing(system, &done, "apt"),
                parallel,
            }
        };
        if plan.python.is_empty() && plan.system.is_empty() {
            let all: Vec<&str> = python.iter().chain(system).map(String::as_str).collect();
            tracing::info!(target: "runlog::install", "dependencies already installed: {}", all.join(" "));
            return Ok(());
        }
        if let Err(e) = self.installer.install(&plan).await {
            tracing::error!(target: "runlog::install", "dependency installation failed: {e}");
            return Err(e.into());
        }
        let mut done = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        done.extend(plan.python.iter().map(|s| format!("pip {s}")));
        done.extend(plan.system.iter().map(|s| format!("apt {s}")));
        tracing::info!(target: "runlog::install", "dependencies installed");
        Ok(())
    }
}

/// The specs of `wanted` not yet in `done` (keyed `"<kind> <spec>"`).
fn missing(wanted: &[String], done: &HashSet<String>, kind: &str) -> Vec<String> {
    wanted
        .iter()
        .filter(|s| !done.contains(&format!("{kind} {s}")))
        .cloned()
        .collect()
}

/// Takes the cross-process install lock (an exclusive `flock`, released when the
/// returned value is dropped), waiting on a blocking thread for another process's
/// install to finish.
async fn lock(path: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))
    })
    .await
    .map_err(std::io::Error::other)?
}
