//! [`Functions`]: remote Python function and class calls, as `POST /execute`
//! (`handlers/execute.rs`) and the job routes (`crate::jobs`, `handlers/jobs.rs`,
//! through [`Functions::call_observed`]) make them.
//!
//! Every call runs inside a span of its own carrying a fresh capture ring, so the
//! response's `stdout` holds this call's system log lines (runtime progress, installer
//! output) and nothing from any other call, then a blank line, then the function's own
//! output in arrival order. With `log_key` the same lines are streamed live while the
//! call runs.

pub use crate::config::FunctionsConfig;
use crate::error::EngineError;
use crate::python::{FunctionOutput, OutputLine, PythonRuntime};
use livelog::mask::Masker;
use livelog::{HttpLogClient, Writer, WriterConfig};
use runlog_capture::Capture;
use runlog_capture::Section;
use runlog_protocol::StreamKey;
use runlog_protocol::function::{FunctionRequest, FunctionResponse, Serialization};
use runlog_protocol::sections::Outcome;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

pub use crate::call_lines::{LineObserver, assemble_stdout};
use crate::call_lines::{MaskedObserver, OutputRing, TeeSink};
use crate::stage::WriterSink;
use tracing::Instrument as _;

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
        self.call_observed(req, secrets, None, None, None).await
    }

    /// [`Functions::call_masked`], also handing every line of the call — system lines
    /// and the function's output, masked, in arrival order — to `observer` as it
    /// arrives (the job routes' `stream`). When `stop` is cancelled the call is
    /// stopped (its worker killed) and answered as failed, its live stream still closed
    /// and archived. With `around`, the call's stream has a section of that title
    /// around the call's own (a job's: `job ID`), ended with the stream's outcome.
    pub async fn call_observed(
        &self,
        req: FunctionRequest,
        secrets: Vec<String>,
        observer: Option<LineObserver>,
        stop: Option<CancellationToken>,
        around: Option<&str>,
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
                writer: stream.clone().map(WriterSink),
                observer: observer.clone(),
            };
            runlog_capture::attach_stream(&span, Arc::new(tee));
        }
        let output = Arc::new(Mutex::new(OutputRing::new(
            self.inner.config.output_bytes,
            req.log_key.clone(),
        )));
        // Opened and ended in the call's span, so its markers go to the call's
        // stream; it outlives the call's own section, which a stop drops first.
        let around = around.map(|title| span.in_scope(|| Section::open(title)));
        let run = self
            .run(&req, stream.clone(), observer, output.clone())
            .instrument(span.clone());
        let mut stopped = false;
        let outcome = match stop {
            None => run.await,
            Some(stop) => tokio::select! {
                outcome = run => outcome,
                () = stop.cancelled() => {
                    stopped = true;
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
        let ended = match (outcome.success, stopped) {
            (true, _) => Outcome::Success,
            (false, true) => Outcome::Cancelled,
            (false, false) => Outcome::Failure,
        };
        if let Some(section) = around {
            span.in_scope(|| section.end(ended));
        }
        if let Some(writer) = stream {
            writer.set_outcome(ended);
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
        // The call's section of its stream (markers stay out of `stdout`). Inside the
        // call's span: a call stopped from outside drops this future there, and the
        // section ends `cancelled` in the right stream.
        let section = Section::open(&format!("call {what}"));
        // Each line is streamed and kept the moment the worker reader sees it, before
        // the runtime logs anything else: the live stream keeps the true order.
        let sink: FunctionOutput = Arc::new(move |line: OutputLine| {
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
        let outcome = self.inner.runtime.execute(req, &sink).await;
        section.end_ok(outcome.success);
        outcome
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

/// A request refused before anything ran (answered 400 with the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallRejected(pub String);

impl From<CallRejected> for EngineError {
    fn from(e: CallRejected) -> Self {
        EngineError::BadRequest(e.0)
    }
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
    fn execute_body_may_be_bare_or_wrapped() {
        let call = serde_json::json!({"function_name": "f", "function_code": "def f(): pass"});
        let bare = request_from_body(call.clone()).expect("bare");
        let wrapped = request_from_body(serde_json::json!({ "input": call })).expect("wrapped");
        assert_eq!(bare, wrapped);
        assert_eq!(bare.function_name.as_deref(), Some("f"));
        let err = request_from_body(serde_json::json!({"args": {}})).expect_err("bad args");
        assert!(err.0.starts_with("malformed JSON body"), "{err}");
    }
}
