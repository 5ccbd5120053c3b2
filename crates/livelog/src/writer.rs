//! The [`Writer`]: the producers' handle (the buffering contract is in
//! `crates/livelog/ARCHITECTURE.md`).
//!
//! A write takes the writer's lock once ([`crate::shared::Producer`]), copies the bytes
//! and appends finished lines to the spool's write buffer; it never waits on the
//! network. The last handle dropped without `close()` closes in the background.

use crate::client::LogClient;
use crate::config::WriterConfig;
use crate::lines::Progress;
use crate::sender::Sender;
use crate::shared::Shared;
use crate::spool::Spool;
use runlog_protocol::engine::WriterReport;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// How long [`Writer::open`] waits for the stream's open before numbering from 0.
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    guard: Arc<CloseGuard>,
}

/// Closes the stream in the background when the last clone is dropped without
/// `close()`, so that nothing is silently lost.
struct CloseGuard {
    shared: Arc<Shared>,
    /// The close report, made once (by `close()` or by this guard's drop).
    report: Arc<OnceCell<WriterReport>>,
}

impl CloseGuard {
    /// Runs the closing sequence once; later calls get the same report.
    async fn close(shared: &Arc<Shared>, report: &OnceCell<WriterReport>) -> WriterReport {
        report
            .get_or_init(|| crate::close::close(shared.clone()))
            .await
            .clone()
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if self.report.initialized() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let report = self.report.clone();
            rt.spawn(async move {
                CloseGuard::close(&shared, &report).await;
            });
        }
    }
}

impl Writer {
    /// Creates the writer and spawns its tasks on the current tokio runtime (which
    /// must exist); the stream is opened in the background, and lines are numbered
    /// from 0. For a key that may already hold lines, use [`Writer::open`].
    pub fn new(client: Arc<dyn LogClient>, cfg: WriterConfig) -> Writer {
        Writer::start(client, cfg, None)
    }

    /// Opens the stream first, then creates the writer: when the stream already
    /// holds lines (a key reused by a later step, stage or engine) the writer
    /// continues after them, numbering its first line at the service's `next_pos`,
    /// so no line of either writer is dropped as a duplicate. One try, for at most
    /// `OPEN_WAIT` (5 s): a service that cannot answer does not hold the producer back;
    /// the writer then numbers from 0, opens in the background as [`Writer::new`]
    /// does, and reports the lines that collided with the stream's as dropped. A
    /// service that does not answer `next_pos` (a Harness log service) is written
    /// from 0.
    pub async fn open(client: Arc<dyn LogClient>, cfg: WriterConfig) -> Writer {
        let opened = if cfg.skip_opening_stream {
            None
        } else {
            let wait = OPEN_WAIT.min(cfg.close_deadline);
            match tokio::time::timeout(wait, client.open_at(&cfg.key)).await {
                Ok(Ok(next_pos)) => Some(next_pos.unwrap_or(0)),
                Ok(Err(_)) | Err(_) => None,
            }
        };
        Writer::start(client, cfg, opened)
    }

    /// `opened_at`: the stream is open and the first line's `pos`.
    fn start(client: Arc<dyn LogClient>, cfg: WriterConfig, opened_at: Option<u64>) -> Writer {
        let spool = Spool::create(&cfg.spool_dir, cfg.spool_max_bytes);
        let recovery = recovery_record(&cfg, client.as_ref(), &spool, opened_at);
        let shared = Arc::new(Shared::new(client, cfg, spool, recovery, opened_at));
        tokio::spawn(Sender::new(shared.clone()).run());
        tokio::spawn(shared.clone().flush_partial_lines());
        Writer {
            guard: Arc::new(CloseGuard {
                shared,
                report: Arc::new(OnceCell::new()),
            }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.guard.shared
    }

    /// Writes raw bytes (any chunking), never waiting on the network. Bytes written
    /// after `close()` has begun are ignored (the report is already final).
    pub fn write(&self, bytes: &[u8]) {
        if let Some(mut p) = self.shared().producer() {
            p.push(bytes);
        }
    }

    /// Like [`Writer::write`], but first waits while the in-memory queue is full
    /// (backpressure for a child process's pipe). Lines are never refused: once the
    /// queue has room, or live streaming has stopped, or close has begun, it writes.
    pub async fn write_async(&self, bytes: &[u8]) {
        let shared = self.shared();
        loop {
            let room = shared.producers_woken();
            tokio::pin!(room);
            room.as_mut().enable();
            if !shared.must_wait_for_room() {
                break;
            }
            room.await;
        }
        self.write(bytes);
    }

    /// How many bytes from the start of an unfinished line a producer may hand over
    /// now without a secret this writer masks being split between two writes: all
    /// but a tail that could begin one ([`crate::mask::Masker::flushable_len`]). For a
    /// producer that assembles lines of several sources into this one writer.
    pub fn flushable_len(&self, unfinished: &[u8]) -> usize {
        self.shared().masker().flushable_len(unfinished)
    }

    /// Writes one whole line (a `\n` is added when missing; inner newlines make more
    /// lines) with the given level.
    pub async fn write_line(&self, level: &str, text: &str) {
        self.try_write_line(level, text);
    }

    /// Non-blocking [`Writer::write_line`], for synchronous callers such as tracing
    /// layers. Any partial line from raw writes is finished first, to keep order.
    pub fn try_write_line(&self, level: &str, text: &str) {
        if let Some(mut p) = self.shared().producer() {
            p.write_line(level, text);
        }
    }

    /// Flushes, uploads the archive and closes the stream, within
    /// `close_deadline`. Idempotent: later calls return the same report.
    pub async fn close(&self) -> WriterReport {
        CloseGuard::close(&self.guard.shared, &self.guard.report).await
    }

    /// States how the run that wrote the stream ended; sent with the close
    /// (`DELETE /stream?outcome=`), where `failure` marks the sections still open in
    /// the stream as failed. Call before [`Writer::close`]; the last call wins.
    pub fn set_outcome(&self, outcome: runlog_protocol::sections::Outcome) {
        self.shared().set_outcome(outcome);
    }

    /// Where the writer stands right now (cheap: one lock).
    pub fn progress(&self) -> Progress {
        self.shared().lines().progress()
    }

    /// The stream key.
    pub fn key(&self) -> &str {
        &self.shared().cfg().key
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
    opened_at: Option<u64>,
) -> Option<crate::recovery::Record> {
    let dir = cfg.outbox_dir.as_ref()?;
    if spool.failure().is_some() {
        return None;
    }
    // What is known to have reached the live stream is not recorded as it moves on:
    // after a crash a writer that uploads no archive sends its whole history again
    // (runlog's service keeps each `pos` once; one that does not may show a line twice).
    let continues_at = opened_at.filter(|pos| *pos > 0);
    let entry =
        crate::outbox::Entry::for_writer(cfg, client.outbox_config(), Some(0), continues_at);
    match crate::recovery::create(dir, spool.path(), &entry) {
        Ok(r) => Some(r),
        Err(e) => {
            // Once per writer, before any line: no lock is held here.
            tracing::warn!(target: "livelog", key = %cfg.key, "cannot write the recovery record in {}: {e}", dir.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::client::HttpLogClient;
    use runlog_protocol::engine::LogConfig;
    use runlog_protocol::{LogLine, Scope};
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
        w.shared().lines().fail_spool_writes();
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
