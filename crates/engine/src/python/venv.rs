//! The runtime virtualenv: created on first use, reused afterwards.
//!
//! Creation happens in a sibling temporary directory that is renamed into place only
//! once `cloudpickle` is installed, so a crash mid-way never leaves a half-made venv
//! that later calls would trust, and two engines sharing a data dir never both build
//! into the same directory. The venv is only ever used through `bin/python -m …`,
//! which keeps working after the rename (script shebangs would not).

use crate::python::install::{InstallError, Installer, run_streamed};
use std::path::{Path, PathBuf};

/// File written into a venv once it is complete.
const READY_MARKER: &str = ".runlog-ready";

/// A ready virtualenv.
#[derive(Debug, Clone)]
pub struct Venv {
    dir: PathBuf,
}

/// Why the virtualenv could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    /// A filesystem operation failed.
    #[error("preparing the Python virtualenv in {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `python -m venv` or the bootstrap install failed.
    #[error("preparing the Python virtualenv: {0}")]
    Install(#[from] InstallError),
    /// Function workers run as a step user who could not run this virtualenv's Python
    /// (see [`crate::python::user_python`]).
    #[error("preparing the Python virtualenv: {0}")]
    StepUser(String),
}

impl Venv {
    /// The venv at `dir`, if it is complete.
    pub fn existing(dir: &Path) -> Option<Venv> {
        let venv = Venv {
            dir: dir.to_path_buf(),
        };
        (dir.join(READY_MARKER).is_file() && venv.python().is_file()).then_some(venv)
    }

    /// The venv at `dir`, created with `base_python` and `installer`'s settings (its
    /// `venv_python` is ignored) when missing.
    pub async fn ensure(
        dir: &Path,
        base_python: &Path,
        bootstrap: &[String],
        installer: &Installer,
    ) -> Result<Venv, VenvError> {
        if let Some(v) = Venv::existing(dir) {
            return Ok(v);
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| VenvError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        let tmp = parent.join(format!(
            ".venv-build-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let built = build(&tmp, base_python, bootstrap, installer).await;
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, dir) {
            Ok(()) => {}
            // Another engine finished first: use its venv, drop ours.
            Err(_) if Venv::existing(dir).is_some() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(source) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(VenvError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        tracing::info!(target: "runlog::python", "Python virtualenv ready in {}", dir.display());
        Ok(Venv {
            dir: dir.to_path_buf(),
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }
}

async fn build(
    tmp: &Path,
    base_python: &Path,
    bootstrap: &[String],
    installer: &Installer,
) -> Result<(), VenvError> {
    tracing::info!(target: "runlog::python", "creating Python virtualenv with {}", base_python.display());
    let mut cmd = crate::child_env::installer_command(base_python);
    cmd.args(["-m", "venv"]).arg(tmp);
    run_streamed(cmd, "venv").await?;
    if !bootstrap.is_empty() {
        installer
            .from_default_index(tmp.join("bin").join("python"))
            .pip_install(bootstrap)
            .await?;
    }
    std::fs::write(tmp.join(READY_MARKER), b"").map_err(|source| VenvError::Io {
        path: tmp.to_path_buf(),
        source,
    })
}
