//! [`ArchiveBuild`]: a stream's archive built from its stored lines while they are
//! read, in bounded memory.
//!
//! The reader hands over chunks of lines in `pos` order ([`ArchiveBuild::add`]); a
//! blocking thread writes them as NDJSON rows into a level-1 gzip encoder and puts
//! the compressed pieces into the object store as they fill
//! ([`BlobStore::archive_writer`]: a multipart upload past 10 MiB). Nothing is
//! visible until [`ArchiveBuild::commit`]; a build dropped or aborted leaves the
//! previous archive (or none) in place, so a caller may start one before it knows
//! whether it will keep it.
//!
//! Why a thread of its own: the close of a complete stream reads its lines once for
//! the ledger's digest, and the same chunks feed this build, so compressing runs on
//! one core while the digest runs on another (rather than reading every line twice,
//! and holding all of them plus their NDJSON plus the gzip in memory at once, as the
//! archive was built before: 2 000 000 `seq` lines made 300+ MB of fresh pages).

use crate::store::blob::BlobError;
use crate::store::{BlobStore, StoredLine, StreamId};
use flate2::Compression;
use flate2::write::GzEncoder;
use object_store::buffered::BufWriter;
use std::io::Write;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Compressed bytes collected before they are put into the object store.
const PIECE: usize = 1 << 20;

/// Chunks of lines queued for the encoder: what a build holds beyond the encoder's
/// own buffers is at most this many chunks (the ledger reads 16 384 lines at a time).
const QUEUED_CHUNKS: usize = 4;

/// A chunk of lines shared between the build and the reader's other work on it.
pub type Chunk = Arc<Vec<StoredLine>>;

enum Msg {
    Lines(Chunk),
    Commit,
}

/// An archive being built; see the module docs.
pub struct ArchiveBuild {
    tx: Option<mpsc::Sender<Msg>>,
    encoder: tokio::task::JoinHandle<Result<u64, BlobError>>,
    lines: u64,
    /// Where the archive goes, for the key record of a digest name at commit.
    blobs: BlobStore,
    id: StreamId,
}

impl std::fmt::Debug for ArchiveBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveBuild")
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl ArchiveBuild {
    /// Starts building `id`'s archive in `blobs`. Must be called within a Tokio
    /// runtime (the encoder runs on its blocking pool).
    pub fn start(blobs: &BlobStore, id: &StreamId) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        let out = blobs.archive_writer(id);
        let rt = tokio::runtime::Handle::current();
        let encoder = tokio::task::spawn_blocking(move || encode(rx, out, &rt));
        ArchiveBuild {
            tx: Some(tx),
            encoder,
            lines: 0,
            blobs: blobs.clone(),
            id: id.clone(),
        }
    }

    /// Adds the next lines (in `pos` order, after those added before). Waits while
    /// the encoder is `QUEUED_CHUNKS` (4) chunks behind. A build whose storage failed takes
    /// no more; [`commit`](Self::commit) then reports why.
    pub async fn add(&mut self, chunk: Chunk) {
        let n = chunk.len() as u64;
        let Some(tx) = &self.tx else { return };
        if tx.send(Msg::Lines(chunk)).await.is_ok() {
            self.lines += n;
        } else {
            self.tx = None;
        }
    }

    /// Lines added so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Finishes the archive and makes it the stream's (atomically replacing one
    /// stored before). Returns the lines it holds.
    pub async fn commit(mut self) -> Result<u64, BlobError> {
        // A listing that finds the archive must find its key (a digest name).
        self.blobs.record_key(&self.id).await?;
        let stopped = match self.tx.take() {
            Some(tx) => tx.send(Msg::Commit).await.is_err(),
            None => true,
        };
        let built = (&mut self.encoder)
            .await
            .map_err(|e| BlobError::Backend(format!("the archive build failed: {e}")))?;
        match built {
            Ok(n) if !stopped => Ok(n),
            Ok(_) => Err(BlobError::Backend("the archive build stopped".into())),
            Err(e) => Err(e),
        }
    }

    /// Gives the build up: nothing is stored, and what was written is removed. Waits
    /// for that (dropping the build does the same without waiting).
    pub async fn abort(mut self) {
        self.tx = None;
        let _ = (&mut self.encoder).await;
    }
}

/// The encoder thread: rows into gzip, gzip into the object store, until
/// [`Msg::Commit`] (complete the upload) or the channel closes (abort it).
fn encode(
    mut rx: mpsc::Receiver<Msg>,
    mut out: BufWriter,
    rt: &tokio::runtime::Handle,
) -> Result<u64, BlobError> {
    let mut gz = GzEncoder::new(Vec::with_capacity(PIECE * 2), Compression::fast());
    // One chunk's rows, reused: one large write into the encoder per chunk rather
    // than two small ones per line.
    let mut rows = Vec::new();
    let mut lines = 0u64;
    let failed = |e: std::io::Error| BlobError::Backend(format!("cannot compress: {e}"));
    let committed = loop {
        match rx.blocking_recv() {
            Some(Msg::Lines(chunk)) => {
                rows.clear();
                for line in chunk.iter() {
                    rows.extend_from_slice(&line.json);
                    rows.push(b'\n');
                }
                lines += chunk.len() as u64;
                drop(chunk);
                if let Err(e) = gz.write_all(&rows) {
                    break Err(failed(e));
                }
                if gz.get_ref().len() >= PIECE {
                    let piece = std::mem::replace(gz.get_mut(), Vec::with_capacity(PIECE * 2));
                    if let Err(e) = rt.block_on(out.put(piece.into())) {
                        break Err(e.into());
                    }
                }
            }
            Some(Msg::Commit) => break Ok(true),
            None => break Ok(false),
        }
    };
    let finished = match committed {
        Ok(true) => gz.finish().map_err(failed),
        Ok(false) => Err(BlobError::Backend("the archive build was given up".into())),
        Err(e) => Err(e),
    };
    rt.block_on(async move {
        match finished {
            Ok(rest) => {
                out.put(rest.into()).await?;
                out.shutdown().await.map_err(stored_failure)?;
                Ok(lines)
            }
            Err(e) => {
                // Nothing was made visible; this removes what a multipart upload wrote.
                let _ = out.abort().await;
                Err(e)
            }
        }
    })
}

/// A failure to complete the upload, told without the backend's message (the local
/// store's names a path on the server; see [`crate::store::blob::backend_failure`]).
fn stored_failure(e: std::io::Error) -> BlobError {
    match e
        .into_inner()
        .map(|inner| inner.downcast::<object_store::Error>())
    {
        Some(Ok(backend)) => BlobError::from(*backend),
        Some(Err(other)) => {
            tracing::warn!(error = %other, "cannot store an archive");
            BlobError::Backend("backend error (details in the service's log)".into())
        }
        None => {
            tracing::warn!("cannot store an archive");
            BlobError::Backend("backend error (details in the service's log)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    fn id() -> StreamId {
        StreamId {
            account: "acc".parse().unwrap(),
            key: "k".parse().unwrap(),
        }
    }

    fn chunk(range: std::ops::Range<u64>) -> Chunk {
        Arc::new(
            range
                .map(|pos| StoredLine {
                    pos,
                    json: Bytes::from(format!(
                        r#"{{"level":"info","pos":{pos},"out":"line {pos}\n","time":"t"}}"#
                    )),
                })
                .collect(),
        )
    }

    /// Lines that gzip hardly shrinks (64 hex digits from a hash of `pos`), so a
    /// test can pass the writer's 10 MiB buffer with few lines.
    fn noisy(range: std::ops::Range<u64>) -> Chunk {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash =
            |pos: u64, k: u64| BuildHasherDefault::<DefaultHasher>::default().hash_one((pos, k));
        Arc::new(
            range
                .map(|pos| {
                    let noise: String = (0..4).map(|k| format!("{:016x}", hash(pos, k))).collect();
                    StoredLine {
                        pos,
                        json: Bytes::from(format!(r#"{{"pos":{pos},"out":"{noise}"}}"#)),
                    }
                })
                .collect(),
        )
    }

    fn rows(gz: &[u8]) -> Vec<String> {
        let plain = crate::archive::gunzip_limited(gz, 1 << 30).unwrap();
        String::from_utf8(plain)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn a_build_under_a_digest_name_is_listed_by_its_key() {
        let blobs = BlobStore::memory();
        let long = StreamId {
            account: runlog_protocol::AccountId::new("acc").unwrap(),
            key: runlog_protocol::StreamKey::new("k".repeat(runlog_protocol::key::MAX_KEY_LEN))
                .unwrap(),
        };
        let mut b = ArchiveBuild::start(&blobs, &long);
        b.add(chunk(0..10)).await;
        assert_eq!(b.commit().await.unwrap(), 10);
        assert_eq!(rows(&blobs.get(&long).await.unwrap()).len(), 10);
        let listed = blobs.list(&long.account).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, long.key);
    }

    #[tokio::test]
    async fn a_committed_build_is_every_row_in_order() {
        let blobs = BlobStore::memory();
        let mut b = ArchiveBuild::start(&blobs, &id());
        for from in (0..200_000).step_by(20_000) {
            b.add(chunk(from..from + 20_000)).await;
        }
        assert_eq!(b.lines(), 200_000);
        assert_eq!(b.commit().await.unwrap(), 200_000);
        let rows = rows(&blobs.get(&id()).await.unwrap());
        assert_eq!(rows.len(), 200_000);
        assert!(rows[0].contains(r#""pos":0,"#), "{}", rows[0]);
        assert!(rows[199_999].contains(r#""pos":199999,"#));
    }

    /// Lines past the writer's 10 MiB buffer once gzip'd.
    const PAST_BUFFER: u64 = 240_000;

    /// A build on the local store (in a fresh directory) given [`PAST_BUFFER`] noisy
    /// lines, calling `between` after each chunk.
    async fn past_the_buffer(
        between: impl AsyncFn(&BlobStore),
    ) -> (tempfile::TempDir, BlobStore, ArchiveBuild) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::local(dir.path()).unwrap();
        let mut b = ArchiveBuild::start(&blobs, &id());
        for from in (0..PAST_BUFFER).step_by(16_384) {
            b.add(noisy(from..(from + 16_384).min(PAST_BUFFER))).await;
            between(&blobs).await;
        }
        (dir, blobs, b)
    }

    #[tokio::test]
    async fn an_archive_past_the_writers_buffer_is_a_multipart_upload_seen_only_whole() {
        // Until the commit, the stream has no archive (the parts go to a staged file).
        let (_dir, blobs, b) =
            past_the_buffer(async |blobs| assert!(!blobs.exists(&id()).await.unwrap())).await;
        assert_eq!(b.commit().await.unwrap(), PAST_BUFFER);
        let gz = blobs.get(&id()).await.unwrap();
        assert!(
            gz.len() > 10 << 20,
            "{} bytes: not past the buffer",
            gz.len()
        );
        let rows = rows(&gz);
        assert_eq!(rows.len(), PAST_BUFFER as usize);
        assert!(rows[239_999].starts_with(r#"{"pos":239999,"#));
    }

    #[tokio::test]
    async fn an_aborted_build_leaves_the_stored_archive() {
        let blobs = BlobStore::memory();
        let mut first = ArchiveBuild::start(&blobs, &id());
        first.add(chunk(0..3)).await;
        first.commit().await.unwrap();
        let mut second = ArchiveBuild::start(&blobs, &id());
        second.add(chunk(0..100_000)).await;
        second.abort().await;
        // Dropped without a commit: the same.
        let mut third = ArchiveBuild::start(&blobs, &id());
        third.add(chunk(0..10)).await;
        drop(third);
        assert_eq!(rows(&blobs.get(&id()).await.unwrap()).len(), 3);
    }

    #[tokio::test]
    async fn an_aborted_multipart_build_leaves_no_file_behind() {
        let (dir, _blobs, b) = past_the_buffer(async |_| {}).await;
        b.abort().await;
        let mut left = Vec::new();
        let mut dirs = vec![dir.path().to_owned()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else {
                    left.push(e.path());
                }
            }
        }
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_build_with_no_lines_is_an_empty_archive() {
        let blobs = BlobStore::memory();
        let b = ArchiveBuild::start(&blobs, &id());
        assert_eq!(b.commit().await.unwrap(), 0);
        assert!(rows(&blobs.get(&id()).await.unwrap()).is_empty());
    }
}
