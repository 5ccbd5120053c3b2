//! `POST /stream_output`: a step's output from `offset` on — what it printed so far,
//! then live — until the step ends (or the client hangs up).
//!
//! A runner may ask just before it starts the step, so an unknown id is waited for
//! up to `START_WAIT` before the request is refused with 400, as lite-engine does.
//! The output comes from the step's in-memory output log
//! ([`crate::step_output::StepOutputLog`]); the stream in the log service is the
//! complete record.

use crate::error::EngineError;
use crate::handlers::check_step_id;
use crate::state::EngineState;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use runlog_edge::JsonBody;
use runlog_protocol::lite::StreamOutputRequest;
use std::time::Duration;

/// How long an id that has not started yet is waited for.
const START_WAIT: Duration = Duration::from_secs(5);

/// Streams the step's output as `text/plain`.
pub async fn stream_output(
    State(state): State<EngineState>,
    JsonBody(req): JsonBody<StreamOutputRequest>,
) -> Result<Response, EngineError> {
    check_step_id(&req.id)?;
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let log = loop {
        if let Some(log) = state.stage().and_then(|s| s.step_output(&req.id)) {
            break log;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(EngineError::BadRequest(format!(
                "no step {:?} has been started in this stage",
                req.id
            )));
        }
        // Steps are registered without a notification to wait on; a short poll
        // over five seconds costs nothing.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(log.follow(req.offset)),
    )
        .into_response())
}
