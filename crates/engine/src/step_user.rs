//! [`StepUser`]: the unprivileged user steps run as when the engine runs as root.
//!
//! A step is somebody else's code. Running it as root would let it read everything
//! the engine keeps (spools, outbox entries holding write tokens, the service's admin
//! secret under `runlog serve`) and reach `/proc` of the engine. So a root engine
//! starts every step and function worker as another user (`nobody` unless
//! `--step-user` names one): supplementary groups cleared, its group and user set in
//! the child between `fork` and `exec`. The stage's workspace and outputs directory
//! are given to that user ([`StepUser::own`]); everything else under the data
//! directory stays the engine's, the spool and outbox directories mode 0700, the data
//! directory itself 0711 (a step may pass through it to its workspace, not list it).
//! Installers (pip, uv, apt) stay the engine's user: they write the engine's venv and
//! the system. Function workers get a working directory of their own
//! ([`StepUser::private_dir`]) and an interpreter this user can run
//! (`crate::python::user_python`).

use nix::unistd::{Gid, Uid, User};
use std::path::Path;

/// The user name a root engine runs steps as when none is given.
pub const DEFAULT_STEP_USER: &str = "nobody";

/// A user steps run as: ids resolved once, at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUser {
    /// Its name (`USER`, `LOGNAME` of steps).
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
    /// Its home directory from the user database.
    pub home: std::path::PathBuf,
}

impl StepUser {
    /// Looks `name` up in the user database; an unknown user is an error naming it.
    pub fn lookup(name: &str) -> Result<StepUser, String> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(StepUser {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
            }),
            Ok(None) => Err(format!("step user {name:?}: no such user")),
            Err(e) => Err(format!("step user {name:?}: {e}")),
        }
    }

    /// The user steps run as by default: [`DEFAULT_STEP_USER`] when this process runs
    /// as root, else none (steps run as the engine's own user). A root engine on a
    /// system without that user is an error rather than root steps.
    pub fn default_for_engine() -> Result<Option<StepUser>, String> {
        StepUser::chosen(None)
    }

    /// The user for a `--step-user` value: `Some(name)` that user (`None` when it is
    /// the engine's own user), `None` [`StepUser::default_for_engine`].
    pub fn chosen(name: Option<&str>) -> Result<Option<StepUser>, String> {
        let user = match name {
            Some(name) => StepUser::lookup(name)?,
            None if Uid::effective().is_root() => StepUser::lookup(DEFAULT_STEP_USER)?,
            None => return Ok(None),
        };
        Ok((user.uid != Uid::effective().as_raw()).then_some(user))
    }

    /// Gives `path` (and, for a directory, everything in it) to this user, so steps can
    /// write their workspace. Symbolic links are changed themselves, never followed.
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)));
        let chown = |p: &Path| {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                p,
                uid,
                gid,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(std::io::Error::from)
        };
        chown(path)?;
        if std::fs::symlink_metadata(path)?.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.own(&entry?.path())?;
            }
        }
        Ok(())
    }

    /// Creates `dir` (mode 0700) when missing and gives the directory itself, never
    /// what is in it, to this user: a working directory of its own (the function
    /// workers'). Not recursive on purpose: what is inside was made by this user, and
    /// walking a tree the user can change, as root, could be led along a planted link.
    pub fn private_dir(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(dir)?;
        std::os::unix::fs::lchown(dir, Some(self.uid), Some(self.gid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }

    /// Makes `cmd`'s child this user once it has started: groups cleared, then group
    /// and user set (std does it between `fork` and `exec`, before `pre_exec`
    /// callbacks, clearing supplementary groups when the parent is root).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    /// `env` with `USER`, `LOGNAME` and `HOME` of this user; `HOME` is `fallback_home`
    /// when the user's own does not exist (`nobody`'s `/nonexistent`), so tools that
    /// write under `~` (caches, git's config) still work.
    pub fn set_identity(
        &self,
        env: &mut std::collections::BTreeMap<String, String>,
        fallback_home: &Path,
    ) {
        env.insert("USER".into(), self.name.clone());
        env.insert("LOGNAME".into(), self.name.clone());
        let home = if self.home.is_dir() {
            &self.home
        } else {
            fallback_home
        };
        env.insert("HOME".into(), home.display().to_string());
    }
}

/// Makes the engine's data directory passable but not listable by others (0711), and
/// creates it so. Its private parts (spool, outbox) are 0700 on their own.
pub fn protect_data_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_step_user_is_an_error_naming_it() {
        let e = StepUser::chosen(Some("runlog-no-such-user")).expect_err("unknown");
        assert!(e.contains("runlog-no-such-user"), "{e}");
    }

    #[test]
    fn the_engines_own_user_means_no_change() {
        let me = User::from_uid(Uid::effective())
            .expect("user database")
            .expect("this process's user");
        assert_eq!(StepUser::chosen(Some(&me.name)), Ok(None));
    }

    #[test]
    fn a_missing_home_falls_back_to_the_workspace() {
        let user = StepUser {
            name: "u".into(),
            uid: 1,
            gid: 1,
            home: "/nonexistent/runlog-home".into(),
        };
        let mut env = std::collections::BTreeMap::new();
        user.set_identity(&mut env, Path::new("/ws"));
        assert_eq!(env.get("HOME").map(String::as_str), Some("/ws"));
        assert_eq!(env.get("USER").map(String::as_str), Some("u"));
    }
}
