//! `POST /step` and `POST /poll_step`.

use crate::error::EngineError;
use crate::handlers::{check_key, check_step_id};
use crate::memory_cgroup::StepMemory;
use crate::metrics::Metrics;
use crate::outputs::{self, OUTPUT_ENV};
use crate::process::{self, OutputSink, ProcessSpec};
use crate::stage::Stage;
use crate::state::EngineState;
use crate::step_output::StepOutputLog;
use crate::workspace;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use livelog::Writer;
use runlog_capture::Section;
use runlog_edge::JsonBody;
use runlog_protocol::engine::{LogConfig, PollStepRequest, StepCommand, StepRequest, StepResponse};
use runlog_protocol::sections::Outcome;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument as _;

/// A step's output goes to its writer (or nowhere without a log key) and to its
/// output log, which `/stream_output` reads.
#[derive(Clone)]
struct StepOutput {
    writer: Option<Writer>,
    log: StepOutputLog,
    /// The stage's and the step's secrets, masked in the output log as the writer
    /// masks them in the stream. The pumps pass whole lines, or the part of an
    /// unfinished one that [`OutputSink::flushable_len`] allows, so a secret without
    /// a newline in it is never split between two writes.
    masker: Arc<livelog::mask::Masker>,
}

impl OutputSink for StepOutput {
    async fn write(&self, bytes: &[u8]) {
        if self.masker.is_active() {
            let mut text = String::from_utf8_lossy(bytes).into_owned();
            self.masker.mask(&mut text);
            self.log.append(text.as_bytes());
        } else {
            self.log.append(bytes);
        }
        if let Some(w) = &self.writer {
            w.write_async(bytes).await;
        }
    }

    fn flushable_len(&self, unfinished: &[u8]) -> usize {
        self.masker.flushable_len(unfinished)
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
    let launch = Launch {
        id: req.id.clone(),
        name: req.name.clone().unwrap_or_else(|| req.id.clone()),
        program,
        args,
        envs: req.envs.clone(),
        cwd,
        timeout: req.timeout.filter(|t| *t > 0).map(Duration::from_secs),
        mem_limit: req.mem_limit.filter(|l| *l > 0),
        log_key: req.log_key.clone(),
        secrets: req.secrets.clone(),
        log_route: None,
        preface: Vec::new(),
        refused: None,
        finish: Finish::Runlog,
    };
    let rx = launch_step(&state, &stage, launch, false)?;
    if req.detach {
        return Ok(Json(serde_json::json!({})).into_response());
    }
    wait_result(rx).await.map(|r| Json(r).into_response())
}

/// One step to start, whichever API asked for it.
pub(crate) struct Launch {
    /// The step's id in the stage.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Program and arguments.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Variables over the base environment and the stage's.
    pub envs: std::collections::BTreeMap<String, String>,
    /// Working directory (checked by the caller).
    pub cwd: std::path::PathBuf,
    /// Time limit.
    pub timeout: Option<Duration>,
    /// Memory limit in bytes (`crate::memory_cgroup`).
    pub mem_limit: Option<u64>,
    /// Stream of the step's output.
    pub log_key: Option<String>,
    /// Masked besides the stage's secrets.
    pub secrets: Vec<String>,
    /// A log service of the step's own, instead of the stage's.
    pub log_route: Option<(Arc<dyn livelog::LogClient>, LogConfig)>,
    /// Lines written to the step's output before the process starts.
    pub preface: Vec<String>,
    /// The step fails with this error without running (a request it cannot run,
    /// answered as a failed step where the API reports failures through polls).
    pub refused: Option<String>,
    /// How the result is made.
    pub finish: Finish,
}

/// How a step's result is made once its process has ended.
pub(crate) enum Finish {
    /// runlog's `/step` result.
    Runlog,
    /// The result as another API answers it (lite-engine's: outputs, exported
    /// envs, its error words), made by that API's module: the step runner depends
    /// on no API built on it.
    Api(Box<dyn FinishStep>),
}

/// A step's result as an API other than runlog's `/step` answers it.
pub(crate) trait FinishStep: Send {
    /// The result from the process's outcome, whether the OOM killer ended it, and
    /// the file the step wrote its outputs to.
    fn finish<'a>(
        self: Box<Self>,
        out: &'a process::ProcessOutcome,
        oom_killed: bool,
        outputs_file: &'a std::path::Path,
    ) -> futures_util::future::BoxFuture<'a, StepResponse>;
}

/// Registers and starts a step; returns the receiver of its result. With
/// `answer_at_once`, a first result saying the step has not exited is published
/// before it runs (lite-engine's detached steps).
pub(crate) fn launch_step(
    state: &EngineState,
    stage: &Arc<Stage>,
    launch: Launch,
    answer_at_once: bool,
) -> Result<watch::Receiver<Option<StepResponse>>, EngineError> {
    let slot = state.try_step_slot().ok_or_else(|| {
        EngineError::Busy(format!(
            "{} steps are running, as many as this engine runs at once; start this one when one has ended",
            state.config().max_steps
        ))
    })?;
    let (tx, rx) = watch::channel(None);
    let output = StepOutputLog::default();
    let mut turn = stage
        .add_step(
            &launch.id,
            launch.log_key.as_deref(),
            rx.clone(),
            output.clone(),
        )
        .map_err(EngineError::Conflict)?;
    if answer_at_once {
        let _ = tx.send(Some(StepResponse::default()));
    }
    let cfg = state.config();
    let outputs_file = stage.outputs_file(&launch.id);
    let mut envs = crate::child_env::base(&cfg.pass_env);
    if let Some(user) = &cfg.step_user {
        user.set_identity(&mut envs, &stage.workspace);
    }
    // The stage's own, over the engine's; a stage or step that sets one keeps it.
    envs.insert("TMPDIR".into(), stage.tmp_dir().display().to_string());
    envs.extend(stage.envs.clone());
    envs.extend(launch.envs);
    envs.insert(OUTPUT_ENV.to_owned(), outputs_file.display().to_string());
    // The stage's own `/tmp`, unless it would hide what the step works in.
    let private_tmp = if state.private_tmp() {
        let needed = [stage.workspace.as_path(), &launch.cwd, &outputs_file];
        crate::private_tmp::TmpMounts::plan(&stage.tmp_dir(), &needed)
            .inspect_err(|why| tracing::debug!(step = %launch.id, "the machine's /tmp: {why}"))
            .ok()
    } else {
        None
    };
    let spec = ProcessSpec {
        program: launch.program,
        args: launch.args,
        envs,
        cwd: launch.cwd,
        timeout: launch.timeout,
        kill_grace: cfg.kill_grace,
        drain_grace: cfg.drain_grace,
        // The step's memory cgroup is added when the step starts (`run_step`).
        cgroup_procs: stage.cgroup.iter().map(|cg| cg.procs_file()).collect(),
        user: cfg.step_user.clone(),
        private_tmp,
    };
    // The writer is opened in the step's task, after the writers of earlier steps
    // with the same key have closed: it continues after their lines.
    let opening = {
        let (state, stage, id) = (state.clone(), stage.clone(), launch.id.clone());
        let (key, route, secrets) = (launch.log_key, launch.log_route, launch.secrets.clone());
        async move {
            let cfg = state.config();
            match (key, route) {
                (Some(key), Some((client, log_config))) => Some(
                    stage
                        .writer_to(cfg, &key, &secrets, client, &log_config)
                        .await,
                ),
                (Some(key), None) => {
                    let w = stage.writer(cfg, &key, &secrets).await;
                    if w.is_none() {
                        tracing::warn!(step = %id, "no log service configured: the output of the step is discarded");
                    }
                    w
                }
                (None, _) => None,
            }
        }
    };
    Metrics::inc(&state.metrics().steps_started);
    let masker = Arc::new(livelog::mask::Masker::new(
        &stage
            .secrets
            .iter()
            .chain(&launch.secrets)
            .collect::<Vec<_>>(),
    ));
    let (id, name, mem_limit, preface, refused, finish) = (
        launch.id.clone(),
        launch.name,
        launch.mem_limit,
        launch.preface,
        launch.refused,
        launch.finish,
    );
    let (state_, stage_) = (state.clone(), stage.clone());
    let task = tokio::spawn(
        async move {
            turn.wait().await;
            let run = StepRun {
                id,
                name,
                spec,
                mem_limit,
                outputs_file,
                sink: StepOutput {
                    writer: opening.await,
                    log: output,
                    masker: masker.clone(),
                },
                masker,
                preface,
                refused,
                finish,
            };
            let report = run_step(state_, stage_, run, tx).await;
            // The writer is closed: a later step of the same key may open it.
            let _ = turn.closed.send(true);
            drop(slot);
            report
        }
        .in_current_span(),
    );
    stage.set_task(&launch.id, task);
    Ok(rx)
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
        // 400, as lite-engine answers a step it has not started: a runner's poll
        // retries any failure until its deadline, whatever the status.
        .ok_or_else(|| {
            EngineError::BadRequest(format!(
                "no step {:?} has been started in this stage",
                req.id
            ))
        })?;
    wait_result(rx).await.map(Json)
}

pub(crate) async fn wait_result(
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
    mem_limit: Option<u64>,
    outputs_file: std::path::PathBuf,
    sink: StepOutput,
    /// The stage's and the step's secrets: applied to everything about the step that
    /// leaves through another channel than its stream (console log, the answer's
    /// `error`), since a command line may carry a secret.
    masker: Arc<livelog::mask::Masker>,
    preface: Vec<String>,
    refused: Option<String>,
    finish: Finish,
}

/// How a step ended, for its sections: a stage being destroyed stopped it, else its
/// exit decides (a timeout is a failure).
fn step_outcome(ok: bool, stage_cancelled: bool) -> Outcome {
    match (ok, stage_cancelled) {
        (true, _) => Outcome::Success,
        (false, true) => Outcome::Cancelled,
        (false, false) => Outcome::Failure,
    }
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
        mut spec,
        mem_limit,
        outputs_file,
        sink,
        masker,
        preface,
        refused,
        finish,
    } = run;
    for line in &preface {
        sink.write(format!("{line}\n").as_bytes()).await;
    }
    // The step's section in the engine log; dropped unended (the task aborted) it
    // ends `cancelled`.
    let section = Section::open(&format!("step {name}"));
    let (memory, refused) = match refused {
        Some(error) => (None, Some(error)),
        None => match StepMemory::create(stage.cgroup.as_ref(), &stage.id, &id, mem_limit) {
            Ok(memory) => (memory, None),
            Err(error) => (None, Some(error)),
        },
    };
    if let Some(memory) = &memory {
        spec.cgroup_procs = memory.cgroups_to_join(stage.cgroup.as_ref());
    }
    let mut out = match refused {
        // Logged below, with the failure.
        Some(error) => process::ProcessOutcome::not_started(error),
        None => {
            // The arguments are not logged at all (they are the step's business); the
            // program is, masked, because the console itself masks nothing.
            let mut program = spec.program.clone();
            masker.mask(&mut program);
            tracing::info!(step = %id, "starting step {name:?}: {program}");
            process::run(&spec, sink.clone(), stage.cancel.clone()).await
        }
    };
    // The cgroup is the step's alone: any kill counted in it is of the step's
    // processes, whether the step's shell or a child it outlived.
    let oom_killed = memory.as_ref().is_some_and(|m| m.oom_kills() > 0);
    if let Some(Err(left)) = memory.map(StepMemory::remove) {
        stage.keep_memory_cgroup(left);
    }
    if let Some(e) = &mut out.error {
        masker.mask(e);
    }
    if let (Some(w), Some(e)) = (&sink.writer, &out.error) {
        w.try_write_line("error", e);
    }
    // A step whose shell outlived an OOM-killed child fails too, as lite-engine's
    // `oom killed` error says.
    let ok = out.exit_code == 0 && out.error.is_none() && !oom_killed;
    if oom_killed {
        tracing::info!(step = %id, "the kernel's OOM killer ended a process of the step");
    }
    if ok {
        Metrics::inc(&state.metrics().steps_succeeded);
        tracing::info!(step = %id, "step exited with code 0");
    } else {
        Metrics::inc(&state.metrics().steps_failed);
        match (&out.error, out.signal) {
            (Some(e), _) => {
                tracing::warn!(step = %id, "step failed with code {}: {e}", out.exit_code)
            }
            // A failing command is an ordinary outcome, not a problem of the engine.
            (None, Some(signal)) => tracing::info!(step = %id, "step killed by signal {signal}"),
            (None, None) => tracing::info!(step = %id, "step exited with code {}", out.exit_code),
        }
    }
    let outcome = step_outcome(ok, stage.cancel.is_cancelled());
    section.end(outcome);
    if let Some(w) = &sink.writer {
        // A failed step's stream: the sections its own lines left open end failed.
        w.set_outcome(outcome);
    }
    let response = match finish {
        Finish::Runlog => StepResponse {
            exit_code: out.exit_code,
            exited: true,
            error: out.error,
            outputs: outputs::read(&outputs_file).await,
            oom_killed,
            ..StepResponse::default()
        },
        Finish::Api(api) => api.finish(&out, oom_killed, &outputs_file).await,
    };
    sink.log.end();
    let _ = tx.send(Some(response));
    match sink.writer {
        Some(w) => Some(w.close().await),
        None => None,
    }
}
