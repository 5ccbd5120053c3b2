//! `POST /destroy`: stop what runs, close every stream (the engine's own last, so it
//! holds the destroy itself), remove the workspace, answer the totals.

use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::state::EngineState;
use axum::Json;
use axum::extract::State;
use runlog_edge::JsonBody;
use runlog_protocol::engine::DestroyResponse;
use std::time::Duration;

/// Body of `POST /destroy`: a JSON object; its fields (lite-engine's `log_key`,
/// `lite_engine_path`, `stage_runtime_id`) are not needed, the engine has one stage.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DestroyRequest {}

/// Tears the stage down within the configured deadline; without a stage it answers
/// empty totals (destroy is safe to retry).
pub async fn destroy(
    State(state): State<EngineState>,
    JsonBody(_req): JsonBody<DestroyRequest>,
) -> Result<Json<DestroyResponse>, EngineError> {
    let mut answer = destroy_stage(&state).await;
    // lite-engine always answers `os_stats` (zeros when it measured nothing).
    answer.os_stats.get_or_insert_with(Default::default);
    Ok(Json(answer))
}

/// The teardown itself; also used when the engine shuts down.
pub async fn destroy_stage(state: &EngineState) -> DestroyResponse {
    let mut slot = state.lock_stage().await;
    let Some(stage) = slot.take() else {
        return DestroyResponse::default();
    };
    let cfg = state.config();
    let mut answer = DestroyResponse::default();
    // New steps and polls see no stage from here on; the engine stream stays attached
    // to requests until it is closed.
    state.publish(None, state.engine_sink());
    tracing::info!(stage = %stage.id, "destroying stage");
    stage.cancel.cancel();

    // Steps are killed by the cancellation; each closes its stream. The budget keeps
    // room for closing the engine stream afterwards.
    let budget = cfg
        .destroy_deadline
        .saturating_sub(cfg.close_deadline)
        .max(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + budget;
    for (id, running, task) in stage.take_tasks() {
        if running {
            tracing::info!(step = %id, "stopping step");
            answer.killed_steps.push(id.clone());
        }
        let Some(mut task) = task else { continue };
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Some(report))) => answer.streams.push(report),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => answer.errors.push(format!("step {id:?} failed: {e}")),
            Err(_) => {
                task.abort();
                answer.errors.push(format!(
                    "step {id:?}: its stream did not close before the deadline"
                ));
            }
        }
    }
    for r in &answer.streams {
        tracing::info!(
            "stream {}: {} lines, {} bytes, {} retries, {} dropped, archived: {}",
            r.key,
            r.lines,
            r.bytes,
            r.retries,
            r.dropped_lines,
            r.archived
        );
    }
    for e in &answer.errors {
        tracing::warn!("{e}");
    }
    // Whatever the steps left running, out of their process groups too.
    if let Some(cgroup) = &stage.cgroup
        && let Err(e) = cgroup.kill_and_remove().await
    {
        tracing::warn!("{e}");
        answer.errors.push(e);
    }
    for memory in stage.take_memory_cgroups() {
        if let Err(e) = memory.kill_and_remove().await {
            tracing::warn!("{e}");
            answer.errors.push(e);
        }
    }
    if let Some(machine) = &stage.extras.machine {
        let (stats, report) = machine.stop().await;
        answer.os_stats = Some(stats);
        answer.streams.extend(report);
    }
    let removed = tokio::task::spawn_blocking({
        let mut dirs = vec![stage.workspace.clone(), stage.meta_dir.clone()];
        dirs.extend(stage.extras.remove_dirs.iter().cloned());
        move || {
            dirs.iter()
                .filter(|d| d.exists())
                .map(|d| {
                    std::fs::remove_dir_all(d)
                        .map_err(|e| format!("could not remove {}: {e}", d.display()))
                })
                .filter_map(Result::err)
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap_or_else(|e| vec![format!("removing the workspace failed: {e}")]);
    for e in &removed {
        tracing::warn!("{e}");
    }
    answer.errors.extend(removed);
    tracing::info!(stage = %stage.id, "stage destroyed; closing the engine log stream");

    // Last: the engine stream, which now holds everything above.
    if let Some(w) = &stage.engine_log {
        let limit = cfg.close_deadline + Duration::from_secs(1);
        match tokio::time::timeout(limit, w.close()).await {
            Ok(report) => answer.streams.push(report),
            Err(_) => answer.errors.push(format!(
                "engine stream {}: close missed its deadline",
                w.key()
            )),
        }
    }
    // Every writer of the stage is closed: the spool files kept for reuse hold its
    // history past a next writer's end, which the next stage's steps must not read.
    livelog::recycle::release(&cfg.spool_dir());
    state.publish(None, None);
    Metrics::inc(&state.metrics().destroys);
    answer
}
