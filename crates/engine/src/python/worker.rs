//! One worker: a long-lived `python -u harness.py` process that runs one request at a
//! time.
//!
//! Requests go down its stdin and messages come back on its stdout, one JSON object
//! per line (see `crates/engine/python/harness.py`); the harness keeps the function's
//! own output off that channel. Raw stderr (an interpreter crash, a C extension, a
//! subprocess) is read by a task of its own and credited to whichever call holds the
//! worker; the harness ends each call on it with a mark, and a call returns only once
//! the mark is read, so what it wrote there is its own and never the next call's.

use crate::python::{FunctionOutput, OutputLine, OutputStream};
use crate::step_user::StepUser;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

/// Why a worker could not serve a request. Any of these retires the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The interpreter could not be started.
    #[error("starting the Python worker failed: {0}")]
    Spawn(std::io::Error),
    /// The process exited (crashed, `os._exit`, killed) before answering.
    #[error("the Python worker exited before answering ({0})")]
    Died(String),
    /// It sent something that is not the protocol.
    #[error("the Python worker broke the protocol: {0}")]
    Protocol(String),
}

/// The end of one request, as the harness reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Done {
    /// Whether the request returned normally.
    pub success: bool,
    /// The encoded result.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// `ExceptionType: message` on failure.
    #[serde(default)]
    pub error: Option<String>,
    /// The traceback on failure, starting at the caller's code.
    #[serde(default)]
    pub traceback: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    line: Option<String>,
    #[serde(default)]
    done: Option<Done>,
    /// The request an output line belongs to (`None`: printed between requests).
    #[serde(default)]
    call: Option<u64>,
}

type OutputSlot = Arc<Mutex<Option<FunctionOutput>>>;

/// A started worker process.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    output: OutputSlot,
    stderr_task: Option<JoinHandle<()>>,
    /// The last call whose end mark the stderr task has read.
    stderr_ended: tokio::sync::watch::Receiver<u64>,
    calls: u64,
}

impl Worker {
    /// Starts `python -u harness` in `cwd`, as `user` when given (its `USER`, `LOGNAME`
    /// and `HOME`, `cwd` when its home does not exist), and waits until it is ready.
    pub async fn spawn(
        python: &Path,
        harness: &Path,
        cwd: &Path,
        user: Option<&StepUser>,
    ) -> Result<Worker, WorkerError> {
        let mut cmd = crate::child_env::untrusted_command(python);
        if let Some(user) = user {
            let mut identity = std::collections::BTreeMap::new();
            user.set_identity(&mut identity, cwd);
            cmd.envs(identity);
            user.apply(&mut cmd);
        }
        let mut child = cmd
            .arg("-u")
            .arg(harness)
            .current_dir(cwd)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: retiring the worker also stops whatever the function
            // started (see `Drop`).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(WorkerError::Spawn)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(WorkerError::Protocol("pipes missing".into()));
        };
        let output: OutputSlot = Arc::default();
        let (ended_tx, stderr_ended) = tokio::sync::watch::channel(0);
        let stderr_task = tokio::spawn(pump_stderr(stderr, output.clone(), ended_tx));
        let mut worker = Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            output,
            stderr_task: Some(stderr_task),
            stderr_ended,
            calls: 0,
        };
        match worker.next_message().await? {
            Message { ready: true, .. } => Ok(worker),
            _ => Err(WorkerError::Protocol("expected the ready message".into())),
        }
    }

    /// Sends one request and forwards its output lines to `out` in arrival order until
    /// the harness reports the end. Cancel-safe only in the sense that a cancelled call
    /// leaves the worker unusable: drop it then.
    pub async fn call(
        &mut self,
        request: &serde_json::Value,
        out: &FunctionOutput,
    ) -> Result<Done, WorkerError> {
        *self.output.lock().unwrap_or_else(PoisonError::into_inner) = Some(out.clone());
        let result = self.exchange(request, out).await;
        if result.is_ok() {
            // Raw stderr is another pipe: what the call wrote there may still be on
            // its way. Bounded, for a function that closed fd 2.
            let id = self.calls;
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.stderr_ended.wait_for(|ended| *ended >= id),
            )
            .await;
        }
        if let Err(WorkerError::Died(_)) = &result {
            // The crash report is on stderr: let it all arrive before answering.
            if let Some(task) = self.stderr_task.take() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
            }
        }
        *self.output.lock().unwrap_or_else(PoisonError::into_inner) = None;
        result
    }

    async fn exchange(
        &mut self,
        request: &serde_json::Value,
        out: &FunctionOutput,
    ) -> Result<Done, WorkerError> {
        self.calls += 1;
        let id = self.calls;
        let mut request = request.clone();
        if let Some(obj) = request.as_object_mut() {
            obj.insert("id".into(), id.into());
        }
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| WorkerError::Protocol(format!("request not serialisable: {e}")))?;
        line.push(b'\n');
        if let Err(e) = self.stdin.write_all(&line).await {
            return Err(WorkerError::Died(format!("writing the request: {e}")));
        }
        loop {
            let msg = self.next_message().await?;
            if let Some(done) = msg.done {
                if msg.call == Some(id) {
                    return Ok(done);
                }
                // The end of a call whose caller went away (timed out or
                // disconnected) while this one waited for the instance: its result
                // is not this call's.
                tracing::warn!(target: "runlog::python", parent: None, "the end of an abandoned call, ignored");
                continue;
            }
            let (Some(stream), Some(text)) = (msg.stream, msg.line) else {
                continue;
            };
            if msg.call != Some(id) {
                // Printed by something a finished call left running: not this call's.
                // `parent: None` keeps it out of the current request's capture.
                tracing::warn!(target: "runlog::python", parent: None, "output after its call ended: {text}");
                continue;
            }
            let (stream, level) = match stream.as_str() {
                "stdout" => (OutputStream::Stdout, "info"),
                "stderr" => (OutputStream::Stderr, "error"),
                _ => (OutputStream::Log, level_of(msg.level.as_deref())),
            };
            out(OutputLine {
                stream,
                level,
                text,
            });
        }
    }

    async fn next_message(&mut self) -> Result<Message, WorkerError> {
        match self.stdout.next_line().await {
            Ok(Some(line)) => serde_json::from_str(&line)
                .map_err(|e| WorkerError::Protocol(format!("{e} in {line:?}"))),
            Ok(None) | Err(_) => {
                // The harness is gone; what the function started in its group goes
                // too (`Drop` would not: the leader is reaped below). Unreaped, the
                // leader's pid is still this group's id.
                if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let status = match self.child.wait().await {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                Err(WorkerError::Died(status))
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pid", &self.child.id())
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Whatever the dying process still prints belongs to no call.
        *self.output.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // Only while the leader is unreaped is its pid (= the group id) surely ours.
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.child.id())
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn level_of(level: Option<&str>) -> &'static str {
    match level {
        Some("error") => "error",
        Some("warn") => "warn",
        Some("debug") => "debug",
        _ => "info",
    }
}

/// What the harness writes on raw stderr at the end of each call (then the call's id
/// and a NUL).
const STDERR_END: &[u8] = b"\x00runlog-stderr-end ";

/// Credits each raw stderr line to the call holding the worker, or to the engine's
/// own log when the worker is idle; reports each call's end mark on `ended`.
async fn pump_stderr(
    stderr: tokio::process::ChildStderr,
    output: OutputSlot,
    ended: tokio::sync::watch::Sender<u64>,
) {
    let mut segments = BufReader::new(stderr).split(b'\n');
    while let Ok(Some(mut raw)) = segments.next_segment().await {
        // The mark follows whatever unterminated text the call left on the line.
        let mark = raw
            .windows(STDERR_END.len())
            .rposition(|w| w == STDERR_END)
            .map(|at| {
                let id = std::str::from_utf8(&raw[at + STDERR_END.len()..])
                    .ok()
                    .and_then(|rest| rest.trim_end_matches('\0').parse::<u64>().ok());
                raw.truncate(at);
                id
            });
        if let Some(id) = mark {
            if !raw.is_empty() {
                credit(&output, &raw);
            }
            if let Some(id) = id {
                ended.send_replace(id);
            }
            continue;
        }
        credit(&output, &raw);
    }
}

/// Hands one raw stderr line to the call holding the worker, or to the engine's log.
fn credit(output: &OutputSlot, raw: &[u8]) {
    let text = String::from_utf8_lossy(raw)
        .trim_end_matches('\r')
        .to_owned();
    let target = output
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match target {
        Some(out) => out(OutputLine {
            stream: OutputStream::Stderr,
            level: "error",
            text,
        }),
        None => tracing::warn!(target: "runlog::python", "idle Python worker: {text}"),
    }
}
