//! A step's memory cgroup: the limit of `mem_limit`, and whether the kernel's OOM
//! killer ended a process of the step (lite-engine's `oom_killed`, which it gets from
//! Docker for container steps).
//!
//! Every step gets one when a memory controller is usable, with a limit or without:
//! the cgroup's own OOM kill counter then tells the step's kills from any other's,
//! whichever OOM killer (the limit's or the machine's) chose the victim. The child
//! joins it between `fork` and `exec` (`process::run`), so everything the step forks
//! is charged to it; it is removed when the step ends, or — while a process the step
//! left outside its process group still lives in it — at `/destroy`.
//!
//! Which controller:
//! - **cgroup v2**, when the engine's cgroup offers `memory` to the stage's cgroup
//!   ([`crate::cgroup::StageCgroup::memory_parent`]): a child of the stage's cgroup,
//!   `memory.max` (and `memory.swap.max` 0, so the limit is not met by swapping),
//!   kills counted in `memory.events`;
//! - else **cgroup v1**'s memory hierarchy: a child of the engine's own memory
//!   cgroup (`N:memory:/path` of `/proc/self/cgroup`), `memory.limit_in_bytes` (and
//!   `memory.memsw.limit_in_bytes`, where swap is accounted), kills counted as
//!   `oom_kill` in `memory.oom_control`;
//! - else none: the step runs, a `mem_limit` is not enforced (logged once per
//!   engine), and `oom_killed` is never reported.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which memory controller a cgroup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One step's memory cgroup.
#[derive(Debug)]
pub struct StepMemory {
    dir: PathBuf,
    version: Version,
}

impl StepMemory {
    /// The memory cgroup of step `step_id`, limited to `limit` bytes when given.
    /// `Ok(None)`: no memory controller is usable (logged once). An error: the stage's
    /// cgroup passes the controller on, so the step may not run in it, and its own
    /// could not be made.
    pub fn create(
        stage: Option<&crate::cgroup::StageCgroup>,
        stage_id: &str,
        step_id: &str,
        limit: Option<u64>,
    ) -> Result<Option<StepMemory>, String> {
        if let Some(parent) = stage.and_then(|s| s.memory_parent()) {
            return create_in(parent, &format!("step-{step_id}"), Version::V2, limit)
                .map(Some)
                .map_err(|e| format!("cannot create the step's cgroup: {e}"));
        }
        let Some(parent) = v1_parent() else {
            unusable(limit, "no memory controller is mounted");
            return Ok(None);
        };
        let name = format!(
            "{}{stage_id}-step-{step_id}",
            crate::cgroup_leftovers::name_prefix()
        );
        match create_in(parent, &name, Version::V1, limit) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                unusable(limit, &format!("cannot create a memory cgroup: {e}"));
                Ok(None)
            }
        }
    }

    /// The file a process writes its pid to in order to join the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The `cgroup.procs` files the step's process joins: a v2 step cgroup lies
    /// inside the stage's, a v1 one in another hierarchy beside it.
    pub fn cgroups_to_join(&self, stage: Option<&crate::cgroup::StageCgroup>) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.procs_file()],
            Version::V1 => stage
                .map(|s| s.procs_file())
                .into_iter()
                .chain([self.procs_file()])
                .collect(),
        }
    }

    /// How many of the step's processes the kernel's OOM killer has ended.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Removes the cgroup; hands it back while a process is still in it (one the step
    /// started outside its process group, which lives until `/destroy`).
    pub fn remove(self) -> Result<(), StepMemory> {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(_) => Err(self),
        }
    }

    /// Kills what is left in the cgroup and removes it (at `/destroy`, after the
    /// stage's cgroup was killed — which already covers a v2 step cgroup).
    pub async fn kill_and_remove(self) -> Result<(), String> {
        let mut left = self;
        for _ in 0..500 {
            for pid in crate::cgroup::pids(&left.dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            left = match left.remove() {
                Ok(()) => return Ok(()),
                Err(left) => left,
            };
            // Killed processes leave the cgroup as the kernel reaps them: a few ms.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(format!(
            "cannot remove the step's memory cgroup {}: its processes survived SIGKILL for 5 s",
            left.dir.display()
        ))
    }
}

/// Which controller steps' memory cgroups use on this machine, or why none can be
/// used (the same checks as [`StepMemory::create`], without making a cgroup).
pub fn usable() -> Result<&'static str, String> {
    let offers_v2 = crate::cgroup::own_cgroup_dir()
        .and_then(|d| std::fs::read_to_string(d.join("cgroup.subtree_control")).ok())
        .is_some_and(|c| c.split_whitespace().any(|c| c == "memory"));
    if offers_v2 {
        return Ok("cgroup v2");
    }
    let parent = v1_parent().ok_or(
        "no memory controller: cgroup v2 does not offer it to the engine's children and no v1 memory hierarchy is mounted",
    )?;
    nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK)
        .map(|()| "cgroup v1")
        .map_err(|e| {
            format!(
                "the v1 memory cgroup {} is not writable: {e}",
                parent.display()
            )
        })
}

/// Makes `parent/name` with the limit; removed again when the limit cannot be set.
fn create_in(
    parent: &Path,
    name: &str,
    version: Version,
    limit: Option<u64>,
) -> std::io::Result<StepMemory> {
    let dir = parent.join(name);
    std::fs::create_dir(&dir)?;
    let memory = StepMemory { dir, version };
    if let Some(limit) = limit
        && let Err(e) = set_limit(&memory.dir, version, limit)
    {
        let _ = memory.remove();
        return Err(e);
    }
    Ok(memory)
}

/// Writes the limit; swap counts against it where the kernel accounts swap.
fn set_limit(dir: &Path, version: Version, limit: u64) -> std::io::Result<()> {
    let limit = limit.to_string();
    match version {
        Version::V2 => {
            std::fs::write(dir.join("memory.max"), &limit)?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                std::fs::write(swap, "0")?;
            }
        }
        Version::V1 => {
            // The RAM limit first: the kernel refuses a RAM+swap limit below it.
            std::fs::write(dir.join("memory.limit_in_bytes"), &limit)?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                std::fs::write(memsw, &limit)?;
            }
        }
    }
    Ok(())
}

/// Logs, once per engine, that memory limits are not enforced (only when a step
/// asked for one: without a limit nothing is lost but `oom_killed`).
fn unusable(limit: Option<u64>, why: &str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if limit.is_some() && !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "runlog::engine",
            "{why}: steps' mem_limit is not enforced and oom_killed is not reported"
        );
    }
}

/// The engine's own cgroup in the v1 memory hierarchy, looked up once.
pub fn v1_parent() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        v1_dir(&mountinfo, &own)
    })
    .as_deref()
}

/// Joins the v1 memory hierarchy's mount point (`/proc/self/mountinfo`: a `cgroup`
/// mount with `memory` among its options) with the process's path in it (the
/// `N:…memory…:/path` line of `/proc/self/cgroup`), less the mount's own root (a
/// container sees its cgroup mounted as `/`).
fn v1_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    let (root, mount) = mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <fstype> <source> <super options>"
        let (fields, fs) = line.split_once(" - ")?;
        let mut fs = fs.split(' ');
        let (kind, options) = (fs.next()?, fs.nth(1)?);
        let is_memory = kind == "cgroup" && options.split(',').any(|o| o == "memory");
        let mut fields = fields.split(' ').skip(3);
        is_memory.then_some((fields.next()?, fields.next()?))
    })?;
    let path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let path = Path::new(path);
    let inside = path.strip_prefix(root).unwrap_or(path);
    Some(Path::new(mount).join(inside.strip_prefix("/").unwrap_or(inside)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_directory_is_the_memory_mount_and_the_processs_path() {
        let mountinfo = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                         35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        let own = "8:pids:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            v1_dir(mountinfo, own),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"))
        );
        // Co-mounted controllers, and a container whose cgroup is the mount's root.
        let shared =
            "35 31 0:32 /docker/x /sys/fs/cgroup/cpu,memory ro - cgroup cgroup rw,cpu,memory\n";
        assert_eq!(
            v1_dir(shared, "3:cpu,memory:/docker/x/job\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,memory/job"))
        );
        assert_eq!(v1_dir(mountinfo, "0::/\n"), None, "no memory line");
        assert_eq!(
            v1_dir("41 31 0:38 / /u rw - cgroup2 cgroup2 rw\n", own),
            None,
            "no v1 memory mount"
        );
    }

    /// On a cgroup v2 machine with the memory controller (not this one's kind of
    /// test host) the limit goes to `memory.max`, swap is shut, and kills are read
    /// from `memory.events`: the files are checked in a plain directory.
    #[test]
    fn a_v2_cgroup_gets_the_limit_and_counts_kills() {
        let stage = tempfile::tempdir().expect("tempdir");
        let memory =
            create_in(stage.path(), "step-a", Version::V2, Some(64 << 20)).expect("created");
        assert_eq!(
            std::fs::read_to_string(memory.dir.join("memory.max")).expect("read"),
            "67108864"
        );
        assert_eq!(memory.oom_kills(), 0);
        std::fs::write(
            memory.dir.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .expect("write");
        assert_eq!(memory.oom_kills(), 1);
    }
}
