//! The state behind the writer's lock: every line from its number to the spool and
//! the send queue, and the counts on the way.
//!
//! [`Lines::emit`] is the one door every line passes: it masks (the one place a line is
//! masked), numbers, timestamps, spools and queues it. The producer side
//! ([`crate::shared::Producer`]) calls the emitting methods; the sender and `close()`
//! call the rest. Nothing outside this file touches a field: the send queue keeps its
//! own invariants ([`crate::queue`]), and the ones that tie it to the spool and the
//! losses — a failed spool write gives back the numbers of the spilled lines it lost;
//! markers held behind spilled lines go out once the sender has read them — are kept
//! by the methods here.

use crate::config::{Tap, WriterConfig};
use crate::error::WriterError;
use crate::losses::Losses;
use crate::mask::Masker;
use crate::queue::{Numbered, SendQueue, SpillCursor, Taken};
use crate::spool::{Refused, Spool, SpoolError};
use runlog_protocol::LogLine;
use runlog_protocol::engine::WriterReport;
use runlog_protocol::ledger::{LineDigest, WriterTotals};
use std::borrow::Cow;
use tokio::time::Instant;

/// Counters for the report.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    lines: u64,
    bytes: u64,
    spills: u64,
    /// Written by the sender: requests acknowledged, retries, lines acknowledged.
    batches: u64,
    retries: u64,
    streamed_lines: u64,
}

/// A snapshot of a writer's progress; `lines - streamed_lines` is the live lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Lines numbered so far.
    pub lines: u64,
    /// Lines the service has acknowledged.
    pub streamed_lines: u64,
    /// Bytes of serialized lines waiting in memory.
    pub queued_bytes: usize,
    /// Bytes in the spool file (the complete history so far).
    pub spool_bytes: u64,
    /// Times the memory queue overflowed and the sender read lines back from disk.
    pub spills: u64,
    /// Whether live streaming has stopped (the archive is still uploaded at close).
    pub live_stopped: bool,
}

/// The parts of the configuration `emit` needs, borrowed apart from the state.
pub(crate) struct EmitCtx<'a> {
    /// Every emitted line is masked here, once, before it is numbered and spooled.
    masker: &'a Masker,
    trim_suffix: bool,
    queue_max: usize,
    spool_max: u64,
    tap: Option<&'a Tap>,
}

impl<'a> EmitCtx<'a> {
    /// The context of a writer with this configuration.
    pub(crate) fn new(cfg: &'a WriterConfig, masker: &'a Masker, tap: Option<&'a Tap>) -> Self {
        EmitCtx {
            masker,
            trim_suffix: cfg.trim_new_line_suffix,
            queue_max: cfg.queue_max_bytes,
            spool_max: cfg.spool_max_bytes,
            tap,
        }
    }
}

/// See the module docs.
pub(crate) struct Lines {
    spool: Spool,
    queue: SendQueue,
    losses: Losses,
    /// `close()` has begun: no more producer lines.
    closing: bool,
    counts: Counts,
    /// The ledger digest of every numbered line's text, in `pos` order (fed where
    /// the line is counted, so it costs one SHA-256 update of text already in cache:
    /// 32 ns a `seq` line, 117 ns a 100-byte line, release build on this VM).
    digest: LineDigest,
    /// The `next_pos` of the service's last acknowledgement: every line below it is
    /// in the live stream. A writer that uploads no archive (`skip_opening_stream`,
    /// `skip_closing_stream`) sends the lines from here on again from its outbox.
    acked_end: u64,
    /// The `pos` of this writer's first line: past the lines the stream held when
    /// the writer opened it (0 for a new stream).
    first_pos: u64,
    /// Lines below this `pos` were numbered before the writer learnt that the stream
    /// already held lines up to here (its open failed at first): the service keeps
    /// the earlier writer's line for each such `pos`, so they count as dropped.
    shadowed_below: u64,
    /// Lines of batches sent once that the service answered as duplicates: another
    /// writer of the key had sent lines with the same `pos` (beyond those counted by
    /// `shadowed_below`).
    collided: u64,
    /// The first error met; the report's `error`.
    error: Option<WriterError>,
    clock: TimeCache,
    last_write: Instant,
    /// Lines and bytes already added to the metrics counters (published per call,
    /// not per line).
    published: (u64, u64),
}

impl Lines {
    /// The state of a new writer spooling to `spool`.
    pub(crate) fn new(spool: Spool, first_pos: u64) -> Lines {
        let error = spool.failure().cloned().map(WriterError::from);
        Lines {
            spool,
            queue: SendQueue::starting_at(first_pos),
            losses: Losses::default(),
            closing: false,
            counts: Counts::default(),
            digest: LineDigest::default(),
            acked_end: first_pos,
            first_pos,
            shadowed_below: first_pos,
            collided: 0,
            error,
            clock: TimeCache::default(),
            last_write: Instant::now(),
            published: (0, 0),
        }
    }

    /// What the writer states at close ([`WriterTotals`]): the lines it numbered,
    /// their text's bytes and digest, the lines it dropped. Exact only for a spool
    /// that never failed (a failed write gives numbers back, which the digest cannot
    /// take back): close states them only then.
    pub(crate) fn totals(&self) -> WriterTotals {
        WriterTotals {
            lines: Some(self.queue.next_pos() - self.first_pos),
            bytes: Some(self.counts.bytes),
            digest: Some(self.digest.clone().finish()),
            dropped: Some(self.losses.dropped().0),
            outcome: None,
        }
    }

    /// Reads the clock for the lines of one producer call (they arrive at the same
    /// instant).
    pub(crate) fn refresh_clock(&mut self) {
        self.clock.refresh();
    }

    /// A producer wrote: the partial-line idle time starts again.
    pub(crate) fn touch(&mut self) {
        self.last_write = Instant::now();
    }

    /// When a producer last wrote.
    pub(crate) fn last_write(&self) -> Instant {
        self.last_write
    }

    /// Whether `close()` has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Masks, numbers, spools and queues one finished line. Masking here, the one
    /// door every line passes, is what keeps a secret out of every sink.
    pub(crate) fn emit(&mut self, ctx: &EmitCtx<'_>, level: &str, mut text: Cow<'_, str>) {
        ctx.masker.mask_cow(&mut text);
        let text: &str = match text.strip_suffix('\n') {
            Some(trimmed) if ctx.trim_suffix => trimmed,
            _ => &text,
        };
        let pos = self.queue.next_pos();
        // Serialised from borrowed fields (no per-line copies of level and time)
        // straight into the spool's buffer.
        let time = self.clock.text();
        let row = self.spool.append_with(false, |buf| {
            crate::row::write_row(buf, level, pos, text, time)
        });
        match row {
            Ok((offset, row)) => {
                // Only a row that goes into the memory queue gets a copy of its own.
                let numbered = self.queue.push_spooled(row, offset, ctx.queue_max);
                self.accepted(ctx, level, text, numbered);
            }
            Err(why) => {
                if matches!(why, Refused::Failed(_)) {
                    self.spool_failed();
                }
                // `spool_failed` may have given back numbers: the line lost now is
                // the one after what is kept.
                let pos = pos.min(self.queue.next_pos());
                self.record_loss(ctx, pos, text.len(), why)
            }
        }
    }

    /// Counts a numbered line and hands it to the tap.
    fn accepted(&mut self, ctx: &EmitCtx<'_>, level: &str, text: &str, n: Numbered) {
        self.counts.lines += 1;
        self.counts.bytes += text.len() as u64;
        self.digest.line(text);
        if let Some(tap) = ctx.tap {
            tap(&LogLine {
                level: level.to_owned(),
                pos: n.pos(),
                out: text.to_owned(),
                time: self.clock.text().to_owned(),
                args: None,
            });
        }
        if n.spill_started() {
            self.counts.spills += 1;
            metrics::counter!("livelog_spills_total").increment(1);
        }
    }

    /// Flushes the spool; a failed write is settled at once (see
    /// [`Lines::spool_failed`]).
    pub(crate) fn flush_spool(&mut self) -> Result<(), SpoolError> {
        let flushed = self.spool.flush();
        if flushed.is_err() {
            self.spool_failed();
        }
        flushed
    }

    /// [`Lines::flush_spool`], its error kept for the report; whether it succeeded.
    pub(crate) fn sync_spool(&mut self) -> bool {
        match self.flush_spool() {
            Ok(()) => true,
            Err(e) => {
                self.note_error(e);
                false
            }
        }
    }

    /// After the spool's write failed (a full disk): the rows that did not reach the
    /// file and are nowhere else — spilled lines, not in the memory queue — are not
    /// sent, and the sender could never read them back. Their numbers are given back
    /// (no line was sent with them, so the stream keeps no gap) and they are counted
    /// as dropped, the first loss the marker reports. Queued rows still go out from
    /// memory.
    fn spool_failed(&mut self) {
        let Some(unwritten) = self.spool.take_unwritten() else {
            return;
        };
        let Some(cur) = self.queue.spill() else {
            return;
        };
        let rows: Vec<&[u8]> = unwritten
            .split(|b| *b == b'\n')
            .filter(|r| !r.is_empty())
            .collect();
        let first = self.queue.next_pos().saturating_sub(rows.len() as u64);
        let keep = cur.pos().max(first);
        let (mut n, mut text_bytes, mut marker_lost) = (0u64, 0u64, false);
        for (i, row) in rows.iter().enumerate().skip((keep - first) as usize) {
            let pos = first + i as u64;
            // The text length, as the counts hold it (a row the writer wrote itself
            // always parses).
            let len = serde_json::from_slice::<LogLine>(row).map_or(0, |l| l.out.len() as u64);
            self.counts.lines = self.counts.lines.saturating_sub(1);
            self.counts.bytes = self.counts.bytes.saturating_sub(len);
            if self.losses.is_spooled_marker(pos) {
                // Not a line of the process: said again below, not counted as one.
                marker_lost = true;
            } else {
                n += 1;
                text_bytes += len;
            }
        }
        self.queue.give_back(keep);
        let spool = &self.spool;
        let reason = || {
            spool
                .failure()
                .map_or_else(|| "spool write failed".to_owned(), ToString::to_string)
        };
        if let Some(marker) = self
            .losses
            .unwritten_lost(keep, n, text_bytes, marker_lost, reason)
        {
            let time = self.clock.text().to_owned();
            self.losses.hold(marker, time);
        }
        self.release_markers();
    }

    /// Queues the held markers once no spilled line is left to read before them:
    /// each gets the next number then, after every line that went before it.
    fn release_markers(&mut self) {
        if self.queue.spill().is_some() || self.queue.is_stopped() || !self.losses.holds_markers() {
            return;
        }
        for (text, time) in self.losses.take_held() {
            let mut json = Vec::with_capacity(text.len() + 96);
            crate::row::write_row(&mut json, "warn", self.queue.next_pos(), &text, &time);
            // Neither spilling nor stopped (checked above): never refused.
            let _ = self.queue.push_unspooled(json);
        }
    }

    /// Adds the lines numbered since the last call to the metrics counters.
    pub(crate) fn publish_metrics(&mut self) {
        let (lines, bytes) = (self.counts.lines, self.counts.bytes);
        if lines != self.published.0 {
            // Saturating: a failed spool gives back the numbers of lines it lost
            // (`spool_failed`), and a counter never goes down.
            metrics::counter!("livelog_lines_total")
                .increment(lines.saturating_sub(self.published.0));
            metrics::counter!("livelog_bytes_total")
                .increment(bytes.saturating_sub(self.published.1));
            self.published = (lines, bytes);
        }
    }

    fn record_loss(&mut self, ctx: &EmitCtx<'_>, pos: u64, len: usize, why: Refused) {
        let reason = || match why {
            Refused::Full => format!("the spool reached its disk cap of {} bytes", ctx.spool_max),
            Refused::Failed(e) => e.to_string(),
        };
        if let Some(marker) = self.losses.line_refused(pos, len, reason) {
            self.emit_marker(ctx, marker);
        }
    }

    /// A marker goes past the spool cap (it is small and says what was lost).
    fn emit_marker(&mut self, ctx: &EmitCtx<'_>, text: String) {
        let pos = self.queue.next_pos();
        let mut json = Vec::with_capacity(text.len() + 96);
        crate::row::write_row(&mut json, "warn", pos, &text, self.clock.text());
        match self.spool.append(&json, true) {
            Ok(offset) => {
                self.losses.marker_spooled(pos);
                let numbered = self.queue.push_spooled(&json, offset, ctx.queue_max);
                self.accepted(ctx, "warn", &text, numbered);
            }
            // The spool is broken: the marker can still go out live from memory, or,
            // while spilled lines are still in the file, after them.
            Err(_) => {
                if self.queue.push_unspooled(json).is_err() && !self.queue.is_stopped() {
                    let time = self.clock.text().to_owned();
                    self.losses.hold(text, time);
                }
            }
        }
    }

    /// At close: one marker with the exact totals of what was lost.
    fn emit_totals_marker(&mut self, ctx: &EmitCtx<'_>) {
        if let Some((text, totals)) = self.losses.totals_marker() {
            self.emit_marker(ctx, text);
            self.losses.reported(totals);
        }
    }

    /// Called by close once the partial line is finished: adds the loss totals, stops
    /// producers and flushes the spool (cut to its length). Returns whether the spool
    /// is complete.
    pub(crate) fn finish(&mut self, ctx: &EmitCtx<'_>) -> bool {
        // A write that fails now is settled before the totals are counted (the error
        // itself is reported by `finish` below: a failed spool stays failed).
        let _ = self.flush_spool();
        self.emit_totals_marker(ctx);
        self.publish_metrics();
        self.closing = true;
        let flushed = self.spool.finish();
        if let Err(e) = flushed {
            self.spool_failed();
            // The totals marker may have been among the rows given back.
            self.emit_totals_marker(ctx);
            self.note_error(e);
            return false;
        }
        self.spool.failure().is_none()
    }

    /// The send queue, to read.
    pub(crate) fn queue(&self) -> &SendQueue {
        &self.queue
    }

    /// The spool, to read.
    pub(crate) fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Whether the sender's next batch is as large as it can get
    /// ([`SendQueue::full_batch_ready`]).
    pub(crate) fn full_batch_ready(&self, max_lines: usize, max_bytes: u64) -> bool {
        self.queue
            .full_batch_ready(max_lines, max_bytes, self.spool.written())
    }

    /// Rows from the memory queue for one batch ([`SendQueue::take`]).
    pub(crate) fn take(&mut self, max_lines: usize, max_bytes: usize) -> Option<Taken> {
        self.queue.take(max_lines, max_bytes)
    }

    /// The sender read `count` spilled rows (`len` bytes) at `cur`; markers held
    /// behind them go out once it has caught up.
    pub(crate) fn advance_spill(&mut self, cur: SpillCursor, count: u64, len: u64) {
        if self.queue.advance_spill(cur, count, len) {
            self.release_markers();
        }
    }

    /// Sends everything from `pos` (at `offset` in the spool) again; refused when the
    /// spool failed (what it gave back cannot be read again) or live streaming stopped.
    pub(crate) fn rewind(&mut self, pos: u64, offset: u64) -> bool {
        self.spool.failure().is_none() && self.queue.rewind(pos, offset)
    }

    /// Stops live streaming (the archive is still uploaded at close); returns whether
    /// this call stopped it.
    pub(crate) fn stop_live(&mut self, why: WriterError) -> bool {
        self.note_error(why);
        self.queue.stop()
    }

    /// Keeps `e` for the report unless an error came first.
    pub(crate) fn note_error(&mut self, e: impl Into<WriterError>) {
        self.error.get_or_insert(e.into());
    }

    /// A request is retried.
    pub(crate) fn record_retry(&mut self) {
        self.counts.retries += 1;
    }

    /// The service acknowledged a batch that held `new` lines not acknowledged before,
    /// and holds the stream contiguously up to `next_pos`.
    pub(crate) fn record_batch(&mut self, new: u64, next_pos: u64) {
        self.counts.batches += 1;
        self.counts.streamed_lines += new;
        self.acked_end = next_pos;
    }

    /// The service lost the stream: none of this writer's lines is acknowledged any
    /// more.
    pub(crate) fn reset_acked(&mut self) {
        self.acked_end = self.first_pos;
    }

    /// The `pos` of this writer's first line (0 unless it continues a stream).
    pub(crate) fn first_pos(&self) -> u64 {
        self.first_pos
    }

    /// The stream held lines up to `held_end` when it was opened, after this writer
    /// had begun numbering from [`first_pos`](Self::first_pos) (its first open
    /// failed): its lines below `held_end` collide with the earlier ones, which the
    /// service keeps. They are reported as dropped, never silently.
    pub(crate) fn note_held_before(&mut self, held_end: u64) {
        if held_end > self.shadowed_below {
            self.shadowed_below = held_end;
            self.note_error(WriterError::Shadowed { held: held_end });
        }
    }

    /// A batch from `first_pos`, sent once, was answered with `duplicates` lines the
    /// service already held: lines of another writer of the key, which it keeps
    /// instead of these. Counted as dropped (those below a late open's `held_end`
    /// are counted already).
    pub(crate) fn note_collided(&mut self, first_pos: u64, duplicates: u64) {
        if first_pos >= self.shadowed_below {
            self.collided += duplicates;
            self.note_error(WriterError::Collided);
        }
    }

    /// Lines the service dropped as duplicates of an earlier writer's
    /// ([`note_held_before`](Self::note_held_before)), with their bytes unknown.
    fn shadowed(&self) -> u64 {
        self.queue
            .next_pos()
            .min(self.shadowed_below)
            .saturating_sub(self.first_pos)
    }

    /// Whether every numbered line is in the live stream, and from where not.
    pub(crate) fn acked_end(&self) -> u64 {
        self.acked_end
    }

    /// Closes the spool ([`Spool::discard`]).
    pub(crate) fn discard_spool(&mut self, reuse: bool) {
        self.spool.discard(reuse);
    }

    /// Makes the spool's writes fail as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_spool_writes(&mut self) {
        self.spool.fail_writes();
    }

    /// Where the writer stands.
    pub(crate) fn progress(&self) -> Progress {
        Progress {
            lines: self.counts.lines,
            streamed_lines: self.counts.streamed_lines,
            queued_bytes: self.queue.bytes(),
            spool_bytes: self.spool.written(),
            spills: self.counts.spills,
            live_stopped: self.queue.is_stopped(),
        }
    }

    /// The close report.
    pub(crate) fn report(
        &self,
        key: String,
        archived: bool,
        outboxed: bool,
        hints: Vec<String>,
    ) -> WriterReport {
        let c = &self.counts;
        let (dropped_lines, dropped_bytes) = self.losses.dropped();
        let dropped_lines = dropped_lines + self.shadowed() + self.collided;
        WriterReport {
            key,
            lines: c.lines,
            bytes: c.bytes,
            batches: c.batches,
            retries: c.retries,
            dropped_lines,
            dropped_bytes,
            streamed_lines: c.streamed_lines,
            archived,
            outboxed,
            hints,
            error: self.error.as_ref().map(ToString::to_string),
        }
    }
}

/// The wire timestamp: read once per producer call (the lines of one chunk arrive
/// at the same instant) and formatted once per millisecond, not once per line (clock
/// reads and formatting were a tenth of the per-line cost).
#[derive(Default)]
struct TimeCache {
    millis: u128,
    text: String,
}

impl TimeCache {
    fn refresh(&mut self) {
        let now = std::time::SystemTime::now();
        let millis = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        if millis != self.millis || self.text.is_empty() {
            self.millis = millis;
            self.text = runlog_protocol::format_time(now);
        }
    }

    fn text(&mut self) -> &str {
        if self.text.is_empty() {
            self.refresh();
        }
        &self.text
    }
}
