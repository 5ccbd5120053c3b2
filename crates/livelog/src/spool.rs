//! The spool file: the complete history of one stream, on disk, as NDJSON.
//!
//! Every numbered line is appended here before it is queued for sending, so the
//! archive is built from disk, never from RAM, and the sender can read lagging lines
//! back when the in-memory queue is over its cap. The file has a disk cap; a line
//! that would exceed it is refused (the writer drops it with a count and a marker).
//!
//! The file may be one an earlier writer left for reuse ([`crate::recycle`]), still
//! holding an older history past this one's end. Then every write puts a NUL byte after
//! the rows (and the next write overwrites it), so a recovery after a crash knows where
//! this history ends, and [`Spool::finish`] cuts the file to its length.
//!
//! Longer than 700 lines with its tests (about 190 of them); the code is the append
//! side, the read side and the errors of one file format, which change together.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a line was not appended.
#[derive(Debug, Clone)]
pub enum Refused {
    /// The disk cap would be exceeded.
    Full,
    /// The spool failed (now or at an earlier write); the error says why.
    Failed(SpoolError),
}

/// Why a spool stopped taking lines. Once failed, a spool stays failed: what follows a
/// partial row is not trusted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The spool file could not be created.
    #[error("cannot create spool file {}: {source}", path.display())]
    Create {
        /// The file's path.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// Writing buffered rows to the file failed (a full disk).
    #[error("spool write failed: {0}")]
    Write(Arc<std::io::Error>),
    /// A reused file could not be cut to this history's length.
    #[error("cannot cut the reused spool file to its length: {0}")]
    Cut(Arc<std::io::Error>),
    /// The spool was closed ([`Spool::discard`]) and takes no more rows.
    #[error("spool closed")]
    Closed,
}

/// Append side of a spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: Option<File>,
    /// Rows not yet in the file. Rows are serialised straight into it (see
    /// [`Spool::append_with`]): a row that is not also queued in memory (the queue is
    /// full, the usual case in a flood) then costs no allocation and no copy of its own.
    buf: Vec<u8>,
    written: u64,
    max: u64,
    failed: Option<SpoolError>,
    /// The file was reused: bytes past `written` are an older history.
    reused: bool,
}

impl Drop for Spool {
    /// Rows still buffered reach the file when a spool is dropped without
    /// [`Spool::finish`] (a writer dropped while its runtime shuts down, so its close
    /// never runs): a later recovery then delivers them with the rest.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Ends the rows of a reused spool file (JSON rows never contain a NUL byte).
pub const END_OF_ROWS: u8 = 0;

/// Bytes buffered before they are written to the file: a few syscalls per MB without
/// holding much memory.
const WRITE_CHUNK: usize = 256 * 1024;

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// Creates a new, empty spool file in `dir` (created if missing). A spool that
    /// cannot be created refuses every line with the reason.
    pub fn create(dir: &Path, max: u64) -> Spool {
        let name = format!(
            "livelog-{}-{}-{}.ndjson",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let opened = create_private_dir(dir).and_then(|()| {
            if crate::recycle::take(dir, &path) {
                match reuse(&path) {
                    Ok(f) => return Ok((f, true)),
                    Err(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            let mut opts = File::options();
            opts.write(true).create_new(true);
            // The history is the stream's logs: for the writer's user alone, like the
            // outbox it may move to (the default mode let every local user read it).
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            opts.open(&path).map(|f| (f, false))
        });
        let (file, reused, failed) = match opened {
            Ok((f, reused)) => (Some(f), reused, None),
            Err(e) => (
                None,
                false,
                Some(SpoolError::Create {
                    path: path.clone(),
                    source: Arc::new(e),
                }),
            ),
        };
        Spool {
            path,
            file,
            buf: Vec::new(),
            written: 0,
            max,
            failed,
            reused,
        }
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes appended so far (the offset of the next line).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Why the spool stopped accepting lines, if it did because of an error.
    pub fn failure(&self) -> Option<&SpoolError> {
        self.failed.as_ref()
    }

    /// Appends one NDJSON row (`json` without its newline); returns its offset.
    /// `over_cap` lets a marker line through even when the cap is reached.
    pub fn append(&mut self, json: &[u8], over_cap: bool) -> Result<u64, Refused> {
        self.append_with(over_cap, |buf| buf.extend_from_slice(json))
            .map(|(at, _)| at)
    }

    /// Appends the row that `write` serialises (without its newline) into the spool's
    /// own buffer; returns its offset and the row, valid until the next call.
    /// `over_cap` lets a marker line through even when the cap is reached.
    pub fn append_with(
        &mut self,
        over_cap: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(u64, &[u8]), Refused> {
        if let Some(f) = &self.failed {
            return Err(Refused::Failed(f.clone()));
        }
        if self.file.is_none() {
            return Err(Refused::Failed(SpoolError::Closed));
        }
        // Written out before the row, not after: the row handed back stays in `buf`.
        if self.buf.len() >= WRITE_CHUNK {
            self.flush().map_err(Refused::Failed)?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(WRITE_CHUNK + 4096);
        }
        let start = self.buf.len();
        write(&mut self.buf);
        let len = (self.buf.len() - start) as u64 + 1;
        if !over_cap && self.written + len > self.max {
            self.buf.truncate(start);
            return Err(Refused::Full);
        }
        self.buf.push(b'\n');
        let at = self.written;
        self.written += len;
        let end = self.buf.len() - 1;
        Ok((at, &self.buf[start..end]))
    }

    /// Pushes buffered rows to the file so readers see them. Once a write has
    /// failed, nothing more is written (what follows a partial row is not trusted):
    /// the rows that did not reach the file are left for [`Spool::take_unwritten`].
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(SpoolError::Closed);
        };
        // In the same write as the rows: the end mark is never missing after them.
        if self.reused {
            self.buf.push(END_OF_ROWS);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let written = write_using_reserve(file, &self.buf, dir).and_then(|()| {
            if self.reused {
                file.seek(SeekFrom::Current(-1)).map(drop)
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                // A partial row may be in the file now; nothing after it is trusted.
                let e = SpoolError::Write(Arc::new(e));
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// After a failed write: the rows that never reached the file (each ending in
    /// `\n`), handed over once. `written` goes back to where the file's whole rows
    /// end, and the file is cut there, so neither a reader nor a recovery meets the
    /// part of a row a failed write may have left.
    pub fn take_unwritten(&mut self) -> Option<Vec<u8>> {
        self.failed.as_ref()?;
        if self.buf.is_empty() {
            return None;
        }
        let mut rows = std::mem::take(&mut self.buf);
        // A reused file's end mark went into the same buffer as the rows.
        if self.reused && rows.last() == Some(&END_OF_ROWS) {
            rows.pop();
        }
        self.written = self.written.saturating_sub(rows.len() as u64);
        if let Some(file) = self.file.as_mut() {
            // Shrinking needs no free space; should it fail anyway, readers still
            // stop at `written`.
            let _ = file.set_len(self.written);
        }
        Some(rows)
    }

    /// Makes every later write fail as a full disk would (with a real error from the
    /// OS: the file is swapped for a read-only handle of itself).
    #[cfg(test)]
    pub(crate) fn fail_writes(&mut self) {
        self.file = File::open(&self.path).ok();
    }

    /// Flushes the last rows and, in a reused file, cuts what lies past them: the file
    /// is then exactly this history, ready to upload or to hand to the outbox.
    pub fn finish(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        if !self.reused {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(SpoolError::Closed);
        };
        file.set_len(self.written).map_err(|e| {
            let e = SpoolError::Cut(Arc::new(e));
            self.failed = Some(e.clone());
            e
        })
    }

    /// Closes the spool once its history is archived: the file is kept for the next
    /// writer in its directory when `reuse` ([`crate::recycle`]), deleted otherwise.
    pub fn discard(&mut self, reuse: bool) {
        let ok = self.file.take().is_some() && self.failed.is_none();
        match self.path.parent() {
            Some(dir) if reuse && ok => crate::recycle::give_back(dir, &self.path, self.written),
            _ => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Writes all of `bytes`; on a full file system, once, gives the reserve of `dir` back
/// ([`crate::reserve`]) and goes on where the write stopped. A partial write is
/// never repeated: each call writes on from what the file took.
fn write_using_reserve(file: &mut File, bytes: &[u8], dir: &Path) -> std::io::Result<()> {
    let mut done = 0;
    let mut released = false;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Another writer may have released it a moment ago: try once more anyway.
            Err(e) if crate::reserve::is_full(&e) && !released => {
                crate::reserve::release(dir);
                released = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents for this user alone (`0700` on Unix), as
/// every spool directory is made. Public so that a host that makes a writer's spool
/// directory ahead (the engine) makes it the same way.
pub use crate::private_dir::create as create_private_dir;

/// Opens a reused spool file for writing from its start, its old content marked as
/// not this history's from the first byte on.
fn reuse(path: &Path) -> std::io::Result<File> {
    let mut f = File::options().write(true).open(path)?;
    f.write_all(&[END_OF_ROWS])?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// Read side of a spool file: reads whole rows back from an offset.
#[derive(Debug)]
pub struct SpoolReader {
    file: File,
}

/// Rows read back from the spool.
#[derive(Debug, Default)]
pub struct Rows {
    /// The rows, each followed by `\n`.
    pub ndjson: Vec<u8>,
    /// How many rows.
    pub count: u64,
}

impl SpoolReader {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<SpoolReader> {
        Ok(SpoolReader {
            file: File::open(path)?,
        })
    }

    /// Reads whole rows from `offset`, up to `max_bytes` (more if one row is longer),
    /// never past `end`.
    pub fn read_rows(
        &mut self,
        offset: u64,
        end: u64,
        max_bytes: usize,
        max_rows: u64,
    ) -> std::io::Result<Rows> {
        let (ndjson, count) =
            self.read_after(Vec::new(), 0, None, offset, end, max_bytes, max_rows)?;
        Ok(Rows { ndjson, count })
    }

    /// Like [`SpoolReader::read_rows`], but the rows come back as the JSON array body
    /// of a `PUT /stream` (`[row,row]`), built in place in `buf` (emptied first; the
    /// sender hands back the buffer of a batch the service acknowledged, so reading a
    /// mebibyte back touches no new memory): no second copy, one pass over the rows.
    /// `ndjson_len` is how far the rows reach in the file.
    pub fn read_batch(
        &mut self,
        offset: u64,
        end: u64,
        max_bytes: usize,
        max_rows: u64,
        buf: Vec<u8>,
    ) -> std::io::Result<BatchRows> {
        // Rows never contain a raw newline (JSON escapes it), so each `\n` is a row
        // end: it becomes the comma between rows, and the last one the closing bracket.
        let (mut body, count) =
            self.read_after(buf, 1, Some(b','), offset, end, max_bytes, max_rows)?;
        if count == 0 {
            return Ok(BatchRows::default());
        }
        let ndjson_len = (body.len() - 1) as u64;
        body[0] = b'[';
        if let Some(last) = body.last_mut() {
            *last = b']';
        }
        Ok(BatchRows {
            body,
            count,
            ndjson_len,
        })
    }

    /// Reads whole rows as `read_rows` does into `buf` (emptied first) after `lead`
    /// spare bytes, each row end replaced by `sep` when given; returns the buffer (cut
    /// after the last whole row) and the row count.
    #[allow(clippy::too_many_arguments)] // private; one call site per public form
    fn read_after(
        &mut self,
        mut buf: Vec<u8>,
        lead: usize,
        sep: Option<u8>,
        offset: u64,
        end: u64,
        max_bytes: usize,
        max_rows: u64,
    ) -> std::io::Result<(Vec<u8>, u64)> {
        let avail = end.saturating_sub(offset);
        let mut want = (max_bytes as u64).min(avail);
        loop {
            buf.clear();
            buf.reserve(lead + want as usize);
            buf.resize(lead, 0);
            self.file.seek(SeekFrom::Start(offset))?;
            // `read_to_end` fills the spare capacity without zeroing it first.
            let read = (&mut self.file).take(want).read_to_end(&mut buf)?;
            if (read as u64) < want {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut count = 0u64;
            let mut cut = None;
            let rows = &mut buf[lead..];
            let mut from = 0;
            // One pass: count the rows, find the cut, put the separators in.
            while let Some(at) = memchr::memchr(b'\n', &rows[from..]) {
                let end_of_row = from + at;
                if let Some(sep) = sep {
                    rows[end_of_row] = sep;
                }
                count += 1;
                from = end_of_row + 1;
                cut = Some(lead + from);
                if count == max_rows {
                    break;
                }
            }
            match cut {
                Some(c) => {
                    buf.truncate(c);
                    return Ok((buf, count));
                }
                None if want < avail => want = (want * 2).min(avail),
                None => return Ok((Vec::new(), 0)),
            }
        }
    }
}

/// Rows read back from the spool as a `PUT /stream` body.
#[derive(Debug, Default)]
pub struct BatchRows {
    /// `[row,row,…]`.
    pub body: Vec<u8>,
    /// How many rows.
    pub count: u64,
    /// How many bytes of the spool file the rows took (newlines included).
    pub ndjson_len: u64,
}

impl SpoolReader {
    /// Byte offset of the row numbered `pos` among the rows in `[0, end)`, or `None`
    /// when it is not there. Rows are numbered from 0 in file order, so a binary search
    /// on byte offsets finds it in a few reads, whatever the spool's size.
    pub fn offset_of(&mut self, pos: u64, end: u64) -> std::io::Result<Option<u64>> {
        // `lo` is always a row start whose `pos` is at most the one sought.
        let (mut lo, mut hi) = (0u64, end);
        while hi - lo > SCAN_WINDOW {
            let mid = lo + (hi - lo) / 2;
            match self.row_starting_at_or_after(mid, end)? {
                Some((start, p)) if start < hi => {
                    if p == pos {
                        return Ok(Some(start));
                    }
                    if p < pos {
                        lo = start;
                    } else {
                        hi = mid;
                    }
                }
                _ => hi = mid,
            }
        }
        let mut offset = lo;
        while offset < end {
            let rows = self.read_rows(offset, end, SCAN_WINDOW as usize, u64::MAX)?;
            if rows.count == 0 {
                return Ok(None);
            }
            for row in rows.ndjson.split_inclusive(|b| *b == b'\n') {
                match row_pos(row)? {
                    p if p == pos => return Ok(Some(offset)),
                    p if p > pos => return Ok(None),
                    _ => offset += row.len() as u64,
                }
            }
        }
        Ok(None)
    }

    /// The first row that starts at `offset` or later: its start and `pos`.
    fn row_starting_at_or_after(
        &mut self,
        offset: u64,
        end: u64,
    ) -> std::io::Result<Option<(u64, u64)>> {
        let start = if offset == 0 {
            0
        } else {
            // The rest of the row that `offset - 1` is in (possibly just its newline).
            let rest = self.read_rows(offset - 1, end, SCAN_WINDOW as usize, 1)?;
            if rest.count == 0 {
                return Ok(None);
            }
            offset - 1 + rest.ndjson.len() as u64
        };
        let row = self.read_rows(start, end, SCAN_WINDOW as usize, 1)?;
        if row.count == 0 {
            return Ok(None);
        }
        Ok(Some((start, row_pos(&row.ndjson)?)))
    }
}

/// Bytes read at once when looking for a row.
const SCAN_WINDOW: u64 = 64 * 1024;

/// The `pos` of one NDJSON row.
fn row_pos(row: &[u8]) -> std::io::Result<u64> {
    #[derive(serde::Deserialize)]
    struct Pos {
        pos: u64,
    }
    serde_json::from_slice::<Pos>(row)
        .map(|p| p.pos)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_a_batch_body_are_a_json_array_of_whole_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::create(dir.path(), 1 << 20);
        for i in 0..4 {
            s.append(format!("{{\"pos\":{i}}}").as_bytes(), false)
                .expect("append");
        }
        s.flush().expect("flush");
        let mut r = SpoolReader::open(s.path()).expect("open");
        // `end` inside the fourth row: only whole rows come back.
        let end = s.written() - 3;
        let b = r.read_batch(0, end, 1024, 100, Vec::new()).expect("read");
        assert_eq!(b.body, b"[{\"pos\":0},{\"pos\":1},{\"pos\":2}]");
        assert_eq!((b.count, b.ndjson_len), (3, 30));
        let b = r
            .read_batch(10, end, 1024, 1, b"left over".to_vec())
            .expect("read one");
        assert_eq!(b.body, b"[{\"pos\":1}]");
        assert_eq!((b.count, b.ndjson_len), (1, 10));
        let none = r.read_batch(30, end, 1024, 100, Vec::new()).expect("read");
        assert_eq!(none.count, 0);
    }

    #[test]
    fn buffered_rows_reach_the_file_when_the_spool_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = {
            let mut s = Spool::create(dir.path(), 1 << 20);
            s.append(b"{\"pos\":0}", false).expect("append");
            s
        };
        let path = s.path().to_owned();
        assert_eq!(std::fs::read(&path).expect("read").len(), 0, "not buffered");
        drop(s);
        assert_eq!(std::fs::read(&path).expect("read"), b"{\"pos\":0}\n");
    }

    #[test]
    fn a_failed_write_hands_back_the_rows_it_lost_and_cuts_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::create(dir.path(), 1 << 20);
        s.append(b"{\"pos\":0}", false).expect("append");
        s.flush().expect("flush");
        let kept = s.written();
        s.append(b"{\"pos\":1}", false).expect("append");
        s.append(b"{\"pos\":2}", false).expect("append");
        assert_eq!(s.take_unwritten(), None, "nothing failed yet");
        s.fail_writes();
        let err = s.flush().expect_err("a read-only file takes no write");
        assert!(matches!(err, SpoolError::Write(_)), "{err}");
        assert!(err.to_string().starts_with("spool write failed"), "{err}");
        assert_eq!(
            s.take_unwritten().as_deref(),
            Some(&b"{\"pos\":1}\n{\"pos\":2}\n"[..])
        );
        assert_eq!(s.written(), kept);
        assert_eq!(s.take_unwritten(), None, "handed over once");
        assert!(s.flush().is_err(), "nothing is written after a failure");
        assert!(matches!(s.append(b"{}", false), Err(Refused::Failed(_))));
        assert_eq!(std::fs::read(s.path()).expect("read"), b"{\"pos\":0}\n");
    }

    #[test]
    fn rows_read_back_are_whole_and_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::create(dir.path(), 1 << 20);
        for i in 0..10 {
            s.append(format!("{{\"pos\":{i}}}").as_bytes(), false)
                .expect("append");
        }
        s.flush().expect("flush");
        let mut r = SpoolReader::open(s.path()).expect("open");
        let rows = r.read_rows(0, s.written(), 25, 100).expect("read");
        assert_eq!(rows.count, 2);
        assert_eq!(rows.ndjson, b"{\"pos\":0}\n{\"pos\":1}\n");
        let rows = r
            .read_rows(0, s.written(), 5, 100)
            .expect("read a row longer than the hint");
        assert_eq!(rows.count, 1);
        let rows = r.read_rows(0, s.written(), 1 << 20, 3).expect("row cap");
        assert_eq!(rows.count, 3);
    }

    #[test]
    fn offset_of_finds_every_row_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::create(dir.path(), 1 << 30);
        let mut offsets = Vec::new();
        // Rows of varied length, over several scan windows.
        for i in 0..5000u64 {
            let mut row = Vec::new();
            let text = "y".repeat((i % 97) as usize * 7);
            crate::row::write_row(&mut row, "info", i, &text, "t");
            offsets.push(s.append(&row, false).expect("append"));
        }
        s.flush().expect("flush");
        let mut r = SpoolReader::open(s.path()).expect("open");
        for (pos, want) in offsets
            .iter()
            .enumerate()
            .step_by(37)
            .chain([(4999, &offsets[4999])])
        {
            assert_eq!(
                r.offset_of(pos as u64, s.written()).expect("search"),
                Some(*want),
                "pos {pos}"
            );
        }
        assert_eq!(r.offset_of(5000, s.written()).expect("search"), None);
        assert_eq!(r.offset_of(0, 0).expect("empty"), None);
    }

    #[test]
    fn a_reused_file_holds_this_history_alone_once_finished() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut first = Spool::create(dir.path(), 1 << 20);
        for i in 0..100 {
            first
                .append(format!("{{\"pos\":{i},\"old\":true}}").as_bytes(), false)
                .expect("append");
        }
        first.finish().expect("finish");
        first.discard(true);

        let mut s = Spool::create(dir.path(), 1 << 20);
        assert!(s.reused, "the first spool's file was not reused");
        // Before any row: a crash now must leave an empty history.
        assert_eq!(std::fs::read(s.path()).expect("read")[0], END_OF_ROWS);
        s.append(b"{\"pos\":0}", false).expect("append");
        s.append(b"{\"pos\":1}", false).expect("append");
        s.flush().expect("flush");
        let on_disk = std::fs::read(s.path()).expect("read");
        assert!(
            on_disk.starts_with(b"{\"pos\":0}\n{\"pos\":1}\n\0"),
            "no end mark after the rows"
        );
        let mut r = SpoolReader::open(s.path()).expect("open");
        let rows = r.read_rows(0, s.written(), 1 << 20, 100).expect("read");
        assert_eq!(rows.ndjson, b"{\"pos\":0}\n{\"pos\":1}\n");
        s.append(b"{\"pos\":2}", false).expect("append");
        s.finish().expect("finish");
        assert_eq!(
            std::fs::read(s.path()).expect("read"),
            b"{\"pos\":0}\n{\"pos\":1}\n{\"pos\":2}\n"
        );
        s.discard(false);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "a discarded spool was left behind"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_spool_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Spool::create(dir.path(), 1 << 20);
        let mode = std::fs::metadata(s.path())
            .expect("spool")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn cap_refuses_rows_but_lets_markers_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::create(dir.path(), 10);
        assert_eq!(s.append(b"12345678", false).ok(), Some(0));
        assert!(matches!(s.append(b"x", false), Err(Refused::Full)));
        assert_eq!(s.append(b"marker", true).ok(), Some(9));
    }

    #[test]
    fn uncreatable_spool_refuses_with_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let mut s = Spool::create(&file, 100);
        assert!(
            matches!(s.append(b"a", false), Err(Refused::Failed(e @ SpoolError::Create { .. })) if e.to_string().contains("cannot create"))
        );
    }
}
