//! `POST /setup`: create the stage workspace, write its files, open the engine's own
//! log stream.

use crate::error::EngineError;
use crate::extract::JsonBody;
use crate::handlers::check_key;
use crate::metrics::Metrics;
use crate::stage::{Stage, WriterSink};
use crate::state::EngineState;
use crate::workspace;
use axum::Json;
use axum::extract::State;
use livelog::{HttpLogClient, LogClient};
use runlog_capture::StreamSink;
use runlog_protocol::engine::SetupRequest;
use std::sync::Arc;

/// Sets up the one stage of this engine; 409 when one exists.
pub async fn setup(
    State(state): State<EngineState>,
    JsonBody(req): JsonBody<SetupRequest>,
) -> Result<Json<serde_json::Value>, EngineError> {
    if let Some(key) = &req.le_log_key {
        check_key("le_log_key", key)?;
    }
    let mut slot = state.lock_stage().await;
    if slot.is_some() {
        return Err(EngineError::Conflict(
            "a stage is already set up; call /destroy first".into(),
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
            Some(livelog::Writer::new(client.clone(), wc))
        }
        _ => None,
    };
    let sink: Option<Arc<dyn StreamSink>> = engine_log
        .clone()
        .map(|w| Arc::new(WriterSink(w)) as Arc<dyn StreamSink>);
    if let Some(sink) = &sink {
        runlog_capture::attach_stream(&tracing::Span::current(), sink.clone());
    }
    tracing::info!(stage = %id, "setting up stage");
    if req.le_log_key.is_some() && client.is_none() {
        tracing::warn!("no usable log_config: the engine log stream is not opened; setup goes on");
    }

    let created = (|| {
        std::fs::create_dir_all(&workspace)?;
        std::fs::create_dir_all(meta_dir.join("outputs"))?;
        std::fs::create_dir_all(cfg.spool_dir())
    })();
    if let Err(e) = created {
        tracing::error!(
            "could not create the workspace {}: {e}",
            workspace.display()
        );
        let _ = std::fs::remove_dir_all(&workspace);
        let _ = std::fs::remove_dir_all(&meta_dir);
        if let Some(w) = engine_log {
            w.close().await;
        }
        return Err(EngineError::Internal(format!(
            "could not create the workspace: {e}"
        )));
    }
    if let Err(e) = workspace::write_files(&workspace, &req.files) {
        tracing::error!("setup failed: {e}");
        let _ = std::fs::remove_dir_all(&workspace);
        let _ = std::fs::remove_dir_all(&meta_dir);
        if let Some(w) = engine_log {
            w.close().await;
        }
        return Err(e);
    }
    if let Err(e) = std::fs::create_dir_all(&working_dir) {
        tracing::warn!("could not create the working directory: {e}");
    }
    tracing::info!(
        "workspace {} ready: {} files, {} environment variables, {} secrets",
        workspace.display(),
        req.files.len(),
        req.envs.len(),
        req.secrets.len()
    );
    let stage = Arc::new(Stage::new(
        id,
        workspace,
        meta_dir,
        req.envs,
        req.secrets,
        req.log_config,
        working_dir,
        client,
        engine_log,
    ));
    *slot = Some(stage.clone());
    state.publish(Some(stage), sink);
    Metrics::inc(&state.metrics().setups);
    Ok(Json(serde_json::json!({})))
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
