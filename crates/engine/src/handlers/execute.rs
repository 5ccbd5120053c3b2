//! `POST /execute` (a Python function or class call, answered when it returns) and
//! `GET /ping` (the load-balanced worker's readiness check).

use crate::error::EngineError;
use crate::function::request_from_body;
use crate::state::EngineState;
use axum::Json;
use axum::extract::State;
use runlog_edge::JsonBody;
use runlog_protocol::function::FunctionResponse;

/// `POST /execute`: the call in the body (bare or as `{"input": {…}}`), the stage's
/// secrets (from `/setup`) masked in its response and live stream.
pub async fn execute(
    State(engine): State<EngineState>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<FunctionResponse>, EngineError> {
    let req = request_from_body(body)?;
    let resp = engine
        .functions()
        .call_masked(req, engine.stage_secrets())
        .await?;
    Ok(Json(resp))
}

/// `GET /ping`: the load-balanced worker's readiness check.
pub async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "healthy"}))
}
