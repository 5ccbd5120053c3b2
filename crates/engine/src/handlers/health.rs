//! `GET /healthz` and `GET /metrics`.

use crate::state::EngineState;
use axum::Json;
use axum::extract::State;
use runlog_protocol::engine::EngineHealth;
use std::sync::atomic::Ordering;

/// Liveness and version.
pub async fn healthz(State(state): State<EngineState>) -> Json<EngineHealth> {
    Json(EngineHealth {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        stage: state.stage().is_some(),
    })
}

/// Prometheus text.
pub async fn metrics(State(state): State<EngineState>) -> String {
    let m = state.metrics();
    let started = m.steps_started.load(Ordering::Relaxed);
    let ended = m.steps_succeeded.load(Ordering::Relaxed) + m.steps_failed.load(Ordering::Relaxed);
    m.render(started.saturating_sub(ended))
}
