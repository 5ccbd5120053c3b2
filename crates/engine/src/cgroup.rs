//! [`StageCgroup`]: one cgroup (v2) per stage, so that `/destroy` ends every process a
//! stage started.
//!
//! A step runs in its own process group, and killing that group ends what the step
//! started — unless a process left it (`setsid`, a daemonising tool), which then
//! outlived `/destroy` and could read the next stage's workspace. A cgroup cannot be
//! left by an unprivileged process: every step is started inside the stage's cgroup
//! (`process::run` has the child write itself into `cgroup.procs` between `fork` and `exec`, so nothing the
//! step forks is ever outside), and `/destroy` writes `cgroup.kill`.
//!
//! Without a writable cgroup v2 hierarchy (no cgroup2 mount, no permission, a
//! delegated cgroup with controllers that forbid children) the engine logs once per
//! stage and falls back to process groups alone.
//!
//! When the engine's cgroup offers the memory controller to its children, the stage
//! enables it for its own (`+memory`), and then every step runs in a child cgroup of
//! the stage (`crate::memory_cgroup`) — a cgroup that passes a controller on may not
//! hold processes itself. `cgroup.kill` and `populated` cover the children too.
//! Names carry the engine's identity (`crate::cgroup_leftovers`), so that an engine
//! can remove the ones a dead engine left.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup of one stage, removed again by [`StageCgroup::kill_and_remove`].
#[derive(Debug)]
pub struct StageCgroup {
    dir: PathBuf,
    /// Whether its children have the memory controller (steps then run in them).
    memory: bool,
}

impl StageCgroup {
    /// Creates `runlog-e<engine>-<stage id>` among the engine's own cgroup's children.
    pub fn create(stage_id: &str) -> Result<StageCgroup, String> {
        let parent = own_cgroup_dir().ok_or("no cgroup v2 hierarchy is mounted")?;
        let dir = parent.join(format!(
            "{}{stage_id}",
            crate::cgroup_leftovers::name_prefix()
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create a cgroup in {}: {e}", parent.display()))?;
        let memory = offers_memory(&dir)
            && std::fs::write(dir.join("cgroup.subtree_control"), b"+memory").is_ok();
        Ok(StageCgroup { dir, memory })
    }

    /// The file a process writes its pid to in order to join the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The stage's directory, when its children have the memory controller: steps
    /// must then run in a child (`crate::memory_cgroup`), not in the stage's own.
    pub fn memory_parent(&self) -> Option<&Path> {
        self.memory.then_some(self.dir.as_path())
    }

    /// Kills every process in the cgroup, waits until it is empty and removes it.
    pub async fn kill_and_remove(&self) -> Result<(), String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || kill_and_remove(&dir))
            .await
            .map_err(|e| format!("removing the stage's cgroup failed: {e}"))?
    }
}

fn kill_and_remove(dir: &Path) -> Result<(), String> {
    // `cgroup.kill` (Linux 5.14) kills atomically, forks in flight included; older
    // kernels get a SIGKILL per listed process until none is left.
    let kill_file = dir.join("cgroup.kill");
    let mut tries = 0;
    while populated(dir) {
        if kill_file.exists() {
            std::fs::write(&kill_file, b"1")
                .map_err(|e| format!("cannot kill the stage's processes: {e}"))?;
        } else {
            for pid in pids(dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Killed processes leave the cgroup as the kernel reaps them: a few ms.
        tries += 1;
        if tries > 500 {
            return Err("processes of the stage survived SIGKILL for 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Steps' cgroups that still held a process when their step ended.
    for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir(child.path())
                .map_err(|e| format!("cannot remove a step's cgroup: {e}"))?;
        }
    }
    std::fs::remove_dir(dir).map_err(|e| format!("cannot remove the stage's cgroup: {e}"))
}

/// Whether the parent offers the memory controller to `dir` (`cgroup.controllers`).
fn offers_memory(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
}

/// Whether any process is left (`cgroup.events` says `populated 1`).
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// The processes in `dir` and in its children.
pub(crate) fn pids(dir: &Path) -> Vec<i32> {
    let children = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|c| pids(&c.path()));
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .chain(children)
        .collect()
}

/// The engine's own cgroup directory in the cgroup v2 hierarchy.
pub fn own_cgroup_dir() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_dir(&mountinfo, &own)
}

/// Joins the cgroup2 mount point (`/proc/self/mountinfo`) with the process's v2 path
/// (the `0::/path` line of `/proc/self/cgroup`).
fn cgroup_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    let mount = mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <fstype> …"
        let (fields, fs) = line.split_once(" - ")?;
        fs.starts_with("cgroup2 ")
            .then(|| fields.split(' ').nth(4))
            .flatten()
    })?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(mount).join(path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_directory_is_the_mount_point_and_the_processs_path() {
        let mountinfo = "24 18 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                         35 24 0:30 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        let own = "4:memory:/x\n0::/ci/job\n";
        assert_eq!(
            cgroup_dir(mountinfo, own),
            Some(PathBuf::from("/sys/fs/cgroup/unified/ci/job"))
        );
        assert_eq!(
            cgroup_dir(mountinfo, "0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup_dir("1 2 0:1 / /sys rw - sysfs sysfs rw\n", own),
            None
        );
    }
}
