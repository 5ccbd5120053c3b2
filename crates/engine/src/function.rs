//! `POST /execute`: remote Python function and class calls (the job routes, `/run`,
//! `/runsync` and the rest, are `crate::jobs` over [`Functions::call_observed`]).
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
use axum::routing::{get, post};
use livelog::mask::Masker;
use livelog::{HttpLogClient, Writer, WriterConfig};
use runlog_capture::{Capture, StreamSink};
use runlog_protocol::StreamKey;
use runlog_protocol::function::{FunctionRequest, FunctionResponse, Serialization};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Settings of the function endpoints.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// The Python runtime.
    pub python: PythonConfig,
    /// Entries of each call's capture ring (system log lines kept for `stdout`).
    pub capture_capacity: usize,
    /// Bytes of function output kept for `stdout` (the last lines; the live stream and
    /// its archive keep all). Default 16 MiB: a byte cap, never a line count, so a
    /// call printing many short lines gets them all back, as from RunPod's worker.
    pub output_bytes: usize,
    /// Directory of the spool files of calls streamed with `log_key`.
    pub spool_dir: PathBuf,
    /// Where an undelivered stream history is kept to be re-sent later.
    pub outbox_dir: Option<PathBuf>,
    /// The job routes' queue, retention and waits.
    pub jobs: crate::jobs::JobsConfig,
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
            output_bytes: 16 << 20,
            spool_dir: data_dir.join("spool"),
            outbox_dir: Some(data_dir.join("outbox")),
            jobs: crate::jobs::JobsConfig::default(),
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

    /// Its configuration.
    pub fn config(&self) -> &FunctionsConfig {
        &self.inner.config
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
        self.call_observed(req, secrets, None, None).await
    }

    /// [`Functions::call_masked`], also handing every line of the call — system lines
    /// and the function's output, masked, in arrival order — to `observer` as it
    /// arrives (the job routes' `stream`). When `stop` is cancelled the call is
    /// stopped (its worker killed) and answered as failed, its live stream still closed
    /// and archived.
    pub async fn call_observed(
        &self,
        req: FunctionRequest,
        secrets: Vec<String>,
        observer: Option<LineObserver>,
        stop: Option<CancellationToken>,
    ) -> Result<FunctionResponse, CallRejected> {
        crate::python::runtime::validate(&req).map_err(CallRejected)?;
        let masker = Masker::new(&secrets);
        let stream = self.open_stream(&req, secrets)?;
        let capture = Capture::new(self.inner.config.capture_capacity);
        let span = tracing::info_span!(target: "runlog::engine", "execute");
        capture.attach(&span);
        let observer = observer.map(|f| MaskedObserver {
            f,
            masker: masker.clone(),
        });
        if stream.is_some() || observer.is_some() {
            let tee = TeeSink {
                writer: stream.clone(),
                observer: observer.clone(),
            };
            runlog_capture::attach_stream(&span, Arc::new(tee));
        }
        let output = Arc::new(Mutex::new(OutputRing::new(
            self.inner.config.output_bytes,
            req.log_key.clone(),
        )));
        let run = self
            .run(&req, stream.clone(), observer, output.clone())
            .instrument(span.clone());
        let outcome = match stop {
            None => run.await,
            Some(stop) => tokio::select! {
                outcome = run => outcome,
                () = stop.cancelled() => {
                    // Dropping the call dropped its worker, which kills its process
                    // group; the line goes to the call's stream and `stdout`.
                    span.in_scope(|| tracing::warn!(target: "runlog::engine", "the call was stopped before it returned"));
                    crate::python::CallOutcome {
                        error: Some("the call was stopped before it returned".into()),
                        ..crate::python::CallOutcome::default()
                    }
                }
            },
        };
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
        // The newest client reads `result` as base64 cloudpickle only: a JSON call's
        // value goes in `json_result`.
        let (result, json_result) = match req.serialization {
            Serialization::Cloudpickle => (outcome.result, None),
            Serialization::Json => (None, outcome.result),
        };
        Ok(FunctionResponse {
            success: outcome.success,
            result,
            json_result,
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
        observer: Option<MaskedObserver>,
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
        // Debug, not info: it would open every call's `stdout`, which the SDKs print on
        // their user's console.
        tracing::debug!(target: "runlog::engine", "execute {what}");
        // Each line is streamed and kept the moment the worker reader sees it, before
        // the runtime logs anything else: the live stream keeps the true order.
        let sink: OutputSink = Arc::new(move |line: OutputLine| {
            if let Some(w) = &stream {
                w.try_write_line(line.level, &line.text);
            }
            if let Some(o) = &observer {
                o.observe(&line.text);
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

/// The function's output kept for the response: the last lines within `cap` bytes,
/// with a count of the earlier ones dropped, so a function printing without end cannot
/// exhaust the engine's memory.
#[derive(Debug)]
struct OutputRing {
    lines: VecDeque<String>,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    cap: usize,
    /// The call's live stream, which holds every line.
    log_key: Option<String>,
}

impl OutputRing {
    fn new(cap: usize, log_key: Option<String>) -> Self {
        OutputRing {
            lines: VecDeque::new(),
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            cap: cap.max(1),
            log_key,
        }
    }

    fn push(&mut self, line: String) {
        // A line counts its newline: the cap bounds the `stdout` text itself.
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.cap && self.lines.len() > 1 {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len() + 1;
            self.dropped_lines += 1;
            self.dropped_bytes += old.len() as u64 + 1;
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped_lines > 0 {
            let whole = match &self.log_key {
                Some(key) => format!("the live stream {key} holds them all"),
                None => "send log_key to keep every line in a live stream".to_owned(),
            };
            out.push(format!(
                "[runlog: {} earlier output lines ({} bytes) dropped past the {}-byte cap; {whole}]",
                self.dropped_lines, self.dropped_bytes, self.cap
            ));
        }
        out.extend(self.lines.iter().cloned());
        out
    }
}

/// Receives each line of a call as it arrives (must not block).
pub type LineObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// An observer that only ever sees lines with the call's secrets masked.
#[derive(Clone)]
struct MaskedObserver {
    f: LineObserver,
    masker: Masker,
}

impl MaskedObserver {
    fn observe(&self, line: &str) {
        if self.masker.is_active() {
            let mut line = line.to_owned();
            self.masker.mask(&mut line);
            (self.f)(&line);
        } else {
            (self.f)(line);
        }
    }
}

/// Forwards the call's system log lines into its live stream and its observer.
struct TeeSink {
    writer: Option<Writer>,
    observer: Option<MaskedObserver>,
}

impl StreamSink for TeeSink {
    fn forward(&self, level: &'static str, line: &str) {
        if let Some(w) = &self.writer {
            w.try_write_line(level, line);
        }
        if let Some(o) = &self.observer {
            o.observe(line);
        }
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

/// The routes `POST /execute`, `GET /ping` and the job routes (`crate::jobs`), to be
/// merged into the engine's router. The stage's secrets (from `/setup`) are masked in
/// every call's response and live stream.
pub fn routes(functions: Functions) -> Router<EngineState> {
    let jobs = crate::jobs::Jobs::new(functions.clone());
    Router::new()
        .route(
            "/execute",
            post(
                move |State(engine): State<EngineState>,
                      JsonBody(body): JsonBody<serde_json::Value>| {
                    let functions = functions.clone();
                    async move {
                        let req = request_from_body(body)?;
                        let resp = functions.call_masked(req, engine.stage_secrets()).await?;
                        Ok::<_, EngineError>(Json(resp))
                    }
                },
            ),
        )
        .route("/ping", get(ping))
        .merge(crate::jobs::routes(jobs))
}

/// `GET /ping`: the load-balanced worker's readiness check.
async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "healthy"}))
}

/// An `/execute` body: the call itself, or the call wrapped as `{"input": {…}}` (the
/// serverless envelope, which clients also send here).
pub fn request_from_body(body: serde_json::Value) -> Result<FunctionRequest, CallRejected> {
    let body = match body {
        serde_json::Value::Object(mut map)
            if map.len() == 1 && map.get("input").is_some_and(|v| v.is_object()) =>
        {
            map.remove("input").unwrap_or_default()
        }
        other => other,
    };
    serde_json::from_value(body).map_err(|e| CallRejected(format!("malformed JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ring_keeps_the_last_bytes_and_names_the_stream_with_all() {
        let mut ring = OutputRing::new(14, Some("calls/x".into()));
        for n in 0..5 {
            ring.push(format!("line {n}"));
        }
        assert_eq!(
            ring.lines(),
            vec![
                "[runlog: 3 earlier output lines (21 bytes) dropped past the 14-byte cap; \
                 the live stream calls/x holds them all]",
                "line 3",
                "line 4"
            ]
        );
        let mut ring = OutputRing::new(1, None);
        ring.push("a line longer than the cap is kept whole".into());
        assert_eq!(ring.lines().len(), 1, "the last line always stays");
    }

    #[test]
    fn many_short_lines_under_the_cap_are_all_kept() {
        let mut ring = OutputRing::new(16 << 20, None);
        for n in 0..20_000 {
            ring.push(format!("line {n}"));
        }
        let lines = ring.lines();
        assert_eq!(lines.len(), 20_000);
        assert_eq!(lines[0], "line 0");
    }

    #[test]
    fn execute_body_may_be_bare_or_wrapped() {
        let call = serde_json::json!({"function_name": "f", "function_code": "def f(): pass"});
        let bare = request_from_body(call.clone()).expect("bare");
        let wrapped = request_from_body(serde_json::json!({ "input": call })).expect("wrapped");
        assert_eq!(bare, wrapped);
        assert_eq!(bare.function_name.as_deref(), Some("f"));
        let err = request_from_body(serde_json::json!({"args": {}})).expect_err("bad args");
        assert!(err.0.starts_with("malformed JSON body"), "{err}");
    }

    #[test]
    fn stdout_is_system_lines_blank_line_then_output() {
        let s = assemble_stdout(&["sys 1".into(), "sys 2".into()], &["out 1".into()]);
        assert_eq!(s, "sys 1\nsys 2\n\nout 1\n");
        assert_eq!(assemble_stdout(&[], &[]), "\n");
    }
}
