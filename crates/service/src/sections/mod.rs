//! The section index and the completeness ledger, kept per stream as lines arrive.
//!
//! - `PUT /stream` scans each batch for marker lines before it goes to the store
//!   ([`scan::BatchScan`]: one pass over the body, only hits parsed) and, once the
//!   store has taken it, gives the tracker the lines that became contiguous
//!   ([`Sections::after_append`]). Lines are indexed in `pos` order only: a batch
//!   that arrives out of order, after a gap, or on a replica that missed earlier
//!   batches is caught up by reading the missing range back from the store.
//! - `DELETE /stream` (and expiry of a stream its writer never closed) ends the
//!   index, checks the ledger ([`ledger::check`]) and writes both beside the archive
//!   as `=sections.json` ([`Sections::finish`]); the in-memory index is then dropped.
//! - `GET /stream/sections` answers from the live index for a stream still held,
//!   and from the stored answer for a finished one ([`Sections::answer`]).
//!
//! State lives behind [`crate::store::section_index::IndexStore`]:
//! [`crate::store::section_index::MemoryIndexStore`] with the
//! memory backend, the Redis store's own with Redis (shared by replicas, expiring
//! with the stream).

pub mod ledger;
mod line_text;
pub mod scan;

use crate::store::blob::BlobError;
use crate::store::section_index::{IndexStore, MAX_DROP_MARKERS, MemoryIndexStore, StreamIndex};
use crate::store::{BlobStore, StoreError, StoredLine, StreamId, StreamStore};
use runlog_edge::HttpError as ApiError;
use runlog_protocol::ledger::WriterTotals;
use runlog_protocol::sections::SectionsAnswer;
use scan::{BatchScan, Mark, MarkerLine, marker_line};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Name of the finished index beside a stream's archive (see
/// [`BlobStore::put_beside`]).
pub const SIDECAR: &str = "=sections.json";

/// Lines read per store call when catching up.
const CATCH_UP_READ: usize = 4_096;

/// The section index of every stream a service holds.
pub struct Sections {
    store: Arc<dyn IndexStore>,
    enabled: AtomicBool,
}

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sections")
            .field("enabled", &self.enabled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Sections {
    fn default() -> Self {
        Sections::new(Arc::new(MemoryIndexStore::default()))
    }
}

impl Sections {
    /// An index kept in `store`, enabled.
    pub fn new(store: Arc<dyn IndexStore>) -> Self {
        Sections {
            store,
            enabled: AtomicBool::new(true),
        }
    }

    /// Turns indexing of new lines on or off (the ingest benchmark measures its
    /// cost side by side). While off, appends are not scanned.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// What the index needs of `batch`, or `None` while indexing is off.
    /// `out_first`, when the parser gives it, is the first byte of each line's
    /// `out` text ([`BatchScan::of_with`]).
    pub fn scan(
        &self,
        batch: &crate::store::LineBatch,
        out_first: Option<&[u8]>,
    ) -> Option<BatchScan> {
        self.enabled
            .load(Ordering::Relaxed)
            .then(|| BatchScan::of_with(batch, out_first))
    }

    /// After the store took a batch (`scan` of it) and answered `next_pos`: index
    /// every line that is now contiguous and was not indexed yet.
    pub async fn after_append(
        &self,
        streams: &dyn StreamStore,
        id: &StreamId,
        scan: BatchScan,
        next_pos: u64,
    ) -> Result<(), StoreError> {
        // Most batches hold no marker: moving the index past them needs no lease.
        if scan.markers.is_empty()
            && let Some((first, last)) = scan.run
            && last.checked_add(1) == Some(next_pos)
            && self.store.advance(id, first, next_pos).await?
        {
            return Ok(());
        }
        let mut lease = self.store.lock(id, None).await?;
        let ix = lease.index();
        if ix.next < next_pos {
            // The common case: the batch is the next run of lines, and the store
            // holds it whole.
            if let Some((first, last)) = scan.run
                && first == ix.next
                && last < next_pos
            {
                scan.markers.iter().for_each(|m| apply(ix, m));
                ix.next = last + 1;
            }
            catch_up(streams, id, ix, next_pos, false).await?;
        }
        lease.commit().await
    }

    /// Ends `id`'s index: the lines not indexed yet (past a gap too) are read, the
    /// sections still open end at the last line with the stream's outcome, the
    /// ledger is checked, and the answer is stored beside the archive. A failure to
    /// store it is logged; the answer is still returned. `archive`, when given, is
    /// fed the lines the ledger check reads ([`ledger::check`]).
    pub async fn finish(
        &self,
        streams: &dyn StreamStore,
        blobs: &BlobStore,
        id: &StreamId,
        totals: &WriterTotals,
        closed_by_writer: bool,
        archive: Option<&mut crate::archive_build::ArchiveBuild>,
    ) -> Result<SectionsAnswer, StoreError> {
        let mut lease = self.store.lock(id, Some(0)).await?;
        let ix = lease.index();
        let mut last = match ix.next.checked_sub(1) {
            Some(before) => streams.read(id, before, 1).await?.pop(),
            None => None,
        };
        if let Some(l) = catch_up(streams, id, ix, u64::MAX, true).await? {
            last = Some(l);
        }
        let last = last
            .as_ref()
            .and_then(|l| Some((l.pos, scan::text_of(l)?.0)));
        ix.tracker
            .finish(last.as_ref().map(|(p, t)| (*p, t.as_str())), totals.outcome);
        let ledger = ledger::check(streams, id, ix, totals, closed_by_writer, archive).await?;
        let answer = SectionsAnswer {
            open: false,
            sections: ix.tracker.sections().to_vec(),
            ignored_markers: ix.tracker.ignored_markers(),
            sections_dropped: ix.tracker.sections_dropped(),
            from: 0,
            ledger: Some(ledger),
        };
        lease.commit().await?;
        match serde_json::to_vec(&answer) {
            Ok(json) => match blobs.put_beside(id, SIDECAR, json.into()).await {
                Ok(()) => self.store.forget(id).await?,
                Err(e) => {
                    tracing::warn!(account = %id.account, key = %id.key, error = %e, "cannot store the section index")
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot serialise the section index"),
        }
        Ok(answer)
    }

    /// The sections (and, once closed, the ledger) of `id`: from the live index
    /// while the store holds the stream open, else from what [`finish`](Self::finish)
    /// stored beside the archive. Only the sections from index `since` on are
    /// listed ([`SectionsAnswer::since`]).
    pub async fn answer(
        &self,
        streams: &dyn StreamStore,
        blobs: &BlobStore,
        id: &StreamId,
        since: u32,
    ) -> Result<SectionsAnswer, ApiError> {
        let meta = match streams.meta(id).await {
            Ok(meta) => Some(meta),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        if meta.as_ref().is_none_or(|m| !m.open) {
            match blobs.get_beside(id, SIDECAR).await {
                Ok(json) => {
                    return serde_json::from_slice::<SectionsAnswer>(&json)
                        .map(|a| a.since(since))
                        .map_err(|e| {
                            ApiError::Internal(format!("stored section index is damaged: {e}"))
                        });
                }
                Err(BlobError::NotFound) if meta.is_some() => {}
                Err(BlobError::NotFound) => {
                    return Err(ApiError::NotFound(
                        "no section index for this stream (no live stream, and none stored \
                         beside its archive)"
                            .into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Held by the store: open, or closed and not finished (yet).
        let mut lease = self.store.lock(id, Some(since)).await?;
        let ix = lease.index();
        let contiguous = meta
            .as_ref()
            .and_then(|m| m.last_contiguous_pos)
            .map_or(0, |p| p + 1);
        catch_up(streams, id, ix, contiguous, false).await?;
        let from = ix.tracker.count().min(since);
        // The lease holds the sections from `since` on (or more): only the part
        // asked for is copied, as a live reader asks often.
        let held = ix.tracker.sections();
        let skip = from.saturating_sub(ix.tracker.first_held()) as usize;
        let answer = SectionsAnswer {
            open: meta.is_some_and(|m| m.open),
            sections: held.get(skip..).unwrap_or_default().to_vec(),
            from,
            ignored_markers: ix.tracker.ignored_markers(),
            sections_dropped: ix.tracker.sections_dropped(),
            ledger: None,
        };
        lease.commit().await?;
        Ok(answer)
    }

    /// Drops `id`'s live index (the stream was removed from the store).
    pub async fn forget(&self, id: &StreamId) -> Result<(), StoreError> {
        self.store.forget(id).await
    }
}

/// Deletes the finished index stored beside `id`'s archive (the archive is being
/// deleted: the index is kept with it, and would otherwise answer for a log that
/// is gone); whether there was one.
pub async fn delete_stored(blobs: &BlobStore, id: &StreamId) -> Result<bool, BlobError> {
    blobs.delete_beside(id, SIDECAR).await
}

/// Whether the ledger stored beside `id`'s archive says `complete`; `None` when no
/// finished index is stored or it cannot be read (a listing shows nothing then).
pub async fn stored_verdict(blobs: &BlobStore, id: &StreamId) -> Option<bool> {
    /// The one part of the stored answer a listing needs; serde skips the rest.
    #[derive(serde::Deserialize)]
    struct LedgerOnly {
        ledger: Option<runlog_protocol::ledger::Ledger>,
    }
    let json = blobs.get_beside(id, SIDECAR).await.ok()?;
    let stored: LedgerOnly = serde_json::from_slice(&json).ok()?;
    stored.ledger.map(|l| l.complete)
}

/// Gives one marker line to the index.
fn apply(ix: &mut StreamIndex, m: &MarkerLine) {
    match m.mark {
        Mark::Section => {
            ix.tracker.line(m.pos, &m.time, &m.out);
        }
        Mark::Drop(count) => {
            if ix.drops.len() < MAX_DROP_MARKERS {
                ix.drops.push((m.pos, count));
            }
        }
    }
}

/// Indexes stored lines from `ix.next` below `upto`: only the contiguous run from
/// there, or (`past_gaps`, at the end of a stream) every line held. Returns the
/// last line read.
async fn catch_up(
    streams: &dyn StreamStore,
    id: &StreamId,
    ix: &mut StreamIndex,
    upto: u64,
    past_gaps: bool,
) -> Result<Option<StoredLine>, StoreError> {
    let mut last = None;
    while ix.next < upto {
        let chunk = match streams.read(id, ix.next, CATCH_UP_READ).await {
            Err(StoreError::NotFound) => break,
            other => other?,
        };
        if chunk.is_empty() {
            break;
        }
        for line in chunk {
            if line.pos >= upto || (line.pos != ix.next && !past_gaps) {
                return Ok(last);
            }
            if let Some(m) = marker_line(line.pos, &line.json) {
                apply(ix, &m);
            }
            // Stores refuse a `pos` above MAX_POS, so this never saturates.
            ix.next = line.pos.saturating_add(1);
            last = Some(line);
        }
    }
    Ok(last)
}
