//! A stage's own `/tmp`: the steps of an engine that runs them as another user see
//! their stage's temporary directory (`Stage::tmp_dir`, removed by `/destroy`) at
//! `/tmp` and `/var/tmp`, in a mount namespace of their own. What a step writes to
//! `/tmp` itself, rather than to its `TMPDIR`, is then gone with its stage instead of
//! waiting there for the next stage's steps, who run as the same user.
//!
//! Made between `fork` and `exec` (`process::run`'s `pre_exec`, while the child is
//! still the engine's root user): a new mount namespace, every mount in it made
//! private (nothing the step mounts reaches the machine), then the stage's directory
//! bound over each target. Only where it can hide nothing the step needs
//! ([`TmpMounts::plan`]) and where the kernel allows it ([`probe`], once per engine).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// The directories a step sees as its stage's: `/tmp` and `/var/tmp`.
pub const TARGETS: [&str; 2] = ["/tmp", "/var/tmp"];

/// The mounts one step's child makes before `exec`, prepared in the engine so the
/// child allocates nothing between `fork` and `exec`.
#[derive(Debug, Clone)]
pub struct TmpMounts {
    source: CString,
    targets: Vec<CString>,
}

impl TmpMounts {
    /// The mounts that show `stage_tmp` at each of [`TARGETS`] that exists, or why
    /// not: a target that holds one of `needed` (the workspace, the working
    /// directory, the outputs file) would hide it from the step.
    pub fn plan(stage_tmp: &Path, needed: &[&Path]) -> Result<TmpMounts, String> {
        let targets: Vec<&Path> = TARGETS
            .iter()
            .map(Path::new)
            .filter(|t| t.is_dir())
            .collect();
        for path in needed {
            // As given and as resolved: `/tmp` may be reached through a link.
            let resolved = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            if let Some(t) = targets
                .iter()
                .find(|t| path.starts_with(t) || resolved.starts_with(t))
            {
                return Err(format!(
                    "{} lies under {}, which the stage's own would hide",
                    path.display(),
                    t.display()
                ));
            }
        }
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| format!("{} holds a NUL byte", p.display()))
        };
        Ok(TmpMounts {
            source: c(stage_tmp)?,
            targets: targets.into_iter().map(c).collect::<Result<_, _>>()?,
        })
    }

    /// In the child, before `exec`: a mount namespace of its own, every mount private
    /// to it, the stage's directory bound over each target. Only system calls on
    /// values prepared before the fork.
    pub(crate) fn enter(&self) -> nix::Result<()> {
        enter_namespace()?;
        for target in &self.targets {
            nix::mount::mount(
                Some(self.source.as_c_str()),
                target.as_c_str(),
                None::<&std::ffi::CStr>,
                nix::mount::MsFlags::MS_BIND,
                None::<&std::ffi::CStr>,
            )?;
        }
        Ok(())
    }
}

/// A new mount namespace whose mounts propagate nowhere (so the binds made in it
/// never reach the machine's).
fn enter_namespace() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&std::ffi::CStr>,
        c"/",
        None::<&std::ffi::CStr>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&std::ffi::CStr>,
    )
}

/// Whether this engine may give steps a mount namespace: a child that tries and
/// then runs `true`. Not where the engine lacks the privilege (not root, or a
/// container without `CAP_SYS_ADMIN`); the error says what failed.
// Code between `fork` and `exec`, as `process::run` runs for every step: std offers
// no safe way.
#[allow(unsafe_code)]
pub fn probe() -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new("true");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the callback only makes system calls (unshare, mount) on constants.
    unsafe {
        cmd.pre_exec(|| enter_namespace().map_err(std::io::Error::from));
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("a probe in a new mount namespace exited with {s}")),
        Err(e) => Err(format!("cannot make a mount namespace: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_needed_path_under_tmp_keeps_the_machine_s_tmp() {
        let why = TmpMounts::plan(
            Path::new("/srv/runlog/stages/a.runlog/tmp"),
            &[Path::new("/tmp/harness/ws")],
        )
        .expect_err("the workspace would be hidden");
        assert!(why.contains("/tmp/harness/ws lies under /tmp"), "{why}");
    }

    #[test]
    fn paths_outside_the_targets_are_planned_over_each_existing_target() {
        let m = TmpMounts::plan(
            Path::new("/srv/runlog/stages/a.runlog/tmp"),
            &[Path::new("/srv/runlog/stages/a"), Path::new("/srv/x")],
        )
        .expect("nothing hidden");
        assert_eq!(m.source.as_bytes(), b"/srv/runlog/stages/a.runlog/tmp");
        let expected: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| Path::new(t).is_dir())
            .collect();
        let got: Vec<&str> = m.targets.iter().filter_map(|t| t.to_str().ok()).collect();
        assert_eq!(got, expected);
    }
}
