//! Space held back for the writer's own files on a file system that others fill.
//!
//! Why: an engine's spools and outbox share a file system with the steps' workspaces,
//! and a step can fill it. Then every spool write fails, and lines that only the
//! spool held (a memory queue that overflowed) are lost — counted and stated, but
//! lost. So the host holds a preallocated file in the spool directory ([`hold`]);
//! the first write there that meets a full disk deletes it (`release`) and tries
//! again, and the writers go on in the space it held. The host makes it again when
//! the space is back (the engine: at each `/setup`, after the last stage's workspace
//! was removed).
//!
//! Chosen over a separate size limit per data directory because only a file system
//! can refuse the step's writes: the space must be taken from it ahead.

use std::path::{Path, PathBuf};

/// The reserve's file name in its directory (not a spool's `livelog-<pid>-…` name,
/// nor a free file's `livelog-free-…`).
const NAME: &str = "livelog-reserve";

fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// Makes sure `dir` (a spool directory, created if missing) holds a reserve of
/// `bytes`, allocated on disk (not a sparse file). A reserve that cannot be made
/// whole is removed and the error returned: a full disk has no space to hold, and
/// half a reserve would be mistaken for one.
pub fn hold(dir: &Path, bytes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = path(dir);
    if std::fs::metadata(&file).is_ok_and(|m| m.len() >= bytes) {
        return Ok(());
    }
    crate::private_dir::create(dir)?;
    let f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&file)?;
    let len = i64::try_from(bytes).map_err(std::io::Error::other)?;
    nix::fcntl::posix_fallocate(&f, 0, len).map_err(|e| {
        let _ = std::fs::remove_file(&file);
        std::io::Error::from(e)
    })
}

/// Whether `dir` holds a reserve now.
pub fn is_held(dir: &Path) -> bool {
    path(dir).is_file()
}

/// Gives the reserve of `dir` back to the file system, so the writer that met a
/// full disk can write on. Returns whether there was one.
pub(crate) fn release(dir: &Path) -> bool {
    let released = std::fs::remove_file(path(dir)).is_ok();
    if released {
        metrics::counter!("livelog_reserve_released_total").increment(1);
    }
    released
}

/// Whether `e` is a full file system (or a full quota), the case the reserve is for.
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_reserve_takes_its_space_and_release_gives_it_back_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = dir.path().join("spool");
        hold(&spool, 1 << 20).expect("reserve");
        assert!(is_held(&spool));
        let meta = std::fs::metadata(path(&spool)).expect("reserve file");
        use std::os::unix::fs::MetadataExt as _;
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "the reserve is allocated, not sparse"
        );
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(release(&spool));
        assert!(!release(&spool), "released twice");
        assert!(!is_held(&spool));
    }
}
