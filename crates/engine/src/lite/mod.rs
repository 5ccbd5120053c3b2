//! Harness lite-engine's engine API on the runlog engine, so that a Harness runner
//! drives it unchanged.
//!
//! The routes only lite-engine has are here: `/start_step` ([`start_step`]),
//! `/stream_output` ([`stream_output`]) and `/suspend`. The routes both APIs have
//! (`/setup`, `/poll_step`, `/destroy`, `/healthz`) are the engine's own handlers,
//! whose requests and answers are supersets of both; lite-engine also serves every
//! route with a trailing `/`, and so do these.
//!
//! Steps run through the engine's one step machinery (`handlers::step::launch_step`:
//! the stage's environment, secrets, cgroup, streams); what differs is how a step is
//! described ([`start_step`]) and how its result is made ([`result`]).

pub mod result;
pub mod start_step;
pub mod stream_output;

use crate::error::EngineError;
use crate::handlers::{destroy, health, setup, step};
use crate::state::EngineState;
use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use runlog_edge::JsonBody;
use runlog_protocol::lite::SuspendRequest;

/// The lite-engine routes, to merge into the engine's router (which has the shared
/// ones without the trailing `/`).
pub fn routes() -> Router<EngineState> {
    Router::new()
        .route("/start_step", post(start_step::start_step))
        .route("/start_step/", post(start_step::start_step))
        .route("/stream_output", post(stream_output::stream_output))
        .route("/stream_output/", post(stream_output::stream_output))
        .route("/suspend", post(suspend))
        .route("/suspend/", post(suspend))
        .route("/setup/", post(setup::setup))
        .route("/poll_step/", post(step::poll_step))
        .route("/destroy/", post(destroy::destroy))
        .route("/healthz/", get(health::healthz))
}

/// `POST /suspend`: lite-engine suspends the stage's containers before the runner
/// hibernates the machine. Steps here are host processes, which hibernation keeps
/// as they are: nothing to do.
async fn suspend(
    JsonBody(_req): JsonBody<SuspendRequest>,
) -> Result<Json<serde_json::Value>, EngineError> {
    tracing::info!("suspend: the engine runs no containers; nothing to suspend");
    Ok(Json(serde_json::json!({})))
}
