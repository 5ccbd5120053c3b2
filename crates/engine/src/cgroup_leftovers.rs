//! Cgroups left behind by engines that died without `/destroy`.
//!
//! Every cgroup the engine makes (a stage's, a step's memory cgroup) is named with
//! [`name_prefix`]: `runlog-e<pid>.<start time>-`, the engine process's id and its
//! start time in clock ticks, which together name one process for the machine's
//! uptime (a pid alone may be reused). At start the engine removes the empty
//! cgroups whose owner no longer runs ([`remove`]). A cgroup of a live engine is
//! left alone even when empty: that engine may start its next step in it at any
//! moment. A populated one cannot be removed (`rmdir` fails) and is left too.
//! Cgroups named without an owner (`runlog-stage-…`, made by earlier versions) are
//! not touched, since nothing tells whether their engine still runs.

use std::path::Path;
use std::sync::OnceLock;

/// The start of the name of every cgroup this engine process makes.
pub fn name_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let pid = std::process::id();
        let start = start_time(pid).unwrap_or(0);
        format!("runlog-e{pid}.{start}-")
    })
}

/// Removes the empty cgroups under `parent` whose engine is gone (with their empty
/// children: a stage's step cgroups); answers how many were removed.
pub fn remove(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(owner)
                .is_some_and(|(pid, start)| start_time(pid) != Some(start))
        })
        .filter(|e| remove_tree(&e.path()))
        .count()
}

/// `rmdir` of the children, then of `dir`; false when anything is left (a process
/// still in it).
fn remove_tree(dir: &Path) -> bool {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.filter_map(Result::ok) {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
    }
    std::fs::remove_dir(dir).is_ok()
}

/// The owner `(pid, start time)` in a cgroup's name, if it has one.
fn owner(name: &str) -> Option<(u32, u64)> {
    let (pid, rest) = name.strip_prefix("runlog-e")?.split_once('.')?;
    let (start, _) = rest.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`); `None` when it
/// does not run.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`, where field 3 begins.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner("runlog-e42.1234-stage-00ff"), Some((42, 1234)));
        assert_eq!(
            owner("runlog-stage-00ff"),
            None,
            "no owner: earlier versions"
        );
        assert_eq!(owner("runlog-e42-stage"), None);
        assert_eq!(owner("other"), None);
    }

    #[test]
    fn start_time_is_counted_after_the_command_name() {
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn empty_cgroups_of_gone_engines_are_removed_and_live_ones_kept() {
        let parent = tempfile::tempdir().expect("tempdir");
        let own = parent.path().join(format!("{}stage-1", name_prefix()));
        // pid 0 is no process: its owner is gone.
        let gone = parent.path().join("runlog-e0.5-stage-2");
        let gone_busy = parent.path().join("runlog-e0.5-stage-3");
        let unowned = parent.path().join("runlog-stage-4");
        for dir in [&own, &gone, &gone_busy, &unowned] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        std::fs::create_dir(gone.join("step-a")).expect("mkdir");
        // A file stands for a process: on cgroupfs it makes rmdir fail the same way.
        std::fs::write(gone_busy.join("busy"), "").expect("write");
        assert_eq!(remove(parent.path()), 1);
        assert!(!gone.exists());
        assert!(own.exists() && gone_busy.exists() && unowned.exists());
    }
}
