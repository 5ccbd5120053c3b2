//! What a writer's producers, its sender task and `close()` share: the configuration,
//! the state behind one lock, and the signals between them.
//!
//! Roles (in the manner of tracing-appender's `NonBlocking` / `Worker` / `WorkerGuard`):
//! [`crate::Writer`] is the producers' handle, [`crate::sender::Sender`] the task that
//! sends, [`crate::close`] the closing sequence, run once by `close()` or by the guard
//! that drops the last handle. They meet only here: producers through [`Producer`], the
//! others through the methods of [`crate::lines::Lines`] behind [`Shared::lines`].

use crate::assemble::{Assembled, LineAssembler};
use crate::client::{ClientError, LogClient};
use crate::config::{Tap, WriterConfig};
use crate::error::{GaveUp, WriterError};
use crate::lines::{EmitCtx, Lines};
use crate::mask::Masker;
use crate::spool::Spool;
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Everything behind the writer's lock.
struct State {
    /// Producers' bytes not yet a line.
    asm: LineAssembler,
    lines: Lines,
}

/// Shared between all clones of a writer and its tasks.
pub(crate) struct Shared {
    cfg: WriterConfig,
    client: Arc<dyn LogClient>,
    masker: Masker,
    tap: Option<Tap>,
    state: Mutex<State>,
    /// Wakes the sender: new lines, or close.
    work: Notify,
    /// Wakes producers waiting for queue room.
    room: Notify,
    /// Wakes the partial-line timer.
    partial: Notify,
    /// The close deadline, once `close()` started.
    deadline: watch::Sender<Option<Instant>>,
    /// Set by the sender when it has sent (or given up on) everything.
    sender_done: watch::Sender<bool>,
    /// Makes the spool deliverable by a later process if this one dies before
    /// `close()` (see [`crate::recovery`]); removed once the history is settled.
    recovery: Mutex<Option<crate::recovery::Record>>,
    /// How the run that wrote the stream ended, stated on close when set
    /// ([`crate::Writer::set_outcome`]).
    outcome: Mutex<Option<runlog_protocol::sections::Outcome>>,
    /// The stream was opened before the first line was numbered
    /// ([`crate::Writer::open`]): the sender does not open it again.
    opened: bool,
}

impl Shared {
    /// The masker of every line this writer emits.
    pub(crate) fn masker(&self) -> &Masker {
        &self.masker
    }

    /// The shared part of a new writer.
    pub(crate) fn new(
        client: Arc<dyn LogClient>,
        cfg: WriterConfig,
        spool: Spool,
        recovery: Option<crate::recovery::Record>,
        opened_at: Option<u64>,
    ) -> Shared {
        Shared {
            masker: Masker::new(&cfg.secrets),
            tap: cfg.tap.clone(),
            state: Mutex::new(State {
                asm: LineAssembler::new(cfg.max_line_bytes),
                lines: Lines::new(spool, opened_at.unwrap_or(0)),
            }),
            cfg,
            client,
            work: Notify::new(),
            room: Notify::new(),
            partial: Notify::new(),
            deadline: watch::channel(None).0,
            sender_done: watch::channel(false).0,
            recovery: Mutex::new(recovery),
            outcome: Mutex::new(None),
            opened: opened_at.is_some(),
        }
    }

    /// Whether the stream was opened before the first line was numbered.
    pub(crate) fn opened_before_writing(&self) -> bool {
        self.opened
    }

    /// Records how the run that wrote the stream ended (the last call wins).
    pub(crate) fn set_outcome(&self, outcome: runlog_protocol::sections::Outcome) {
        *self.outcome.lock() = Some(outcome);
    }

    /// The outcome to state on close, if one was set.
    pub(crate) fn outcome(&self) -> Option<runlog_protocol::sections::Outcome> {
        *self.outcome.lock()
    }

    /// The writer's configuration.
    pub(crate) fn cfg(&self) -> &WriterConfig {
        &self.cfg
    }

    /// The log service.
    pub(crate) fn client(&self) -> &Arc<dyn LogClient> {
        &self.client
    }

    /// The state behind the lock, for the sender and `close()`.
    pub(crate) fn lines(&self) -> MappedMutexGuard<'_, Lines> {
        // No poisoning (parking_lot): a panic in a tap must not make every later
        // write panic too, and the state is consistent between lines.
        MutexGuard::map(self.state.lock(), |st| &mut st.lines)
    }

    /// The lock taken for producing lines: `None` once `close()` has begun (bytes
    /// written after that are ignored: the report is already final).
    pub(crate) fn producer(&self) -> Option<Producer<'_>> {
        let mut guard = self.state.lock();
        if guard.lines.is_closing() {
            return None;
        }
        guard.lines.refresh_clock();
        Some(Producer {
            shared: self,
            ctx: EmitCtx::new(&self.cfg, &self.masker, self.tap.as_ref()),
            guard: Some(guard),
            emitted: false,
            partial_waits: false,
        })
    }

    /// Wakes the sender.
    pub(crate) fn wake_sender(&self) {
        self.work.notify_one();
    }

    /// Resolves when the sender is woken (create it, and `enable` it, before looking).
    pub(crate) fn sender_woken(&self) -> Notified<'_> {
        self.work.notified()
    }

    /// Wakes producers waiting for room in the queue.
    pub(crate) fn wake_producers(&self) {
        self.room.notify_waiters();
    }

    /// Resolves when producers are woken (create it, and `enable` it, before looking).
    pub(crate) fn producers_woken(&self) -> Notified<'_> {
        self.room.notified()
    }

    /// Whether a producer must wait for room: the queue is full and neither live
    /// streaming has stopped nor close begun (lines are never refused).
    pub(crate) fn must_wait_for_room(&self) -> bool {
        let l = self.lines();
        l.queue().is_full(self.cfg.queue_max_bytes) && !l.is_closing()
    }

    /// Sets the close deadline.
    pub(crate) fn set_deadline(&self, at: Instant) {
        self.deadline.send_replace(Some(at));
    }

    /// The close deadline, as it is set.
    pub(crate) fn deadline(&self) -> watch::Receiver<Option<Instant>> {
        self.deadline.subscribe()
    }

    /// The sender has sent, or given up on, everything.
    pub(crate) fn mark_sender_done(&self) {
        self.sender_done.send_replace(true);
    }

    /// Whether the sender is done, as it changes.
    pub(crate) fn sender_done(&self) -> watch::Receiver<bool> {
        self.sender_done.subscribe()
    }

    /// The recovery record, handed over once.
    pub(crate) fn take_recovery(&self) -> Option<crate::recovery::Record> {
        self.recovery.lock().take()
    }

    /// Retries `call` until it succeeds, fails for good or `deadline` passes; every
    /// retry is counted.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        deadline: &mut watch::Receiver<Option<Instant>>,
        call: F,
    ) -> Result<T, GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        crate::retry::retry(call, self.cfg.max_retry_delay, deadline, |_| {
            self.lines().record_retry();
            metrics::counter!("livelog_retries_total").increment(1);
        })
        .await
        .into()
    }

    /// Stops live streaming for this key (the archive is still uploaded at close).
    pub(crate) fn stop_live(&self, why: WriterError) {
        let first = self.lines().stop_live(why.clone());
        self.wake_producers();
        // Outside the lock and once: a tracing layer that forwards events into a writer
        // must never be entered while this writer's lock is held.
        if first {
            tracing::warn!(target: "livelog", key = %self.cfg.key, "{why}");
        }
    }

    /// Called by close: finishes the partial line, adds the loss marker, stops
    /// producers and flushes the spool (cut to its length). Returns whether the spool
    /// is complete.
    pub(crate) fn finish_producing(&self) -> bool {
        let Some(mut p) = self.producer() else {
            // Close runs once: producing cannot have finished before.
            return false;
        };
        p.finish_partial();
        let (st, ctx) = p.parts();
        let complete = st.lines.finish(ctx);
        drop(p);
        // Wake the partial-line flusher so it sees `closing` and ends: it holds the
        // writer's state (spool file included), which would otherwise stay open for
        // as long as the process lives.
        self.partial.notify_one();
        complete
    }

    /// Sends a partial line (no `\n` yet) once the producers have been idle for
    /// `partial_line_flush`, so progress output shows up live; ends at close.
    pub(crate) async fn flush_partial_lines(self: Arc<Self>) {
        let idle = self.cfg.partial_line_flush;
        loop {
            self.partial.notified().await;
            loop {
                let wait = {
                    let st = self.state.lock();
                    if st.lines.is_closing() {
                        return;
                    }
                    if st.asm.pending_len() == 0 {
                        break;
                    }
                    (st.lines.last_write() + idle).saturating_duration_since(Instant::now())
                };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let Some(mut p) = self.producer() else {
                    return;
                };
                if p.parts().0.lines.last_write().elapsed() >= idle {
                    // What is held back waits for the next write (which wakes this
                    // loop again) or for close.
                    p.flush_partial_masked();
                    break;
                }
            }
        }
    }
}

/// The writer's lock, held to produce lines: every producer path (a write, a whole
/// line, the idle flush of a partial line, close) goes through it, so the clock is read
/// once per call, nothing is produced after close began, and on drop the metrics are
/// published, the lock is handed over fairly and the sender (and the partial-line
/// timer) woken as needed.
pub(crate) struct Producer<'a> {
    shared: &'a Shared,
    ctx: EmitCtx<'a>,
    guard: Option<MutexGuard<'a, State>>,
    /// Lines were emitted: the sender has work.
    emitted: bool,
    /// A raw write left an unfinished line: the idle timer starts.
    partial_waits: bool,
}

impl<'a> Producer<'a> {
    fn parts(&mut self) -> (&mut State, &EmitCtx<'a>) {
        let st = self
            .guard
            .as_deref_mut()
            .expect("the guard is held until drop");
        (st, &self.ctx)
    }

    /// Raw bytes at the default level, joined into lines.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let level = self.shared.cfg.default_level.as_str();
        let (st, ctx) = self.parts();
        let lines = &mut st.lines;
        let mut any = false;
        st.asm.push(bytes, &mut |a: Assembled| {
            lines.emit(ctx, level, a.text);
            any = true;
        });
        lines.touch();
        let pending = st.asm.pending_len() > 0;
        self.emitted |= any;
        self.partial_waits |= pending;
    }

    /// Finishes the unfinished line of raw writes, whole, as a line of its own.
    pub(crate) fn finish_partial(&mut self) {
        let level = self.shared.cfg.default_level.as_str();
        let (st, ctx) = self.parts();
        let lines = &mut st.lines;
        let mut any = false;
        st.asm.flush_partial(&mut |a: Assembled| {
            lines.emit(ctx, level, a.text);
            any = true;
        });
        self.emitted |= any;
    }

    /// Sends what can go of the unfinished line now: all of it but a tail that could
    /// be the start of a secret ([`Masker::flushable_len`]), which waits for the bytes
    /// that complete it — a secret is never sent in two unmasked pieces.
    pub(crate) fn flush_partial_masked(&mut self) {
        let level = self.shared.cfg.default_level.as_str();
        let masker = &self.shared.masker;
        let (st, ctx) = self.parts();
        let lines = &mut st.lines;
        let mut any = false;
        st.asm.flush_partial_upto(
            |pending| masker.flushable_len(pending),
            &mut |a: Assembled| {
                lines.emit(ctx, level, a.text);
                any = true;
            },
        );
        self.emitted |= any;
    }

    /// One whole line at `level` (a `\n` is added when missing; inner newlines make
    /// more lines), after the unfinished line of raw writes, to keep order.
    pub(crate) fn write_line(&mut self, level: &str, text: &str) {
        self.finish_partial();
        let max_line_bytes = self.shared.cfg.max_line_bytes;
        let (st, ctx) = self.parts();
        let lines = &mut st.lines;
        let mut own = LineAssembler::new(max_line_bytes);
        let mut emit = |a: Assembled| lines.emit(ctx, level, a.text);
        own.push(text.as_bytes(), &mut emit);
        if !text.ends_with('\n') {
            own.push(b"\n", &mut emit);
        }
        self.emitted = true;
    }
}

impl Drop for Producer<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        guard.lines.publish_metrics();
        // Hand the lock straight to a waiting sender: a producer writing flat out
        // would otherwise take it again before the sender wakes, and batches stall.
        MutexGuard::unlock_fair(guard);
        if self.emitted {
            self.shared.wake_sender();
        }
        if self.partial_waits {
            self.shared.partial.notify_one();
        }
    }
}
