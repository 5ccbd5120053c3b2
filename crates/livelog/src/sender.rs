//! The sender task and `close()`.
//!
//! One task per writer, one request in flight, so the service receives lines in `pos`
//! order. Batching is adaptive: the task takes everything queued the moment the
//! previous request finishes, so a lone line goes out at once (one round trip of
//! latency) and a flood forms large batches (throughput).
//!
//! This task never logs through `tracing` per line or per retry: the engine may feed
//! `tracing` events into a writer, and a failing stream must not generate more lines
//! for itself. It logs once when live streaming stops, under the `livelog` target that
//! the engine's stream layer excludes.

use crate::client::Batch;
use crate::retry::{Outcome, retry, until_deadline};
use crate::spool::SpoolReader;
use crate::writer::{Inner, finish_producing, hints};
use runlog_protocol::engine::WriterReport;
use std::sync::Arc;
use tokio::time::Instant;

/// What the next batch comes from.
enum Next {
    Batch(Batch),
    Wait,
    Done,
}

/// The sender loop: open the stream, then send batches until close drains it.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut deadline = inner.deadline.subscribe();
    let key = inner.cfg.key.clone();
    if !inner.cfg.skip_opening_stream {
        let client = inner.client.clone();
        let out = retry(
            || client.open(&key),
            inner.cfg.max_retry_delay,
            &mut deadline,
            |_| count_retry(&inner),
        )
        .await;
        if let Some(why) = failure(out) {
            stop_live(&inner, format!("cannot open the live stream: {why}"));
        }
    }
    let mut reader: Option<SpoolReader> = None;
    let mut resend = Resend::default();
    // A full batch taken while the previous request was in flight (see `Take::Full`).
    let mut ready: Option<Batch> = None;
    // The buffer of the last batch the service acknowledged, for the next one: a new
    // mebibyte per batch was memory the kernel had to fault in and zero every time.
    let mut spare: Option<Vec<u8>> = None;
    loop {
        let work = inner.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        let next = match ready.take() {
            Some(batch) if !inner.lock().lines.live_stopped => Next::Batch(batch),
            _ => next_batch(&inner, &mut reader, Take::Any, &mut spare),
        };
        match next {
            Next::Done => break,
            Next::Wait => {
                // Idle: the spare buffer (up to a batch's size) is not kept for a
                // writer that may stay quiet for long; a flood never waits here.
                spare = None;
                work.await;
                continue;
            }
            Next::Batch(batch) => {
                let client = inner.client.clone();
                let reopen = !inner.cfg.skip_opening_stream;
                let send = retry(
                    || write_reopening(client.as_ref(), &key, &batch, reopen),
                    inner.cfg.max_retry_delay,
                    &mut deadline,
                    |_| count_retry(&inner),
                );
                // While the service handles this batch, read the next one (from the
                // spool, mostly): building a 1 MiB batch took as long as the service
                // takes to parse one, and both were on the path of every batch.
                let ahead = read_ahead(&inner, &mut reader, &mut spare);
                let mut out = send.await;
                if let Some(ahead) = ahead {
                    let (next, r, s) = ahead.await.unwrap_or((Next::Wait, None, None));
                    reader = r;
                    spare = s;
                    if let Next::Batch(b) = next {
                        ready = Some(b);
                    }
                }
                if let Outcome::Done(Sent::Reopened) = out {
                    inner.lock().lines.acked_end = 0;
                    // The service lost the stream and holds nothing of it now: send the
                    // whole history again, in order, this batch included (it is in the
                    // spool), so a live reader never sees later lines before earlier.
                    // A batch read ahead is in the spool too, and read again from it.
                    ready = None;
                    if rewind(&inner, 0, &mut reader) {
                        resend.pending = Some(0);
                        continue;
                    }
                    // No spool to read back from: only this batch goes out.
                    out = retry(
                        || write_reopening(client.as_ref(), &key, &batch, false),
                        inner.cfg.max_retry_delay,
                        &mut deadline,
                        |_| count_retry(&inner),
                    )
                    .await;
                }
                match out {
                    // Only answered when reopening, which the second try does not do.
                    Outcome::Done(Sent::Reopened) => {}
                    Outcome::Done(Sent::Acked(ack)) => {
                        let sent_end = batch.first_pos + batch.lines;
                        // Lines resent after a loss are counted once.
                        let new = sent_end.saturating_sub(batch.first_pos.max(resend.acked_end));
                        resend.acked_end = resend.acked_end.max(sent_end);
                        {
                            let mut st = inner.lock();
                            st.lines.counts.batches += 1;
                            st.lines.counts.streamed_lines += new;
                            st.lines.acked_end = ack.next_pos;
                        }
                        metrics::counter!("livelog_batches_total").increment(1);
                        metrics::counter!("livelog_streamed_lines_total").increment(new);
                        if let Some(from) = resend.wanted(&batch, ack.next_pos)
                            && rewind(&inner, from, &mut reader)
                        {
                            // Sent again from the spool, the batch read ahead included.
                            ready = None;
                            resend.pending = Some(from);
                        }
                    }
                    other => {
                        let why = failure(other).unwrap_or_default();
                        stop_live(&inner, format!("live streaming stopped: {why}"));
                    }
                }
                // The request is over: the body's buffer is this task's alone again.
                if spare.is_none() {
                    spare = batch.body.try_into_mut().ok().map(Vec::from);
                }
            }
        }
    }
    inner.sender_done.send_replace(true);
}

/// When the service holds less than this writer sent, and from where to send again.
#[derive(Default)]
struct Resend {
    /// One past the highest `pos` the service has acknowledged.
    acked_end: u64,
    /// The `pos` the last resend started from, until its first batch is acknowledged.
    pending: Option<u64>,
    /// The service does not keep what is resent (its acks never move on): stop
    /// resending rather than loop.
    given_up: bool,
}

impl Resend {
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
        let lost = next_pos < sent_end && next_pos != batch.first_pos;
        (lost && !self.given_up).then_some(next_pos)
    }
}

/// Sends everything from `pos` again: the memory queue is dropped (every queued line
/// is also in the spool) and the sender reads from the spool, as after an overflow of
/// the queue, until it has caught up. Returns whether it did.
fn rewind(inner: &Inner, pos: u64, reader: &mut Option<SpoolReader>) -> bool {
    let (path, end) = {
        let mut st = inner.lock();
        let l = &mut st.lines;
        if l.live_stopped || l.spool.failure().is_some() {
            return false;
        }
        if let Err(e) = l.flush_spool() {
            l.error.get_or_insert(e);
            return false;
        }
        (l.spool.path().to_owned(), l.spool.written())
    };
    if reader.is_none() {
        *reader = SpoolReader::open(&path).ok();
    }
    let Some(Ok(Some(offset))) = reader.as_mut().map(|r| r.offset_of(pos, end)) else {
        return false;
    };
    let mut st = inner.lock();
    let l = &mut st.lines;
    // The spool may have failed while the lock was released: what it then gave back
    // cannot be read again.
    if l.live_stopped || pos >= l.next_pos || l.spool.failure().is_some() {
        return false;
    }
    l.queue.clear();
    l.queue_bytes = 0;
    l.spill = Some(crate::writer::SpillCursor { pos, offset });
    drop(st);
    inner.room.notify_waiters();
    true
}

/// What sending a batch achieved.
enum Sent {
    /// The service stored it and says how far its stream is contiguous.
    Acked(runlog_protocol::service::AppendAck),
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
    client: &dyn crate::client::LogClient,
    key: &str,
    batch: &Batch,
    reopen: bool,
) -> Result<Sent, crate::client::ClientError> {
    // A writer that reopens asks for the 404 (an implicit open would keep this batch
    // after a gap); one that does not is better served by a service that opens.
    let written = if reopen {
        client.write_opened(key, batch).await
    } else {
        client.write(key, batch).await
    };
    match written {
        Err(crate::client::ClientError::Status { status: 404, .. }) if reopen => {
            client.open(key).await?;
            Ok(Sent::Reopened)
        }
        other => other.map(Sent::Acked),
    }
}

fn count_retry(inner: &Inner) {
    inner.lock().lines.counts.retries += 1;
    metrics::counter!("livelog_retries_total").increment(1);
}

fn failure<T>(out: Outcome<T>) -> Option<String> {
    match out {
        Outcome::Done(_) => None,
        Outcome::Fatal(e) => Some(e.to_string()),
        Outcome::Deadline(Some(e)) => Some(format!("close deadline passed; last error: {e}")),
        Outcome::Deadline(None) => Some("close deadline passed".to_owned()),
    }
}

/// Stops live streaming for this key (the archive is still uploaded at close).
fn stop_live(inner: &Inner, why: String) {
    let mut st = inner.lock();
    let l = &mut st.lines;
    let first = !l.live_stopped;
    l.live_stopped = true;
    l.queue.clear();
    l.queue_bytes = 0;
    l.spill = None;
    l.error.get_or_insert_with(|| why.clone());
    drop(st);
    inner.room.notify_waiters();
    // Outside the lock and once: a tracing layer that forwards events into a writer
    // must never be entered while this writer's lock is held.
    if first {
        tracing::warn!(target: "livelog", key = %inner.cfg.key, "{why}");
    }
}

/// Which batches [`next_batch`] may take.
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

/// Takes the next batch: from the memory queue, or read back from the spool when
/// the queue overflowed.
fn next_batch(
    inner: &Inner,
    reader: &mut Option<SpoolReader>,
    take: Take,
    spare: &mut Option<Vec<u8>>,
) -> Next {
    let max_lines = inner.cfg.max_batch_lines.max(1);
    let max_bytes = inner.cfg.max_batch_bytes.max(1);
    let mut st = inner.lock();
    let l = &mut st.lines;
    if l.live_stopped {
        return if l.closing { Next::Done } else { Next::Wait };
    }
    if take == Take::Full && !full_batch_ready(l, max_lines, max_bytes as u64) {
        return Next::Wait;
    }
    if l.spill.is_some() {
        // The spool's buffer must reach the file before spilled lines can be read
        // back. A failed write gives back the spilled lines it lost, and may end the
        // spill and queue the markers held behind it: done before the queue is looked
        // at, so they go out now.
        if let Err(e) = l.flush_spool() {
            l.error.get_or_insert(e);
        }
    }
    if !l.queue.is_empty() {
        // A line reaches the spool file before the service sees it: a process killed
        // now leaves at least what the service holds for recovery.
        if let Err(e) = l.flush_spool() {
            l.error.get_or_insert(e);
        }
        let first_pos = l.next_pos - l.queue.len() as u64 - spilled_count(l);
        // Only the rows move under the lock; they are copied into the body after it
        // is released, so producers do not wait for a mebibyte of copying.
        let mut rows = Vec::with_capacity(l.queue.len().min(max_lines));
        let mut len = 1;
        while let Some(q) = l.queue.front() {
            let n = rows.len();
            if n > 0 && (n >= max_lines || len + q.json.len() + 1 > max_bytes) {
                break;
            }
            len += q.json.len() + 1;
            l.queue_bytes -= q.json.len();
            rows.extend(l.queue.pop_front());
        }
        drop(st);
        inner.room.notify_waiters();
        let mut body = spare.take().unwrap_or_default();
        body.clear();
        body.reserve(len + 1);
        body.push(b'[');
        for (i, q) in rows.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&q.json);
        }
        body.push(b']');
        return Next::Batch(Batch {
            first_pos,
            lines: rows.len() as u64,
            body: body.into(),
        });
    }
    if let Some(cur) = l.spill {
        let end = l.spool.written();
        let path = l.spool.path().to_owned();
        drop(st);
        if reader.is_none() {
            *reader = SpoolReader::open(&path).ok();
        }
        let rows = match reader.as_mut().map(|r| {
            let buf = spare.take().unwrap_or_default();
            r.read_batch(cur.offset, end, max_bytes, max_lines as u64, buf)
        }) {
            Some(Ok(rows)) if rows.count > 0 => rows,
            _ => {
                stop_live(
                    inner,
                    format!("cannot read the spool back from {}", path.display()),
                );
                return Next::Wait;
            }
        };
        let read_len = rows.ndjson_len;
        let body = rows.body;
        let mut st = inner.lock();
        let l = &mut st.lines;
        if l.spill == Some(cur) {
            let next = crate::writer::SpillCursor {
                pos: cur.pos + rows.count,
                offset: cur.offset + read_len,
            };
            // Caught up with the producers: back to the memory queue, where markers
            // held behind the spilled lines go next.
            l.spill = if next.pos >= l.next_pos {
                None
            } else {
                Some(next)
            };
            l.release_markers();
        }
        drop(st);
        inner.room.notify_waiters();
        return Next::Batch(Batch {
            first_pos: cur.pos,
            lines: rows.count,
            body: body.into(),
        });
    }
    if l.closing { Next::Done } else { Next::Wait }
}

/// Starts reading the next batch on a blocking thread when a full one is there (see
/// [`Take::Full`]); the reader and the spare buffer travel with it and come back with
/// the batch.
///
/// Not on this task: a mebibyte read from the spool would hold this runtime worker,
/// and the connection task that sends the request in flight, woken by this task, waits
/// in the same worker's queue (measured: the request reached the service only after
/// the read, and batches were no faster than without reading ahead).
type ReadAhead = tokio::task::JoinHandle<(Next, Option<SpoolReader>, Option<Vec<u8>>)>;

fn read_ahead(
    inner: &Arc<Inner>,
    reader: &mut Option<SpoolReader>,
    spare: &mut Option<Vec<u8>>,
) -> Option<ReadAhead> {
    {
        let st = inner.lock();
        let max_lines = inner.cfg.max_batch_lines.max(1);
        let max_bytes = inner.cfg.max_batch_bytes.max(1) as u64;
        if st.lines.live_stopped || !full_batch_ready(&st.lines, max_lines, max_bytes) {
            return None;
        }
    }
    let inner = inner.clone();
    let mut reader = reader.take();
    let mut spare = spare.take();
    Some(tokio::task::spawn_blocking(move || {
        let next = next_batch(&inner, &mut reader, Take::Full, &mut spare);
        (next, reader, spare)
    }))
}

/// Whether the next batch is as large as it can get: at a size cap, or (spilling)
/// made of queued lines that no new line can join, or of spilled lines past a cap.
fn full_batch_ready(l: &crate::writer::Lines, max_lines: usize, max_bytes: u64) -> bool {
    match l.spill {
        Some(_) if !l.queue.is_empty() => true,
        Some(cur) => {
            l.next_pos - cur.pos >= max_lines as u64 || l.spool.written() - cur.offset >= max_bytes
        }
        None => l.queue.len() >= max_lines || l.queue_bytes as u64 >= max_bytes,
    }
}

/// Lines numbered after the queue that are only in the spool (0 unless spilling).
fn spilled_count(l: &crate::writer::Lines) -> u64 {
    l.spill.map_or(0, |c| l.next_pos - c.pos)
}

/// `close()`: finish lines, drain the sender, upload the archive, close the stream,
/// all before the deadline; keep the history in the outbox when it could not land.
pub(crate) async fn close(inner: Arc<Inner>) -> WriterReport {
    let deadline = Instant::now() + inner.cfg.close_deadline;
    let spool_complete = finish_producing(&inner);
    // Read from the spool's tail now: the spool is moved or removed below.
    let hints = hints(&inner);
    inner.deadline.send_replace(Some(deadline));
    inner.work.notify_one();
    inner.room.notify_waiters();
    let mut dl = inner.deadline.subscribe();
    let mut done = inner.sender_done.subscribe();
    let drained = until_deadline(&mut dl, async move { done.wait_for(|d| *d).await.is_ok() })
        .await
        .is_some();
    if !drained {
        stop_live(
            &inner,
            "close deadline passed before every line was sent".to_owned(),
        );
    }

    let key = inner.cfg.key.clone();
    let (spool_path, acked_end, next_pos) = {
        let st = inner.lock();
        let l = &st.lines;
        (l.spool.path().to_owned(), l.acked_end, l.next_pos)
    };
    // lite-engine's meanings: with `skip_opening_stream` the stream and its archive are
    // someone else's (an upload would overwrite the lines another writer put there), and
    // with `skip_closing_stream` the writer only flushes. Either way, what the live stream
    // lacks is sent again from the outbox, never uploaded.
    let upload_archive = crate::outbox::uploads_archive(&inner.cfg);
    let live_complete = acked_end >= next_pos;
    let mut archived = false;
    if spool_complete && upload_archive {
        let client = inner.client.clone();
        let path = spool_path.clone();
        let out = retry(
            || client.upload(&key, &path, inner.cfg.indirect_upload),
            inner.cfg.max_retry_delay,
            &mut dl,
            |_| count_retry(&inner),
        )
        .await;
        match failure(out) {
            None => archived = true,
            Some(why) => record_error(&inner, format!("archive upload failed: {why}")),
        }
    }
    let mut stream_closed = inner.cfg.skip_closing_stream;
    // A writer that uploads no archive closes only a stream that holds all its lines:
    // its archive is made from them, so the outbox sends the missing ones first.
    let close_now = upload_archive || live_complete || !spool_complete;
    if !stream_closed && close_now {
        let client = inner.client.clone();
        // A spool that failed (a full disk) is not a whole history and is not
        // uploaded: the service makes the archive from the lines it received, the
        // loss marker among them, rather than leaving the stream without one. A
        // stream someone else opened is archived that way too (lite-engine's
        // `skip_opening_stream`).
        let snapshot = !spool_complete || inner.cfg.skip_opening_stream;
        let out = retry(
            || client.close(&key, snapshot),
            inner.cfg.max_retry_delay,
            &mut dl,
            |_| count_retry(&inner),
        )
        .await;
        match failure(out) {
            None => stream_closed = true,
            Some(why) => record_error(&inner, format!("closing the stream failed: {why}")),
        }
    }

    // Everything this writer owes the service has landed.
    let settled = if upload_archive {
        archived
    } else {
        live_complete && stream_closed
    };
    let mut outboxed = false;
    if settled {
        // Kept for the next writer's spool only when the sender has stopped: it must
        // not read from a file that another history is being written into.
        inner.lock().lines.spool.discard(drained);
    } else if !spool_complete {
        // Neither the outbox nor a later recovery takes a broken history, and on a
        // full disk this file holds the space every later writer needs.
        inner.lock().lines.spool.discard(false);
    } else if spool_complete && inner.cfg.outbox_dir.is_none() {
        // No outbox to hand it to: the history stays where it is, and the report
        // says where, rather than deleting the only complete copy.
        let what = if upload_archive {
            "the history was not archived".to_owned()
        } else if live_complete {
            "the stream was not closed".to_owned()
        } else {
            format!("lines from pos {acked_end} on did not reach the live stream")
        };
        record_error(
            &inner,
            format!("{what}; it is kept at {}", spool_path.display()),
        );
    } else if spool_complete && let Some(dir) = &inner.cfg.outbox_dir {
        let resend_from = (!live_complete).then_some(acked_end);
        let mut entry =
            crate::outbox::Entry::for_writer(&inner.cfg, inner.client.outbox_config(), resend_from);
        entry.close_stream = !stream_closed;
        match crate::outbox::store(dir, &spool_path, &entry) {
            Ok(stored) => {
                outboxed = true;
                crate::outbox::spawn_retry(
                    dir.clone(),
                    stored,
                    inner.client.clone(),
                    inner.cfg.max_retry_delay,
                );
            }
            Err(e) => record_error(
                &inner,
                format!("cannot keep the history in the outbox: {e}"),
            ),
        }
    }

    // The history is archived or in the outbox (or was never complete): a later start
    // has nothing to recover. Otherwise the record stays, and a later start delivers it.
    if settled || outboxed || !spool_complete {
        let record = inner.recovery.lock().take();
        if let Some(record) = record {
            record.remove();
        }
    }

    let st = inner.lock();
    let l = &st.lines;
    let c = &l.counts;
    WriterReport {
        key,
        lines: c.lines,
        bytes: c.bytes,
        batches: c.batches,
        retries: c.retries,
        dropped_lines: c.dropped_lines,
        dropped_bytes: c.dropped_bytes,
        streamed_lines: c.streamed_lines,
        archived,
        outboxed,
        hints,
        error: l.error.clone(),
    }
}

fn record_error(inner: &Inner, why: String) {
    inner.lock().lines.error.get_or_insert(why);
}
