//! The [`Writer`]: producers' side (assemble → mask → number → spool → queue) and the
//! state the sender task shares with it.
//!
//! Buffering contract, hop by hop:
//! - producer → writer: `write` never waits on the network; it takes one lock, copies
//!   the bytes and appends finished lines to the spool's write buffer.
//!   `write_async` additionally waits while the in-memory queue is full (backpressure).
//! - writer → memory queue: bounded by `queue_max_bytes`; when full, lines still get
//!   their `pos` and go to the spool, and the sender reads them back from disk.
//! - writer → spool: bounded by `spool_max_bytes`; beyond it lines are dropped with a
//!   count, and marker lines say how many and from where.
//! - sender → service: one request in flight, retried; see [`crate::sender`].

use crate::assemble::{Assembled, LineAssembler};
use crate::client::LogClient;
use crate::config::{Tap, WriterConfig};
use crate::mask::Masker;
use crate::spool::{Refused, Spool};
use parking_lot::{Mutex, MutexGuard};
use runlog_protocol::LogLine;
use runlog_protocol::engine::WriterReport;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{Notify, OnceCell, watch};
use tokio::time::Instant;

/// Lines at the end of the stream that nudges look at.
const NUDGE_WINDOW: usize = 20;

/// One line waiting in memory to be sent.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The row, kept as the `Vec` it was serialised into: turning it into `Bytes`
    /// would allocate a second time per line (its capacity is larger than its length).
    pub(crate) json: Vec<u8>,
}

/// Where the sender must read from the spool: lines from `pos` (at byte `offset`)
/// onwards are on disk only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpillCursor {
    pub(crate) pos: u64,
    pub(crate) offset: u64,
}

/// Counters for the report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    pub(crate) batches: u64,
    pub(crate) retries: u64,
    pub(crate) streamed_lines: u64,
    pub(crate) dropped_lines: u64,
    pub(crate) dropped_bytes: u64,
    pub(crate) spills: u64,
}

/// Lines lost to a bound: how many and where they started.
#[derive(Debug, Clone)]
struct Loss {
    /// `pos` the first lost line would have had.
    at_pos: u64,
    reason: String,
    /// The totals the last totals marker gave (`None`: none given yet, or that
    /// marker was lost with the rows of a failed write).
    reported: Option<(u64, u64)>,
}

/// Everything behind the writer's lock, except the assembler (borrowed alongside).
pub(crate) struct Lines {
    pub(crate) next_pos: u64,
    pub(crate) spool: Spool,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) queue_bytes: usize,
    pub(crate) spill: Option<SpillCursor>,
    /// Live streaming has stopped (fatal error or given up): nothing more is queued.
    pub(crate) live_stopped: bool,
    /// `close()` has begun: no more producer lines.
    pub(crate) closing: bool,
    /// The `next_pos` of the service's last acknowledgement: every line below it is
    /// in the live stream. A writer that uploads no archive (`skip_opening_stream`,
    /// `skip_closing_stream`) sends the lines from here on again from its outbox.
    pub(crate) acked_end: u64,
    pub(crate) counts: Counts,
    pub(crate) error: Option<String>,
    loss: Option<Loss>,
    /// Marker texts (with their times) waiting for the sender to finish reading the
    /// spilled lines the spool file holds: the spool has failed, so a marker can only
    /// go out from memory, and only after every line numbered before it.
    held_markers: Vec<(String, String)>,
    /// Numbers of the marker lines written to the spool: a failed write that takes
    /// one back must not count it as a dropped line of the process.
    spooled_markers: Vec<u64>,
    clock: TimeCache,
    last_write: Instant,
    /// Lines and bytes already added to the metrics counters (published per call,
    /// not per line).
    published: (u64, u64),
}

pub(crate) struct State {
    asm: LineAssembler,
    pub(crate) lines: Lines,
}

/// Shared between all clones of a writer and its tasks.
pub(crate) struct Inner {
    pub(crate) cfg: WriterConfig,
    pub(crate) client: Arc<dyn LogClient>,
    pub(crate) state: Mutex<State>,
    masker: Masker,
    tap: Option<Tap>,
    /// Wakes the sender: new lines, or close.
    pub(crate) work: Notify,
    /// Wakes producers waiting for queue room.
    pub(crate) room: Notify,
    /// Wakes the partial-line timer.
    partial: Notify,
    /// The close deadline, once `close()` started.
    pub(crate) deadline: watch::Sender<Option<Instant>>,
    /// Set by the sender when it has sent (or given up on) everything.
    pub(crate) sender_done: watch::Sender<bool>,
    report: OnceCell<WriterReport>,
    /// Makes the spool deliverable by a later process if this one dies before
    /// `close()` (see [`crate::recovery`]); removed once the history is settled.
    pub(crate) recovery: Mutex<Option<crate::recovery::Record>>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No poisoning (parking_lot): a panic in a tap must not make every later
        // write panic too, and the state is consistent between lines.
        self.state.lock()
    }
}

impl Lines {
    /// Masks, numbers, spools and queues one finished line. Masking here, the one
    /// door every line passes, is what keeps a secret out of every sink.
    fn emit(&mut self, ctx: &EmitCtx<'_>, level: &str, mut text: Cow<'_, str>) {
        ctx.masker.mask_cow(&mut text);
        let text: &str = match text.strip_suffix('\n') {
            Some(trimmed) if ctx.trim_suffix => trimmed,
            _ => &text,
        };
        let pos = self.next_pos;
        // Serialised from borrowed fields (no per-line copies of level and time)
        // straight into the spool's buffer.
        let time = self.clock.text();
        let row = self.spool.append_with(false, |buf| {
            crate::row::write_row(buf, level, pos, text, time)
        });
        match row {
            Ok((offset, row)) => {
                // Only a row that goes into the memory queue gets a copy of its own.
                let queued = (!self.live_stopped
                    && self.spill.is_none()
                    && self.queue_bytes + row.len() <= ctx.queue_max)
                    .then(|| row.to_vec());
                self.accept(ctx, level, text, queued, offset);
            }
            Err(why) => {
                if matches!(why, Refused::Failed(_)) {
                    self.spool_failed();
                }
                // `spool_failed` may have given back numbers: the line lost now is
                // the one after what is kept.
                let pos = pos.min(self.next_pos);
                self.record_loss(ctx, pos, text.len(), why)
            }
        }
    }

    /// Flushes the spool; a failed write is settled at once (see
    /// [`Lines::spool_failed`]).
    pub(crate) fn flush_spool(&mut self) -> Result<(), String> {
        let flushed = self.spool.flush();
        if flushed.is_err() {
            self.spool_failed();
        }
        flushed
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
        let Some(cur) = self.spill else {
            return;
        };
        let rows: Vec<&[u8]> = unwritten
            .split(|b| *b == b'\n')
            .filter(|r| !r.is_empty())
            .collect();
        let first = self.next_pos.saturating_sub(rows.len() as u64);
        let keep = cur.pos.max(first);
        let (mut n, mut text_bytes, mut marker_lost) = (0u64, 0u64, false);
        for (i, row) in rows.iter().enumerate().skip((keep - first) as usize) {
            let pos = first + i as u64;
            // The text length, as the counts hold it (a row the writer wrote itself
            // always parses).
            let len = serde_json::from_slice::<LogLine>(row).map_or(0, |l| l.out.len() as u64);
            self.counts.lines = self.counts.lines.saturating_sub(1);
            self.counts.bytes = self.counts.bytes.saturating_sub(len);
            if self.spooled_markers.contains(&pos) {
                // Not a line of the process: said again below, not counted as one.
                marker_lost = true;
            } else {
                n += 1;
                text_bytes += len;
            }
        }
        self.spooled_markers.retain(|p| *p < keep);
        self.next_pos = keep;
        self.counts.dropped_lines += n;
        self.counts.dropped_bytes += text_bytes;
        metrics::counter!("livelog_dropped_lines_total").increment(n);
        if cur.pos >= keep {
            // Nothing spilled is left in the file: back to the memory queue.
            self.spill = None;
        }
        if n > 0 || marker_lost {
            let first_loss = self.loss.is_none();
            let reason = self
                .spool
                .failure()
                .unwrap_or("spool write failed")
                .to_owned();
            let loss = self.loss.get_or_insert(Loss {
                at_pos: keep,
                reason,
                reported: None,
            });
            // Lines from `keep` on are all lost now, whatever was lost before.
            loss.at_pos = loss.at_pos.min(keep);
            loss.reported = None;
            if first_loss || marker_lost {
                let text = format!(
                    "[livelog] lines are being dropped from here on: {}\n",
                    loss.reason
                );
                self.hold_marker(text);
            }
        }
        self.release_markers();
    }

    /// Keeps a marker until [`Lines::release_markers`] can queue it in order.
    fn hold_marker(&mut self, text: String) {
        let time = self.clock.text().to_owned();
        self.held_markers.push((text, time));
    }

    /// Queues the held markers once no spilled line is left to read before them:
    /// each gets the next number then, after every line that went before it.
    pub(crate) fn release_markers(&mut self) {
        if self.spill.is_some() || self.live_stopped || self.held_markers.is_empty() {
            return;
        }
        for (text, time) in std::mem::take(&mut self.held_markers) {
            let mut json = Vec::with_capacity(text.len() + 96);
            crate::row::write_row(&mut json, "warn", self.next_pos, &text, &time);
            self.next_pos += 1;
            self.queue_bytes += json.len();
            self.queue.push_back(Queued { json });
        }
    }

    /// Numbers a spooled line and queues its row (`queued`, when the queue had room).
    fn accept(
        &mut self,
        ctx: &EmitCtx<'_>,
        level: &str,
        text: &str,
        queued: Option<Vec<u8>>,
        offset: u64,
    ) {
        let pos = self.next_pos;
        self.next_pos += 1;
        self.counts.lines += 1;
        self.counts.bytes += text.len() as u64;
        if let Some(tap) = ctx.tap {
            tap(&LogLine {
                level: level.to_owned(),
                pos,
                out: text.to_owned(),
                time: self.clock.text().to_owned(),
                args: None,
            });
        }
        if self.live_stopped {
            return;
        }
        if let Some(json) = queued {
            self.queue_bytes += json.len();
            self.queue.push_back(Queued { json });
        } else if self.spill.is_none() {
            // The queue is full: from this line on, the sender reads from the spool.
            self.spill = Some(SpillCursor { pos, offset });
            self.counts.spills += 1;
            metrics::counter!("livelog_spills_total").increment(1);
        }
    }

    /// Adds the lines numbered since the last call to the metrics counters.
    fn publish_metrics(&mut self) {
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
        self.counts.dropped_lines += 1;
        self.counts.dropped_bytes += len as u64;
        metrics::counter!("livelog_dropped_lines_total").increment(1);
        if self.loss.is_none() {
            let reason = match why {
                Refused::Full => {
                    format!("the spool reached its disk cap of {} bytes", ctx.spool_max)
                }
                Refused::Failed(e) => e,
            };
            self.loss = Some(Loss {
                at_pos: pos,
                reason: reason.clone(),
                reported: None,
            });
            let text = format!("[livelog] lines are being dropped from here on: {reason}\n");
            self.emit_marker(ctx, text);
        }
    }

    /// A marker goes past the spool cap (it is small and says what was lost).
    fn emit_marker(&mut self, ctx: &EmitCtx<'_>, text: String) {
        let pos = self.next_pos;
        let time = self.clock.text();
        let mut json = Vec::with_capacity(text.len() + 96);
        crate::row::write_row(&mut json, "warn", pos, &text, time);
        match self.spool.append(&json, true) {
            Ok(offset) => {
                self.spooled_markers.push(pos);
                let room = self.spill.is_none() && self.queue_bytes + json.len() <= ctx.queue_max;
                self.accept(ctx, "warn", &text, room.then_some(json), offset)
            }
            Err(_) if self.spill.is_none() && !self.live_stopped => {
                // The spool is broken: the marker can still go out live from memory.
                self.next_pos += 1;
                self.queue_bytes += json.len();
                self.queue.push_back(Queued { json });
            }
            // After the spilled lines still in the file.
            Err(_) if !self.live_stopped => self.hold_marker(text),
            Err(_) => {}
        }
    }

    /// At close: one marker with the exact totals of what was lost.
    fn emit_final_loss_marker(&mut self, ctx: &EmitCtx<'_>) {
        let Some(loss) = self.loss.clone() else {
            return;
        };
        let (lines, bytes) = (self.counts.dropped_lines, self.counts.dropped_bytes);
        if loss.reported == Some((lines, bytes)) {
            return;
        }
        let text = format!(
            "[livelog] {lines} lines ({bytes} bytes) were dropped starting after line {}: {}\n",
            loss.at_pos.saturating_sub(1),
            loss.reason
        );
        self.emit_marker(ctx, text);
        if let Some(l) = self.loss.as_mut() {
            l.reported = Some((lines, bytes));
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

/// The parts of the configuration `emit` needs, borrowed apart from the state.
struct EmitCtx<'a> {
    /// Every emitted line is masked here, once, before it is numbered and spooled.
    masker: &'a crate::mask::Masker,
    trim_suffix: bool,
    queue_max: usize,
    spool_max: u64,
    tap: Option<&'a Tap>,
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

/// Gets lines to the log service: in order, exactly once, in bounded memory.
///
/// Cheap to clone; every clone writes to the same stream. See the crate docs.
///
/// ```no_run
/// # async fn demo(client: std::sync::Arc<dyn livelog::LogClient>) {
/// use livelog::{Writer, WriterConfig};
/// let w = Writer::new(client, WriterConfig::new("stage-1/step-1"));
/// w.write(b"hello\nwor");
/// w.write(b"ld\n");
/// let report = w.close().await;
/// assert_eq!(report.lines, 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Writer {
    handle: Arc<Handle>,
}

/// Closes the stream in the background when the last clone is dropped without
/// `close()`, so that nothing is silently lost.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.inner.report.initialized() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            rt.spawn(async move {
                inner
                    .report
                    .get_or_init(|| crate::sender::close(inner.clone()))
                    .await;
            });
        }
    }
}

impl Writer {
    /// Creates the writer and spawns its tasks on the current tokio runtime (which
    /// must exist); the stream is opened in the background.
    pub fn new(client: Arc<dyn LogClient>, cfg: WriterConfig) -> Writer {
        let masker = Masker::new(&cfg.secrets);
        let spool = Spool::create(&cfg.spool_dir, cfg.spool_max_bytes);
        let error = spool.failure().map(str::to_owned);
        let recovery = recovery_record(&cfg, client.as_ref(), &spool);
        let state = State {
            asm: LineAssembler::new(cfg.max_line_bytes),
            lines: Lines {
                next_pos: 0,
                spool,
                queue: VecDeque::new(),
                queue_bytes: 0,
                spill: None,
                live_stopped: false,
                closing: false,
                acked_end: 0,
                counts: Counts::default(),
                error,
                loss: None,
                held_markers: Vec::new(),
                spooled_markers: Vec::new(),
                clock: TimeCache::default(),
                published: (0, 0),
                last_write: Instant::now(),
            },
        };
        let inner = Arc::new(Inner {
            tap: cfg.tap.clone(),
            masker,
            client,
            cfg,
            state: Mutex::new(state),
            work: Notify::new(),
            room: Notify::new(),
            partial: Notify::new(),
            deadline: watch::channel(None).0,
            sender_done: watch::channel(false).0,
            report: OnceCell::new(),
            recovery: Mutex::new(recovery),
        });
        tokio::spawn(crate::sender::run(inner.clone()));
        tokio::spawn(partial_flusher(inner.clone()));
        Writer {
            handle: Arc::new(Handle { inner }),
        }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Writes raw bytes (any chunking), never waiting on the network. Bytes written
    /// after `close()` has begun are ignored (the report is already final).
    pub fn write(&self, bytes: &[u8]) {
        let inner = self.inner();
        let level = inner.cfg.default_level.as_str();
        let ctx = ctx(inner);
        let mut guard = inner.lock();
        guard.lines.clock.refresh();
        let st = &mut *guard;
        if st.lines.closing {
            return;
        }
        let lines = &mut st.lines;
        let mut any = false;
        st.asm.push(bytes, &mut |a: Assembled| {
            lines.emit(&ctx, level, a.text);
            any = true;
        });
        lines.last_write = Instant::now();
        let pending = st.asm.pending_len() > 0;
        lines.publish_metrics();
        // Hand the lock straight to a waiting sender: a producer writing flat out
        // would otherwise take it again before the sender wakes, and batches stall.
        MutexGuard::unlock_fair(guard);
        if any {
            inner.work.notify_one();
        }
        if pending {
            inner.partial.notify_one();
        }
    }

    /// Like [`Writer::write`], but first waits while the in-memory queue is full
    /// (backpressure for a child process's pipe). Lines are never refused: once the
    /// queue has room, or live streaming has stopped, or close has begun, it writes.
    pub async fn write_async(&self, bytes: &[u8]) {
        let inner = self.inner();
        loop {
            let room = inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let st = inner.lock();
                let l = &st.lines;
                if l.spill.is_none() && l.queue_bytes < inner.cfg.queue_max_bytes
                    || l.live_stopped
                    || l.closing
                {
                    break;
                }
            }
            room.await;
        }
        self.write(bytes);
    }

    /// Writes one whole line (a `\n` is added when missing; inner newlines make more
    /// lines) with the given level.
    pub async fn write_line(&self, level: &str, text: &str) {
        self.try_write_line(level, text);
    }

    /// Non-blocking [`Writer::write_line`], for synchronous callers such as tracing
    /// layers. Any partial line from raw writes is finished first, to keep order.
    pub fn try_write_line(&self, level: &str, text: &str) {
        let inner = self.inner();
        let ctx = ctx(inner);
        let mut guard = inner.lock();
        guard.lines.clock.refresh();
        let st = &mut *guard;
        if st.lines.closing {
            return;
        }
        let lines = &mut st.lines;
        let default_level = inner.cfg.default_level.as_str();
        st.asm.flush_partial(&mut |a: Assembled| {
            lines.emit(&ctx, default_level, a.text);
        });
        let mut own = LineAssembler::new(inner.cfg.max_line_bytes);
        let mut emit = |a: Assembled| lines.emit(&ctx, level, a.text);
        own.push(text.as_bytes(), &mut emit);
        if !text.ends_with('\n') {
            own.push(b"\n", &mut emit);
        }
        lines.publish_metrics();
        drop(guard);
        inner.work.notify_one();
    }

    /// Flushes, uploads the archive and closes the stream, within
    /// `close_deadline`. Idempotent: later calls return the same report.
    pub async fn close(&self) -> WriterReport {
        let inner = self.inner().clone();
        inner
            .report
            .get_or_init(|| crate::sender::close(inner.clone()))
            .await
            .clone()
    }

    /// Where the writer stands right now (cheap: one lock).
    pub fn progress(&self) -> Progress {
        let st = self.inner().lock();
        let l = &st.lines;
        Progress {
            lines: l.counts.lines,
            streamed_lines: l.counts.streamed_lines,
            queued_bytes: l.queue_bytes,
            spool_bytes: l.spool.written(),
            spills: l.counts.spills,
            live_stopped: l.live_stopped,
        }
    }

    /// The stream key.
    pub fn key(&self) -> &str {
        &self.inner().cfg.key
    }
}

/// Raw bytes, as from a child process's pipe; never blocks on the network.
/// `flush` is a no-op: lines are sent as soon as they are complete, and a partial line
/// after `partial_line_flush` of idle time.
impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Writer::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Same as for `Writer`, for a shared reference (e.g. `writeln!(&writer, …)`).
impl std::io::Write for &Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Writer::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the recovery record of a new spool when there is an outbox to recover into.
/// Without it the writer still works; only a crash would leave the spool undelivered.
fn recovery_record(
    cfg: &WriterConfig,
    client: &dyn LogClient,
    spool: &Spool,
) -> Option<crate::recovery::Record> {
    let dir = cfg.outbox_dir.as_ref()?;
    if spool.failure().is_some() {
        return None;
    }
    // What is known to have reached the live stream is not recorded as it moves on:
    // after a crash a writer that uploads no archive sends its whole history again
    // (runlog's service keeps each `pos` once; one that does not may show a line twice).
    let entry = crate::outbox::Entry::for_writer(cfg, client.outbox_config(), Some(0));
    match crate::recovery::create(dir, spool.path(), &entry) {
        Ok(r) => Some(r),
        Err(e) => {
            // Once per writer, before any line: no lock is held here.
            tracing::warn!(target: "livelog", key = %cfg.key, "cannot write the recovery record in {}: {e}", dir.display());
            None
        }
    }
}

fn ctx(inner: &Inner) -> EmitCtx<'_> {
    EmitCtx {
        masker: &inner.masker,
        trim_suffix: inner.cfg.trim_new_line_suffix,
        queue_max: inner.cfg.queue_max_bytes,
        spool_max: inner.cfg.spool_max_bytes,
        tap: inner.tap.as_ref(),
    }
}

/// Called by close: finishes the partial line, adds the loss marker, stops producers
/// and flushes the spool (cut to its length). Returns whether the spool is complete.
pub(crate) fn finish_producing(inner: &Inner) -> bool {
    let ctx = ctx(inner);
    let mut guard = inner.lock();
    guard.lines.clock.refresh();
    let st = &mut *guard;
    let lines = &mut st.lines;
    let level = inner.cfg.default_level.as_str();
    st.asm.flush_partial(&mut |a: Assembled| {
        lines.emit(&ctx, level, a.text);
    });
    // A write that fails now is settled before the totals are counted (the error
    // itself is reported by `finish` below: a failed spool stays failed).
    let _ = lines.flush_spool();
    lines.emit_final_loss_marker(&ctx);
    lines.publish_metrics();
    lines.closing = true;
    // Wake the partial-line flusher so it sees `closing` and ends: it holds the
    // writer's state (spool file included), which would otherwise stay open for
    // as long as the process lives.
    inner.partial.notify_one();
    let flushed = lines.spool.finish();
    if flushed.is_err() {
        lines.spool_failed();
        // The totals marker may have been among the rows given back.
        lines.emit_final_loss_marker(&ctx);
    }
    if let Err(e) = &flushed {
        lines.error.get_or_insert_with(|| e.clone());
    }
    flushed.is_ok() && lines.spool.failure().is_none()
}

/// Hints of the nudges whose pattern appears in the last lines, read back from the
/// spool's tail at close (so producers pay nothing per line for nudges).
pub(crate) fn hints(inner: &Inner) -> Vec<String> {
    if inner.cfg.nudges.is_empty() {
        return Vec::new();
    }
    let (path, end) = {
        let st = inner.lock();
        (st.lines.spool.path().to_owned(), st.lines.spool.written())
    };
    let tail_bytes = 256 * 1024u64;
    let start = end.saturating_sub(tail_bytes);
    let rows = crate::spool::SpoolReader::open(&path)
        .and_then(|mut r| r.read_rows(start, end, tail_bytes as usize, u64::MAX))
        .map(|r| r.ndjson)
        .unwrap_or_default();
    let mut lines: Vec<&[u8]> = rows
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .collect();
    // The first row may be cut when reading from the middle of the file.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let recent: Vec<String> = lines
        .iter()
        .rev()
        .take(NUDGE_WINDOW)
        .filter_map(|r| serde_json::from_slice::<LogLine>(r).ok())
        .map(|l| l.out)
        .collect();
    inner
        .cfg
        .nudges
        .iter()
        .filter(|n| recent.iter().any(|l| l.contains(&n.pattern)))
        .map(|n| n.hint.clone())
        .collect()
}

/// Sends a partial line (no `\n` yet) once the producer has been idle for
/// `partial_line_flush`, so progress output shows up live.
async fn partial_flusher(inner: Arc<Inner>) {
    let idle = inner.cfg.partial_line_flush;
    loop {
        inner.partial.notified().await;
        loop {
            let wait = {
                let st = inner.lock();
                if st.lines.closing {
                    return;
                }
                if st.asm.pending_len() == 0 {
                    break;
                }
                (st.lines.last_write + idle).saturating_duration_since(Instant::now())
            };
            if wait.is_zero() {
                let ctx = ctx(&inner);
                let mut guard = inner.lock();
                guard.lines.clock.refresh();
                let st = &mut *guard;
                if st.lines.last_write.elapsed() >= idle {
                    let lines = &mut st.lines;
                    let level = inner.cfg.default_level.as_str();
                    st.asm.flush_partial(&mut |a: Assembled| {
                        lines.emit(&ctx, level, a.text);
                    });
                    st.lines.publish_metrics();
                    drop(guard);
                    inner.work.notify_one();
                    break;
                }
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::client::HttpLogClient;
    use runlog_protocol::Scope;
    use runlog_protocol::engine::LogConfig;
    use runlog_testkit::chaos::{archive_lines, sse_lines};
    use runlog_testkit::proxy::{FaultProxy, Faults};
    use runlog_testkit::service::TestService;
    use std::time::Duration;

    fn text(i: usize) -> String {
        format!("line {i:05} {}\n", "x".repeat(80))
    }

    /// The disk fills while the service is unreachable (so the memory queue has
    /// overflowed and most lines are only in the spool): `before` lines are written,
    /// the spool's writes start failing, `total - before` more are written, the
    /// service comes back and the writer closes. Checks what must hold whatever was
    /// lost, and returns the report and how many lines of the process were kept.
    async fn disk_fills_while_spilling(
        spool_max_bytes: u64,
        before: usize,
        total: usize,
    ) -> (WriterReport, usize, Vec<LogLine>) {
        let svc = TestService::start().await;
        let token = svc.token("acc", Scope::Write);
        let proxy = FaultProxy::start(&svc.url(), Faults::stalled(), 1).await;
        let spool = tempfile::tempdir().unwrap();
        let key = "disk/full-while-spilling";
        let log = LogConfig {
            url: proxy.url(),
            account_id: "acc".into(),
            token: token.clone(),
            indirect_upload: false,
            ..LogConfig::default()
        };
        let cfg = WriterConfig {
            spool_dir: spool.path().to_path_buf(),
            queue_max_bytes: 16 * 1024,
            spool_max_bytes,
            close_deadline: Duration::from_secs(60),
            ..WriterConfig::new(key)
        };
        let w = Writer::new(Arc::new(HttpLogClient::new(&log).unwrap()), cfg);
        for i in 0..before {
            w.write(text(i).as_bytes());
        }
        assert!(w.progress().spills > 0, "the queue never overflowed");
        w.inner().lock().lines.spool.fail_writes();
        for i in before..total {
            w.write(text(i).as_bytes());
        }
        proxy.set_faults(Faults::none());
        let report = w.close().await;

        let read = svc.token("acc", Scope::Read);
        let live = sse_lines(&svc.url(), "acc", key, &read, Duration::from_secs(60))
            .await
            .unwrap();
        let positions: Vec<u64> = live.iter().map(|l| l.pos).collect();
        assert_eq!(
            positions,
            (0..live.len() as u64).collect::<Vec<_>>(),
            "the stream has a gap"
        );
        let kept = live
            .iter()
            .take_while(|l| l.out.starts_with("line "))
            .count();
        let texts: Vec<&str> = live[..kept].iter().map(|l| l.out.as_str()).collect();
        let expected: Vec<String> = (0..kept).map(text).collect();
        assert_eq!(texts, expected, "kept lines are the first ones, in order");
        assert_eq!(
            kept as u64 + report.dropped_lines,
            total as u64,
            "kept + reported dropped != written: {report:?}"
        );
        let markers = &live[kept..];
        assert!(
            !markers.is_empty() && markers.iter().all(|l| l.out.starts_with("[livelog]")),
            "after the kept lines only markers: {markers:?}"
        );
        let totals = format!(
            "{} lines ({} bytes) were dropped starting after line {}:",
            report.dropped_lines,
            report.dropped_bytes,
            kept as i64 - 1
        );
        assert!(
            markers.iter().any(|l| l.out.contains(&totals)),
            "no marker says {totals:?}: {markers:?}"
        );
        // The archive is the stream as the service received it; the broken spool
        // is gone.
        let archived = archive_lines(&svc.url(), "acc", key, &read).await.unwrap();
        assert_eq!(archived, live);
        assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
        (report, kept, live)
    }

    /// The lines the failed write took with it are given back and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spool_that_fails_while_spilling_drops_lines_only_with_a_count_and_a_marker() {
        let (report, kept, _) = disk_fills_while_spilling(4 << 30, 3_000, 8_000).await;
        assert!(kept < 3_000, "no line was lost: {report:?}");
        assert_eq!(report.lines, kept as u64, "{report:?}");
        let per_line = text(0).len() as u64;
        assert_eq!(report.dropped_bytes, report.dropped_lines * per_line);
    }

    /// The spool's cap was reached first (a loss with its marker in the spool's
    /// buffer), then the write fails and takes that marker back too: the stream
    /// still says where the loss starts (now earlier) and its totals, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loss_marker_taken_back_by_a_failed_write_is_said_again() {
        let (report, kept, live) = disk_fills_while_spilling(200 * 1024, 3_000, 3_000).await;
        assert!(kept < 2_000, "{report:?}");
        let totals = live
            .iter()
            .filter(|l| l.out.contains("were dropped starting after line"))
            .count();
        assert_eq!(totals, 1, "{live:?}");
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("spool write failed")),
            "{report:?}"
        );
    }
}
