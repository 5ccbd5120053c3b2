//! Storage behind the log service: live streams and archives.
//!
//! Contract shared by every implementation (and checked by the conformance tests):
//! - `append` is idempotent per `pos`: a `pos` already stored is counted as a
//!   duplicate and left untouched, so a retried batch — even one retried through a
//!   different replica — is stored once.
//! - Lines are kept and read in `pos` order. A gap stays a gap; a line that later
//!   fills it is stored (backfill and archive see it) but a tail already past it is
//!   not rewound.
//! - `tail` is pull-based: the store reads the next chunk only when the consumer
//!   asks, so a slow viewer costs storage reads, never an unbounded buffer, and never
//!   slows a writer.

pub mod account_limits;
pub mod blob;
pub mod memory;
pub mod names;
mod notify;
pub mod redis;
pub mod s3;
pub mod section_index;

pub use blob::BlobStore;
pub use memory::{MemoryLimits, MemoryStreamStore};

/// Most lines in one chunk a tail reads (from any store or an archive): a
/// 200 000-line backfill of short lines is ~100 chunks, so ~100 body writes.
pub const TAIL_CHUNK_LINES: usize = 2048;

/// Most bytes of line JSON in one chunk a tail reads, whatever the line sizes: what
/// one tail holds at a time, so a viewer that stops reading costs about this much
/// (plus the server's write buffer), never its stream's size. A single line larger
/// than this is still one chunk on its own (a line is at most one request body).
/// 256 KiB keeps a chunk of typical lines (≈ 100 bytes) at the line cap.
pub const TAIL_CHUNK_BYTES: usize = 256 << 10;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use runlog_protocol::service::AppendAck;
use runlog_protocol::{AccountId, StreamKey};

/// Identifies one stream (and its archive): an account and a key within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// Owning account.
    pub account: AccountId,
    /// Key within the account.
    pub key: StreamKey,
}

/// One stored line: its `pos` and its JSON object exactly as it will be served
/// (one SSE `data:` payload, one NDJSON archive row), so reads never re-serialise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    /// The line's `pos`.
    pub pos: u64,
    /// The line's JSON object, without a trailing newline.
    pub json: Bytes,
}

/// The lines of one `PUT /stream` request: one buffer, and where each line's JSON
/// sits in it.
///
/// Stores keep the buffer and the spans rather than a `Bytes` per line: one
/// reference count per request instead of one per line (an atomic increment when a
/// line is stored and a decrement when it is dropped), and 8 bytes of index per line
/// instead of 32. Lines are served as slices of the buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineBatch {
    buf: Bytes,
    lines: Vec<BatchLine>,
}

/// One line of a [`LineBatch`]: its `pos` and the byte range of its JSON in the
/// batch's buffer (32-bit offsets: a batch is far below 4 GiB, see
/// [`LineBatch::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLine {
    /// The line's `pos`.
    pub pos: u64,
    start: u32,
    end: u32,
}

impl BatchLine {
    /// Where the line's JSON sits in its batch's buffer.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// Length of the line's JSON in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the line's JSON is empty (never, for a parsed line).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One line of a [`LineBatch`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef<'a> {
    /// The line's `pos`.
    pub pos: u64,
    /// The line's JSON object, without a trailing newline.
    pub json: &'a [u8],
}

impl LineBatch {
    /// A batch of `lines` given as `(pos, byte range)` in `buf`. `None` when a range
    /// falls outside `buf` or `buf` is 4 GiB or more (offsets are 32-bit).
    pub fn new(
        buf: Bytes,
        lines: impl IntoIterator<Item = (u64, std::ops::Range<usize>)>,
    ) -> Option<Self> {
        u32::try_from(buf.len()).ok()?;
        let lines = lines.into_iter();
        // A plain loop into a sized `Vec`: collecting into `Option<Vec<_>>` loses the
        // size hint and grows the `Vec` by doubling, measurable on the ingest path.
        let mut out = Vec::with_capacity(lines.size_hint().0);
        for (pos, span) in lines {
            if span.start > span.end || span.end > buf.len() {
                return None;
            }
            out.push(BatchLine {
                pos,
                // In range: both are at most `buf.len()`, which fits `u32`.
                start: span.start as u32,
                end: span.end as u32,
            });
        }
        Some(LineBatch { buf, lines: out })
    }

    /// A batch holding copies of `lines`, in one new buffer.
    pub fn copied<'a>(lines: impl IntoIterator<Item = LineRef<'a>>) -> Self {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        for line in lines {
            let start = buf.len();
            buf.extend_from_slice(line.json);
            spans.push((line.pos, start..buf.len()));
        }
        // Only unreachable sizes (4 GiB of lines in one request) fail; keep none then.
        LineBatch::new(Bytes::from(buf), spans).unwrap_or_default()
    }

    /// A batch of stored lines (copied into one buffer).
    pub fn from_stored(lines: &[StoredLine]) -> Self {
        Self::copied(lines.iter().map(|l| LineRef {
            pos: l.pos,
            json: &l.json,
        }))
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the batch has no lines.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The buffer the lines sit in.
    pub fn buffer(&self) -> &Bytes {
        &self.buf
    }

    /// The lines' positions and spans, in request order.
    pub fn lines(&self) -> &[BatchLine] {
        &self.lines
    }

    /// The lines, borrowed, in request order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = LineRef<'_>> + '_ {
        self.lines.iter().map(|l| LineRef {
            pos: l.pos,
            json: &self.buf[l.span()],
        })
    }

    /// Bytes of line JSON in the batch (what the store's limits count).
    pub fn line_bytes(&self) -> u64 {
        self.lines.iter().map(|l| l.len() as u64).sum()
    }

    /// The lines as [`StoredLine`]s, each a slice of the buffer.
    pub fn to_stored(&self) -> Vec<StoredLine> {
        self.lines
            .iter()
            .map(|l| StoredLine {
                pos: l.pos,
                json: self.buf.slice(l.span()),
            })
            .collect()
    }
}

/// Metadata of one live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    /// Which stream.
    pub id: StreamId,
    /// `false` once closed.
    pub open: bool,
    /// Lines stored.
    pub lines: u64,
    /// Bytes of stored line JSON.
    pub bytes: u64,
    /// Highest `pos` with every `pos` below it stored; `None` before line 0.
    pub last_contiguous_pos: Option<u64>,
    /// Last open, append or close.
    pub last_activity: std::time::SystemTime,
}

/// What a tail yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailItem {
    /// Lines in `pos` order, all above the previous item's.
    Lines(Vec<StoredLine>),
    /// The stream is closed and every stored line has been yielded.
    Eof,
}

/// Why a store refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such stream (never opened, or expired and removed).
    #[error("stream not found")]
    NotFound,
    /// The stream is closed; it accepts no more lines.
    #[error("stream is closed")]
    Closed,
    /// A configured bound (lines, bytes, streams) would be exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// An account holds as many streams as it may (429): its own streams must be
    /// closed and removed first; other accounts are not affected.
    #[error("{0}")]
    TooMany(String),
    /// The backend is unreachable or failing; the call may succeed later (503).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// Live streams: the lines of streams being written, for tailing and snapshots.
#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Opens a stream. Idempotent: opening an open stream is not an error. Opening a
    /// closed stream reopens it, keeping its lines (a controller may retry a step).
    async fn open(&self, id: &StreamId) -> Result<StreamMeta, StoreError>;

    /// Appends lines (any order, possibly with already-stored `pos` values).
    /// `NotFound` if never opened, `Closed` if closed.
    async fn append(&self, id: &StreamId, lines: Vec<StoredLine>) -> Result<AppendAck, StoreError>;

    /// [`append`](Self::append) for the lines of one request, as parsed. The default
    /// hands each line over as its own slice; a store that can keep the batch's
    /// buffer whole (the memory store) overrides it.
    async fn append_batch(&self, id: &StreamId, batch: LineBatch) -> Result<AppendAck, StoreError> {
        self.append(id, batch.to_stored()).await
    }

    /// Up to `max` stored lines with `pos >= from`, in `pos` order.
    async fn read(
        &self,
        id: &StreamId,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredLine>, StoreError>;

    /// Backfill from `from`, then live lines, then `Eof` once closed. Pull-based.
    async fn tail(
        &self,
        id: &StreamId,
        from: u64,
    ) -> Result<BoxStream<'static, Result<TailItem, StoreError>>, StoreError>;

    /// Closes a stream: appends are refused afterwards, tails end with `Eof`.
    async fn close(&self, id: &StreamId) -> Result<StreamMeta, StoreError>;

    /// [`close`](Self::close), unless the stream has seen activity (a write, an
    /// open, a close) after `idle_since`: then it is left as it is and the answer is
    /// `None`. The expiry sweep closes with it what it found idle, so a write that
    /// lands between the sweep's look and its close keeps the stream open.
    async fn close_if_idle(
        &self,
        id: &StreamId,
        idle_since: std::time::SystemTime,
    ) -> Result<Option<StreamMeta>, StoreError>;

    /// Drops a stream's lines (after its archive is safe). `NotFound` if absent.
    async fn remove(&self, id: &StreamId) -> Result<(), StoreError>;

    /// [`remove`](Self::remove), only if the stream is still closed and has seen no
    /// activity after `closed_at` (the time its close answered); `false`, and the
    /// stream kept, when it was reopened or written to since. The expiry sweep
    /// removes with it what it archived, so lines a reopened stream took meanwhile
    /// (through another replica) are never dropped.
    async fn remove_if_unchanged(
        &self,
        id: &StreamId,
        closed_at: std::time::SystemTime,
    ) -> Result<bool, StoreError>;

    /// Metadata of one stream.
    async fn meta(&self, id: &StreamId) -> Result<StreamMeta, StoreError>;

    /// Every stream of an account.
    async fn list(&self, account: &AccountId) -> Result<Vec<StreamMeta>, StoreError>;

    /// Counts one request of `account` in the current second and returns the count
    /// so far in that second, for the per-account request rate
    /// ([`crate::quota::Quotas::admit`]). A store shared by replicas (Redis) counts
    /// in the shared backend, so the rate holds across them.
    async fn count_request(&self, account: &AccountId) -> Result<u64, StoreError>;

    /// `Ok` when the backend answers; used by `/healthz`.
    async fn health(&self) -> Result<(), StoreError>;

    /// Every stream this store holds, of every account. The service uses it to
    /// expire idle streams (snapshotting them to the archive first) and to report
    /// open streams in `/metrics`. A store that expires streams by itself (e.g. by
    /// a backend TTL) may keep this default, which reports none.
    async fn list_all(&self) -> Result<Vec<StreamMeta>, StoreError> {
        Ok(Vec::new())
    }

    /// Where the section index of this store's streams is kept: in this process's
    /// memory by default; a store shared by replicas keeps it beside the streams, so
    /// every replica answers the same index and it expires with its stream.
    fn section_indexes(&self) -> std::sync::Arc<dyn section_index::IndexStore> {
        std::sync::Arc::new(section_index::MemoryIndexStore::default())
    }
}
