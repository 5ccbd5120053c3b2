//! Spool files kept for reuse once their history is archived.
//!
//! Why: a spool takes every byte its writer produces, and writing into pages the page
//! cache already holds is several times cheaper than into new ones. Measured with `dd`
//! on the project's 2-core VM (`bench/RESULTS.md`): 7.2 GB/s overwriting a cached file,
//! 2.3–3.8 GB/s writing a new file right after one was deleted, 0.4–0.6 GB/s once the
//! kernel has handed the freed memory back to the hypervisor. An engine closes a writer
//! per step and starts the next one; the next spool overwrites the last one's pages.
//!
//! How a reused file stays safe to read: it still holds an older history past the new
//! one's end. Readers never look past the spool's `written` offset; at close the file
//! is cut to its length before it is uploaded or handed to the outbox; and until then
//! every write puts a NUL byte (never part of a JSON row) after the rows, where a
//! recovery after a crash stops reading ([`crate::spool::Spool`], `recovery`).
//!
//! Free files are named `livelog-free-<pid>-<n>.ndjson` in their spool directory, so
//! recovery records never point at them; the first use of a directory in a process
//! removes the free files of processes that are gone. At most [`MAX_FILES`] files per
//! directory, of at most [`MAX_FILE_BYTES`] each, are kept; any other spool is deleted
//! at close as before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Free files kept per spool directory (an engine runs a few writers at a time).
pub const MAX_FILES: usize = 2;
/// A spool larger than this is deleted rather than kept (disk space held for reuse).
pub const MAX_FILE_BYTES: u64 = 512 << 20;

const PREFIX: &str = "livelog-free-";

struct Pool {
    /// Free files: (spool directory, path).
    free: Vec<(PathBuf, PathBuf)>,
    /// Directories already cleared of dead processes' free files.
    swept: Vec<PathBuf>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    swept: Vec::new(),
});

static SEQ: AtomicU64 = AtomicU64::new(0);

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // The pool is a list of paths, consistent after any panic.
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Moves a free spool file of `dir` to `to` and returns true, or returns false when
/// there is none (the caller creates a new file).
pub(crate) fn take(dir: &Path, to: &Path) -> bool {
    let mut pool = pool();
    sweep_once(&mut pool, dir);
    while let Some(i) = pool.free.iter().rposition(|(d, _)| d == dir) {
        let (_, free) = pool.free.swap_remove(i);
        // Fails when the file was removed meanwhile (by hand, or by another process
        // sweeping the directory): try the next one.
        if std::fs::rename(&free, to).is_ok() {
            return true;
        }
    }
    false
}

/// Keeps the spool at `path` in `dir`, `len` bytes, whose history is archived, for the
/// next writer; deletes it when the pool is full or the file too large.
pub(crate) fn give_back(dir: &Path, path: &Path, len: u64) {
    let mut pool = pool();
    sweep_once(&mut pool, dir);
    let kept = pool.free.iter().filter(|(d, _)| d == dir).count();
    if len <= MAX_FILE_BYTES && kept < MAX_FILES {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let free = dir.join(format!("{PREFIX}{}-{n}.ndjson", std::process::id()));
        if std::fs::rename(path, &free).is_ok() {
            pool.free.push((dir.to_owned(), free));
            return;
        }
    }
    let _ = std::fs::remove_file(path);
}

/// Deletes every free file this process keeps in `dir`, so no later writer's file
/// starts with an older history past its end. Called where one tenant's writers end
/// and another's may begin (an engine's `/destroy`, once the stage's writers are
/// closed): a step that can read the spool directory — one running as the engine's
/// own user — then finds nothing of an earlier stage there. Files taken meanwhile by
/// a live writer are its own and stay.
pub fn release(dir: &Path) {
    let mut pool = pool();
    pool.free.retain(|(d, free)| {
        if d != dir {
            return true;
        }
        let _ = std::fs::remove_file(free);
        false
    });
}

/// Removes the free files in `dir` of processes that no longer run, once per
/// directory and process (a crashed process leaves its free files behind).
fn sweep_once(pool: &mut Pool, dir: &Path) {
    if pool.swept.iter().any(|d| d == dir) {
        return;
    }
    pool.swept.push(dir.to_owned());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let owner = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        if owner.is_some_and(|pid| !running(pid)) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether process `pid` exists (signal 0: checks without sending anything).
fn running(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // It exists but belongs to someone else.
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_file_is_taken_by_the_next_spool_of_its_directory_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("temp dir");
        let first = dir.path().join("livelog-a.ndjson");
        std::fs::write(&first, b"{\"pos\":0}\n").expect("write");
        give_back(dir.path(), &first, 10);
        assert!(!first.exists(), "the spool keeps no name of its own");
        assert!(
            !take(other.path(), &other.path().join("x.ndjson")),
            "a file moved to another directory"
        );
        let second = dir.path().join("livelog-b.ndjson");
        assert!(take(dir.path(), &second));
        assert_eq!(std::fs::read(&second).expect("read"), b"{\"pos\":0}\n");
        assert!(
            !take(dir.path(), &dir.path().join("livelog-c.ndjson")),
            "one file taken twice"
        );
    }

    #[test]
    fn released_files_are_deleted_and_never_taken() {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("temp dir");
        for (d, name) in [(dir.path(), "a"), (other.path(), "b")] {
            let spool = d.join(format!("livelog-{name}.ndjson"));
            std::fs::write(&spool, b"{\"pos\":0,\"out\":\"earlier\"}\n").expect("write");
            give_back(d, &spool, 10);
        }
        release(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
        assert!(!take(dir.path(), &dir.path().join("livelog-c.ndjson")));
        assert!(
            take(other.path(), &other.path().join("livelog-d.ndjson")),
            "another directory's free file was released"
        );
    }

    #[test]
    fn too_large_a_spool_is_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let big = dir.path().join("livelog-big.ndjson");
        std::fs::write(&big, b"x").expect("write");
        give_back(dir.path(), &big, MAX_FILE_BYTES + 1);
        assert!(!big.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn free_files_of_a_dead_process_are_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A child that has exited and been reaped: its pid runs nothing (pids are not
        // reused that fast).
        let mut dead = std::process::Command::new("true").spawn().expect("spawn");
        let dead_pid = dead.id();
        dead.wait().expect("wait");
        let stale = dir.path().join(format!("{PREFIX}{dead_pid}-0.ndjson"));
        let live = dir
            .path()
            .join(format!("{PREFIX}{}-999.ndjson", std::process::id()));
        std::fs::write(&stale, b"old").expect("write");
        std::fs::write(&live, b"ours").expect("write");
        let spool = dir.path().join("livelog-new.ndjson");
        // Sweeps the directory first; then nothing is free in this process's pool.
        assert!(!take(dir.path(), &spool));
        assert!(!stale.exists(), "a dead process's free file was kept");
        assert!(live.exists(), "a running process's free file was removed");
    }
}
