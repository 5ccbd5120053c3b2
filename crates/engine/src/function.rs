//! `POST /execute` and `POST /runsync`: remote Python function and class calls.
//!
//! Every call runs inside a span of its own carrying a fresh capture ring, so the
//! response's `stdout` holds this call's system log lines (runtime progress, installer
//! output) and nothing from any other call, then a blank line, then the function's own
//! output in arrival order. With `log_key` the same lines are streamed live while the
//! call runs.

use crate::error::EngineError;
use crate::extract::JsonBody;
use crate::python::{OutputLine, OutputSink, PythonConfig, PythonRuntime};
use crate::state::EngineState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use livelog::mask::Masker;
use livelog::{HttpLogClient, Writer, WriterConfig};
use runlog_capture::{Capture, StreamSink};
use runlog_protocol::StreamKey;
use runlog_protocol::function::{
    FunctionRequest, FunctionResponse, RunsyncRequest, RunsyncResponse,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::Instrument as _;

/// Settings of the function endpoints.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// The Python runtime.
    pub python: PythonConfig,
    /// Entries of each call's capture ring (system log lines kept for `stdout`).
    pub capture_capacity: usize,
    /// Lines of function output kept for `stdout` (the last ones; the live stream and
    /// its archive keep all). Default 10 000.
    pub output_capacity: usize,
    /// Directory of the spool files of calls streamed with `log_key`.
    pub spool_dir: PathBuf,
    /// Where an undelivered stream history is kept to be re-sent later.
    pub outbox_dir: Option<PathBuf>,
}

impl FunctionsConfig {
    /// Defaults for an engine whose data directory is `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        // Workers run in their own working directory: the venv path must be absolute.
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        FunctionsConfig {
            python: PythonConfig::new(&data_dir),
            capture_capacity: runlog_capture::DEFAULT_CAPACITY,
            output_capacity: 10_000,
            spool_dir: data_dir.join("spool"),
            outbox_dir: Some(data_dir.join("outbox")),
        }
    }
}

/// State of the function endpoints; cheap to clone.
#[derive(Debug, Clone)]
pub struct Functions {
    inner: Arc<FunctionsInner>,
}

#[derive(Debug)]
struct FunctionsInner {
    runtime: PythonRuntime,
    config: FunctionsConfig,
}

impl Functions {
    /// Endpoints over a runtime that prepares itself on first use.
    pub fn new(config: FunctionsConfig) -> Self {
        Functions {
            inner: Arc::new(FunctionsInner {
                runtime: PythonRuntime::new(config.python.clone()),
                config,
            }),
        }
    }

    /// The Python runtime (e.g. to `warm_up` it at start).
    pub fn runtime(&self) -> &PythonRuntime {
        &self.inner.runtime
    }

    /// Runs one validated call and assembles its response.
    pub async fn call(&self, req: FunctionRequest) -> Result<FunctionResponse, CallRejected> {
        self.call_masked(req, Vec::new()).await
    }

    /// [`Functions::call`], with `secrets` masked in `stdout`, `error` and the live
    /// stream.
    pub async fn call_masked(
        &self,
        req: FunctionRequest,
        secrets: Vec<String>,
    ) -> Result<FunctionResponse, CallRejected> {
        crate::python::runtime::validate(&req).map_err(CallRejected)?;
        let masker = Masker::new(&secrets);
        let stream = self.open_stream(&req, secrets)?;
        let capture = Capture::new(self.inner.config.capture_capacity);
        let span = tracing::info_span!(target: "runlog::engine", "execute");
        capture.attach(&span);
        if let Some(writer) = &stream {
            runlog_capture::attach_stream(&span, Arc::new(WriterSink(writer.clone())));
        }
        let output = Arc::new(Mutex::new(OutputRing::new(
            self.inner.config.output_capacity,
        )));
        let outcome = self
            .run(&req, stream.clone(), output.clone())
            .instrument(span)
            .await;
        if let Some(writer) = stream {
            let report = writer.close().await;
            if let Some(e) = report.error {
                // After the response's capture is complete: said on the engine's log.
                tracing::warn!(target: "runlog::engine", "log stream {}: {e}", report.key);
            }
        }
        let output = output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines();
        Ok(FunctionResponse {
            success: outcome.success,
            result: outcome.result,
            error: outcome.error.map(|mut e| {
                masker.mask(&mut e);
                e
            }),
            stdout: Some({
                let mut stdout = assemble_stdout(&capture.lines(), &output);
                masker.mask(&mut stdout);
                stdout
            }),
            instance_id: outcome.instance_id,
            instance_info: outcome.instance_info,
        })
    }

    async fn run(
        &self,
        req: &FunctionRequest,
        stream: Option<Writer>,
        output: Arc<Mutex<OutputRing>>,
    ) -> crate::python::CallOutcome {
        let what = match req.execution_type {
            runlog_protocol::function::ExecutionType::Function => {
                format!(
                    "function {}",
                    req.function_name.as_deref().unwrap_or_default()
                )
            }
            runlog_protocol::function::ExecutionType::Class => format!(
                "{}.{}",
                req.class_name.as_deref().unwrap_or_default(),
                req.method_name
            ),
        };
        tracing::info!(target: "runlog::engine", "execute {what}");
        // Each line is streamed and kept the moment the worker reader sees it, before
        // the runtime logs anything else: the live stream keeps the true order.
        let sink: OutputSink = Arc::new(move |line: OutputLine| {
            if let Some(w) = &stream {
                w.try_write_line(line.level, &line.text);
            }
            output
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.text);
        });
        self.inner.runtime.execute(req, &sink).await
    }

    fn open_stream(
        &self,
        req: &FunctionRequest,
        secrets: Vec<String>,
    ) -> Result<Option<Writer>, CallRejected> {
        let Some(key) = req.log_key.as_deref() else {
            return Ok(None);
        };
        let key = StreamKey::new(key).map_err(|e| CallRejected(format!("log_key: {e}")))?;
        let Some(log_config) = &req.log_config else {
            return Err(CallRejected("log_key needs log_config".into()));
        };
        let client =
            HttpLogClient::new(log_config).map_err(|e| CallRejected(format!("log_config: {e}")))?;
        let cfg = WriterConfig {
            spool_dir: self.inner.config.spool_dir.clone(),
            outbox_dir: self.inner.config.outbox_dir.clone(),
            secrets,
            ..WriterConfig::new(key.as_str()).with_log_config(log_config)
        };
        if let Err(e) = livelog::spool::create_private_dir(&cfg.spool_dir) {
            return Err(CallRejected(format!(
                "spool directory {}: {e}",
                cfg.spool_dir.display()
            )));
        }
        Ok(Some(Writer::new(Arc::new(client), cfg)))
    }
}

/// The function's output kept for the response: the last `capacity` lines, with a count
/// of the earlier ones dropped, so a function printing without end cannot exhaust the
/// engine's memory.
#[derive(Debug)]
struct OutputRing {
    lines: VecDeque<String>,
    dropped: u64,
    capacity: usize,
}

impl OutputRing {
    fn new(capacity: usize) -> Self {
        OutputRing {
            lines: VecDeque::new(),
            dropped: 0,
            capacity: capacity.max(1),
        }
    }

    fn push(&mut self, line: String) {
        if self.lines.len() >= self.capacity {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped > 0 {
            out.push(format!("{} earlier output lines dropped", self.dropped));
        }
        out.extend(self.lines.iter().cloned());
        out
    }
}

/// Forwards the call's system log lines into its live stream.
struct WriterSink(Writer);

impl StreamSink for WriterSink {
    fn forward(&self, level: &'static str, line: &str) {
        self.0.try_write_line(level, line);
    }
}

/// The response's `stdout`: system lines, a blank line, the function's output.
pub fn assemble_stdout(system: &[String], output: &[String]) -> String {
    let len = system
        .iter()
        .chain(output)
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + 1;
    let mut s = String::with_capacity(len);
    for line in system {
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    for line in output {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A request refused before anything ran (answered 400 with the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallRejected(pub String);

impl From<CallRejected> for EngineError {
    fn from(e: CallRejected) -> Self {
        EngineError::BadRequest(e.0)
    }
}

/// The routes `POST /execute` and `POST /runsync`, to be merged into the engine's
/// router. The stage's secrets (from `/setup`) are masked in every call's response and
/// live stream.
pub fn routes(functions: Functions) -> Router<EngineState> {
    let for_runsync = functions.clone();
    Router::new()
        .route(
            "/execute",
            post(
                move |State(engine): State<EngineState>,
                      JsonBody(req): JsonBody<FunctionRequest>| {
                    let functions = functions.clone();
                    async move {
                        let resp = functions.call_masked(req, engine.stage_secrets()).await?;
                        Ok::<_, EngineError>(Json(resp))
                    }
                },
            ),
        )
        .route(
            "/runsync",
            post(
                move |State(engine): State<EngineState>,
                      JsonBody(RunsyncRequest { input }): JsonBody<RunsyncRequest>| {
                    let functions = for_runsync.clone();
                    async move {
                        let output = functions.call_masked(input, engine.stage_secrets()).await?;
                        Ok::<_, EngineError>(Json(RunsyncResponse { output }))
                    }
                },
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ring_keeps_the_last_lines_and_counts_the_rest() {
        let mut ring = OutputRing::new(2);
        for n in 0..5 {
            ring.push(format!("line {n}"));
        }
        assert_eq!(
            ring.lines(),
            vec!["3 earlier output lines dropped", "line 3", "line 4"]
        );
    }

    #[test]
    fn stdout_is_system_lines_blank_line_then_output() {
        let s = assemble_stdout(&["sys 1".into(), "sys 2".into()], &["out 1".into()]);
        assert_eq!(s, "sys 1\nsys 2\n\nout 1\n");
        assert_eq!(assemble_stdout(&[], &[]), "\n");
    }
}
