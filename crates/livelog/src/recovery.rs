//! Recovery records: what makes a writer's spool deliverable when its process dies
//! before `close()` (SIGKILL, power loss).
//!
//! When a writer with an outbox starts, it writes `<spool name>.recover.json` into the
//! outbox directory: the outbox entry `close()` would write, plus the spool's path.
//! The record is written to a temporary file, locked with an exclusive advisory lock
//! (`flock`), then renamed into place, so it is never seen half-written or unlocked
//! while its writer lives; the writer holds the lock until `close()` has archived the
//! history or handed it to the outbox, then removes the record.
//!
//! At the next start, [`adopt_orphans`] takes the lock of every record it can: a
//! record whose lock is free has no live writer (the kernel drops a dead process's
//! locks), so its spool is moved into a regular outbox entry and delivered like any
//! other. A record whose lock is held is a live writer's, in this process or another,
//! and is left alone.

use crate::outbox::{Entry, write_private};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".recover.json";

/// What the record file holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    spool: PathBuf,
    #[serde(flatten)]
    entry: Entry,
}

/// A live writer's record; the lock is held for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Record {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Record {
    /// Removes the record: the history was delivered or is in the outbox.
    pub(crate) fn remove(self) {
        // Removed before the lock is released (on drop), so no one adopts it between.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes the record of the spool at `spool` into `outbox_dir` and locks it.
pub(crate) fn create(outbox_dir: &Path, spool: &Path, entry: &Entry) -> std::io::Result<Record> {
    let stem = spool
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::other("the spool has no file name"))?;
    crate::private_dir::create(outbox_dir)?;
    let path = outbox_dir.join(format!("{stem}{SUFFIX}"));
    let tmp = outbox_dir.join(format!(".{stem}{SUFFIX}.tmp"));
    let json = serde_json::to_vec_pretty(&Stored {
        spool: std::path::absolute(spool)?,
        entry: entry.clone(),
    })
    .map_err(std::io::Error::other)?;
    // Not synced: it guards against the death of the process (its spool is not synced
    // either), and a writer starts once per step or call.
    let file = write_private(&tmp, &json, false)?;
    // Locked before it has its final name: an adopter never finds it unlocked.
    let file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))?;
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Record { path, _lock: file })
}

/// Turns every record in `dir` whose writer is gone into an outbox entry (its spool
/// moved into it, a row cut by the kill removed); returns what could not be adopted.
pub(crate) fn adopt_orphans(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records: Vec<PathBuf> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
        })
        .collect();
    records.sort();
    records
        .iter()
        .filter_map(|p| adopt(dir, p).err().map(|e| format!("{}: {e}", p.display())))
        .collect()
}

/// Adopts one record if its lock is free; `Ok` also when it is a live writer's.
fn adopt(dir: &Path, path: &Path) -> std::io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Removed meanwhile by its writer's close() or another adopter.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let Ok(mut file) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return Ok(()); // A live writer (or another adopter) holds it.
    };
    // Between opening and locking, the record may have been removed (and its name
    // reused): only the file still at `path` counts.
    if !same_file(&file, path) {
        return Ok(());
    }
    let mut json = Vec::new();
    file.read_to_end(&mut json)?;
    let stored: Stored = serde_json::from_slice(&json)
        .map_err(|e| std::io::Error::other(format!("bad recovery record: {e}")))?;
    match std::fs::metadata(&stored.spool) {
        Ok(_) => {
            cut_partial_row(&stored.spool)?;
            crate::outbox::store(dir, &stored.spool, &stored.entry)?;
        }
        // Archived, or moved to the outbox, before the process died; a move whose
        // entry file was never written is finished now, or nothing would send it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::outbox::finish_store(dir, &stored.spool, &stored.entry)?;
        }
        Err(e) => return Err(e),
    }
    std::fs::remove_file(path)
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Cuts a killed writer's spool to its history. A writer's rows are numbered 0, 1,
/// 2, … without a gap, so the history ends before the first row that is cut short,
/// is not JSON, is numbered otherwise or holds the end mark
/// ([`crate::spool::END_OF_ROWS`]). What follows is not this history: half a row, or
/// in a reused spool file an older history — whose end mark a write torn by the kill
/// may have overwritten, so the mark alone is not enough.
fn cut_partial_row(spool: &Path) -> std::io::Result<()> {
    let mut f = File::options().read(true).write(true).open(spool)?;
    let len = f.metadata()?.len();
    let end = history_end(&mut f)?;
    if end < len {
        f.set_len(end)?;
    }
    Ok(())
}

/// Length of the run of rows numbered in sequence (n, n+1, n+2, …) at the start of
/// `f`: `n` is the first row's `pos`, 0 unless the writer continued a stream that
/// held lines (a recycled file's older history is behind the end mark written at
/// offset 0 before the first row).
fn history_end(f: &mut File) -> std::io::Result<u64> {
    use std::io::BufRead as _;
    #[derive(serde::Deserialize)]
    struct Numbered {
        pos: u64,
    }
    f.seek(SeekFrom::Start(0))?;
    let mut rows = std::io::BufReader::with_capacity(256 * 1024, &mut *f);
    let (mut end, mut next) = (0u64, None::<u64>);
    let mut row = Vec::new();
    loop {
        row.clear();
        let n = rows.read_until(b'\n', &mut row)?;
        let Some(body) = row.strip_suffix(b"\n") else {
            return Ok(end); // the end of the file, or a row cut short
        };
        let pos = (!body.contains(&crate::spool::END_OF_ROWS))
            .then(|| serde_json::from_slice::<Numbered>(body).ok())
            .flatten()
            .map(|r| r.pos)
            .filter(|p| next.is_none_or(|n| *p == n));
        let Some(pos) = pos else {
            return Ok(end);
        };
        next = Some(pos.saturating_add(1));
        end += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry::uploading("k")
    }

    /// The archive an orphaned spool holding `history` leaves in the outbox once
    /// adopted.
    fn adopted_archive(history: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = dir.path().join("outbox");
        let spool = dir.path().join("livelog-1.ndjson");
        std::fs::write(&spool, history).expect("spool");
        drop(create(&outbox, &spool, &entry()).expect("record"));
        assert!(adopt_orphans(&outbox).is_empty());
        std::fs::read(outbox.join("livelog-1").join("archive.ndjson"))
            .expect("archive in the outbox")
    }

    #[test]
    fn a_locked_record_is_left_alone_and_an_unlocked_one_adopted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = dir.path().join("outbox");
        let spool = dir.path().join("livelog-1.ndjson");
        std::fs::write(&spool, b"{\"pos\":0}\n{\"pos\":1}\n{\"po").expect("spool");
        let record = create(&outbox, &spool, &entry()).expect("record");
        assert!(adopt_orphans(&outbox).is_empty());
        assert!(spool.exists(), "a live writer's spool was taken");

        drop(record); // The lock goes, as when the process dies.
        assert!(adopt_orphans(&outbox).is_empty());
        assert!(!spool.exists());
        let archive = std::fs::read(outbox.join("livelog-1").join("archive.ndjson"))
            .expect("archive in the outbox");
        assert_eq!(
            archive, b"{\"pos\":0}\n{\"pos\":1}\n",
            "the cut row is removed"
        );
        assert!(!outbox.join("livelog-1.recover.json").exists());
    }

    #[test]
    fn a_reused_spool_is_delivered_up_to_its_end_mark() {
        // This history's rows, the mark, then an older history that also parses.
        assert_eq!(
            adopted_archive(b"{\"pos\":0}\n{\"pos\":1}\n\0{\"pos\":2}\n{\"pos\":3}\n"),
            b"{\"pos\":0}\n{\"pos\":1}\n"
        );
    }

    #[test]
    fn a_continuing_writers_history_starts_at_its_first_pos_and_ends_at_a_break() {
        // A writer that continued a stream after its 3 lines, then an older history.
        assert_eq!(
            adopted_archive(
                b"{\"pos\":3}\n{\"pos\":4}\n{\"pos\":1,\"old\":true}\n{\"pos\":2,\"old\":true}\n"
            ),
            b"{\"pos\":3}\n{\"pos\":4}\n"
        );
    }

    #[test]
    fn a_reused_spool_whose_end_mark_a_torn_write_overwrote_ends_at_its_own_rows() {
        // This history's rows, then the start of a row whose write the kill tore
        // (the mark would have followed it), then an older history that parses too.
        assert_eq!(
            adopted_archive(b"{\"pos\":0}\n{\"pos\":1}\n{\"pos\":2,\"out\":\"x{\"pos\":5,\"old\":true}\n{\"pos\":6,\"old\":true}\n"),
            b"{\"pos\":0}\n{\"pos\":1}\n"
        );
    }

    #[test]
    fn a_spool_moved_into_the_outbox_without_its_entry_file_is_finished() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = dir.path().join("outbox");
        let spool = dir.path().join("livelog-5.ndjson");
        std::fs::write(&spool, b"{\"pos\":0}\n").expect("spool");
        drop(create(&outbox, &spool, &entry()).expect("record"));
        // What a store that failed half-way leaves: the history moved, no entry file.
        let entry_dir = outbox.join("livelog-5");
        std::fs::create_dir_all(&entry_dir).expect("entry dir");
        std::fs::rename(&spool, entry_dir.join("archive.ndjson")).expect("move");
        assert!(adopt_orphans(&outbox).is_empty());
        let written: Entry = serde_json::from_slice(
            &std::fs::read(entry_dir.join("entry.json")).expect("the entry file is written"),
        )
        .expect("an entry");
        assert_eq!(written.key, "k");
        assert!(!outbox.join("livelog-5.recover.json").exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_record_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = dir.path().join("livelog-2.ndjson");
        std::fs::write(&spool, b"").expect("spool");
        let record = create(dir.path(), &spool, &entry()).expect("record");
        let mode = std::fs::metadata(dir.path().join("livelog-2.recover.json"))
            .expect("record")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        record.remove();
        assert!(!dir.path().join("livelog-2.recover.json").exists());
    }

    #[test]
    fn a_record_whose_spool_is_gone_is_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = dir.path().join("livelog-3.ndjson");
        std::fs::write(&spool, b"{}\n").expect("spool");
        drop(create(dir.path(), &spool, &entry()).expect("record"));
        std::fs::remove_file(&spool).expect("remove spool");
        assert!(adopt_orphans(dir.path()).is_empty());
        assert!(!dir.path().join("livelog-3.recover.json").exists());
    }

    #[test]
    fn a_malformed_record_is_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("x.recover.json"), b"{not json").expect("write");
        let failed = adopt_orphans(dir.path());
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("bad recovery record"), "{failed:?}");
    }
}
