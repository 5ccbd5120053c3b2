//! Running one step: a process in its own process group, both pipes read into the
//! step's log writer with backpressure, a time limit and cancellation that kill the
//! whole group.
//!
//! Buffering contract: one 64 KiB chunk per pipe. When the writer's queue is full its
//! `write_async` waits, this reader stops reading, the pipe fills and the child blocks
//! on `write` — memory never grows with a slow log service.
//!
//! stdout and stderr lines both get the writer's default level (`info`): compilers,
//! package managers and progress bars write ordinary output to stderr, so calling it
//! `error` would mislead more often than help.
//!
//! Just over 700 lines with its tests (about 310 of them); the code is one step's
//! process from spawn to stop, whose parts share the pipes, the group and the clock.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_util::sync::CancellationToken;

/// Pipe reads are this large; a line longer than this is passed on in pieces (the
/// writer joins them again).
const READ_CHUNK: usize = 64 * 1024;

/// An unfinished line is passed on once its pipe has been quiet this long, so that a
/// progress line (`printf 'Downloading 45%'`) or a prompt shows up live: the writer
/// sends it after its own idle time (`partial_line_flush`), masked, keeping back a tail
/// that could begin a secret. Long against the microseconds between the pieces of one
/// burst of output (a line cut by a read boundary is still passed on whole), short
/// against that idle time.
const PARTIAL_LINE_IDLE: Duration = Duration::from_millis(100);

/// Where a step's output goes. A `livelog::Writer` in the engine; anything async in tests.
pub trait OutputSink: Send + Sync + 'static {
    /// Takes whole lines, a piece of an over-long line, or an unfinished line after
    /// its pipe was idle; may wait: that wait is the backpressure that stops the child
    /// when the log service is slow.
    fn write(&self, bytes: &[u8]) -> impl std::future::Future<Output = ()> + Send;

    /// How many bytes from the start of an unfinished line may be passed on now: all
    /// but a tail that could begin a secret the sink masks
    /// ([`livelog::mask::Masker::flushable_len`]). The pump keeps that tail until the
    /// line goes on, so that a line of the other pipe written meanwhile cannot come
    /// between a secret's two halves, each then unmasked on its own.
    fn flushable_len(&self, unfinished: &[u8]) -> usize {
        unfinished.len()
    }
}

impl OutputSink for livelog::Writer {
    async fn write(&self, bytes: &[u8]) {
        self.write_async(bytes).await;
    }

    fn flushable_len(&self, unfinished: &[u8]) -> usize {
        livelog::Writer::flushable_len(self, unfinished)
    }
}

/// Discards output (a step without a log key).
#[derive(Debug, Clone, Copy)]
pub struct Discard;

impl OutputSink for Discard {
    async fn write(&self, _bytes: &[u8]) {}
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program (looked up on `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment: nothing of the engine's own is inherited (see
    /// [`crate::child_env`]).
    pub envs: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Time limit.
    pub timeout: Option<Duration>,
    /// SIGTERM → SIGKILL delay when stopping the group.
    pub kill_grace: Duration,
    /// How long pipes may stay open after the main process exited.
    pub drain_grace: Duration,
    /// The `cgroup.procs` files of the cgroups the process joins before the step's
    /// program starts, in order, so nothing it forks is ever outside: the stage's
    /// (`crate::cgroup`) and the step's memory cgroup (`crate::memory_cgroup`).
    pub cgroup_procs: Vec<PathBuf>,
    /// The user the process runs as; `None`: the engine's own
    /// ([`crate::step_user`]).
    pub user: Option<crate::step_user::StepUser>,
    /// The stage's own `/tmp` and `/var/tmp`, mounted in the child before the user
    /// changes; `None`: the machine's ([`crate::private_tmp`]).
    pub private_tmp: Option<crate::private_tmp::TmpMounts>,
}

/// How a step's process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// Exit code; `128 + N` when killed by signal N (as a shell reports it); `-1`
    /// when it never started.
    pub exit_code: i32,
    /// The signal that killed the process, when one did: lite-engine reports such a
    /// step with exit code `-1` (Go's `ExitCode()`), runlog's `/step` with `128 + N`.
    pub signal: Option<i32>,
    /// Why it was stopped or could not start.
    pub error: Option<String>,
    /// The process group id, when it started.
    pub pgid: Option<i32>,
    /// Whether the time limit stopped it.
    pub timed_out: bool,
}

/// Runs `spec` to completion, piping stdout and stderr into `sink`.
pub async fn run<S: OutputSink + Clone>(
    spec: &ProcessSpec,
    sink: S,
    cancel: CancellationToken,
) -> ProcessOutcome {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    if let Err(e) = enter_in_child(&mut cmd, spec) {
        return ProcessOutcome::not_started(format!("could not start {:?}: {e}", spec.program));
    }
    cmd.env_clear()
        .envs(&spec.envs)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout or destroy can kill everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProcessOutcome::not_started(format!("could not start {:?}: {e}", spec.program));
        }
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut pumps = tokio::task::JoinSet::new();
    // Tells the pumps to stop waiting for more to read (what they hold still goes to
    // the sink): a process outside the group may keep a pipe open for ever.
    let stop_reading = CancellationToken::new();
    if let Some(out) = child.stdout.take() {
        pumps.spawn(pump(out, sink.clone(), stop_reading.clone()));
    }
    if let Some(err) = child.stderr.take() {
        pumps.spawn(pump(err, sink, stop_reading.clone()));
    }

    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let mut error = None;
    let mut timed_out = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = timeout => {
            error = Some(format!("timed out after {:?}; the process group was killed", spec.timeout.unwrap_or_default()));
            timed_out = true;
            stop_group(pgid, &mut child, spec.kill_grace).await
        }
        () = cancel.cancelled() => {
            error = Some("stopped: the stage was destroyed".to_owned());
            stop_group(pgid, &mut child, spec.kill_grace).await
        }
    };

    // Output still in the pipes is read to the end. Background processes the step
    // left running may hold the pipes open forever: after the grace they are killed.
    // A process that escaped the group (`setsid`) survives that and may still hold a
    // pipe: after a second grace the pumps stop waiting to read, or the step would
    // never end. A pump busy handing output to a slow sink (backpressure) is not
    // interrupted: that output is the step's and is kept.
    let grace = tokio::time::sleep(spec.drain_grace);
    tokio::pin!(grace);
    let mut leftovers_killed = false;
    loop {
        tokio::select! {
            next = pumps.join_next() => if next.is_none() { break },
            () = &mut grace, if !stop_reading.is_cancelled() => {
                if leftovers_killed {
                    tracing::warn!(
                        target: "runlog::engine",
                        "a process the step started outside its process group still holds its output; no longer reading it"
                    );
                    stop_reading.cancel();
                    continue;
                }
                kill(pgid, Signal::SIGKILL);
                leftovers_killed = true;
                grace.as_mut().reset(tokio::time::Instant::now() + spec.drain_grace);
            }
            () = cancel.cancelled(), if leftovers_killed => {
                pumps.abort_all();
                break;
            }
        }
    }

    let (exit_code, signal) = match status {
        Ok(s) => exit_code(s),
        Err(e) => {
            error.get_or_insert_with(|| format!("could not wait for the process: {e}"));
            (-1, None)
        }
    };
    ProcessOutcome {
        exit_code,
        signal,
        error,
        pgid,
        timed_out,
    }
}

impl ProcessOutcome {
    /// A step that never started, for `error`.
    pub fn not_started(error: String) -> ProcessOutcome {
        ProcessOutcome {
            exit_code: -1,
            error: Some(error),
            ..ProcessOutcome::default()
        }
    }
}

/// Arranges what the child does between `fork` and `exec`, in this order: join the
/// step's cgroups — the stage's, the memory one — (as the engine's user, who may
/// write their `cgroup.procs`; writing `0` moves the writer), mount the stage's own
/// `/tmp` (root's to do), then become the step user — groups cleared, group, user.
/// Done by hand rather than with `Command::uid`, because std changes the user before
/// it runs `pre_exec` callbacks, and the step user may not move itself into a cgroup.
// One of the engine's two `unsafe` blocks (the other, `private_tmp::probe`, the same
// kind): std offers no safe way to run code between `fork` and `exec`, and no other
// order lets a cgroup join and the mounts precede the change of user.
#[allow(unsafe_code)]
fn enter_in_child(cmd: &mut tokio::process::Command, spec: &ProcessSpec) -> std::io::Result<()> {
    let procs = spec
        .cgroup_procs
        .iter()
        .map(|p| std::fs::OpenOptions::new().write(true).open(p))
        .collect::<std::io::Result<Vec<_>>>()?;
    let user = spec.user.as_ref().map(|u| {
        (
            nix::unistd::Uid::from_raw(u.uid),
            nix::unistd::Gid::from_raw(u.gid),
        )
    });
    let tmp = spec.private_tmp.clone();
    if procs.is_empty() && user.is_none() && tmp.is_none() {
        return Ok(());
    }
    // SAFETY: the callback only makes system calls (write, unshare, mount, setgroups,
    // setgid, setuid) on values prepared before the fork; it allocates nothing and
    // takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            for file in &procs {
                nix::unistd::write(file, b"0")?;
            }
            if let Some(tmp) = &tmp {
                tmp.enter()?;
            }
            if let Some((uid, gid)) = user {
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// The exit code, `128 + N` for signal N, and the signal.
fn exit_code(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (-1, None),
    }
}

fn kill(pgid: Option<i32>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (the group is already gone) is the expected outcome, not an error.
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// SIGTERM to the group, SIGKILL after the grace, and SIGKILL again once the leader
/// is gone, for children that ignored SIGTERM.
async fn stop_group(
    pgid: Option<i32>,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    kill(pgid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            kill(pgid, Signal::SIGKILL);
            child.wait().await
        }
    };
    kill(pgid, Signal::SIGKILL);
    status
}

/// What a pump's wait on its pipe ended with.
enum Pipe {
    Read(usize),
    Idle,
    End,
}

/// Reads a pipe to its end, passing whole lines on, so that stdout and stderr lines
/// written to one sink never interleave mid-line while output flows. An unfinished
/// line is passed on after [`PARTIAL_LINE_IDLE`] of quiet on its pipe (the rest of
/// the line follows it in the writer; a line of the other pipe written in between
/// joins it, as on a terminal) — all of it but a tail that could begin a secret
/// ([`OutputSink::flushable_len`]), which stays here until the line goes on: kept in
/// the sink, the other pipe's line would join it and the secret's two halves would
/// be masked apart, each on its own, i.e. not at all. Memory is one chunk: the sink's
/// wait blocks this loop, the pipe fills, and the child blocks on write.
async fn pump<R: AsyncRead + Unpin, S: OutputSink>(
    mut pipe: R,
    sink: S,
    stop_reading: CancellationToken,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    // An idle pass left only a tail that waits for more of its line: no further
    // idle wake-ups until the pipe gives more.
    let mut tail_held = false;
    loop {
        let holding = filled > 0 && !tail_held;
        // Only a wait for more to read is given up on `stop_reading` (a read is
        // cancel-safe); a write to the sink always completes, and what the pipe
        // already holds is read first (`biased`), however late.
        let waited = tokio::select! {
            biased;
            read = pipe.read(&mut buf[filled..]) => match read {
                Ok(0) | Err(_) => Pipe::End,
                Ok(n) => Pipe::Read(n),
            },
            () = stop_reading.cancelled() => Pipe::End,
            () = tokio::time::sleep(PARTIAL_LINE_IDLE), if holding => Pipe::Idle,
        };
        let n = match waited {
            Pipe::Read(n) => n,
            Pipe::End => break,
            Pipe::Idle => {
                let n = sink.flushable_len(&buf[..filled]);
                if n > 0 {
                    sink.write(&buf[..n]).await;
                    buf.copy_within(n..filled, 0);
                    filled -= n;
                }
                tail_held = filled > 0;
                continue;
            }
        };
        tail_held = false;
        let end = filled + n;
        match buf[filled..end].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                let cut = filled + i + 1;
                sink.write(&buf[..cut]).await;
                buf.copy_within(cut..end, 0);
                filled = end - cut;
            }
            None if end == buf.len() => {
                // A full chunk without a newline goes on, less a tail that could
                // begin a secret (unless that is all of it: no secret is that long).
                let n = match sink.flushable_len(&buf[..end]) {
                    0 => end,
                    n => n,
                };
                sink.write(&buf[..n]).await;
                buf.copy_within(n..end, 0);
                filled = end - n;
            }
            None => filled = end,
        }
    }
    if filled > 0 {
        sink.write(&buf[..filled]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<Vec<u8>>>>);

    impl OutputSink for Collect {
        async fn write(&self, bytes: &[u8]) {
            self.0.lock().expect("lock").push(bytes.to_vec());
        }
    }

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            envs: BTreeMap::new(),
            cwd: std::env::temp_dir(),
            timeout: None,
            kill_grace: Duration::from_millis(200),
            drain_grace: Duration::from_millis(500),
            cgroup_procs: Vec::new(),
            user: None,
            private_tmp: None,
        }
    }

    /// Collects writes and holds back, as a masking sink does, a tail that could
    /// begin `SECRET`.
    #[derive(Clone, Default)]
    struct MaskingCollect(Collect);

    impl OutputSink for MaskingCollect {
        async fn write(&self, bytes: &[u8]) {
            self.0.write(bytes).await;
        }

        fn flushable_len(&self, unfinished: &[u8]) -> usize {
            livelog::mask::Masker::new(&["SECRET"]).flushable_len(unfinished)
        }
    }

    #[tokio::test]
    async fn an_idle_unfinished_line_is_passed_on_without_a_tail_that_could_begin_a_secret() {
        let sink = MaskingCollect::default();
        let out = run(
            &spec("printf 'progress 45%% SEC'; sleep 0.4; echo between >&2; sleep 0.3; echo 'RET done'"),
            sink.clone(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(out.exit_code, 0);
        let chunks: Vec<String> = sink
            .0
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        // The progress shows while the step is quiet; the tail that could begin the
        // secret waits, so the other pipe's line cannot come between its halves.
        assert_eq!(
            chunks,
            ["progress 45% ", "between\n", "SECRET done\n"],
            "{chunks:?}"
        );
    }

    #[tokio::test]
    async fn every_write_is_whole_lines_except_the_unterminated_tail() {
        let sink = Collect::default();
        let out = run(
            &spec("i=0; while [ $i -lt 2000 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; printf tail"),
            sink.clone(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(out.exit_code, 0);
        let chunks = sink.0.lock().expect("lock").clone();
        // The two pipes are read concurrently, so stderr chunks may follow stdout's
        // unterminated tail; that tail is the one chunk not ending in a newline.
        let partial: Vec<_> = chunks.iter().filter(|c| !c.ends_with(b"\n")).collect();
        assert_eq!(
            partial.len(),
            1,
            "only the unterminated tail is a partial line"
        );
        assert!(partial[0].ends_with(b"tail"));
        // Lines are split per chunk: joining chunks would glue the tail to whatever
        // stderr wrote after it.
        let lines: Vec<String> = chunks
            .iter()
            .flat_map(|c| {
                String::from_utf8_lossy(c)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let outs: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with("out "))
            .cloned()
            .collect();
        let expected: Vec<_> = (0..2000).map(|i| format!("out {i}")).collect();
        assert_eq!(outs, expected, "each pipe's lines stay whole and in order");
        assert_eq!(lines.iter().filter(|l| l.starts_with("err ")).count(), 2000);
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_reported() {
        // An exit with 137 looks like SIGKILL's code but is no signal.
        for (script, code, signal) in [
            ("exit 7", 7, None),
            ("kill -9 $$", 137, Some(9)),
            ("kill -TERM $$", 143, Some(15)),
            ("exit 137", 137, None),
        ] {
            let out = run(&spec(script), Discard, CancellationToken::new()).await;
            assert_eq!((out.exit_code, out.signal), (code, signal), "{script}");
            assert_eq!(out.error, None, "{script}");
        }
    }

    /// A step's unfinished line reaches its writer while the step still runs, after
    /// the idle times, masked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_line_shows_up_live_and_masked() {
        use livelog::{HttpLogClient, Writer, WriterConfig};
        use runlog_protocol::engine::LogConfig;
        use runlog_protocol::{LogLine, Scope};
        use runlog_testkit::service::TestService;

        let svc = TestService::start().await;
        let spool = tempfile::tempdir().expect("temp dir");
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let cfg = WriterConfig {
            spool_dir: spool.path().to_path_buf(),
            secrets: vec!["hunter2-secret".into()],
            partial_line_flush: Duration::from_millis(50),
            tap: Some(Arc::new(move |l: &LogLine| {
                let _ = tx.send(l.out.clone());
            })),
            ..WriterConfig::new("step/partial")
        };
        let log = LogConfig {
            url: svc.url(),
            account_id: "acc".into(),
            token: svc.token("acc", Scope::Write),
            indirect_upload: false,
            ..LogConfig::default()
        };
        let client = HttpLogClient::new(&log).expect("client");
        let writer = Writer::new(Arc::new(client), cfg);
        let cancel = CancellationToken::new();
        let step = tokio::spawn({
            let (writer, cancel) = (writer.clone(), cancel.clone());
            async move {
                let script = "printf 'login hunter2-secret, Downloading 45%%'; sleep 60; echo";
                run(&spec(script), writer, cancel).await
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(20), lines.recv())
            .await
            .expect("the unfinished line never showed up");
        assert_eq!(
            first.as_deref(),
            Some("login **************, Downloading 45%")
        );
        assert!(
            !step.is_finished(),
            "the step ended before its line was seen"
        );
        cancel.cancel();
        step.await.expect("step");
        writer.close().await;
    }

    /// A sink that holds every write until released.
    #[derive(Clone)]
    struct Gate {
        open: Arc<tokio::sync::Semaphore>,
        entered: Arc<tokio::sync::Notify>,
    }

    impl OutputSink for Gate {
        async fn write(&self, _bytes: &[u8]) {
            self.entered.notify_one();
            let _ = self.open.acquire().await.map(|p| p.forget());
        }
    }

    #[tokio::test]
    async fn a_slow_sink_blocks_the_child_instead_of_buffering_its_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("finished");
        let gate = Gate {
            open: Arc::new(tokio::sync::Semaphore::new(0)),
            entered: Arc::new(tokio::sync::Notify::new()),
        };
        // 50 MB of output: far beyond a pipe buffer and a read chunk.
        let script = format!(
            "yes 0123456789012345678901234567890123456789012345678 | head -n 1000000; touch '{}'",
            marker.display()
        );
        let spec = spec(&script);
        let task = tokio::spawn({
            let gate = gate.clone();
            async move { run(&spec, gate, CancellationToken::new()).await }
        });
        gate.entered.notified().await;
        // Unblocked, the child writes all of it in well under this; blocked on the
        // full pipe, it cannot finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !marker.exists(),
            "the child finished although nothing read its output"
        );
        gate.open.add_permits(usize::MAX >> 4);
        let out = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the step ends once the sink accepts")
            .expect("task");
        assert_eq!(out.exit_code, 0);
        assert!(marker.exists());
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_panic() {
        let mut s = spec("");
        s.program = "/nonexistent/runlog-no-such-program".into();
        let out = run(&s, Discard, CancellationToken::new()).await;
        assert_eq!(out.exit_code, -1);
        assert!(out.error.expect("error").contains("could not start"));
    }

    #[tokio::test]
    async fn a_process_that_left_the_group_holding_the_pipe_does_not_hang_the_step() {
        // `setsid`: a new session, out of reach of the group kill.
        let spec = spec("setsid sleep 30 & echo started");
        let got = Collect::default();
        let out = run(&spec, got.clone(), CancellationToken::new());
        let out = tokio::time::timeout(Duration::from_secs(10), out)
            .await
            .expect("the step must end after two drain graces");
        assert_eq!(out.exit_code, 0);
        let text: Vec<u8> = got.0.lock().expect("lock").concat();
        assert_eq!(text, b"started\n");
    }

    /// A sink that holds every write until released, then keeps what it got.
    #[derive(Clone)]
    struct GatedCollect {
        gate: Gate,
        got: Collect,
    }

    impl OutputSink for GatedCollect {
        async fn write(&self, bytes: &[u8]) {
            self.gate.write(bytes).await;
            self.got.write(bytes).await;
        }
    }

    #[tokio::test]
    async fn output_held_up_by_a_slow_sink_past_the_graces_is_kept() {
        // The step ends at once; its output reaches the sink only long after both
        // drain graces (0.5 s each): it must be waited for, not cut off.
        let spec = spec("i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done");
        let sink = GatedCollect {
            gate: Gate {
                open: Arc::new(tokio::sync::Semaphore::new(0)),
                entered: Arc::new(tokio::sync::Notify::new()),
            },
            got: Collect::default(),
        };
        let task = tokio::spawn({
            let sink = sink.clone();
            async move { run(&spec, sink, CancellationToken::new()).await }
        });
        sink.gate.entered.notified().await;
        // Past both graces: waiting is the point of this test.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sink.gate.open.add_permits(usize::MAX >> 4);
        let out = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the step ends once the sink accepts")
            .expect("task");
        assert_eq!(out.exit_code, 0);
        let text = String::from_utf8(sink.got.0.lock().expect("lock").concat()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        let expected: Vec<String> = (0..3000).map(|i| format!("line {i}")).collect();
        assert_eq!(lines.len(), expected.len(), "tail: {:?}", lines.last());
        let first_wrong = lines.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_wrong, None, "lines differ");
    }

    #[tokio::test]
    async fn a_background_process_holding_the_pipe_does_not_hang_the_step() {
        let spec = spec("sleep 1000 & echo started");
        let out = run(&spec, Discard, CancellationToken::new());
        let out = tokio::time::timeout(Duration::from_secs(10), out)
            .await
            .expect("the step must end after the drain grace");
        assert_eq!(out.exit_code, 0);
    }
}
