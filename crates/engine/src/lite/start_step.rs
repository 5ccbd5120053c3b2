//! `POST /start_step`: a lite-engine Run step, started in the background.
//!
//! The answer is `{}` as soon as the step is registered; `/poll_step` waits for its
//! result. A repeated id starts nothing and answers `{}` again: a runner re-sends a
//! start whose answer it did not get within its 15 s attempt.
//!
//! A request the engine cannot run — a container step (`image`), a Test
//! Intelligence kind, an empty entrypoint, a missing working directory — is not
//! refused with an error status: the runner retries every failed start until its
//! deadline and would report only the timeout. It starts a step that fails at once,
//! whose reason is in its stream and in `/poll_step`'s `error`.

use crate::error::EngineError;
use crate::handlers::step::{Finish, Launch, launch_step};
use crate::handlers::{check_key, check_step_id};
use crate::lite::result::{LiteFinish, is_shell_name, output_commands};
use crate::stage::Stage;
use crate::state::EngineState;
use crate::workspace;
use axum::Json;
use axum::extract::State;
use livelog::{HttpLogClient, LogClient};
use runlog_edge::JsonBody;
use runlog_protocol::engine::LogConfig;
use runlog_protocol::lite::StartStepRequest;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// lite-engine marks the command it prints in bold yellow.
const BOLD_YELLOW: &str = "\u{1b}[33;1m";

/// Starts a Run step; `{}` at once.
pub async fn start_step(
    State(state): State<EngineState>,
    JsonBody(req): JsonBody<StartStepRequest>,
) -> Result<Json<serde_json::Value>, EngineError> {
    check_step_id(&req.id)?;
    if !req.log_key.is_empty() {
        check_key("log_key", &req.log_key)?;
    }
    let stage = state
        .stage()
        .ok_or_else(|| EngineError::Conflict("no stage is set up; call /setup first".into()))?;
    if stage.has_step(&req.id) {
        tracing::info!(step = %req.id, "step already started; the repeated start is ignored");
        return Ok(Json(serde_json::json!({})));
    }
    let (id, detach) = (req.id.clone(), req.detach);
    let launch = describe(&stage, req, state.config().allow_host_paths);
    match launch_step(&state, &stage, launch, detach) {
        Ok(_) => Ok(Json(serde_json::json!({}))),
        // Two starts of one id at once: the other one registered it.
        Err(EngineError::Conflict(_)) if stage.has_step(&id) => Ok(Json(serde_json::json!({}))),
        Err(e) => Err(e),
    }
}

/// The step to launch for `req`; one that cannot run carries the reason.
fn describe(stage: &Stage, req: StartStepRequest, allow_host_paths: bool) -> Launch {
    let outputs_file = stage.outputs_file(&req.id);
    let file = |suffix: &str| {
        stage
            .meta_dir
            .join("outputs")
            .join(format!("{}-{suffix}", req.id))
    };
    let (env_file, secrets_file) = (file("export.env"), file("output-secrets.env"));
    let mut envs = req.environment.clone();
    for name in ["DRONE_OUTPUT", "HARNESS_OUTPUT_FILE"] {
        envs.insert(name.to_owned(), outputs_file.display().to_string());
    }
    envs.insert("DRONE_ENV".to_owned(), env_file.display().to_string());
    envs.insert(
        "HARNESS_OUTPUT_SECRET_FILE".to_owned(),
        secrets_file.display().to_string(),
    );
    let (cwd, cwd_error) = working_dir(stage, &req.working_dir);
    let refused = cwd_error
        .or_else(|| unsupported(&req))
        .or_else(|| write_step_files(stage, &req, allow_host_paths).err());
    let (program, args, preface) = match (&refused, req.run.entrypoint.split_first()) {
        (None, Some((program, first))) => {
            let mut args = first.to_vec();
            let mut commands = req.run.commands.clone();
            if let Some(script) = commands.first_mut() {
                script.push_str(&output_commands(&output_pairs(&req), &outputs_file));
            }
            let shown = req.run.commands.concat();
            let preface = if shown.trim().is_empty() {
                Vec::new()
            } else {
                format!("Executing the following command(s):\n{}", shown.trim())
                    .lines()
                    .map(|l| format!("{BOLD_YELLOW}{l}"))
                    .collect()
            };
            args.extend(commands);
            (program.clone(), args, preface)
        }
        _ => (String::new(), Vec::new(), Vec::new()),
    };
    Launch {
        id: req.id.clone(),
        name: if req.name.is_empty() {
            req.id.clone()
        } else {
            req.name.clone()
        },
        program,
        args,
        envs,
        cwd,
        timeout: (req.timeout > 0).then(|| Duration::from_secs(req.timeout)),
        // Docker's rule, which lite-engine passes it to: 0 (or less) is no limit.
        mem_limit: u64::try_from(req.mem_limit).ok().filter(|l| *l > 0),
        log_key: (!req.log_key.is_empty()).then(|| req.log_key.clone()),
        secrets: req.secrets.clone(),
        // A runner sends the stage's log_config with every step: only a different
        // one gets a client of its own.
        log_route: (req.log_config != stage.log_config)
            .then(|| log_route(&req.log_config))
            .flatten(),
        preface,
        refused,
        finish: Finish::Api(Box::new(LiteFinish {
            outputs: req.outputs,
            output_vars: req.output_vars,
            env_file,
            secrets_file,
        })),
    }
}

/// `(output name, shell variable)` of each declared output; typed outputs first
/// (lite-engine then ignores `output_vars`).
fn output_pairs(req: &StartStepRequest) -> Vec<(String, String)> {
    if req.outputs.is_empty() {
        req.output_vars
            .iter()
            .map(|v| (v.clone(), v.clone()))
            .collect()
    } else {
        req.outputs
            .iter()
            .map(|o| (o.key.clone(), o.value.clone()))
            .collect()
    }
}

/// Why the engine cannot run this step, if it cannot.
fn unsupported(req: &StartStepRequest) -> Option<String> {
    if !req.image.is_empty() {
        return Some(format!(
            "step {:?} runs in a container (image {:?}): container steps need a Docker engine, \
             which the runlog engine does not drive; run the step on the host (no image)",
            req.id, req.image
        ));
    }
    if !matches!(req.kind.as_str(), "" | "Run") {
        return Some(format!(
            "step kind {:?} (Test Intelligence) is not supported by the runlog engine; only Run steps are",
            req.kind
        ));
    }
    if req.run.entrypoint.is_empty() {
        return Some("step entrypoint cannot be empty".to_owned());
    }
    let pairs = output_pairs(req);
    if pairs.is_empty() {
        return None;
    }
    if req.run.commands.is_empty() {
        return Some(
            "output variable should not be set for unset entrypoint or command".to_owned(),
        );
    }
    if matches!(
        req.run.entrypoint[0].as_str(),
        "powershell" | "pwsh" | "python3"
    ) {
        return Some(format!(
            "output variables are read by a POSIX shell; entrypoint {:?} is not supported with them",
            req.run.entrypoint[0]
        ));
    }
    pairs
        .iter()
        .find(|(key, var)| !is_shell_name(key) || !is_shell_name(var))
        .map(|(key, var)| {
            format!("output {key:?} (from {var:?}) is not a shell variable name: A-Z a-z 0-9 _, not starting with a digit")
        })
}

/// The step's working directory, and why it cannot be used if it cannot.
fn working_dir(stage: &Stage, dir: &str) -> (PathBuf, Option<String>) {
    if dir.is_empty() {
        return (stage.working_dir.clone(), None);
    }
    let path = if std::path::Path::new(dir).is_absolute() {
        PathBuf::from(dir)
    } else {
        match workspace::resolve(&stage.workspace, dir) {
            Ok(p) => p,
            Err(e) => return (stage.working_dir.clone(), Some(e.to_string())),
        }
    };
    if path.is_dir() {
        (path, None)
    } else {
        let error = format!("working_dir {dir:?} is not a directory");
        (stage.working_dir.clone(), Some(error))
    }
}

/// Writes the step's `files` before it starts, as lite-engine does.
fn write_step_files(
    stage: &Stage,
    req: &StartStepRequest,
    allow_host_paths: bool,
) -> Result<(), String> {
    workspace::write_files(&stage.workspace, &req.files, allow_host_paths)
        .map_err(|e| e.to_string())
}

/// The step's own log service, when its `log_config` names one.
fn log_route(config: &LogConfig) -> Option<(Arc<dyn LogClient>, LogConfig)> {
    if config.url.is_empty() {
        return None;
    }
    match HttpLogClient::new(config) {
        Ok(c) => Some((Arc::new(c) as Arc<dyn LogClient>, config.clone())),
        Err(e) => {
            tracing::warn!(
                "the step's log_config is not usable ({e}); its stream goes to the stage's log service"
            );
            None
        }
    }
}
