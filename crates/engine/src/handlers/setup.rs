//! `POST /setup`: create the stage workspace, write its files, open the engine's own
//! log stream, install the stage's dependencies.
//!
//! Dependencies go through the engine's Python runtime (the one `/execute` uses,
//! [`EngineState::functions`]): Python packages into its virtualenv, system
//! packages with apt when the runtime allows it. The installers' lines are tracing
//! events in this request's span, so they reach the engine log stream live. When
//! Python packages were installed, the virtualenv's `bin` is put first on the stage's
//! `PATH` (and `VIRTUAL_ENV` names it), so steps' `python` and console scripts are the
//! ones that see the packages. A failed install fails setup with 422 and removes what
//! setup made.

use crate::cgroup::StageCgroup;
use crate::error::EngineError;
use crate::handlers::check_key;
use crate::machine::MachineMonitor;
use crate::metrics::Metrics;
use crate::python::DependencyError;
use crate::stage::{Stage, StageExtras, WriterSink};
use crate::state::EngineState;
use crate::workspace;
use axum::Json;
use axum::extract::State;
use livelog::{HttpLogClient, LogClient};
use runlog_capture::{Section, StreamSink};
use runlog_edge::JsonBody;
use runlog_protocol::engine::{SetupDependencies, SetupRequest, SetupVolume};
use runlog_protocol::sections::Outcome;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sets up the one stage of this engine. While a stage is set up, the same request
/// again is answered 200 (a runner re-sends a setup whose answer it missed) and any
/// other 409.
pub async fn setup(
    State(state): State<EngineState>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<serde_json::Value>, EngineError> {
    let req: SetupRequest = serde_json::from_value(body.clone())
        .map_err(|e| EngineError::BadRequest(format!("malformed JSON body: {e}")))?;
    if let Some(key) = &req.le_log_key {
        check_key("le_log_key", key)?;
    }
    if let Some(key) = &req.memory_metrics_log_key {
        check_key("memory_metrics_log_key", key)?;
    }
    let mut slot = state.lock_stage().await;
    if let Some(stage) = slot.as_ref() {
        if stage.extras.request == body {
            tracing::info!(stage = %stage.id, "the same setup again: the stage is already set up");
            return Ok(Json(serde_json::json!({})));
        }
        return Err(EngineError::Conflict(
            "a stage is already set up with a different request; call /destroy first".into(),
        ));
    }
    let cfg = state.config();
    let id = stage_id();
    let workspace = cfg.stages_dir().join(&id);
    let meta_dir = cfg.stages_dir().join(format!("{id}.runlog"));
    let working_dir = match &req.working_dir {
        Some(d) => workspace::resolve(&workspace, d)?,
        None => workspace.clone(),
    };

    // The engine stream comes first, so that the rest of setup is in it.
    let client = log_client(&req);
    let engine_log = match (&req.le_log_key, &client) {
        (Some(key), Some(client)) => {
            let mut wc = livelog::WriterConfig::new(key.as_str()).with_log_config(&req.log_config);
            wc.secrets = req.secrets.clone();
            wc.spool_dir = cfg.spool_dir();
            wc.outbox_dir = Some(cfg.outbox_dir());
            wc.close_deadline = cfg.close_deadline;
            // Opened first: a key an earlier stage wrote is continued, not overwritten.
            Some(livelog::Writer::open(client.clone(), wc).await)
        }
        _ => None,
    };
    let sink: Option<Arc<dyn StreamSink>> = engine_log
        .clone()
        .map(|w| Arc::new(WriterSink(w)) as Arc<dyn StreamSink>);
    if let Some(sink) = &sink {
        runlog_capture::attach_stream(&tracing::Span::current(), sink.clone());
    }
    // Setup's section of the engine log: ended `failure` by every failure below,
    // `cancelled` when the request is dropped mid-way.
    let section = Section::open(&format!("setup {id}"));
    tracing::info!(stage = %id, "setting up stage");
    if req.le_log_key.is_some() && client.is_none() {
        tracing::warn!("no usable log_config: the engine log stream is not opened; setup goes on");
    }

    // A controller that hangs up during a long install drops this request: what it
    // made is then removed by the guard (the explicit failures below remove it too,
    // and close the engine stream first).
    let mut unfinished = Unfinished {
        dirs: Some([workspace.clone(), meta_dir.clone()]),
    };
    let created = (|| {
        std::fs::create_dir_all(&workspace)?;
        std::fs::create_dir_all(meta_dir.join("outputs"))?;
        std::fs::create_dir_all(meta_dir.join(crate::stage::TMP_DIR))?;
        livelog::spool::create_private_dir(&cfg.spool_dir())
    })();
    // Made again for each stage: the last one's workspace, which may have filled the
    // file system, is gone by now.
    if created.is_ok() && cfg.spool_reserve_bytes > 0 {
        let spool_dir = cfg.spool_dir();
        if let Err(e) = livelog::reserve::hold(&spool_dir, cfg.spool_reserve_bytes) {
            tracing::warn!(
                "could not hold {} bytes for the engine's spools in {} ({e}): a step that fills the disk leaves them none",
                cfg.spool_reserve_bytes,
                spool_dir.display()
            );
        }
    }
    if let Err(e) = created {
        tracing::error!(
            "could not create the workspace {}: {e}",
            workspace.display()
        );
        abandon(&workspace, &meta_dir, engine_log, section).await;
        return Err(EngineError::Internal(format!(
            "could not create the workspace: {e}"
        )));
    }
    // An installer's or the file system's words may quote a request's value (a
    // package URL with a token in it): masked before the log and the answer.
    let masker = livelog::mask::Masker::new(&req.secrets);
    let masked = |e: EngineError| {
        e.map_message(|mut m| {
            masker.mask(&mut m);
            m
        })
    };
    let host_paths = cfg.allow_host_paths;
    let written = workspace::write_files(&workspace, &req.files, host_paths)
        .and_then(|()| create_volumes(&workspace, &req.volumes, host_paths));
    let remove_dirs = match written.map_err(masked) {
        Ok(dirs) => dirs,
        Err(e) => {
            tracing::error!("setup failed: {e}");
            abandon(&workspace, &meta_dir, engine_log, section).await;
            return Err(e);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&working_dir) {
        tracing::warn!("could not create the working directory: {e}");
    }
    if let Some(user) = &cfg.step_user {
        // Steps write their workspace and their outputs; nothing else the engine keeps.
        let owned = user
            .own(&workspace)
            .and_then(|()| user.own(&meta_dir.join("outputs")))
            .and_then(|()| user.private_dir(&meta_dir.join(crate::stage::TMP_DIR)));
        if let Err(e) = owned {
            tracing::error!("setup failed: could not give the workspace to the step user: {e}");
            abandon(&workspace, &meta_dir, engine_log, section).await;
            return Err(EngineError::Internal(format!(
                "could not give the workspace to the step user {:?}: {e}",
                user.name
            )));
        }
    }
    tracing::info!(
        "workspace {} ready: {} files, {} environment variables, {} secrets",
        workspace.display(),
        req.files.len(),
        req.envs.len(),
        req.secrets.len()
    );
    let mut envs = req.envs;
    if let Some(deps) = &req.dependencies {
        match install_dependencies(&state, deps).await.map_err(masked) {
            Ok(Some(venv)) => put_venv_first(&mut envs, &venv),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("setup failed: {e}");
                abandon(&workspace, &meta_dir, engine_log, section).await;
                return Err(e);
            }
        }
    }
    // Last, so no failure above has a cgroup to remove.
    let cgroup = match StageCgroup::create(&id) {
        Ok(cg) => Some(cg),
        Err(e) => {
            tracing::warn!(
                "{e}: processes that leave a step's process group (setsid) are not stopped by /destroy"
            );
            None
        }
    };
    let metrics_stream = match (&req.memory_metrics_log_key, &client) {
        (Some(key), Some(client)) => {
            let mut wc = livelog::WriterConfig::new(key.as_str()).with_log_config(&req.log_config);
            wc.spool_dir = cfg.spool_dir();
            wc.outbox_dir = Some(cfg.outbox_dir());
            wc.close_deadline = cfg.close_deadline;
            Some(livelog::Writer::new(client.clone(), wc))
        }
        _ => None,
    };
    let extras = StageExtras {
        request: body,
        remove_dirs,
        machine: Some(MachineMonitor::start(
            cfg.machine_sample_interval,
            metrics_stream,
        )),
    };
    let stage = Arc::new(Stage::new(
        id,
        workspace,
        meta_dir,
        envs,
        req.secrets,
        req.log_config,
        working_dir,
        client,
        req.le_log_key.clone().zip(engine_log),
        cgroup,
        extras,
    ));
    section.end(Outcome::Success);
    unfinished.dirs = None;
    *slot = Some(stage.clone());
    state.publish(Some(stage), sink);
    Metrics::inc(&state.metrics().setups);
    Ok(Json(serde_json::json!({})))
}

/// Creates the directories of `host` volumes; answers those to remove at destroy.
/// `temp` volumes are container scratch space and are ignored.
fn create_volumes(
    workspace: &Path,
    volumes: &[SetupVolume],
    allow_host_paths: bool,
) -> Result<Vec<PathBuf>, EngineError> {
    let hosts: Vec<_> = volumes.iter().filter_map(|v| v.host.as_ref()).collect();
    let targets = hosts
        .iter()
        .map(|h| workspace::target(workspace, &h.path, allow_host_paths))
        .collect::<Result<Vec<_>, _>>()?;
    let mut remove = Vec::new();
    for (host, dir) in hosts.iter().zip(targets) {
        std::fs::create_dir_all(&dir).map_err(|e| {
            EngineError::Internal(format!("could not create volume {:?}: {e}", host.path))
        })?;
        tracing::info!("volume {:?} at {}", host.name, dir.display());
        if host.remove {
            remove.push(dir);
        }
    }
    Ok(remove)
}

/// The directories of a setup still under way; removed if it is dropped before it
/// completes (its request was cancelled).
struct Unfinished {
    dirs: Option<[PathBuf; 2]>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        for dir in self.dirs.iter().flatten() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes what a failed setup made, ends its section failed and closes its engine
/// stream (flush + archive) as failed, so the failure's cause is in the archive and
/// no half-made stage is left.
async fn abandon(
    workspace: &Path,
    meta_dir: &Path,
    engine_log: Option<livelog::Writer>,
    section: Section,
) {
    let _ = std::fs::remove_dir_all(workspace);
    let _ = std::fs::remove_dir_all(meta_dir);
    section.end(Outcome::Failure);
    if let Some(w) = engine_log {
        w.set_outcome(Outcome::Failure);
        w.close().await;
    }
}

/// Installs `deps` through the engine's Python runtime. Returns the virtualenv's
/// directory when Python packages went into it.
async fn install_dependencies(
    state: &EngineState,
    deps: &SetupDependencies,
) -> Result<Option<PathBuf>, EngineError> {
    if deps.python.is_empty() && deps.system.is_empty() {
        return Ok(None);
    }
    let runtime = state.functions().runtime();
    // The runtime's one install path: what a function call installed is not installed
    // again here, and neither runs pip into the virtualenv while the other does.
    match runtime
        .install_dependencies(&deps.python, &deps.system, false)
        .await
    {
        Ok(()) => {}
        Err(e @ DependencyError::Lock { .. }) => return Err(EngineError::Internal(e.to_string())),
        Err(e) => return Err(EngineError::Unprocessable(e.to_string())),
    }
    let cfg = runtime.config();
    Ok((!deps.python.is_empty()).then(|| cfg.venv_dir.clone()))
}

/// Puts the virtualenv first on the stage's `PATH` (the request's, else the engine's)
/// and names it in `VIRTUAL_ENV` unless the request set that itself.
fn put_venv_first(envs: &mut BTreeMap<String, String>, venv: &Path) {
    let base = envs
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    let bin = venv.join("bin");
    envs.insert("PATH".to_owned(), format!("{}:{base}", bin.display()));
    envs.entry("VIRTUAL_ENV".to_owned())
        .or_insert_with(|| venv.display().to_string());
    tracing::info!(
        "steps find the stage's Python packages through {}",
        bin.display()
    );
}

/// The log service client, or `None` (with a warning) when the config is unusable.
fn log_client(req: &SetupRequest) -> Option<Arc<dyn LogClient>> {
    if req.log_config.url.is_empty() {
        return None;
    }
    match HttpLogClient::new(&req.log_config) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(
                "log service client could not be created ({e}); streams are disabled for this stage"
            );
            None
        }
    }
}

fn stage_id() -> String {
    use rand::Rng as _;
    let n: u64 = rand::rng().random();
    format!("stage-{n:016x}")
}
