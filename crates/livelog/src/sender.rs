//! The [`Sender`]: the one task per writer that sends its lines.
//!
//! One request in flight, so the service receives lines in `pos` order. Batching is
//! adaptive: the task takes everything queued the moment the previous request
//! finishes, so a lone line goes out at once (one round trip of latency) and a flood
//! forms large batches (throughput).
//!
//! This task never logs through `tracing` per line or per retry: the engine may feed
//! `tracing` events into a writer, and a failing stream must not generate more lines
//! for itself. It logs once when live streaming stops, under the `livelog` target that
//! the engine's stream layer excludes.

use crate::client::{Batch, ClientError, LogClient};
use crate::error::WriterError;
use crate::queue::Taken;
use crate::shared::Shared;
use crate::spool::SpoolReader;
use runlog_protocol::service::AppendAck;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the next batch comes from.
enum Next {
    Batch(Batch),
    Wait,
    Done,
}

/// The sender task's state: which roles it plays, each in a field.
pub(crate) struct Sender {
    shared: Arc<Shared>,
    /// The close deadline, once set: every retry gives up when it passes.
    deadline: watch::Receiver<Option<Instant>>,
    /// Where batches are read from; travels to a blocking thread to read ahead.
    source: Source,
    /// Whether (and from where) the service must be sent lines again.
    resend: Resend,
    /// A full batch taken while the previous request was in flight (see `Take::Full`).
    ready: Option<Batch>,
}

impl Sender {
    /// The sender of a writer.
    pub(crate) fn new(shared: Arc<Shared>) -> Sender {
        let first_pos = shared.lines().first_pos();
        Sender {
            deadline: shared.deadline(),
            shared,
            source: Source::default(),
            resend: Resend {
                acked_end: first_pos,
                first_pos,
                ..Resend::default()
            },
            ready: None,
        }
    }

    /// Opens the stream, then sends batches until close drains it.
    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
        let cfg = shared.cfg();
        if !cfg.skip_opening_stream && !shared.opened_before_writing() {
            let client = shared.client();
            let opened = shared
                .retry(&mut self.deadline, || client.open_at(&cfg.key))
                .await;
            match opened {
                // Lines are numbered already: those below what the stream held
                // collide with an earlier writer's, and are reported as dropped.
                Ok(Some(held_end)) => shared.lines().note_held_before(held_end),
                Ok(None) => {}
                Err(why) => shared.stop_live(WriterError::Open(why)),
            }
        }
        loop {
            let work = shared.sender_woken();
            tokio::pin!(work);
            work.as_mut().enable();
            let next = match self.ready.take() {
                Some(batch) if !shared.lines().queue().is_stopped() => Next::Batch(batch),
                _ => self.source.next(&shared, Take::Any),
            };
            match next {
                Next::Done => break,
                Next::Wait => {
                    // Idle: the spare buffer (up to a batch's size) is not kept for a
                    // writer that may stay quiet for long; a flood never waits here.
                    self.source.spare = None;
                    work.await;
                }
                Next::Batch(batch) => self.send(batch).await,
            }
        }
        shared.mark_sender_done();
    }

    /// Sends one batch (retried until it lands, fails for good or the deadline
    /// passes), reading the next one meanwhile, and acts on the answer.
    async fn send(&mut self, batch: Batch) {
        let shared = self.shared.clone();
        let client = shared.client();
        let key = &shared.cfg().key;
        let reopen = !shared.cfg().skip_opening_stream;
        // A batch sent once holds no line the service can have from this writer, so
        // any it calls a duplicate is another writer's (see `acked`).
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let send = shared.retry(&mut self.deadline, || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            write_reopening(client.as_ref(), key, &batch, reopen)
        });
        // While the service handles this batch, read the next one (from the spool,
        // mostly): building a 1 MiB batch took as long as the service takes to parse
        // one, and both were on the path of every batch.
        let ahead = read_ahead(&shared, &mut self.source);
        let mut out = send.await;
        if let Some(ahead) = ahead {
            let (next, source) = ahead.await.unwrap_or((Next::Wait, Source::default()));
            self.source = source;
            if let Next::Batch(b) = next {
                self.ready = Some(b);
            }
        }
        if let Ok(Sent::Reopened) = out {
            shared.lines().reset_acked();
            // The service lost the stream and holds nothing of it now: send the whole
            // history again, in order, this batch included (it is in the spool), so a
            // live reader never sees later lines before earlier. A batch read ahead is
            // in the spool too, and read again from it.
            self.ready = None;
            let first = self.resend.first_pos;
            if self.rewind(first) {
                self.resend.pending = Some(first);
                return;
            }
            // No spool to read back from: only this batch goes out.
            out = shared
                .retry(&mut self.deadline, || {
                    write_reopening(client.as_ref(), key, &batch, false)
                })
                .await;
        }
        match out {
            // Only answered when reopening, which the second try does not do.
            Ok(Sent::Reopened) => {}
            Ok(Sent::Acked(ack)) => {
                let once = attempts.load(std::sync::atomic::Ordering::Relaxed) == 1;
                self.acked(&batch, &ack, once)
            }
            Err(why) => shared.stop_live(WriterError::LiveStopped(why)),
        }
        // The request is over: the body's buffer is this task's alone again.
        if self.source.spare.is_none() {
            self.source.spare = batch.body.try_into_mut().ok().map(Vec::from);
        }
    }

    /// The service stored `batch`: counts it, and resends what the ack shows it lost.
    /// `sent_once`: the batch went in one request (no retry after a lost answer).
    fn acked(&mut self, batch: &Batch, ack: &AppendAck, sent_once: bool) {
        let new = self.resend.newly_acked(batch);
        {
            let mut l = self.shared.lines();
            // Lines never sent before, in one request, that the service already held:
            // another writer of the key numbered them (two at once), and the service
            // keeps its lines, not these.
            if sent_once && new == batch.lines && ack.duplicates > 0 {
                l.note_collided(batch.first_pos, ack.duplicates);
            }
            l.record_batch(new, ack.next_pos);
        }
        metrics::counter!("livelog_batches_total").increment(1);
        metrics::counter!("livelog_streamed_lines_total").increment(new);
        if let Some(from) = self.resend.wanted(batch, ack.next_pos)
            && self.rewind(from)
        {
            // Sent again from the spool, the batch read ahead included.
            self.ready = None;
            self.resend.pending = Some(from);
        }
    }

    /// Sends everything from `pos` again: the memory queue is dropped (every queued
    /// line is also in the spool) and the sender reads from the spool, as after an
    /// overflow of the queue, until it has caught up. Returns whether it did.
    fn rewind(&mut self, pos: u64) -> bool {
        let (path, end) = {
            let mut l = self.shared.lines();
            if l.queue().is_stopped() || l.spool().failure().is_some() || !l.sync_spool() {
                return false;
            }
            (l.spool().path().to_owned(), l.spool().written())
        };
        let reader = self.source.reader(&path);
        let Some(Ok(Some(offset))) = reader.map(|r| r.offset_of(pos, end)) else {
            return false;
        };
        // The spool may have failed while the lock was released: what it then gave
        // back cannot be read again (`Lines::rewind` refuses).
        if !self.shared.lines().rewind(pos, offset) {
            return false;
        }
        self.shared.wake_producers();
        true
    }
}

/// When the service holds less than this writer sent, and from where to send again.
/// Pure: decides from the batches and acks alone.
#[derive(Debug, Default, Clone)]
struct Resend {
    /// One past the highest `pos` the service has acknowledged.
    acked_end: u64,
    /// The `pos` the last resend started from, until its first batch is acknowledged.
    pending: Option<u64>,
    /// The service does not keep what is resent (its acks never move on): stop
    /// resending rather than loop.
    given_up: bool,
    /// This writer's first `pos` (past the lines a reused stream held): lines below
    /// it are not this writer's to send.
    first_pos: u64,
}

impl Resend {
    /// The lines of an acknowledged batch not acknowledged before (lines resent after
    /// a loss are counted once).
    fn newly_acked(&mut self, batch: &Batch) -> u64 {
        let sent_end = batch.first_pos + batch.lines;
        let new = sent_end.saturating_sub(batch.first_pos.max(self.acked_end));
        self.acked_end = self.acked_end.max(sent_end);
        new
    }

    /// Checks an ack: `Some(pos)` when lines from `pos` on must be sent again because
    /// the service lost them (a restart of a service that keeps streams in memory).
    fn wanted(&mut self, batch: &Batch, next_pos: u64) -> Option<u64> {
        if let Some(from) = self.pending
            && batch.first_pos == from
        {
            self.pending = None;
            if next_pos <= from {
                self.given_up = true;
            }
        }
        let sent_end = batch.first_pos + batch.lines;
        // `next_pos == first_pos`: the service did not keep the batch's first line
        // although it was just sent; sending it again cannot help.
        // `next_pos < first_pos`: the service lost lines that were not this writer's
        // (a reused stream's earlier ones); none of its own can fill that gap.
        let lost = next_pos < sent_end && next_pos != batch.first_pos && next_pos >= self.first_pos;
        (lost && !self.given_up).then_some(next_pos)
    }
}

/// What sending a batch achieved.
enum Sent {
    /// The service stored it and says how far its stream is contiguous.
    Acked(AppendAck),
    /// The service had lost the stream, which is open again and empty; the batch was
    /// not sent.
    Reopened,
}

/// Sends a batch; when the service no longer knows the stream (a restarted service
/// with in-memory streams, an expired stream) and `reopen` (this writer opened it),
/// opens it again and answers [`Sent::Reopened`], so the sender resends the history
/// from the spool. A service that lost only some lines is caught by the ack instead
/// (see [`Resend`]).
async fn write_reopening(
    client: &dyn LogClient,
    key: &str,
    batch: &Batch,
    reopen: bool,
) -> Result<Sent, ClientError> {
    // A writer that reopens asks for the 404 (an implicit open would keep this batch
    // after a gap); one that does not is better served by a service that opens.
    let written = if reopen {
        client.write_opened(key, batch).await
    } else {
        client.write(key, batch).await
    };
    match written {
        Err(ClientError::Status { status: 404, .. }) if reopen => {
            client.open(key).await?;
            Ok(Sent::Reopened)
        }
        other => other.map(Sent::Acked),
    }
}

/// Which batches [`Source::next`] may take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Whatever is there: the sender is idle, so waiting would only add latency.
    Any,
    /// Only a batch that cannot grow any more (at a size cap, or ahead of lines that
    /// are only in the spool). Taken while a request is in flight: a smaller batch
    /// taken then would split the lines arriving during the flight, which adaptive
    /// batching sends together.
    Full,
}

/// Where the sender reads batches from: the memory queue, or the spool through its
/// reader; with the buffer of the last acknowledged batch to build the next one in (a
/// new mebibyte per batch was memory the kernel had to fault in and zero every time).
#[derive(Default)]
struct Source {
    reader: Option<SpoolReader>,
    spare: Option<Vec<u8>>,
}

impl Source {
    /// The spool's reader, opened on first use.
    fn reader(&mut self, path: &std::path::Path) -> Option<&mut SpoolReader> {
        if self.reader.is_none() {
            self.reader = SpoolReader::open(path).ok();
        }
        self.reader.as_mut()
    }

    /// Takes the next batch: from the memory queue, or read back from the spool when
    /// the queue overflowed.
    fn next(&mut self, shared: &Shared, take: Take) -> Next {
        let max_lines = shared.cfg().max_batch_lines.max(1);
        let max_bytes = shared.cfg().max_batch_bytes.max(1);
        let mut l = shared.lines();
        if l.queue().is_stopped() {
            return if l.is_closing() {
                Next::Done
            } else {
                Next::Wait
            };
        }
        if take == Take::Full && !l.full_batch_ready(max_lines, max_bytes as u64) {
            return Next::Wait;
        }
        if l.queue().spill().is_some() {
            // The spool's buffer must reach the file before spilled lines can be read
            // back. A failed write gives back the spilled lines it lost, and may end
            // the spill and queue the markers held behind it: done before the queue is
            // looked at, so they go out now.
            l.sync_spool();
        }
        if l.queue().len() > 0 {
            // A line reaches the spool file before the service sees it: a process
            // killed now leaves at least what the service holds for recovery.
            l.sync_spool();
            let taken = l.take(max_lines, max_bytes);
            // Only the rows move under the lock; they are copied into the body after
            // it is released, so producers do not wait for a mebibyte of copying.
            drop(l);
            shared.wake_producers();
            return match taken {
                Some(taken) => Next::Batch(self.body(taken)),
                None => Next::Wait,
            };
        }
        if let Some(cur) = l.queue().spill() {
            let end = l.spool().written();
            let path = l.spool().path().to_owned();
            drop(l);
            let buf = self.spare.take().unwrap_or_default();
            let rows = self
                .reader(&path)
                .map(|r| r.read_batch(cur.offset(), end, max_bytes, max_lines as u64, buf));
            let rows = match rows {
                Some(Ok(rows)) if rows.count > 0 => rows,
                _ => {
                    shared.stop_live(WriterError::ReadBack(path));
                    return Next::Wait;
                }
            };
            // Caught up with the producers: back to the memory queue, where markers
            // held behind the spilled lines go next.
            shared
                .lines()
                .advance_spill(cur, rows.count, rows.ndjson_len);
            shared.wake_producers();
            return Next::Batch(Batch {
                first_pos: cur.pos(),
                lines: rows.count,
                body: rows.body.into(),
            });
        }
        if l.is_closing() {
            Next::Done
        } else {
            Next::Wait
        }
    }

    /// The `PUT /stream` body of rows taken from the queue, built in the spare buffer.
    fn body(&mut self, taken: Taken) -> Batch {
        let mut body = self.spare.take().unwrap_or_default();
        body.clear();
        body.reserve(taken.body_len() + 1);
        body.push(b'[');
        for (i, row) in taken.rows().iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(row);
        }
        body.push(b']');
        Batch {
            first_pos: taken.first_pos(),
            lines: taken.rows().len() as u64,
            body: body.into(),
        }
    }
}

/// Starts reading the next batch on a blocking thread when a full one is there (see
/// [`Take::Full`]); the source travels with it and comes back with the batch.
///
/// Not on this task: a mebibyte read from the spool would hold this runtime worker,
/// and the connection task that sends the request in flight, woken by this task, waits
/// in the same worker's queue (measured: the request reached the service only after
/// the read, and batches were no faster than without reading ahead).
type ReadAhead = tokio::task::JoinHandle<(Next, Source)>;

fn read_ahead(shared: &Arc<Shared>, source: &mut Source) -> Option<ReadAhead> {
    {
        let l = shared.lines();
        let max_lines = shared.cfg().max_batch_lines.max(1);
        let max_bytes = shared.cfg().max_batch_bytes.max(1) as u64;
        if l.queue().is_stopped() || !l.full_batch_ready(max_lines, max_bytes) {
            return None;
        }
    }
    let shared = shared.clone();
    let mut source = std::mem::take(source);
    Some(tokio::task::spawn_blocking(move || {
        let next = source.next(&shared, Take::Full);
        (next, source)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(first_pos: u64, lines: u64) -> Batch {
        Batch {
            first_pos,
            lines,
            body: bytes::Bytes::new(),
        }
    }

    proptest! {
        /// A resend is asked for only from where the service's stream ends, before
        /// the batch's end, never from the batch's own first line.
        #[test]
        fn a_resend_starts_where_the_service_lost_lines(
            first in 0u64..1000, lines in 1u64..100, next_pos in 0u64..1200,
        ) {
            let mut r = Resend::default();
            let b = batch(first, lines);
            match r.wanted(&b, next_pos) {
                Some(from) => {
                    prop_assert_eq!(from, next_pos);
                    prop_assert!(from < first + lines && from != first);
                }
                None => prop_assert!(next_pos >= first + lines || next_pos == first),
            }
        }

        /// Against a service that never keeps what is resent, the sender asks for a
        /// resend once and then gives up: it never loops.
        #[test]
        fn a_service_that_keeps_nothing_resent_gets_one_resend(
            lost_at in 1u64..50, sizes in proptest::collection::vec(1u64..20, 1..40),
        ) {
            let mut r = Resend::default();
            let mut pos = lost_at + 5;
            let mut asked = 0;
            for size in sizes {
                // The service stays at `lost_at`, whatever is sent.
                if let Some(from) = r.wanted(&batch(pos, size), lost_at) {
                    asked += 1;
                    r.pending = Some(from);
                    pos = from;
                } else {
                    pos += size;
                }
            }
            prop_assert!(asked <= 1, "{asked} resends");
        }

        /// Every acknowledged line is counted once, however batches are resent.
        #[test]
        fn acked_lines_are_counted_once(
            batches in proptest::collection::vec((0u64..200, 1u64..30), 1..40),
        ) {
            let mut r = Resend::default();
            let mut total = 0;
            let mut high = 0;
            for (first, lines) in batches {
                total += r.newly_acked(&batch(first, lines));
                high = high.max(first + lines);
                // Counts never exceed the highest line acknowledged.
                prop_assert!(total <= high);
            }
        }
    }
}
