//! `POST /step` and `POST /poll_step`.

use crate::error::EngineError;
use crate::extract::JsonBody;
use crate::handlers::{check_key, check_step_id};
use crate::metrics::Metrics;
use crate::outputs::{self, OUTPUT_ENV};
use crate::process::{self, OutputSink, ProcessSpec};
use crate::stage::Stage;
use crate::state::EngineState;
use crate::workspace;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use livelog::Writer;
use runlog_protocol::engine::{PollStepRequest, StepCommand, StepRequest, StepResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument as _;

/// A step's output goes to its writer, or nowhere when it has no log key.
#[derive(Clone)]
struct StepOutput(Option<Writer>);

impl OutputSink for StepOutput {
    async fn write(&self, bytes: &[u8]) {
        if let Some(w) = &self.0 {
            w.write_async(bytes).await;
        }
    }
}

/// Starts a step; answers its result, or `{}` at once when detached.
pub async fn step(
    State(state): State<EngineState>,
    JsonBody(req): JsonBody<StepRequest>,
) -> Result<Response, EngineError> {
    check_step_id(&req.id)?;
    let (program, args) = command_line(&req)?;
    if let Some(key) = &req.log_key {
        check_key("log_key", key)?;
    }
    let stage = state
        .stage()
        .ok_or_else(|| EngineError::Conflict("no stage is set up; call /setup first".into()))?;
    let cwd = match &req.working_dir {
        // An absolute directory is the controller's choice (e.g. `runlog run` in the
        // caller's directory); the step could `cd` there anyway.
        Some(d) if std::path::Path::new(d).is_absolute() => {
            let dir = std::path::PathBuf::from(d);
            if !dir.is_dir() {
                return Err(EngineError::BadRequest(format!(
                    "working_dir {d:?} is not a directory"
                )));
            }
            dir
        }
        Some(d) => workspace::resolve(&stage.workspace, d)?,
        None => stage.working_dir.clone(),
    };
    let slot = state.try_step_slot().ok_or_else(|| {
        EngineError::Busy(format!(
            "{} steps are running, as many as this engine runs at once; start this one when one has ended",
            state.config().max_steps
        ))
    })?;
    let (tx, rx) = watch::channel(None);
    stage
        .add_step(&req.id, req.log_key.as_deref(), rx.clone())
        .map_err(EngineError::Conflict)?;
    let cfg = state.config();
    let outputs_file = stage.outputs_file(&req.id);
    let mut envs = crate::child_env::base(&cfg.pass_env);
    envs.extend(stage.envs.clone());
    envs.extend(req.envs.clone());
    envs.insert(OUTPUT_ENV.to_owned(), outputs_file.display().to_string());
    let spec = ProcessSpec {
        program,
        args,
        envs,
        cwd,
        timeout: req.timeout.filter(|t| *t > 0).map(Duration::from_secs),
        kill_grace: cfg.kill_grace,
        drain_grace: cfg.drain_grace,
        cgroup_procs: stage.cgroup.as_ref().map(|cg| cg.procs_file()),
    };
    let writer = match &req.log_key {
        Some(key) => {
            let w = stage.writer(cfg, key, &req.secrets);
            if w.is_none() {
                tracing::warn!(step = %req.id, "no log service configured: the output of the step is discarded");
            }
            w
        }
        None => None,
    };
    Metrics::inc(&state.metrics().steps_started);
    let run = StepRun {
        id: req.id.clone(),
        name: req.name.clone().unwrap_or_else(|| req.id.clone()),
        spec,
        outputs_file,
        writer,
        masker: livelog::mask::Masker::new(
            &stage.secrets.iter().chain(&req.secrets).collect::<Vec<_>>(),
        ),
    };
    let step_run = run_step(state.clone(), stage.clone(), run, tx);
    let task = tokio::spawn(
        async move {
            let report = step_run.await;
            drop(slot);
            report
        }
        .in_current_span(),
    );
    stage.set_task(&req.id, task);
    if req.detach {
        return Ok(Json(serde_json::json!({})).into_response());
    }
    wait_result(rx).await.map(|r| Json(r).into_response())
}

/// Waits for a step started earlier (detached or not) and answers its result.
pub async fn poll_step(
    State(state): State<EngineState>,
    JsonBody(req): JsonBody<PollStepRequest>,
) -> Result<Json<StepResponse>, EngineError> {
    check_step_id(&req.id)?;
    let rx = state
        .stage()
        .and_then(|s| s.step_result(&req.id))
        .ok_or_else(|| EngineError::NotFound(format!("no step {:?}", req.id)))?;
    wait_result(rx).await.map(Json)
}

async fn wait_result(
    mut rx: watch::Receiver<Option<StepResponse>>,
) -> Result<StepResponse, EngineError> {
    match rx.wait_for(Option::is_some).await {
        Ok(r) => Ok(r.clone().unwrap_or_default()),
        Err(_) => Err(EngineError::Internal(
            "the step ended without a result".into(),
        )),
    }
}

/// Program and arguments: `script` and string `command`s run through the shell.
fn command_line(req: &StepRequest) -> Result<(String, Vec<String>), EngineError> {
    let shell = req.shell.clone().unwrap_or_else(|| "sh".to_owned());
    if shell.is_empty() {
        return Err(EngineError::BadRequest("shell must not be empty".into()));
    }
    match (&req.command, &req.script) {
        (Some(_), Some(_)) => Err(EngineError::BadRequest(
            "give either command or script, not both".into(),
        )),
        (None, None) => Err(EngineError::BadRequest(
            "a step needs a command or a script".into(),
        )),
        (Some(StepCommand::Line(line)), None) | (None, Some(line)) => {
            Ok((shell, vec!["-c".to_owned(), line.clone()]))
        }
        (Some(StepCommand::Argv(argv)), None) => match argv.split_first() {
            Some((program, args)) if !program.is_empty() => Ok((program.clone(), args.to_vec())),
            _ => Err(EngineError::BadRequest(
                "command must name a program".into(),
            )),
        },
    }
}

/// One step, ready to run.
struct StepRun {
    id: String,
    name: String,
    spec: ProcessSpec,
    outputs_file: std::path::PathBuf,
    writer: Option<Writer>,
    /// The stage's and the step's secrets: applied to everything about the step that
    /// leaves through another channel than its stream (console log, the answer's
    /// `error`), since a command line may carry a secret.
    masker: livelog::mask::Masker,
}

/// Runs the process, publishes the result, then closes the step's stream (the answer
/// does not wait for the archive upload; `/destroy` does).
async fn run_step(
    state: EngineState,
    stage: Arc<Stage>,
    run: StepRun,
    tx: watch::Sender<Option<StepResponse>>,
) -> Option<livelog::WriterReport> {
    let StepRun {
        id,
        name,
        spec,
        outputs_file,
        writer,
        masker,
    } = run;
    // The arguments are not logged at all (they are the step's business); the program
    // is, masked, because the console itself masks nothing.
    let mut program = spec.program.clone();
    masker.mask(&mut program);
    tracing::info!(step = %id, "starting step {name:?}: {program}");
    let mut out = process::run(&spec, StepOutput(writer.clone()), stage.cancel.clone()).await;
    if let Some(e) = &mut out.error {
        masker.mask(e);
    }
    if let (Some(w), Some(e)) = (&writer, &out.error) {
        w.try_write_line("error", e);
    }
    let outputs = outputs::read(&outputs_file).await;
    let ok = out.exit_code == 0 && out.error.is_none();
    if ok {
        Metrics::inc(&state.metrics().steps_succeeded);
        tracing::info!(step = %id, "step exited with code 0");
    } else {
        Metrics::inc(&state.metrics().steps_failed);
        match &out.error {
            Some(e) => tracing::warn!(step = %id, "step failed with code {}: {e}", out.exit_code),
            // A failing command is an ordinary outcome, not a problem of the engine.
            None => tracing::info!(step = %id, "step exited with code {}", out.exit_code),
        }
    }
    let _ = tx.send(Some(StepResponse {
        exit_code: out.exit_code,
        exited: true,
        error: out.error,
        outputs,
    }));
    match writer {
        Some(w) => Some(w.close().await),
        None => None,
    }
}
